"""The one netlink transport for the requests vmsan encodes itself (with
pyroute2's message classes): a plain ``AF_NETLINK`` socket, requests sent
many to a write, and the kernel's acknowledgements matched by sequence
number. Used by ``rtnl_batch`` (rtnetlink batches), ``netconf`` (forwarding
reads) and ``ipset_wire`` (ipset adds and deletes).

Why not pyroute2's sockets for these: its user API costs about a millisecond
of Python per request and answers one request at a time; a batch of ten
requests in one write, acknowledged together, costs a tenth of that.

Every socket has a timeout: a request whose answer never comes (a lost ack,
a kernel that does not know the request) fails with a KernelError that says
what was being done, instead of blocking the process for ever.

A socket belongs to the network namespace of the thread that opened it.
"""

import errno
import socket
import struct

from ..model.errors import KernelError
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink import NLMSG_ERROR, NETLINK_NETFILTER, NETLINK_ROUTE, SOL_NETLINK
except ImportError:  # the faces name the missing library (missing_required_lib); the numbers are the kernel's
    NLMSG_ERROR, NETLINK_ROUTE, NETLINK_NETFILTER, SOL_NETLINK = 2, 0, 12, 270

# linux/netlink.h; pyroute2 0.9.7 does not name it. Error acks then come
# without a copy of the failed request, which keeps a batch's acks small.
NETLINK_CAP_ACK = 10
DEFAULT_TIMEOUT = 5.0           # seconds: a kernel answers in microseconds

__all__ = ["DEFAULT_TIMEOUT", "NETLINK_NETFILTER", "NETLINK_ROUTE", "NLMSG_ERROR", "NetlinkSocket", "error_of",
           "messages", "read_acks"]

HEADER = struct.Struct("=IHHII")     # struct nlmsghdr: length, type, flags, seq, pid
_ERRNO = struct.Struct("=i")         # struct nlmsgerr starts with the (negative) errno
_NLATTR = struct.Struct("=HH")       # struct nlattr: length, type


def attr(atype, payload):
    """One netlink attribute (struct nlattr and PAYLOAD, padded to 4 bytes):
    the framing every request this package builds by hand uses."""
    return _NLATTR.pack(4 + len(payload), atype) + payload + b"\0" * (-len(payload) % 4)


def messages(data):
    """(type, sequence number, offset, length) of each message in DATA (one
    datagram from the kernel)."""
    pos = 0
    while pos + HEADER.size <= len(data):
        length, mtype, _flags, seq, _pid = HEADER.unpack_from(data, pos)
        if length < HEADER.size:
            break
        yield mtype, seq, pos, length
        pos += (length + 3) & ~3


def read_acks(data):
    """[(sequence number, errno)] of the NLMSG_ERROR messages in DATA;
    errno 0 is a plain ack."""
    return [(seq, -_ERRNO.unpack_from(data, pos + HEADER.size)[0])
            for mtype, seq, pos, length in messages(data)
            if mtype == NLMSG_ERROR and length >= HEADER.size + _ERRNO.size]


class NetlinkSocket(object):
    """One netlink socket of PROTOCOL (``NETLINK_ROUTE``, ``NETLINK_NETFILTER``).
    WHAT names its user in error messages ("rtnetlink batch", "ipset").
    SOCK: an already open socket-like object (tests)."""

    def __init__(self, protocol, what, timeout=DEFAULT_TIMEOUT, rcvbuf=None, cap_ack=False, sock=None):
        self.what = what
        self.timeout = timeout
        if sock is not None:
            self.sock = sock
            return
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            self.sock.bind((0, 0))
            if cap_ack:
                try:
                    self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
                except OSError:
                    pass        # older kernels: acks carry the request, nothing else changes
            if rcvbuf:
                for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                    try:
                        self.sock.setsockopt(socket.SOL_SOCKET, option, rcvbuf)
                        break
                    except OSError:
                        continue
            self.sock.settimeout(timeout)
        except Exception:
            self.sock.close()
            raise

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        try:
            self.sock.send(data)
        except OSError as exc:
            raise KernelError(exc.errno, "%s: sending %d bytes" % (self.what, len(data)))

    def recv(self):
        """One datagram; KernelError(ETIMEDOUT) when none comes in time."""
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            raise KernelError(errno.ETIMEDOUT, "%s: no answer from the kernel within %g s"
                              % (self.what, self.timeout))
        except OSError as exc:
            raise KernelError(exc.errno, "%s: reading the kernel's answer" % self.what)

    def acks(self, last, wanted):
        """Read acks until the one of sequence number LAST: {seq: errno} of
        the acks whose sequence number is in WANTED (acks of an earlier,
        abandoned request are skipped). The kernel handles a socket's
        requests in order, so LAST's ack comes after every other one."""
        found = {}
        while True:
            for seq, err in read_acks(self.recv()):
                if seq in wanted:
                    found.setdefault(seq, err)
                if seq == last:
                    return found

    def exchange(self, request, seq):
        """Send one REQUEST and return the first message answering SEQ:
        (type, the message's bytes). An NLMSG_ERROR answer is returned as
        it is; its errno is ``error_of(data)``."""
        self.send(request)
        while True:
            data = self.recv()
            for mtype, got, pos, length in messages(data):
                if got == seq:
                    return mtype, data[pos:pos + length]


def error_of(message):
    """The errno of an NLMSG_ERROR message (0: a plain ack)."""
    return -_ERRNO.unpack_from(message, HEADER.size)[0]
