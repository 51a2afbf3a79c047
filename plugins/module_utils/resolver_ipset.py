"""Adding a learned address to a VM's ``dns`` set, fast.

The resolver adds an address to the set *before* it answers the guest (so
the guest can never connect to an address the firewall does not know yet),
so the add sits on the answer's path. pyroute2's IPSet takes about half a
millisecond per add (it runs an event loop per call); one netlink message on
a plain socket takes a few microseconds. This module builds that one message
(IPSET_CMD_ADD with address, timeout and comment, "exist" semantics so a
second add refreshes timeout and comment) and reads the kernel's ack.
Everything else about sets (create, list, forget) stays with
``ipsets.SetManager``.

Like every netlink socket, a LearnSocket belongs to the network namespace of
the thread that opened it, for its whole life.
"""

import errno
import os
import socket
import struct
import threading

NETLINK_NETFILTER = 12
NFNL_SUBSYS_IPSET = 6
IPSET_CMD_ADD = 9
IPSET_PROTOCOL = 6          # the oldest protocol every ipset kernel accepts

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000

IPSET_ATTR_PROTOCOL = 1
IPSET_ATTR_SETNAME = 2
IPSET_ATTR_DATA = 7
IPSET_ATTR_IP = 1
IPSET_ATTR_IPADDR_IPV4 = 1
IPSET_ATTR_TIMEOUT = 6
IPSET_ATTR_COMMENT = 26
IPSET_MAX_COMMENT_SIZE = 255

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")


def _attr(kind, payload):
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * ((4 - size % 4) % 4)


def add_message(seq, set_name, address, timeout, comment):
    """The netlink message that adds ADDRESS to SET_NAME (pure; for tests)."""
    ip = _attr(IPSET_ATTR_IP | NLA_F_NESTED,
               _attr(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, socket.inet_aton(address)))
    data = ip + _attr(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, struct.pack("!I", int(timeout)))
    if comment:
        text = comment.encode("ascii", "replace")[:IPSET_MAX_COMMENT_SIZE - 1]
        data += _attr(IPSET_ATTR_COMMENT, text + b"\0")
    body = (_NFGENMSG.pack(socket.AF_INET, 0, 0)
            + _attr(IPSET_ATTR_PROTOCOL, struct.pack("=B", IPSET_PROTOCOL))
            + _attr(IPSET_ATTR_SETNAME, set_name.encode() + b"\0")
            + _attr(IPSET_ATTR_DATA | NLA_F_NESTED, data))
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_ADD,
                            NLM_F_REQUEST | NLM_F_ACK, seq, 0)
    return header + body


class LearnSocket(object):
    """One netfilter netlink socket in the namespace it was opened in."""

    def __init__(self, timeout=1.0):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.settimeout(timeout)
        self._seq = 0
        self._lock = threading.Lock()

    def close(self):
        self.sock.close()

    def add(self, set_name, address, timeout, comment):
        """Add (or refresh) ADDRESS in SET_NAME; raises OSError with the
        kernel's error (ENOENT: no such set)."""
        with self._lock:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seq = self._seq
            self.sock.send(add_message(seq, set_name, address, timeout, comment))
            while True:
                reply = self.sock.recv(65536)
                pos = 0
                while pos + _NLMSGHDR.size <= len(reply):
                    length, kind, _flags, rseq, _pid = _NLMSGHDR.unpack_from(reply, pos)
                    if kind == NLMSG_ERROR and rseq == seq:
                        code = struct.unpack_from("=i", reply, pos + _NLMSGHDR.size)[0]
                        if code:
                            err = -code
                            raise OSError(err, "ipset add %s to %s: %s"
                                          % (address, set_name, os.strerror(err) if err < 4096 else
                                             "ipset error %d" % err))
                        return
                    if length < _NLMSGHDR.size:
                        break
                    pos += (length + 3) & ~3
                # an ack of an earlier, abandoned request: read on


def is_missing_set(exc):
    return isinstance(exc, OSError) and exc.errno == errno.ENOENT
