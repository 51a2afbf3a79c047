#!/usr/bin/env python3
"""What a no-change run of the site playbook costs as a host's VM list grows.

On one sandbox machine (a throwaway host network namespace; nothing touches
this machine's own network) the site playbook (vmsan_host, then vmsan_vms)
converges 0, 1, 10 and 100 VMs; for each size the second and later runs,
which change nothing, are timed. The 0-VM run is Ansible's fixed cost
(process start, inventory, the host role, the empty loop), measured in the
same session, and the time per VM is what each VM adds beyond it.

    sudo .venv/bin/python bench/ansible_bench.py [--sizes 1,10,100] [--repeat 3] [--no-docs]

Prints a table and writes it into docs/ansible.md (between the
``bench:ansible`` markers) unless --no-docs.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

from sandbox import machines as vs

REPO = vs.REPO_ROOT

SITE = os.path.join(REPO, "playbooks", "site.yml")
DOC = os.path.join(REPO, "docs", "ansible.md")
START, END = "<!-- bench:ansible:start -->", "<!-- bench:ansible:end -->"


def vm_list(prefix, count):
    """COUNT VMs with a mix of the three policies and a published port on
    every tenth, so the run compares every kind of rule the kernel holds."""
    vms = []
    for i in range(count):
        vm = {"name": "%s-v%d" % (prefix, i)}
        if i % 3 == 1:
            vm["network_policy"] = "deny-all"
        elif i % 3 == 2:
            vm["allowed_cidrs"] = ["203.0.113.0/24"]
            vm["denied_cidrs"] = ["203.0.113.11"]
        if i % 10 == 0:
            vm["published_ports"] = ["%d:80" % (20000 + i)]
        vms.append(vm)
    return vms


def timed_run(inventory):
    began = time.monotonic()
    result = vs.run_playbook(SITE, inventory)
    elapsed = time.monotonic() - began
    recap = vs.recap(result.stdout).get("h1")
    if result.returncode != 0 or recap is None or recap["failed"]:
        sys.stderr.write(result.stdout[-4000:])
        raise SystemExit("the site playbook failed")
    return elapsed, recap["changed"]


def measure(sizes, repeat, workdir):
    rows = []
    with contextlib.ExitStack() as stack:
        (machine, _sandbox), = vs.start_machines(1, workdir, stack)
        for size in [0] + sizes:
            inventory = vs.write_inventory(
                os.path.join(workdir, "inventory-%d.yml" % size),
                vs.inventory([machine], extra_group_vars={"vmsan_vms_prune": True},
                             per_host=lambda m, n=size: {"vmsan_vms": vm_list(m["prefix"], n)}))
            converge, changed = timed_run(inventory)
            times = []
            for _run in range(repeat):
                elapsed, changed_again = timed_run(inventory)
                if changed_again:
                    raise SystemExit("a second run with %d VMs changed %d tasks" % (size, changed_again))
                times.append(elapsed)
            rows.append({"vms": size, "converge": converge, "changed": changed, "median": statistics.median(times),
                         "min": min(times), "max": max(times)})
            print("%4d VMs: converge %.1f s, no-change runs %s s" % (size, converge,
                                                                     ", ".join("%.1f" % t for t in times)),
                  file=sys.stderr)
    return rows


def table(rows, repeat):
    base = rows[0]["median"]
    lines = ["| VMs | converge run (s) | no-change run, median of %d (s) | beyond the fixed cost (s) | per VM (s) |"
             % repeat, "| ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        extra = row["median"] - base
        per_vm = "%.3f" % (extra / row["vms"]) if row["vms"] else "-"
        lines.append("| %d | %.1f | %.2f (%.2f-%.2f) | %s | %s |" % (
            row["vms"], row["converge"], row["median"], row["min"], row["max"],
            "%.2f" % extra if row["vms"] else "fixed cost", per_vm))
    sized = [r for r in rows if r["vms"]]
    if len(sized) >= 2:
        xs, ys = [r["vms"] for r in rows], [r["median"] for r in rows]
        mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
        lines.append("")
        lines.append("Least-squares slope over all sizes: %.3f s per VM; fixed cost (0 VMs): %.2f s." % (slope, base))
    return "\n".join(lines)


def write_doc(text, command):
    with open(DOC) as handle:
        doc = handle.read()
    if START not in doc or END not in doc:
        raise SystemExit("%s has no %s ... %s markers" % (DOC, START, END))
    head, rest = doc.split(START, 1)
    tail = rest.split(END, 1)[1]
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    body = "\n%s\n\nMeasured %s on this project's 2-core machine with `%s`.\n" % (text, stamp, command)
    with open(DOC, "w") as handle:
        handle.write(head + START + body + END + tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="1,10,100", help="VM counts, comma-separated (default 1,10,100)")
    parser.add_argument("--repeat", type=int, default=3, help="no-change runs per size (default 3)")
    parser.add_argument("--no-docs", action="store_true", help="do not write the table into docs/ansible.md")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it builds a sandbox network namespace)")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="vmsan-ansible-bench-") as workdir:
        rows = measure(sizes, args.repeat, workdir)
    text = table(rows, args.repeat)
    print(text)
    if not args.no_docs:
        command = "bench/ansible_bench.py --sizes %s --repeat %d" % (",".join(map(str, sizes)), args.repeat)
        write_doc(text, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
