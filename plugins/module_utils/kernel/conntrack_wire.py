"""A conntrack entry deleted by its original tuple, as one ctnetlink message
(``IPCTNL_MSG_CT_DELETE``) packed with ``struct``, to be sent on any
``NETLINK_NETFILTER`` socket of the entry's namespace. The name guard sends
it on its queue socket right after refusing a TCP flow: the reset towards
the guest does not end the kernel's entry (a reset made by REJECT is not
tracked), which would otherwise stay ESTABLISHED for days, hold a slot of
the conntrack table and keep refusing the guest's next connection on the
same ports. pyroute2's ``Conntrack`` does the same in about a millisecond
through its event loop (lifecycle/policy.py uses it where speed does not
matter); this costs an encoding of a few microseconds.
"""

import socket
import struct

from .netlink_wire import attr as _attr

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST = 1
NLA_F_NESTED = 0x8000
CTA_TUPLE_ORIG = 1
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3


def delete_message(proto, src, sport, dst, dport):
    """The bytes of a request to delete the IPv4 entry whose original
    direction is SRC:SPORT -> DST:DPORT over PROTO (6 or 17). No ack is
    asked for; a missing entry comes back as an ENOENT error message, which
    a reader may ignore."""
    ip = _attr(CTA_TUPLE_IP | NLA_F_NESTED,
               _attr(CTA_IP_V4_SRC, socket.inet_aton(src)) + _attr(CTA_IP_V4_DST, socket.inet_aton(dst)))
    ports = _attr(CTA_TUPLE_PROTO | NLA_F_NESTED,
                  _attr(CTA_PROTO_NUM, struct.pack("B", proto))
                  + _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", sport))
                  + _attr(CTA_PROTO_DST_PORT, struct.pack("!H", dport)))
    body = struct.pack("!BBH", socket.AF_INET, 0, 0) + _attr(CTA_TUPLE_ORIG | NLA_F_NESTED, ip + ports)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
                       NLM_F_REQUEST, 0, 0) + body


# -- the table's size: IPCTNL_MSG_CT_GET_STATS (linux/netfilter/nfnetlink_conntrack.h)
IPCTNL_MSG_CT_GET_STATS = 5
CTA_STATS_GLOBAL_ENTRIES = 1
CTA_STATS_GLOBAL_MAX_ENTRIES = 2


def stats_message(seq=1):
    """The bytes of a request for the namespace's entry count and the
    table's limit (nf_conntrack_max)."""
    body = struct.pack("!BBH", socket.AF_INET, 0, 0)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS,
                       NLM_F_REQUEST, seq, 0) + body


def parse_stats(message):
    """(entries, max entries) of a stats answer (the whole netlink message)."""
    values = {}
    pos = 16 + 4                        # nlmsghdr, nfgenmsg
    while pos + 4 <= len(message):
        length, atype = struct.unpack_from("=HH", message, pos)
        if length < 4:
            break
        if length >= 8:
            values[atype & 0x3FFF] = struct.unpack_from("!I", message, pos + 4)[0]
        pos += (length + 3) & ~3
    return values.get(CTA_STATS_GLOBAL_ENTRIES), values.get(CTA_STATS_GLOBAL_MAX_ENTRIES)
