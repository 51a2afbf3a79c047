"""Where a VM's firewall drops, by reason, and the copies of dropped
packets the kernel hands the daemon (docs/operator.md, "Counters" and "The
event log"). Pure: rules as iptables-save tokens, like plan.firewall.

Every rule of a VM's chains that drops on the guest's behalf jumps to the
chain of its reason instead of to DROP: ``-d 172.16.0.0/16 -j
VMSAN-DROP-ISOLATION``. That jump rule's counters are the VM's count of
drops for that reason (``vmsan show``, the metrics: read from the rule, no
log needed), and the chain, one per reason in each namespace that holds
TAPs, is

    -m limit --limit 20/sec --limit-burst 50 -j NFLOG --nflog-group 3017 --nflog-threshold 1
    -j DROP

so the kernel copies at most that many of a namespace's drops a second to
the reason's NFLOG group (``GROUPS``; the daemon's event log reads them: a
flood costs it at most the limit), whatever the guest sends. The group, not
a prefix, names the reason: python-iptables 1.2.0 crashes encoding
``--nflog-prefix``, and one netlink socket binds every group anyway.

A VM with its own namespace has its own chains, so its limit is its own.
The host namespace's chains (the host's guard that keeps every guest off the
host's addresses, and ``--no-netns`` VMs) are shared: there one guest's
flood can use up the copies of a second for the others (their drops are
still counted exactly, by their own rules). ``hashlimit`` per source would
share fairly, but python-iptables 1.2.0 encodes it with an expiry of 0,
which the kernel refuses.

Audit mode (a custom policy with ``audit``): what the lists would drop
jumps to ``VMSAN-AUDIT-POLICY`` instead, which copies the first packet of
each connection (conntrack NEW, same limit) to the audit group and accepts
it; what the name guard's chain would drop without asking the guard (UDP
to a port no ``/udp`` entry names, other protocols) jumps to
``VMSAN-AUDIT-GUARD`` the same way (the guard's own verdicts in audit mode
are its "would refuse" decisions, plan/name_guard.py).

IPv6 has no rule: the kernel drops it on the TAP before netfilter sees it
(IPv6 is off there); its count is the TAP's Ip6InDiscards and its copies
come from a packet socket (telemetry).
"""

from ..model import events

LIMIT_PER_SECOND = 20       # copies a second per reason and namespace (per source in the host's)
LIMIT = "%d/sec" % LIMIT_PER_SECOND
BURST = 50

DROP_CHAINS = {
    "policy": "VMSAN-DROP-POLICY",
    "isolation": "VMSAN-DROP-ISOLATION",
    "spoofed": "VMSAN-DROP-SPOOFED",
    "dns_elsewhere": "VMSAN-DROP-DNS",
    "guard": "VMSAN-DROP-GUARD",
}
AUDIT_CHAINS = {"policy": "VMSAN-AUDIT-POLICY", "guard": "VMSAN-AUDIT-GUARD"}
# the table each chain lives in: anti-spoofing runs in raw, the rest in filter
_RAW_REASONS = ("spoofed",)
_REASON_OF_CHAIN = {chain: (reason, events.REFUSED) for reason, chain in DROP_CHAINS.items()}
_REASON_OF_CHAIN.update({chain: (reason, events.WOULD_REFUSE) for reason, chain in AUDIT_CHAINS.items()})
# NFLOG groups of the copies, the same in every namespace: (reason, verdict) -> group
GROUPS = {("policy", events.REFUSED): 3017, ("isolation", events.REFUSED): 3018,
          ("spoofed", events.REFUSED): 3019, ("dns_elsewhere", events.REFUSED): 3020,
          ("guard", events.REFUSED): 3021, ("policy", events.WOULD_REFUSE): 3022,
          ("guard", events.WOULD_REFUSE): 3023}
_OF_GROUP = {group: key for key, group in GROUPS.items()}


def drop(reason):
    """The target of a rule that drops for REASON (one of events.DROP_REASONS)."""
    return ("-j", DROP_CHAINS[reason])


def let_through(reason):
    """The target of a rule that would drop for REASON in audit mode."""
    return ("-j", AUDIT_CHAINS[reason])


def table_of(reason):
    return "raw" if reason in _RAW_REASONS else "filter"


def reason_of(chain):
    """(reason, verdict) of a jump to CHAIN, or None if CHAIN is no reason's."""
    return _REASON_OF_CHAIN.get(chain)


def of_group(group):
    """(reason, verdict) of the copies of NFLOG group GROUP, else None."""
    return _OF_GROUP.get(group)


def _limit():
    return ("-m", "limit", "--limit", LIMIT, "--limit-burst", str(BURST))


def _copy(reason, verdict):
    return ("-j", "NFLOG", "--nflog-group", str(GROUPS[(reason, verdict)]), "--nflog-threshold", "1")


def chain_rules(reason):
    """The rules of REASON's drop chain: a limited copy, then DROP."""
    return [_limit() + _copy(reason, events.REFUSED), ("-j", "DROP")]


def audit_rules(reason):
    """The rules of REASON's audit chain: a limited copy of each new
    connection's first packet, then ACCEPT."""
    return [("-m", "conntrack", "--ctstate", "NEW") + _limit() + _copy(reason, events.WOULD_REFUSE),
            ("-j", "ACCEPT")]


def with_chains(owned):
    """OWNED ({(table, chain): rules}) with the drop and audit chains its
    rules jump to, each in its reason's table. Only chains that are jumped
    to are added: an allow-all VM gets no policy chain."""
    out = dict(owned)
    for rules in owned.values():
        for rule in rules:
            if len(rule) < 2 or rule[-2] != "-j":
                continue
            found = reason_of(rule[-1])
            if found is None:
                continue
            reason, verdict = found
            key = (table_of(reason), rule[-1])
            if key not in out:
                out[key] = (audit_rules if verdict == events.WOULD_REFUSE else chain_rules)(reason)
    return out
