#!/usr/bin/env python3
"""What the operator's view costs (docs/operator.md): the host daemon with
its event log and metrics on against the same daemon with both off, in one
run, rounds alternating off/on.

    sudo .venv/bin/python bench/operator_bench.py [--rounds 3] [--seconds 3]

Everything runs inside a throwaway sandbox (tests/sandbox): one VM (custom:
``a.example.test`` and ``203.0.113.0/24``) with a guest behind its TAP.
Each round starts ``vmsan daemon --upstream 203.0.113.53`` afresh, either
``--no-event-log`` (off) or ``--metrics-listen 127.0.0.1:9464`` with the
event log (on; a scraper reads /metrics every second, as Prometheus would),
and measures from the guest:

* cached DNS queries/s: dnsperf, 100 outstanding, one name the resolver
  has cached (the VM's query budget raised so the resolver is measured);
* throughput: iperf3 from the guest to the internet, SECONDS.

It prints the medians and the on/off ratios; the issue's bar is >= 0.95.

Then (``--flood-rounds``, 0 to skip) the same daemon, everything on: a
second guest's cached DNS queries/s and throughput while the first guest is
idle against while it sends UDP to a denied CIDR as fast as it can (every
packet dropped, counted and offered to the event log), alternating; and the
event log's growth during the flood.
"""

import argparse
import os
import re
import statistics
import subprocess
import threading
import time

from sandbox import procs

import common

AUTH_DNS = "203.0.113.53"
METRICS = "127.0.0.1:9464"
BUDGET = ("--vm-queries-per-second", "1000000", "--vm-upstream-queries", "4096")


