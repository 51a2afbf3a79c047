"""What ``vmsan show`` reads from the kernel about one VM (docs/operator.md,
"vmsan show"): its counters, the addresses it learned (and when each
expires), the members of its CIDR sets, and its rules as iptables-save text
with the kernel's counters.

A rule is printed as the plan's tokens when the kernel's entry is the
planned rule byte for byte (the comparison ``kernel.iptables`` makes when it
applies a plan), so the text is what ``vmsan`` wrote and what the Ansible
diff shows; an entry that matches no planned rule is printed by its target
and flagged, and a planned rule the kernel lacks is listed as missing.
"""

from ..kernel import iptables
from ..kernel import netns as ns
from ..kernel.ipsets import SetManager
from ..plan import firewall as fp
from . import counters as C


def _rule_lines(chain, kernel_rules, planned):
    """iptables-save -c lines of CHAIN: KERNEL_RULES (KernelRules) matched
    against PLANNED (tokens) by key."""
    by_key = {}
    for tokens in planned:
        try:
            by_key.setdefault(iptables.encode(tokens).key, tokens)
        except Exception:       # a rule whose set is missing cannot be encoded: it cannot match either
            continue
    lines, seen = [], set()
    for rule in kernel_rules:
        packets, size = rule.counters
        tokens = by_key.get(rule.key)
        if tokens is not None:
            seen.add(tokens)
            lines.append("[%d:%d] -A %s %s" % (packets, size, chain, " ".join(tokens)))
        else:
            lines.append("[%d:%d] -A %s ... -j %s  # not vmsan's plan" % (packets, size, chain, rule.label or "?"))
    for tokens in planned:
        if tokens not in seen:
            lines.append("# missing: -A %s %s" % (chain, " ".join(tokens)))
    return lines


def _chains_text(plan, vm_id, own_only=False):
    """The iptables-save text of PLAN's chains (owned; OWN_ONLY: only the
    VM's, not the host's shared ones) and VM_ID's members of shared chains,
    as the kernel of this thread's namespace has them."""
    tag = "vmsan:%s" % vm_id
    own = set(fp.vm_chains(vm_id)) | {fp.chain_name(vm_id, C.GUARD_ROLE)}
    out = []
    for table in fp.TABLES:
        owned = {c: r for (t, c), r in plan.owned.items() if t == table and (c in own or not own_only)}
        members = {c: r for (t, c), r in plan.members.items() if t == table}
        names = sorted(set(owned) | set(members))
        if not names:
            continue
        kernel = iptables.read_chains(table, names)
        out.append("*" + table)
        for chain in sorted(members):
            mine = [r for r in kernel.get(chain, []) if r.comment == tag]
            out += _rule_lines(chain, mine, members[chain])
        for chain in sorted(owned):
            if chain not in kernel:
                out.append("# missing chain :%s" % chain)
                continue
            out.append(":%s" % chain)
            out += _rule_lines(chain, kernel[chain], owned[chain])
    return "\n".join(out) + "\n" if out else ""


def _sets(record):
    learned, networks = [], {}
    with SetManager() as sets:
        for role in ("allow", "deny"):
            name = fp.set_name(record.id, role)
            if sets.exists(name):
                networks[role] = sorted(sets.networks(name))
        name = fp.set_name(record.id, "dns")
        if sets.exists(name):
            for member in sorted(sets.members(name), key=lambda m: m["address"]):
                learned.append({"address": member["address"], "name": member["comment"],
                                "expires_in": member["timeout"]})
    return learned, networks


def inspect(record):
    """{counters, learned, sets, rules} of RECORD (a VmRecord) as the kernel
    has them: ``rules`` is {"vm_namespace" / "host_namespace": text}."""
    vm_plan, host_plan = fp.plans_for(record)
    found = C.read([record]).get(record.id)
    out = {"counters": found.as_dict() if found else None, "learned": [], "sets": {}, "rules": {}}
    if record.netns is None:
        out["learned"], out["sets"] = _sets(record)
    elif ns.exists(record.netns):
        with ns.entered(record.netns):
            out["learned"], out["sets"] = _sets(record)
            out["rules"]["vm_namespace"] = _chains_text(vm_plan, record.id)
    out["rules"]["host_namespace"] = _chains_text(host_plan, record.id, own_only=True)
    return out
