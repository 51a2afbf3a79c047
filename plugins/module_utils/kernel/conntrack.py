"""Tracked connections (conntrack) through pyroute2, in the network
namespace of the calling thread: the one place that reads and deletes them.

pyroute2's NetlinkError becomes a KernelError saying what was being done; a
delete of an entry that ended meanwhile (ENOENT) is no error.

Reads go through the kernel's own dump filter (CTA_FILTER): the kernel sends
only the entries that match, instead of every entry of the namespace, each
decoded by pyroute2 (~0.45 ms an entry: with 2000 other connections on the
host a whole-table dump took 0.9-1.8 s, two filtered dumps ~20 ms;
docs/performance.md, "Remove"). Every dump walks the kernel's hash table,
which all namespaces share (262144 buckets here: ~3.5 ms, empty or not), so
``of_address`` asks the namespace's entry count first (``tracked_count``: a
statistics request, no walk): with none, no dump at all. The count goes
over netlink_wire (pyroute2's message class, one request and its answer,
~0.1 ms) rather than pyroute2's Conntrack socket, whose asyncio start and
request cost ~1.5 ms: a policy change on a VM without connections opens no
such socket.

pyroute2's conntrack socket (~25 ms of imports) is imported when first used.
"""

import errno

from ..model.errors import KernelError
from .netlink_wire import NETLINK_NETFILTER, NLMSG_ERROR, NetlinkSocket, error_of
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTNETLINK, nfgen_msg
except ImportError:  # the faces name the missing library (missing_required_lib)
    NetlinkError = ()
    nfgen_msg = object

# linux/netfilter/nfnetlink_conntrack.h. pyroute2 names both in
# nfnetlink.nfctsocket, whose import brings its asyncio socket core (~15 ms):
# the count needs neither.
IPCTNL_MSG_CT_GET_STATS = 5


class _stats_msg(nfgen_msg):
    """The answer to IPCTNL_MSG_CT_GET_STATS: CTA_STATS_GLOBAL_*."""
    nla_map = (("CTA_STATS_GLOBAL_UNSPEC", "none"), ("CTA_STATS_GLOBAL_ENTRIES", "be32"),
               ("CTA_STATS_GLOBAL_MAX_ENTRIES", "be32"))


# An endpoint's connections: those it opened have it as the original
# direction's source; those opened to it (published ports after DNAT, or
# straight to its address) as the reply's source. An entry that names the
# address only as a NAT rewrite of someone else's connection would need
# a rule vmsan never makes.
ENDPOINT_FIELDS = (("orig", "saddr"), ("reply", "saddr"))


class Table(object):
    """The conntrack table of this namespace, over one netlink socket."""

    def __init__(self):
        from pyroute2.conntrack import Conntrack
        try:
            self.ct = Conntrack()
        except NetlinkError as exc:
            raise KernelError(exc.code, "open the conntrack table")

    def close(self):
        self.ct.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def count(self):
        """How many connections this namespace tracks (no table walk)."""
        try:
            return self.ct.count()
        except NetlinkError as exc:
            raise KernelError(exc.code, "count the tracked connections")

    def entries(self, orig=None, reply=None):
        """The tracked connections, filtered in the kernel by the fields of
        ORIG and REPLY ({"saddr": ..., "daddr": ...}) when given."""
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
        kwargs = {}
        if orig:
            kwargs["tuple_orig"] = NFCTAttrTuple(**orig)
        if reply:
            kwargs["tuple_reply"] = NFCTAttrTuple(**reply)
        try:
            return list(self.ct.dump_entries(**kwargs))
        except NetlinkError as exc:
            raise KernelError(exc.code, "read the tracked connections")

    def of_address(self, address):
        """The connections of endpoint ADDRESS, each once."""
        found = {}
        for direction, field in ENDPOINT_FIELDS:
            for entry in self.entries(**{direction: {field: address}}):
                found.setdefault(_key(entry), entry)
        return list(found.values())

    def delete(self, entries):
        """Delete ENTRIES; those that ended meanwhile are skipped."""
        for entry in entries:
            try:
                self.ct.entry("del", tuple_orig=entry.tuple_orig)
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:
                    raise KernelError(exc.code, "delete the tracked connection %s:%s -> %s:%s"
                                      % (entry.tuple_orig.saddr, entry.tuple_orig.sport,
                                         entry.tuple_orig.daddr, entry.tuple_orig.dport))


STATS_SEQ = 1


def count_request():
    """The bytes of ctnetlink's IPCTNL_MSG_CT_GET_STATS (what ``conntrack
    -C`` asks): the namespace's entry count, without walking the table. Pure."""
    msg = _stats_msg()
    msg["header"]["type"] = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = STATS_SEQ
    msg.encode()
    return bytes(msg.data)


def tracked_count():
    """How many connections this namespace tracks."""
    with NetlinkSocket(NETLINK_NETFILTER, "conntrack count") as sock:
        mtype, data = sock.exchange(count_request(), STATS_SEQ)
    if mtype == NLMSG_ERROR:
        raise KernelError(error_of(data), "count the tracked connections")
    answer = _stats_msg(data)
    answer.decode()
    return answer.get_attr("CTA_STATS_GLOBAL_ENTRIES") or 0


def _key(entry):
    t = entry.tuple_orig
    return (t.proto, t.saddr, t.daddr, t.sport, t.dport, t.icmp_id, t.icmp_type, t.icmp_code,
            getattr(entry, "zone", None))


def of_address(address):
    """The connections of endpoint ADDRESS in this namespace, each once
    (pyroute2 ConntrackEntry objects); no dump, and no pyroute2 socket,
    when the namespace tracks none."""
    if not tracked_count():
        return []
    with Table() as table:
        return table.of_address(address)
