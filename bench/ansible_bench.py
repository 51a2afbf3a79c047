#!/usr/bin/env python3
"""What a run of the site playbook costs as a host's VM list grows: the VM
list converged in one task by the fleet module vmsan_vms (the vmsan_vms
role), against the per-VM way of 1.x (one vmsan_vm module run per VM, the
role as it was), measured in the same run on the same sandbox machine.

On one sandbox machine (a throwaway host network namespace with its own
internet; nothing touches this machine's network) the site playbook
(vmsan_host, then vmsan_vms) converges lists of 0, 10, 100 and 300 VMs (a
mix of the three policies, a published port on every tenth VM). For each
size and each way, the runs after the first change nothing and are timed
(wall and CPU of every process of the run). The 0-VM run is the fixed cost
(Ansible's start, the host role, the empty VM task); per VM is what each VM
adds beyond it, and a least-squares fit over the sizes gives each way's
fixed cost and slope. Then the first converge of a list of new VMs (100 by
default) in one run, each way from a host without VMs.

    sudo .venv/bin/python bench/ansible_bench.py [--sizes 10,100,300] [--repeat 3] [--new 100]
        [--baseline-sizes 10,100] [--no-docs]

Prints the tables and writes the summary into docs/ansible.md (between the
``bench:ansible`` markers) unless --no-docs.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

import common as C
from sandbox import machines as vs

REPO = vs.REPO_ROOT
SITE = os.path.join(REPO, "playbooks", "site.yml")
DOC = os.path.join(REPO, "docs", "ansible.md")
START, END = "<!-- bench:ansible:start -->", "<!-- bench:ansible:end -->"
TARGET_PER_VM = 0.020       # issue 14: <= 20 ms per VM beyond the fixed cost

FLEET, PER_VM = "fleet", "per-vm"
WAYS = {FLEET: "vmsan_vms module, one task (2.0)", PER_VM: "vmsan_vm per VM, a loop (1.x)"}

# The site playbook as 1.x ran it: the host role, then the vmsan_vms role of
# 1.x (prune: list the state files, remove the unlisted VMs one module run
# each; then one vmsan_vm run per item with every option given). Written to
# the run's temporary directory: it is the baseline, not part of the product.
PER_VM_SITE = """---
- name: Prepare the vmsan hosts
  hosts: vmsan_hosts
  become: true
  gather_facts: false
  roles:
    - role: vmsan.network.vmsan_host

- name: Converge the microVM networks, one vmsan_vm run per VM (the vmsan_vms role of 1.x)
  hosts: vmsan_hosts
  become: true
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ vmsan_vms_python }}"
  tasks:
    - name: Check for the state directory's VM files
      ansible.builtin.stat:
        path: "{{ vmsan_vms_state_dir }}/vms"
      register: vmsan_vms_dir
      when: vmsan_vms_prune | bool

    - name: Find the VMs this host has
      ansible.builtin.find:
        paths: "{{ vmsan_vms_state_dir }}/vms"
        patterns: "*.json"
      register: vmsan_vms_found
      when: vmsan_vms_prune | bool and vmsan_vms_dir.stat.exists

    - name: Remove the VMs that are not in vmsan_vms
      vmsan.network.vmsan_vm:
        name: "{{ item }}"
        state: absent
        state_dir: "{{ vmsan_vms_state_dir }}"
      loop: "{{ (vmsan_vms_found.files | default([]) | map(attribute='path') | map('basename')
                 | map('regex_replace', '\\\\.json$', '') | list) | difference(vmsan_vms | map(attribute='name')) | sort }}"
      when: vmsan_vms_prune | bool

    - name: Converge each VM
      vmsan.network.vmsan_vm:
        name: "{{ item.name }}"
        state: "{{ item.state | default('present') }}"
        netns: "{{ item.netns | default(true) }}"
        slot: "{{ item.slot | default(omit) }}"
        network_policy: "{{ item.network_policy | default('allow-all') }}"
        allowed_domains: "{{ item.allowed_domains | default([]) }}"
        allowed_cidrs: "{{ item.allowed_cidrs | default([]) }}"
        denied_cidrs: "{{ item.denied_cidrs | default([]) }}"
        published_ports: "{{ item.published_ports | default([]) }}"
        published_ports_exclusive: true
        bandwidth: "{{ item.bandwidth | default('none') }}"
        bandwidth_in: "{{ item.bandwidth_in | default('none') }}"
        tap_owner: "{{ item.tap_owner | default('') }}"
        state_dir: "{{ vmsan_vms_state_dir }}"
      loop: "{{ vmsan_vms }}"
      loop_control:
        label: "{{ item.name }}"
      register: vmsan_vms_converged

    - name: Publish the facts of the present VMs by name (vmsan_vms_facts)
      ansible.builtin.set_fact:
        vmsan_vms_facts: "{{ dict(vmsan_vms_converged.results | map(attribute='vm') | map(attribute='id')
                             | zip(vmsan_vms_converged.results | map(attribute='vm'))) }}"
