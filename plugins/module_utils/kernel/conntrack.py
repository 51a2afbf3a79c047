"""Tracked connections of one address, in the calling thread's network
namespace, through pyroute2's conntrack socket and the kernel's own dump
filter (CTA_FILTER): the kernel sends only the entries that match, instead
of every entry of the namespace, each decoded by pyroute2 (~0.45 ms an
entry: with 2000 other connections on the host a whole-table dump took
0.9-1.8 s, two filtered dumps ~20 ms; docs/performance.md, "Remove").

Every dump walks the kernel's hash table, which all namespaces share
(262144 buckets here: ~3.5 ms, empty or not), so the namespace's entry count
(a statistics request, no walk) is asked first: with none, no dump at all.
"""

from .third_party import pyroute2_submodules

# An endpoint's connections: those it opened have it as the original
# direction's source; those opened to it (published ports after DNAT, or
# straight to its address) as the reply's source. An entry that names the
# address only as a NAT rewrite of someone else's connection would need
# a rule vmsan never makes.
FIELDS = (("tuple_orig", "saddr"), ("tuple_reply", "saddr"))


def _key(entry):
    t = entry.tuple_orig
    return (t.proto, t.saddr, t.daddr, t.sport, t.dport, t.icmp_id, t.icmp_type, t.icmp_code, getattr(entry, "zone", None))


def of_address(address):
    """The connections of endpoint ADDRESS, each once (pyroute2
    ConntrackEntry objects)."""
    pyroute2_submodules()
    from pyroute2.conntrack import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
    ct = Conntrack()
    try:
        if not ct.count():
            return []
        found = {}
        for direction, field in FIELDS:
            for entry in ct.dump_entries(**{direction: NFCTAttrTuple(**{field: address})}):
                found.setdefault(_key(entry), entry)
        return list(found.values())
    finally:
        ct.close()
