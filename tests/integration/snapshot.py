"""What a namespace looks like, for 'nothing changed' assertions: links,
addresses, routes, iptables-legacy-save (counters and comments of the dump
stripped; tables the kernel instantiated empty count as absent), ipsets and
the product's namespaces."""

import re
import subprocess


def _run(ns_path, argv):
    return subprocess.run(["nsenter", "--net=" + ns_path, *argv], capture_output=True, text=True,
                          check=True, timeout=20).stdout


def iptables(ns_path):
    text = _run(ns_path, ["iptables-legacy-save"])
    tables, current = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("*"):
            current = line
            tables[current] = []
            continue
        if line == "COMMIT":
            continue
        tables[current].append(re.sub(r"\[\d+:\d+\]", "", line))
    def empty(lines):
        return all(l.startswith(":") and l.split()[1] == "ACCEPT" for l in lines)
    return "\n".join("%s\n%s" % (t, "\n".join(lines)) for t, lines in sorted(tables.items()) if not empty(lines))


def ipsets(ns_path):
    return sorted(_run(ns_path, ["ipset", "list", "-n"]).split())


def links(ns_path):
    return sorted(re.sub(r"^\d+: ", "", l).split(":")[0].split("@")[0]
                  for l in _run(ns_path, ["ip", "-o", "link"]).splitlines())


def addresses(ns_path):
    return sorted(l.split()[1] + " " + l.split()[3] for l in _run(ns_path, ["ip", "-o", "-4", "addr"]).splitlines())


def routes(ns_path):
    # IPv6 link-local addresses appear on their own once duplicate address
    # detection ends (the sandbox's uplink is seconds old): not our change.
    return sorted(l for l in _run(ns_path, ["ip", "route", "show", "table", "all"]).splitlines()
                  if not l.startswith("local fe80::"))


def vm_connections(ns_path):
    """Tracked connections that involve a VM address (172.16.0.0/16)."""
    out = subprocess.run(["nsenter", "--net=" + ns_path, "conntrack", "-L"], capture_output=True, text=True,
                         timeout=20).stdout
    return sorted(" ".join(w for w in line.split() if w.startswith(("src=", "dst=", "sport=", "dport=")))
                  for line in out.splitlines() if "=172.16." in line)


def product_namespaces(prefix):
    """The product's namespaces for VMs of this sandbox (ids carry its prefix;
    other sandboxes may run at the same time)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(l.split()[0] for l in out.splitlines() if l.startswith("vmsan-" + prefix))


def host(sandbox):
    path = sandbox.host.path
    return {"links": links(path), "addresses": addresses(path), "routes": routes(path),
            "iptables": iptables(path), "ipsets": ipsets(path),
            "connections": vm_connections(path), "namespaces": product_namespaces(sandbox.prefix)}


def state_files(sandbox):
    import os
    root = os.path.join(sandbox.home, "vms")
    if not os.path.isdir(root):
        return {}
    out = {}
    for name in sorted(os.listdir(root)):
        with open(os.path.join(root, name)) as handle:
            out[name] = handle.read()
    return out


def diff(before, after):
    """Readable differences between two snapshots ({} when equal)."""
    out = {}
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            out[key] = {"gone": sorted(set(a) - set(b)), "new": sorted(set(b) - set(a))}
        elif isinstance(a, str) and isinstance(b, str):
            la, lb = a.splitlines(), b.splitlines()
            out[key] = {"gone": [l for l in la if l not in lb], "new": [l for l in lb if l not in la]}
        else:
            out[key] = {"before": a, "after": b}
    return out
