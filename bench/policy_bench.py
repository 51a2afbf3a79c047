#!/usr/bin/env python3
"""Policy benchmark: how long a live policy change takes, and what the rules
cost in throughput.

1. Update latency: a running VM (with a guest attached) is switched, round
   after round, through allow-all, deny-all, custom with 1 allowed CIDR and
   custom with 1000 allowed CIDRs, in-process (``Manager.update`` with the
   thread in the sandbox host namespace) and as the whole ``vmsan network``
   command. Median and p99 per transition.
2. Throughput: iperf3 from the guest to 203.0.113.10:5201 in the sandbox's
   internet (through the guest relay) under allow-all, custom with 1 allowed
   CIDR and custom with 1000 allowed CIDRs (203.0.113.10/32 among them; 21
   prefix lengths), each as a ratio to the
   same VM with no rules in its namespace (flushed by hand, chain policies
   ACCEPT), measured in the same run. Conditions are interleaved, runs
   repeated, medians quoted.

    sudo .venv/bin/python bench/policy_bench.py
    sudo .venv/bin/python bench/policy_bench.py --rounds 3 --cli-rounds 1 --iperf-runs 1 --iperf-seconds 1
"""

import argparse
import ipaddress
import random
import sys
import time

import common as C  # bench/, beside this script; sets VMSAN_SANDBOX_ONLY

vm_mod = C.core_module("manager")
netns = C.core_module("netns")
inputs = C.core_module("inputs")

SERVER = "203.0.113.10"        # iperf3 and the greeting server, in the allowed set
OUTSIDER = "203.0.113.11"      # not in any allowed set: must be blocked under custom
GREETING_PORT = 9000
IPERF_PORT = 5201


def many_cidrs(count, seed=1):
    """COUNT distinct allowed CIDRs: SERVER/32 and COUNT-1 networks inside
    10.0.0.0/8 with prefix lengths 12 to 32. A hash:net set does one hash
    lookup per distinct prefix length it holds, so 21 lengths is its slow
    side, not the best case of one length."""
    rng = random.Random(seed)
    found = set()
    while len(found) < count - 1:
        prefix = rng.randint(12, 32)
        address = rng.randrange(10 << 24, 11 << 24)
        found.add(str(ipaddress.IPv4Network((address, prefix), strict=False)))
    return sorted(found) + [SERVER + "/32"]


class Policies(object):
    """The policies switched between, as the core takes them and as the CLI
    flags that say the same."""

    def __init__(self, cidr_count):
        self.cidrs = many_cidrs(cidr_count)
        self.count = cidr_count
        self.by_name = {
            "allow-all": (inputs.policy("allow-all"), ["--network-policy", "allow-all"]),
            "deny-all": (inputs.policy("deny-all"), ["--network-policy", "deny-all"]),
            "custom-1": (inputs.policy("custom", None, SERVER + "/32"),
                         ["--network-policy", "custom", "--allowed-cidr", SERVER + "/32"]),
            "custom-many": (inputs.policy("custom", None, self.cidrs),
                            ["--network-policy", "custom", "--allowed-cidr", ",".join(self.cidrs)]),
            # the same list with one CIDR swapped: an edit of a big list
            "custom-many-edited": (inputs.policy("custom", None, self.edited()),
                                   ["--network-policy", "custom", "--allowed-cidr", ",".join(self.edited())]),
        }

    def edited(self):
        return ["10.255.255.0/24"] + [c for c in self.cidrs if c != "10.255.255.0/24"][1:]

    def label(self, name):
        return {"custom-1": "custom (1 CIDR)", "custom-many": "custom (%d CIDRs)" % self.count,
                "custom-many-edited": "custom (%d CIDRs, 1 changed)" % self.count}.get(name, name)


# One round visits every policy and both directions of the big list.
CYCLE = ["deny-all", "custom-1", "allow-all", "custom-many", "custom-many-edited", "deny-all", "custom-many",
         "allow-all"]


# --------------------------------------------------------------------------
# checks that the policy in force is the one we think (not timed)
# --------------------------------------------------------------------------
def expect(guest, name):
    """Prove from the guest what NAME lets out; raises if the kernel disagrees."""
    reach_server = guest.tcp(SERVER, GREETING_PORT, timeout=0.5) is not None
    reach_outsider = guest.tcp(OUTSIDER, GREETING_PORT, timeout=0.5) is not None
    wanted = {"allow-all": (True, True), "deny-all": (False, False), "no-rules": (True, True)}.get(name, (True, False))
    if (reach_server, reach_outsider) != wanted:
        raise RuntimeError("policy %s: guest reaches %s: %s, %s: %s (expected %s, %s)"
                           % (name, SERVER, reach_server, OUTSIDER, reach_outsider, wanted[0], wanted[1]))


