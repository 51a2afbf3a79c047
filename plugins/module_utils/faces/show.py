"""Rendering of the kernel's rules of a VM for ``vmsan show``."""


def _rule_text(rule):
    parts = []
    for key in ("src", "dst", "protocol", "in-interface", "out-interface"):
        if key in rule:
            parts.append("%s=%s" % (key, rule[key]))
    for key, value in sorted(rule.items()):
        if key in ("src", "dst", "protocol", "in-interface", "out-interface", "target"):
            continue
        parts.append("%s%s" % (key, value))
    target = rule.get("target")
    parts.append("-> %s" % (target if isinstance(target, str) else target))
    return " ".join(parts)


def rules_text(kernel_rules):
    lines = []
    for where, tables in sorted(kernel_rules.items()):
        for table, chains in sorted(tables.items()):
            for chain, rules in sorted(chains.items()):
                if not rules and where == "host_namespace":
                    continue
                lines.append("%s %s %s:" % (where, table, chain))
                lines.extend("  " + _rule_text(r) for r in rules)
    return "\n".join(lines) if lines else "(none)"
