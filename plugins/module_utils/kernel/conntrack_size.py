"""How full the conntrack table of this namespace is, and its limit
(``nf_conntrack_max``), in one ctnetlink request (``conntrack_wire``):
the host-wide cap on VM flows is set from the limit (plan.firewall). Not
through /proc/sys, whose lookups grow with the number of namespaces
(sysctl.py), nor through pyroute2's Conntrack (~25 ms of imports).
"""

from collections import namedtuple

from ..model.errors import KernelError
from .conntrack_wire import parse_stats, stats_message
from .netlink_wire import NETLINK_NETFILTER, NLMSG_ERROR, NetlinkSocket, error_of

TableSize = namedtuple("TableSize", "entries limit")


def table_size():
    """TableSize of the calling thread's namespace."""
    with NetlinkSocket(NETLINK_NETFILTER, "read the conntrack table's size") as sock:
        mtype, message = sock.exchange(stats_message(1), 1)
    if mtype == NLMSG_ERROR:
        raise KernelError(error_of(message), "read the conntrack table's size (is nf_conntrack loaded?)")
    entries, limit = parse_stats(message)
    if limit is None:
        raise KernelError(None, "read the conntrack table's size", "the kernel's answer has no limit")
    return TableSize(entries or 0, limit)