def start_daemon(sb, on, round_no):
    flags = ["daemon", "--upstream", AUTH_DNS] + list(BUDGET)
    flags += ["--metrics-listen", METRICS] if on else ["--no-event-log"]
    proc = sb.vmsan_spawn(*flags, log_name="daemon-%d-%s.log" % (round_no, "on" if on else "off"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(proc.log_path) as handle:
            if "listening on" in handle.read():
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("the daemon did not start: %s" % open(proc.log_path).read())


class Scraper(threading.Thread):
    def __init__(self, sb):
        threading.Thread.__init__(self, daemon=True)
        self.sb, self.stop, self.scrapes = sb, threading.Event(), 0

    def run(self):
        while not self.stop.wait(1.0):
            done = self.sb.host.run(["curl", "-sS", "--max-time", "2", "http://%s/metrics" % METRICS])
            self.scrapes += done.returncode == 0


def dnsperf(guest, path, seconds):
    done = guest.run(["dnsperf", "-s", guest.dns_server, "-d", path, "-q", "100", "-l", str(seconds), "-t", "2"],
                     timeout=seconds + 30)
    match = re.search(r"Queries per second:\s+([0-9.]+)", done.stdout)
    if not match:
        raise RuntimeError("dnsperf: %s" % (done.stderr or done.stdout))
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--flood-rounds", type=int, default=3)
    args = parser.parse_args()
    info = common.print_machine()
    began = time.monotonic()
    results = {"off": {"qps": [], "bps": []}, "on": {"qps": [], "bps": []}}
    with common.bench_sandbox() as sb:
        vm = sb.vmsan("create", "--id", sb.unique_id("bench"), "--allowed-domain", "a.example.test",
                      "--allowed-cidr", "203.0.113.0/24", "--denied-cidr", "192.0.2.0/24").out
        guest = sb.add_guest(vm)
        sb.internet.iperf3_server()
        names = os.path.join(sb.home, "names.txt")
        with open(names, "w") as handle:
            handle.write("a.example.test A\n" * 50)
        for round_no in range(args.rounds):
            for mode in ("off", "on"):
                common.check_stop()
                proc = start_daemon(sb, mode == "on", round_no)
                scraper = Scraper(sb) if mode == "on" else None
                try:
                    if scraper:
                        scraper.start()
                    guest.dig("a.example.test", guest.dns_server)        # cached from here on
                    results[mode]["qps"].append(dnsperf(guest, names, args.seconds))
                    results[mode]["bps"].append(guest.iperf3("203.0.113.10", seconds=args.seconds))
                finally:
                    if scraper:
                        scraper.stop.set()
                        scraper.join(5)
                    procs.stop(proc)
                common.progress("round %d %s: %.0f q/s, %.2f Gbit/s" % (
                    round_no + 1, mode, results[mode]["qps"][-1], results[mode]["bps"][-1] / 1e9))
        flood = flood_rounds(sb, guest, names, args) if args.flood_rounds else None
    rows = []
    for what, label, fmt in (("qps", "cached DNS queries/s (dnsperf, guest)", "%.0f"),
                             ("bps", "guest -> internet (iperf3), Gbit/s", "%.2f")):
        off, on = statistics.median(results["off"][what]), statistics.median(results["on"][what])
        scale = 1e9 if what == "bps" else 1
        rows.append([label, fmt % (off / scale), fmt % (on / scale), "%.3f" % (on / off)])
    common.print_table("event log and metrics on vs off (medians of %d rounds, %d s each)" % (args.rounds, args.seconds),
                       ["measure", "off", "on", "on/off"], rows)
    print("raw:", results)
    if flood:
        rows = []
        for what, label, fmt in (("qps", "other guest: cached DNS queries/s", "%.0f"),
                                 ("bps", "other guest -> internet, Gbit/s", "%.2f")):
            scale = 1e9 if what == "bps" else 1
            idle, noisy, bare = (statistics.median(flood[m][what]) for m in ("idle", "flood", "flood_off"))
            rows.append([label, fmt % (idle / scale), fmt % (noisy / scale), fmt % (bare / scale),
                         "%.3f" % (noisy / idle), "%.3f" % (noisy / bare)])
        common.print_table("a guest flooding a denied CIDR (medians of %d rounds)" % args.flood_rounds,
                           ["measure", "idle", "flood", "flood, log+metrics off", "flood/idle", "flood: on/off"],
                           rows)
        print("flood with the log on: %d packets sent, %d dropped (counted by the kernel, all runs), %d events "
              "logged for them, the log %d bytes" % (flood["sent"], flood["dropped"], flood["logged"], flood["bytes"]))
        print("raw flood:", flood)
    common.print_end(info, began)


FLOOD = ("import socket, sys, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nend = time.monotonic() + %f\n"
         "n = 0\nwhile time.monotonic() < end:\n for i in range(200):\n  s.sendto(b'x', ('192.0.2.10', 9000 + i))\n"
         " n += 200\nprint(n)")


def flood_rounds(sb, flooder, names, args):
    """Per round: the other guest measured with the flooder idle, then
    flooding, each with the event log and metrics on, then flooding with
    them off (what the flood costs the host anyway: the flooder's own CPU)."""
    other_vm = sb.vmsan("create", "--id", sb.unique_id("other"), "--allowed-domain", "a.example.test",
                        "--allowed-cidr", "203.0.113.0/24").out
    other = sb.add_guest(other_vm)
    modes = (("idle", True, False), ("flood", True, True), ("flood_off", False, True))
    out = {m: {"qps": [], "bps": []} for m, _on, _f in modes}
    out.update(sent=0, dropped=0, logged=0, bytes=0)
    log_dir = os.path.join(sb.home, "events")
    logged_before = len(os.listdir(log_dir)) and sum(
        1 for line in sb.vmsan("events", flooder.id, "--json", json_out=False).out.splitlines())
    before = sb.vmsan("show", flooder.id).out["counters"]["dropped"]["policy"]
    for round_no in range(args.flood_rounds):
        for mode, on, flooding in modes:
            common.check_stop()
            proc = start_daemon(sb, on, 100 + round_no)
            sender = None
            try:
                time.sleep(0.3)
                other.dig("a.example.test", other.dns_server)
                if flooding:
                    sender = flooder.spawn(["python3", "-c", FLOOD % (2 * args.seconds + 2)],
                                           stdout=subprocess.PIPE, text=True)
                    time.sleep(0.3)
                out[mode]["qps"].append(dnsperf(other, names, args.seconds))
                out[mode]["bps"].append(other.iperf3("203.0.113.10", seconds=args.seconds))
                if sender is not None:
                    sent = int(sender.communicate(timeout=60)[0].strip() or 0)
                    out["sent"] += sent if on else 0
            finally:
                procs.stop(proc)
            common.progress("flood round %d %s: %.0f q/s, %.2f Gbit/s" % (
                round_no + 1, mode, out[mode]["qps"][-1], out[mode]["bps"][-1] / 1e9))
    out["logged"] = sum(1 for line in sb.vmsan("events", flooder.id, "--json", json_out=False).out.splitlines()
                        if '"kind":"policy"' in line) - (logged_before or 0)
    out["bytes"] = sum(os.path.getsize(os.path.join(log_dir, f)) for f in os.listdir(log_dir))
    out["dropped"] = sb.vmsan("show", flooder.id).out["counters"]["dropped"]["policy"] - before
    return out


if __name__ == "__main__":
    common.run_main(main)
