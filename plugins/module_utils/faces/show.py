"""Rendering of what ``vmsan show`` read from the kernel (telemetry.inspect):
counters, learned addresses, set members, and the rules as iptables-save
text with the kernel's counters."""

from ..model.events import DROP_REASONS


def _counters_lines(counters):
    if counters is None:
        return ["counters:  (the VM's namespace is gone)"]
    sent, received = counters["sent"], counters["received"]
    lines = ["counters:  sent by the guest %d bytes, %d packets; received %d bytes, %d packets"
             % (sent["bytes"], sent["packets"], received["bytes"], received["packets"]),
             "dropped:   " + ", ".join("%s %d" % (r, counters["dropped"].get(r, 0)) for r in DROP_REASONS)]
    if counters["would_refuse"]:
        lines.append("audit:     would refuse " + ", ".join("%s %d" % kv for kv in sorted(counters["would_refuse"].items())))
    return lines


def show_text(version, seen):
    """The part of ``vmsan show`` below the facts."""
    lines = ["policy version: %s" % version]
    lines += _counters_lines(seen["counters"])
    if seen["learned"]:
        lines.append("learned addresses (address, name, seconds left):")
        lines += ["  %-15s %s %s" % (m["address"], m["name"] or "?", m["expires_in"]) for m in seen["learned"]]
    for role, label in (("allow", "allowed CIDR set"), ("deny", "denied CIDR set")):
        if role in seen["sets"]:
            lines.append("%s: %s" % (label, ",".join(seen["sets"][role]) or "(empty)"))
    lines.append("")
    lines.append("rules in the kernel ([packets:bytes], iptables-save form):")
    for where in ("vm_namespace", "host_namespace"):
        text = seen["rules"].get(where)
        if text:
            lines.append("# %s" % where.replace("_", " "))
            lines.append(text.rstrip("\n"))
    return "\n".join(lines)
