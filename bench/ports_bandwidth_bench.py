#!/usr/bin/env python3
"""Published ports and bandwidth caps, measured in a throwaway sandbox
(tests/sandbox): nothing here touches the machine's own network.

1. Ports: on a VM that publishes 50 ports, the time to add one port and to
   remove it again, through the ``vmsan`` command (what an operator waits
   for) and through the core (``Manager.update``, in process). Baseline in
   the same run: ``vmsan port list`` (process start, imports, state read) and
   a core ``update`` that changes nothing (reads and compares everything).
2. Bandwidth: iperf3 (TCP, one stream) between a guest and the sandbox's
   internet, for each cap in both directions; the ratio measured/cap. Baseline
   in the same run: the same VM without a cap. The caps are changed on the
   running VM (``vmsan network``), as an operator would.

    sudo .venv/bin/python bench/ports_bandwidth_bench.py [--rounds 40] [--seconds 5] [--repeat 3]

The cap counts whole Ethernet frames; TCP over 1500-byte frames carries at
most 1448 payload bytes per 1514 on the wire, so iperf3's goodput tops out at
0.956 of the cap ("ideal" column).
"""

import argparse
import os
import statistics
import time

from sandbox import Sandbox

MBIT = 1000 ** 2
GOODPUT_CEILING = 1448 / 1514      # TCP payload per Ethernet frame, with timestamps
SERVER = "203.0.113.10"


def percentile(values, pct):
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def timed(fn):
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def bench_ports(sb, rounds):
    from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
    from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.manager import Manager
    ports = ",".join(str(p) for p in range(10000, 10050))
    vm = sb.vmsan("create", "--id", sb.unique_id("ports"), "--publish-port", ports).out
    vm_id = vm["id"]
    extra = "20000"
    samples = {"cli list": [], "cli add": [], "cli remove": []}
    for _ in range(rounds):
        samples["cli list"].append(timed(lambda: sb.vmsan("port", "list", vm_id)))
        samples["cli add"].append(timed(lambda: sb.vmsan("port", "add", vm_id, extra)))
        samples["cli remove"].append(timed(lambda: sb.vmsan("port", "remove", vm_id, extra)))
    # the core, in this process, inside the sandbox's host namespace
    os.environ.update(VMSAN_HOME=sb.home, VMSAN_SANDBOX_ONLY="1")
    manager = Manager(sb.home)
    fifty = list(inputs.port_list("published_ports", ports))
    fifty_one = fifty + list(inputs.port_list("published_ports", extra))
    core = {"core no-op": [], "core add": [], "core remove": []}
    with sb.host.entered():
        for _ in range(rounds):
            core["core no-op"].append(timed(lambda: manager.update(vm_id, ports=fifty)))
            core["core add"].append(timed(lambda: manager.update(vm_id, ports=fifty_one)))
            core["core remove"].append(timed(lambda: manager.update(vm_id, ports=fifty)))
    samples.update(core)
    sb.vmsan("remove", vm_id)
    return samples


def bench_bandwidth(sb, caps_mbit, seconds, repeat):
    vm = sb.vmsan("create", "--id", sb.unique_id("bw")).out
    guest = sb.add_guest(vm)
    sb.internet.iperf3_server()
    rows = []

    def measure(label, cap):
        for direction, reverse in (("guest sends", False), ("guest receives", True)):
            rates = [guest.iperf3(SERVER, seconds=seconds, reverse=reverse) for _ in range(repeat)]
            rows.append((label, direction, rates, cap))

    measure("none", None)
    for mbit in caps_mbit:
        rate = "%dmbit" % mbit
        sb.vmsan("network", vm["id"], "--bandwidth", rate, "--bandwidth-in", rate)
        measure(rate, mbit * MBIT)
    sb.vmsan("network", vm["id"], "--bandwidth", "none", "--bandwidth-in", "none")
    sb.remove_guest(guest)
    sb.vmsan("remove", vm["id"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="add/remove rounds (default 40)")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 run length (default 5)")
    parser.add_argument("--caps", default="10,50,200", help="caps in mbit (default 10,50,200)")
    parser.add_argument("--repeat", type=int, default=3, help="iperf3 runs per cap and direction (default 3)")
    parser.add_argument("--skip-ports", action="store_true")
    parser.add_argument("--skip-bandwidth", action="store_true")
    args = parser.parse_args()
    caps = [int(c) for c in args.caps.split(",")]

    with Sandbox() as sb:
        print("sandbox %s, kernel %s, %d CPUs, load %s" % (sb.prefix, os.uname().release, os.cpu_count(),
                                                           open("/proc/loadavg").read().split()[0]))
        if not args.skip_ports:
            samples = bench_ports(sb, args.rounds)
            print("\npublished ports: one port added to / removed from a VM that has 50 (%d rounds)" % args.rounds)
            print("%-44s %10s %10s %8s" % ("operation", "median ms", "p99 ms", "x base"))
            base = {"cli": statistics.median(samples["cli list"]), "core": statistics.median(samples["core no-op"])}
            labels = [("cli list", "vmsan port list (baseline)"), ("cli add", "vmsan port add VM 20000"),
                      ("cli remove", "vmsan port remove VM 20000"),
                      ("core no-op", "core Manager.update, no change (baseline)"),
                      ("core add", "core Manager.update, +1 port"), ("core remove", "core Manager.update, -1 port")]
            for key, label in labels:
                median = statistics.median(samples[key])
                print("%-44s %10.1f %10.1f %8.2f" % (label, median, percentile(samples[key], 99),
                                                    median / base[key.split()[0]]))
        if not args.skip_bandwidth:
            rows = bench_bandwidth(sb, caps, args.seconds, args.repeat)
            print("\nbandwidth: iperf3 TCP, %d s per run, %d runs each (median, and the lowest), caps changed on "
                  "the running VM" % (args.seconds, args.repeat))
            print("%-8s %-15s %12s %12s %12s %16s" % ("cap", "direction", "mbit/s", "ratio", "lowest", "ratio / ideal"))
            for label, direction, rates, cap in rows:
                rate = statistics.median(rates)
                if cap is None:
                    print("%-8s %-15s %12.1f %12s %12s %16s" % (label, direction, rate / MBIT, "-", "-", "-"))
                else:
                    print("%-8s %-15s %12.2f %12.4f %12.4f %16.4f" % (label, direction, rate / MBIT, rate / cap,
                                                                      min(rates) / cap, rate / cap / GOODPUT_CEILING))
            print("ideal = %.4f (1448 TCP payload bytes per 1514-byte frame)" % GOODPUT_CEILING)


if __name__ == "__main__":
    main()
