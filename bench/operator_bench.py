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
"""

import argparse
import os
import re
import statistics
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
    args = parser.parse_args()
    info = common.print_machine()
    began = time.monotonic()
    results = {"off": {"qps": [], "bps": []}, "on": {"qps": [], "bps": []}}
    with common.bench_sandbox() as sb:
        vm = sb.vmsan("create", "--id", sb.unique_id("bench"), "--allowed-domain", "a.example.test",
                      "--allowed-cidr", "203.0.113.0/24").out
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
    rows = []
    for what, label, fmt in (("qps", "cached DNS queries/s (dnsperf, guest)", "%.0f"),
                             ("bps", "guest -> internet (iperf3), Gbit/s", "%.2f")):
        off, on = statistics.median(results["off"][what]), statistics.median(results["on"][what])
        scale = 1e9 if what == "bps" else 1
        rows.append([label, fmt % (off / scale), fmt % (on / scale), "%.3f" % (on / off)])
    common.print_table("event log and metrics on vs off (medians of %d rounds, %d s each)" % (args.rounds, args.seconds),
                       ["measure", "off", "on", "on/off"], rows)
    print("raw:", results)
    common.print_end(info, began)


if __name__ == "__main__":
    common.run_main(main)
