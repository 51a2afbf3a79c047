"""NFLOG copies of dropped packets, for the event log: one netlink socket per
network namespace bound to the drop groups of ``plan.drops`` (a socket may
be the listener of several groups; the kernel allows one listener per group
and namespace, ``EBUSY``). The rules limit how many copies the kernel makes
(plan/drops.py), so reading them costs the daemon at most that.

The copies do not wait: the packet is dropped (or accepted, in audit mode)
whether or not anyone reads. Without a bound socket the kernel makes no
copy at all. Each message carries its group (nfgenmsg's resource id), the
device it came in on and the first ``copy_range`` bytes of the IP packet.
Built on the framing of ``kernel.nfqueue`` (its attribute reader), same
rules: open inside the namespace, close before it goes; library and kernel
errors become ``NfqueueError``.
"""

import socket
import struct
from collections import namedtuple

from .netlink_wire import HEADER as _NLMSGHDR
from .netlink_wire import attr as _attr
from .nfqueue import NETLINK_NETFILTER, NFNL_SUBSYS_ULOG, NFULA_PAYLOAD, NFULNL_CFG_CMD_BIND, \
    NFULNL_COPY_PACKET, NFULNL_MSG_CONFIG, NFULNL_MSG_PACKET, NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_QTHRESH, \
    NFULA_CFG_TIMEOUT, NfqueueError, attributes, configure, read_datagrams

NFULA_IFINDEX_INDEV = 4
COPY_RANGE = 96             # bytes of each packet: the IPv4 header (with options) and the ports
RCVBUF = 1 << 20
RECV_SIZE = 0x10000

# group: the NFLOG group; indev: ifindex the packet came in on (0: none);
# payload: the IP packet, up to the copy range
LogCopy = namedtuple("LogCopy", "group indev payload")

_NFGENMSG = struct.Struct("!BBH")
_BE32 = struct.Struct("!I")
_TYPE = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET


def parse(data, length=None):
    """The LogCopys in one datagram DATA read from the socket."""
    out = []
    end = len(data) if length is None else length
    pos = 0
    while pos + 20 <= end:
        mlen, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if mlen < 16 or pos + mlen > end:
            break
        if mtype == _TYPE:
            group = _NFGENMSG.unpack_from(data, pos + 16)[2]
            attrs = attributes(data, pos + 20, pos + mlen)
            indev = attrs.get(NFULA_IFINDEX_INDEV)
            out.append(LogCopy(group, _BE32.unpack(indev)[0] if indev else 0, bytes(attrs.get(NFULA_PAYLOAD, b""))))
        pos += (mlen + 3) & ~3
    return out


class LogSocket(object):
    """The listener of NFLOG GROUPS in the calling thread's namespace.
    Non-blocking: a loop polls ``fileno()`` and calls ``receive()``."""

    def __init__(self, groups, copy_range=COPY_RANGE, rcvbuf=RCVBUF):
        self.groups = tuple(groups)
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self.overflows = 0
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise NfqueueError("cannot open a netfilter netlink socket: %s" % exc, exc.errno)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, 0))
            self.sock.settimeout(5.0)
            for seq, group in enumerate(self.groups, 1):
                self._configure(group, seq, [_attr(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND))])
                self._configure(group, seq, [
                    _attr(NFULA_CFG_MODE, struct.pack("!IBx", copy_range, NFULNL_COPY_PACKET)),
                    _attr(NFULA_CFG_QTHRESH, _BE32.pack(1)),
                    _attr(NFULA_CFG_TIMEOUT, _BE32.pack(0)),
                ])
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def _configure(self, group, seq, attrs):
        configure(self.sock, self._buf, NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG, group, attrs, seq,
                  "bind NFLOG group %d" % group)

    def fileno(self):
        return self.sock.fileno()

    def receive(self, limit=64):
        """The copies waiting, from at most LIMIT datagrams ([] if none). A
        socket that overflowed (the kernel dropped copies: ENOBUFS) is
        counted in ``overflows`` and read on."""
        def overflowed():
            self.overflows += 1
        return read_datagrams(self.sock, self._buf, self._view, parse, limit, "NFLOG", overflowed)

    def close(self):
        self.sock.close()