"""


def vm_list(prefix, count, tag="v"):
    """COUNT VMs with a mix of the three policies and a published port on
    every tenth, so each run compares every kind of rule the kernel holds."""
    vms = []
    for i in range(count):
        vm = {"name": "%s-%s%d" % (prefix, tag, i)}
        if i % 3 == 1:
            vm["network_policy"] = "deny-all"
        elif i % 3 == 2:
            vm["allowed_cidrs"] = ["203.0.113.0/24"]
            vm["denied_cidrs"] = ["203.0.113.11"]
        if i % 10 == 0:
            vm["published_ports"] = ["%d:80" % (20000 + i)]
        vms.append(vm)
    return vms


class Bench(object):
    def __init__(self, machine, workdir):
        self.machine, self.workdir = machine, workdir
        self.playbooks = {FLEET: SITE, PER_VM: os.path.join(workdir, "site-per-vm.yml")}
        with open(self.playbooks[PER_VM], "w") as handle:
            handle.write(PER_VM_SITE)

    def inventory(self, vms):
        path = os.path.join(self.workdir, "inventory-%d.yml" % len(vms))
        data = vs.inventory([self.machine], extra_group_vars={"vmsan_vms_prune": True},
                            per_host=lambda m: {"vmsan_vms": vms})
        return vs.write_inventory(path, data)

    def run(self, way, inventory, expect_change=None):
        """One run of the site playbook the WAY way: (wall s, CPU s, changed tasks)."""
        C.check_stop()
        cpu = C.children_cpu()
        began = time.monotonic()
        result = vs.run_playbook(self.playbooks[way], inventory)
        wall, cpu = time.monotonic() - began, C.children_cpu() - cpu
        recap = vs.recap(result.stdout).get("h1")
        if result.returncode != 0 or recap is None or recap["failed"]:
            sys.stderr.write(result.stdout[-4000:])
            raise SystemExit("the %s site playbook failed" % way)
        if expect_change is False and recap["changed"]:
            sys.stderr.write(result.stdout[-4000:])
            raise SystemExit("a no-change run (%s) changed %d tasks" % (way, recap["changed"]))
        return wall, cpu, recap["changed"]

    def no_change(self, way, inventory, repeat):
        runs = [self.run(way, inventory, expect_change=False) for _ in range(repeat)]
        return {"wall": [r[0] for r in runs], "cpu": [r[1] for r in runs]}


def fit(points):
    """Least-squares (intercept, slope) of [(x, y)]; None with fewer than two sizes."""
    if len({x for x, _y in points}) < 2:
        return None
    xs, ys = [x for x, _y in points], [y for _x, y in points]
    mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def measure(sizes, baseline_sizes, new, repeat, workdir):
    """{way: {size: {"wall": [...], "cpu": [...], "converge": s}}} and the first converges of NEW VMs."""
    results = {FLEET: {}, PER_VM: {}}
    first = {}
    with contextlib.ExitStack() as stack:
        (machine, _sandbox), = vs.start_machines(1, workdir, stack)
        bench = Bench(machine, workdir)
        empty = bench.inventory([])
        C.progress("0 VMs: the host role's first run, then the fixed cost of each way")
        converge = bench.run(FLEET, empty)[0]
        results[FLEET][0] = dict(bench.no_change(FLEET, empty, repeat), converge=converge)
        if baseline_sizes or new:
            results[PER_VM][0] = bench.no_change(PER_VM, empty, repeat)
        if new:
            fresh = bench.inventory(vm_list(machine["prefix"], new, tag="n"))
            for way in (FLEET, PER_VM):
                C.progress("first converge of %d new VMs (%s)" % (new, way))
                wall, cpu, changed = bench.run(way, fresh)
                first[way] = {"wall": wall, "cpu": cpu, "changed": changed}
                bench.run(FLEET, empty)         # back to a host without VMs
        for size in sizes:
            inventory = bench.inventory(vm_list(machine["prefix"], size))
            C.progress("%d VMs: converge, then %d no-change runs of each way" % (size, repeat))
            converge = bench.run(FLEET, inventory)[0]
            results[FLEET][size] = dict(bench.no_change(FLEET, inventory, repeat), converge=converge)
            if size in baseline_sizes:
                results[PER_VM][size] = bench.no_change(PER_VM, inventory, repeat)
            C.progress("%d VMs: %s" % (size, ", ".join(
                "%s %s s" % (way, "/".join("%.1f" % t for t in results[way][size]["wall"]))
                for way in (FLEET, PER_VM) if size in results[way])))
    return results, first


def tables(results, first, repeat, new):
    """The result tables (Markdown) and the summary lines."""
    lines = ["| VMs | way | no-change run, median of %d (s) | CPU (s) | beyond the fixed cost (s) | per VM (ms) |"
             % repeat, "| ---: | --- | ---: | ---: | ---: | ---: |"]
    summary = []
    for way in (FLEET, PER_VM):
        rows = results[way]
        if not rows:
            continue
        base = statistics.median(rows[0]["wall"])
        for size in sorted(rows):
            wall = rows[size]["wall"]
            med, extra = statistics.median(wall), statistics.median(wall) - base
            lines.append("| %d | %s | %.2f (%.2f-%.2f) | %.2f | %s | %s |" % (
                size, WAYS[way], med, min(wall), max(wall), statistics.median(rows[size]["cpu"]),
                "%.2f" % extra if size else "fixed cost", "%.1f" % (1000 * extra / size) if size else "-"))
        line = fit([(size, w) for size in rows for w in rows[size]["wall"]])
        if line:
            summary.append("%s: fixed cost %.2f s (0 VMs, median); fit over %s VMs: %.2f s + %.1f ms per VM"
                           % (WAYS[way], base, ", ".join(str(s) for s in sorted(rows)), line[0], 1000 * line[1]))
    fleet_fit = fit([(size, w) for size in results[FLEET] for w in results[FLEET][size]["wall"]])
    if fleet_fit:
        summary.append("target <= %.0f ms per VM beyond the fixed cost: %s (%.1f ms)"
                       % (1000 * TARGET_PER_VM, "met" if fleet_fit[1] <= TARGET_PER_VM else "NOT met",
                          1000 * fleet_fit[1]))
    if first:
        head = ["", "| first converge of %d new VMs | run (s) | CPU (s) | beyond the fixed cost, per VM (ms) |" % new,
                "| --- | ---: | ---: | ---: |"]
        for way in (FLEET, PER_VM):
            base = statistics.median(results[way][0]["wall"])
            head.append("| %s | %.1f | %.1f | %.1f |" % (WAYS[way], first[way]["wall"], first[way]["cpu"],
                                                         1000 * (first[way]["wall"] - base) / new))
        lines += head
    return "\n".join(lines), summary


def write_doc(text, command, load):
    with open(DOC) as handle:
        doc = handle.read()
    if START not in doc or END not in doc:
        raise SystemExit("%s has no %s ... %s markers" % (DOC, START, END))
    head, rest = doc.split(START, 1)
    tail = rest.split(END, 1)[1]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = "\n%s\n\nMeasured %s on this project's 2-core machine (load average %s) with `%s`.\n" % (
        text, stamp, load, command)
    with open(DOC, "w") as handle:
        handle.write(head + START + body + END + tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="10,100,300", help="VM counts besides 0, comma-separated (default 10,100,300)")
    parser.add_argument("--baseline-sizes", default=None,
                        help="the sizes the per-VM way is measured at (default: those up to 100; it costs ~1 s per "
                             "VM and run); 'none' for none but the 0-VM run")
    parser.add_argument("--new", type=int, default=100, help="first converge of this many new VMs (default 100; 0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="no-change runs per size and way (default 3)")
    parser.add_argument("--no-docs", action="store_true", help="do not write the table into docs/ansible.md")
    args = parser.parse_args(argv)
    C.require_root()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s and int(s) > 0})
    if args.baseline_sizes is None:
        baseline = {s for s in sizes if s <= 100}
    elif args.baseline_sizes == "none":
        baseline = set()
    else:
        baseline = {int(s) for s in args.baseline_sizes.split(",") if s}
    info = C.print_machine()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vmsan-ansible-bench-") as workdir:
        results, first = measure(sizes, baseline, args.new, args.repeat, workdir)
    text, summary = tables(results, first, args.repeat, args.new)
    print(text)
    print()
    for line in summary:
        print(line)
    load = "%s at the start, %s at the end" % (info["load_average"], C.load_average())
    C.print_end(info, began)
    if not args.no_docs:
        command = "bench/ansible_bench.py --sizes %s --baseline-sizes %s --new %d --repeat %d" % (
            ",".join(map(str, sizes)), ",".join(map(str, sorted(baseline))) or "none", args.new, args.repeat)
        write_doc(text + "\n\n" + "\n".join("* " + line for line in summary), command, load)
    return 0


if __name__ == "__main__":
    sys.exit(C.run_main(main))