# --------------------------------------------------------------------------
# 1. update latency
# --------------------------------------------------------------------------
def updates_in_process(sandbox, manager, vm_id, guest, policies, rounds, profile=None):
    """{(from, to): {"wall": [...], "cpu": [...]}} over ROUNDS cycles."""
    found = {}
    current = "allow-all"
    with netns.entered(sandbox.host.name):
        manager.update(vm_id, policy=policies.by_name[current][0])
    for r in range(rounds):
        for name in CYCLE:
            C.check_stop()
            with netns.entered(sandbox.host.name):
                t0, c0 = time.perf_counter(), time.thread_time()
                if profile is not None and r == rounds - 1:
                    profile.enable()
                manager.update(vm_id, policy=policies.by_name[name][0])
                if profile is not None:
                    profile.disable()
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            entry = found.setdefault((current, name), {"wall": [], "cpu": []})
            entry["wall"].append(wall)
            entry["cpu"].append(cpu)
            if r == 0:
                expect(guest, name)
            current = name
    return found, current


def updates_cli(sandbox, vm_id, policies, rounds, start):
    found = {}
    current = start
    for _ in range(rounds):
        for name in CYCLE:
            C.check_stop()
            flags = policies.by_name[name][1]
            t0, k0 = time.perf_counter(), C.children_cpu()
            sandbox.vmsan("network", vm_id, *flags)
            entry = found.setdefault((current, name), {"wall": [], "cpu": []})
            entry["wall"].append(time.perf_counter() - t0)
            entry["cpu"].append(C.children_cpu() - k0)
            current = name
    return found, current


def update_rows(label, found, policies):
    rows = []
    for (before, after), entry in found.items():
        s = C.summary(entry["wall"])
        cpu = C.median(entry["cpu"]) if entry["cpu"] else float("nan")
        rows.append([label, "%s -> %s" % (policies.label(before), policies.label(after)), s["n"], C.ms(s["median"]),
                     C.ms(s["p99"]), C.ms(cpu), "yes" if s["median"] <= 0.020 else "no"])
    return rows


# --------------------------------------------------------------------------
# 2. throughput
# --------------------------------------------------------------------------
def flush_vm_rules(vm):
    """The "no rules" path: the same VM with every rule of its namespace
    flushed by hand and the chain policies ACCEPT. The host namespace keeps
    vmsan's shared forwarding and masquerade rules (every condition has
    them: without the masquerade no reply would come back)."""
    ns = vm["netns"]
    for table in ("raw", "nat", "filter"):
        C.run_in(ns, ["iptables-legacy", "-w", "-t", table, "-F"])
        C.run_in(ns, ["iptables-legacy", "-w", "-t", table, "-X"])
    for chain in ("INPUT", "FORWARD", "OUTPUT"):
        C.run_in(ns, ["iptables-legacy", "-w", "-t", "filter", "-P", chain, "ACCEPT"])
    left = [l for l in C.run_in(ns, ["iptables-legacy-save"]).stdout.splitlines() if l.startswith("-A")]
    if left:
        raise RuntimeError("rules left after the flush: %s" % left)


def set_condition(sandbox, manager, vm_id, vm, policies, condition):
    if condition == "no-rules":
        flush_vm_rules(vm)
        return
    with netns.entered(sandbox.host.name):
        # converge compares with the kernel, so this also puts back what a
        # previous "no-rules" flush took away
        manager.update(vm_id, policy=policies.by_name[condition][0])


def throughput(sandbox, manager, vm_id, vm, guest, policies, runs, seconds):
    """{condition: [bit/s, ...]}, conditions interleaved and their order
    rotated each run, so a noisy neighbour hits all of them alike."""
    conditions = ["no-rules", "allow-all", "custom-1", "custom-many"]
    found = {c: [] for c in conditions}
    for run in range(runs):
        shift = run % len(conditions)
        order = conditions[shift:] + conditions[:shift]
        for condition in order:
            C.check_stop()
            set_condition(sandbox, manager, vm_id, vm, policies, condition)
            expect(guest, condition)
            C.progress("iperf3 run %d/%d, %s ..." % (run + 1, runs, condition))
            found[condition].append(guest.iperf3(SERVER, port=IPERF_PORT, seconds=seconds))
    return found


