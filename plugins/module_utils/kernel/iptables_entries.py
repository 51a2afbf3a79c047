"""Rules as libiptc holds them: the binary ``struct ipt_entry`` of each rule,
and the key by which two rules are the same rule.

Why not python-iptables' own ``Rule`` objects for reading and comparing?
Building a ``Rule`` from a kernel entry runs every match through its xtables
"save" printer and parser (~0.1 ms a rule), and ``Chain.append_rule`` runs
the same round trip again on a rule that was just encoded. Reading the entry
bytes and comparing them takes microseconds. python-iptables still encodes
every rule (``iptables_apply.encode``); this module only reads bytes.

Layout (``linux/netfilter_ipv4/ip_tables.h``; the sizes and offsets are read
from python-iptables' ctypes structures, ``iptc_compat.LAYOUT``): ``struct
ipt_entry`` (112 bytes on x86-64) is ``struct ipt_ip`` (84 bytes: addresses,
masks, interfaces, protocol, flags, inverse flags), nfcache, target_offset
(u16 at 88), next_offset (u16 at 90), comefrom, counters (two u64 at 96:
packets, bytes, as the kernel counted them when the table was read). Matches follow,
each a 32-byte header (u16 size, name[29], revision) and its data; then the
target, same header. The key leaves out what the kernel changes or owns
(nfcache, comefrom, counters) and reads names only up to their NUL (the
kernel does not promise to clear what follows).

A standard target (ACCEPT, DROP, RETURN, or a jump to a user chain) is
compared by its label: after a commit the kernel stores a jump as an offset,
which means nothing outside that one table blob.
"""

import struct
from collections import namedtuple

from . import iptc_compat

VERDICTS = frozenset(("ACCEPT", "DROP", "RETURN", "QUEUE"))
_L = iptc_compat.LAYOUT
if _L is not None:
    ENTRY_SIZE, IP_SIZE, HEADER_SIZE = _L.entry_size, _L.ip_size, _L.header_size
    _NAME_AT, _NAME_END, _REVISION_AT, _OFFSETS_AT = _L.name_at, _L.name_at + _L.name_size, _L.revision_at, \
        _L.target_offset_at
    _COUNTERS_AT = _L.counters_at
    if _L.next_offset_at != _L.target_offset_at + 2:
        raise ImportError("python-iptables' struct ipt_entry has an unexpected layout")

_OFFSETS = struct.Struct("=HH")         # target_offset, next_offset: two u16 side by side
_SIZE = struct.Struct("=H")
_COUNTERS = struct.Struct("=QQ")       # packets, bytes

Match = namedtuple("Match", "name revision data")


def _name(raw, pos):
    return raw[pos + _NAME_AT:pos + _NAME_END].split(b"\0", 1)[0].decode("ascii", "replace")


def offsets(raw):
    """(target_offset, next_offset) of entry bytes RAW."""
    return _OFFSETS.unpack_from(raw, _OFFSETS_AT)


def match_spans(raw):
    """(name, offset, size) of each match of entry bytes RAW, in order."""
    target_offset, _next = offsets(raw)
    found, pos = [], ENTRY_SIZE
    while pos < target_offset:
        size = _SIZE.unpack_from(raw, pos)[0]
        if size < HEADER_SIZE or pos + size > target_offset:
            raise ValueError("malformed rule: match of %d bytes at offset %d" % (size, pos))
        found.append((_name(raw, pos), pos, size))
        pos += size
    return found


def matches(raw):
    """The matches of entry bytes RAW, in order, as Match tuples."""
    return [Match(name, raw[pos + _REVISION_AT], raw[pos + HEADER_SIZE:pos + size])
            for name, pos, size in match_spans(raw)]


def target_name(raw):
    """The name in the target header: a module, a verdict or a chain when
    python-iptables encoded it; empty for standard targets the kernel read."""
    return _name(raw, offsets(raw)[0])


def key(raw, label, standard):
    """What makes two rules the same: the ipt_ip part, the matches, and the
    target by LABEL, plus its revision and data unless it is STANDARD."""
    target_offset, next_offset = offsets(raw)
    target = (label,) if standard else (label, raw[target_offset + _REVISION_AT:next_offset])
    return (raw[:IP_SIZE], tuple(matches(raw)), target)


def counters(raw):
    """(packets, bytes) the kernel counted for entry bytes RAW (read from a
    table: zero in a rule we encoded)."""
    return _COUNTERS.unpack_from(raw, _COUNTERS_AT)


def comment(raw):
    """The text of the rule's ``-m comment``, or None."""
    for match in matches(raw):
        if match.name == "comment":
            return match.data.split(b"\0", 1)[0].decode("utf-8", "replace")
    return None


class KernelRule(object):
    """One rule as the open libiptc handle has it (read from the kernel)."""

    __slots__ = ("raw", "label", "standard")

    def __init__(self, raw, label):
        self.raw = raw
        self.label = label
        # libiptc stores a standard target with an empty name (the verdict or
        # jump lives in its data); a module target keeps its name.
        self.standard = target_name(raw) == ""

    @property
    def key(self):
        return key(self.raw, self.label, self.standard)

    @property
    def comment(self):
        return comment(self.raw)

    @property
    def counters(self):
        """(packets, bytes) when the table was read."""
        return counters(self.raw)


def read_chain(table, chain):
    """The rules of CHAIN in python-iptables handle TABLE, as KernelRules."""
    return [KernelRule(raw, label) for raw, label in iptc_compat.entries(table, chain)]
