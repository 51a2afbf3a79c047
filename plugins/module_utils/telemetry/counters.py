"""A VM's counters, as the kernel has them (docs/operator.md, "Counters"):
bytes and packets each way (its TAP's device counters: what the guest sent
and what it was sent), and drops by reason (the counters of the rules of its
chains that jump to a reason's chain, plan/drops.py; IPv6 from the TAP's
Ip6InDiscards; the name guard's refusals from its chain). In audit mode the
policy's "would refuse" is counted apart.

Reading costs two libiptc table reads (raw, filter) and two small /proc
reads per namespace; VMs that share the host namespace (``--no-netns``) are
read together. The rule counters start again from zero when a policy
update rewrites the VM's chains; ``Accumulator`` turns readings into totals
that only grow (what the metrics need).
"""

from dataclasses import dataclass, field
from typing import Dict

from ..kernel import iptables
from ..kernel import link_counters
from ..kernel import netns as ns
from ..model import addressing as A
from ..model import events as E
from ..model.errors import VmsanError
from ..plan import drops
from ..plan import firewall as fp

GUARD_ROLE = "guard"            # the name guard's chain of a VM (plan/name_guard.py)
_GUARD_VERDICTS = ("DROP", "REJECT")


@dataclass(frozen=True)
class VmCounters:
    vm: str
    sent_bytes: int = 0             # by the guest (its TAP received them)
    sent_packets: int = 0
    received_bytes: int = 0         # by the guest
    received_packets: int = 0
    dropped: Dict[str, int] = field(default_factory=dict)        # reason -> packets
    would_refuse: Dict[str, int] = field(default_factory=dict)   # audit mode: reason -> packets let through

    def as_dict(self):
        return {"sent": {"bytes": self.sent_bytes, "packets": self.sent_packets},
                "received": {"bytes": self.received_bytes, "packets": self.received_packets},
                "dropped": dict(self.dropped), "would_refuse": dict(self.would_refuse)}


def _chains(vm_id):
    return {"raw": [fp.chain_name(vm_id, "spoof")],
            "filter": [fp.chain_name(vm_id, role) for role in ("in", "out", GUARD_ROLE)]}


def drops_of(vm_id, chains):
    """(dropped, would_refuse) {reason: packets} of VM_ID from CHAINS
    ({chain: [KernelRule]} of its namespace, any tables)."""
    dropped = {reason: 0 for reason in E.DROP_REASONS}
    would = {}
    guard_chain = fp.chain_name(vm_id, GUARD_ROLE)
    for chain, rules in chains.items():
        for rule in rules:
            found = drops.reason_of(rule.label)
            if found is None and chain == guard_chain and rule.label in _GUARD_VERDICTS:
                found = ("guard", E.REFUSED)
            if found is None:
                continue
            reason, verdict = found
            packets = rule.counters[0]
            if verdict == E.REFUSED:
                dropped[reason] = dropped.get(reason, 0) + packets
            else:
                would[reason] = would.get(reason, 0) + packets
    return dropped, would


def _read_here(records):
    """{vm id: VmCounters} of RECORDS, whose TAPs are all in this thread's namespace."""
    wanted = {"raw": [], "filter": []}
    for record in records:
        for table, names in _chains(record.id).items():
            wanted[table].extend(names)
    kernel = {}
    for table, names in wanted.items():
        kernel.update(iptables.read_chains(table, names))
    devices = link_counters.device_counters()
    out = {}
    for record in records:
        tap = A.tap_name(record.slot)
        mine = {name: kernel[name] for names in _chains(record.id).values() for name in names if name in kernel}
        dropped, would = drops_of(record.id, mine)
        dropped["ipv6"] = link_counters.ipv6_discards(tap) or 0
        dev = devices.get(tap)
        out[record.id] = VmCounters(
            record.id, dev.rx_bytes if dev else 0, dev.rx_packets if dev else 0, dev.tx_bytes if dev else 0,
            dev.tx_packets if dev else 0, dropped, would)
    return out


def read(records):
    """{vm id: VmCounters} of RECORDS (VmRecords); a VM whose namespace is
    gone is left out."""
    out = {}
    shared = [r for r in records if r.netns is None]
    if shared:
        out.update(_read_here(shared))
    for record in records:
        if record.netns is None or not ns.exists(record.netns):
            continue
        try:
            with ns.entered(record.netns):
                out.update(_read_here([record]))
        except (OSError, VmsanError):
            continue        # removed while we read
    return out


class Accumulator(object):
    """Totals that only grow from readings that may start over (a rewritten
    chain's counters begin at zero): a reading below the last one is a new
    start, and counts whole."""

    def __init__(self):
        self._last = {}
        self._total = {}

    def add(self, key, value):
        last = self._last.get(key)
        total = self._total.get(key, 0)
        total += value if last is None or value < last else value - last
        self._last[key], self._total[key] = value, total
        return total

    def forget(self, keep):
        """Drop the keys whose first element is not in KEEP (removed VMs)."""
        for key in [k for k in self._last if k[0] not in keep]:
            del self._last[key], self._total[key]