def throughput_rows(found, policies):
    """Ratio of medians, and the median of per-run ratios: each run measured
    every condition back to back, so pairing a condition with the baseline
    of its own run cancels the slower drifts of a shared machine."""
    baseline = found["no-rules"]
    base = C.median(baseline)
    rows = []
    for condition, values in found.items():
        med = C.median(values)
        r = C.ratio(med, base)
        paired = C.median([C.ratio(v, b) for v, b in zip(values, baseline)])
        label = {"no-rules": "no rules in the VM namespace (baseline)"}.get(condition, policies.label(condition))
        rows.append([label, len(values), C.gbit(med), "%s-%s" % (C.gbit(min(values)), C.gbit(max(values))),
                     "%.3f" % r, "%.3f" % paired, "-" if condition == "no-rules" else ("yes" if r >= 0.95 else "no")])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="in-process update rounds (default 20)")
    parser.add_argument("--cli-rounds", type=int, default=5, help="'vmsan network' rounds (default 5; 0 skips)")
    parser.add_argument("--cidrs", type=int, default=1000, help="allowed CIDRs of the big custom policy (default 1000)")
    parser.add_argument("--iperf-runs", type=int, default=5, help="iperf3 runs per condition (default 5; 0 skips)")
    parser.add_argument("--iperf-seconds", type=int, default=4, help="seconds per iperf3 run (default 4)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the last in-process round and print the top functions")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", metavar="PATH", help="also write every measured value to PATH")
    args = parser.parse_args(argv)
    if args.cidrs < 2:
        parser.error("--cidrs: at least 2")
    if args.rounds < 1:
        parser.error("--rounds: at least 1 (the first round also checks every policy from the guest)")

    info = C.print_machine()
    policies = Policies(args.cidrs)
    results = {"machine": info, "args": vars(args)}
    began = time.monotonic()
    with C.bench_sandbox() as sandbox:
        manager = vm_mod.Manager(state_dir=sandbox.home)
        vm_id = sandbox.unique_id("pol")
        with netns.entered(sandbox.host.name):
            vm = manager.ensure(vm_id, must_be_new=True).vm
        guest = sandbox.add_guest(vm)
        expect(guest, "allow-all")
        C.note("# sandbox %s; VM %s (slot %d, namespace %s) with a guest attached through the relay"
               % (sandbox.prefix, vm_id, vm["slot"], vm["netns"]))

        profile = None
        if args.profile:
            import cProfile
            profile = cProfile.Profile()
        C.progress("in-process updates: %d rounds of %d ..." % (args.rounds, len(CYCLE)))
        inproc, current = updates_in_process(sandbox, manager, vm_id, guest, policies, args.rounds, profile)
        rows = update_rows("in-process", inproc, policies)
        cli = {}
        if args.cli_rounds > 0:
            C.progress("'vmsan network': %d rounds of %d ..." % (args.cli_rounds, len(CYCLE)))
            cli, current = updates_cli(sandbox, vm_id, policies, args.cli_rounds, current)
            rows += update_rows("vmsan network", cli, policies)
        C.print_table("## policy update latency (target: median <= 20 ms); a guest is attached, no flows",
                      ["how", "transition", "n", "median ms", "p99 ms", "cpu median ms", "<= 20 ms"], rows)
        results["updates"] = {"in_process": {"%s->%s" % k: v for k, v in inproc.items()},
                              "cli": {"%s->%s" % k: v for k, v in cli.items()}}

        if args.iperf_runs > 0:
            sandbox.internet.iperf3_server(port=IPERF_PORT)
            found = throughput(sandbox, manager, vm_id, vm, guest, policies, args.iperf_runs, args.iperf_seconds)
            C.print_table("## iperf3 guest -> %s:%d through the relay, %d runs x %d s per condition, interleaved "
                          "(target: ratio >= 0.95)" % (SERVER, IPERF_PORT, args.iperf_runs, args.iperf_seconds),
                          ["condition", "runs", "median Gbit/s", "min-max Gbit/s", "ratio to no rules",
                           "median of per-run ratios", ">= 0.95"],
                          throughput_rows(found, policies))
            results["throughput_bps"] = found
            # leave the VM as the product made it (the last condition may be the flush)
            set_condition(sandbox, manager, vm_id, vm, policies, "allow-all")

        sandbox.remove_guest(guest)
        with netns.entered(sandbox.host.name):
            manager.remove(vm_id)
        if profile is not None:
            import pstats
            C.note("\n## cProfile of the last in-process round (%d updates), cumulative, top %d\n"
                   % (len(CYCLE), args.top))
            pstats.Stats(profile, stream=sys.stdout).strip_dirs().sort_stats("cumulative").print_stats(args.top)
    C.print_end(info, began)
    C.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(C.run_main(main))
