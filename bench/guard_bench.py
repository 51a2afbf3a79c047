#!/usr/bin/env python3
"""What the name guard costs (issue 13), against the same traffic on a path
the guard does not hold, in one run:

* TLS connection setup (connect + handshake, certificate checked) from the
  guest to a pinned, learned-only address (203.0.113.10, held at its
  ClientHello until the guard decides) and to a CIDR-allowed address
  (203.0.113.200): median, p99, added median;
* bulk throughput of one accepted flow (iperf3; the flow is accepted by an
  ``a.test:5201`` entry, then runs in the kernel by its connection mark)
  against the CIDR-allowed path;
* the rate of new cheap guarded connections (a ClientHello made by OpenSSL,
  the responder's two bytes, a close) a load generator reaches, against the
  same generator on the CIDR path;
* the guard's own CPU time per decision (its thread's CPU time over the
  decisions it made in the rate runs), and of the pure decision alone.

The product as it runs: ``vmsan daemon`` in the sandbox's host namespace
(tests/integration/host_daemon.py, as in tests/integration/test_name_guard.py)
runs the resolver and the guard; the VM is made by ``vmsan create`` alone,
the guard's rules are in its plan. The guard's counters and CPU time are read
from the daemon (its health answer; its ``vmsan-guard`` thread in /proc).
Servers and clients are processes of their own (bench/guard_peers.py).

    sudo .venv/bin/python bench/guard_bench.py [--connections 400] [--rate-seconds 4]
                                               [--iperf-seconds 3] [--repeat 3]
"""

import argparse
import json
import subprocess
import os
import sys
import tempfile
import time

import common  # noqa: E402  (bench/, beside this script; sets VMSAN_SANDBOX_ONLY)

from sandbox import procs  # noqa: E402
from sandbox.tls import client_hello, make_certificate  # noqa: E402

from integration.host_daemon import Daemon  # noqa: E402

from ansible_collections.vmsan.network.plugins.module_utils.guard import decide, rule  # noqa: E402
from ansible_collections.vmsan.network.plugins.module_utils.kernel import fastpath  # noqa: E402

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard_peers.py")
PINNED = "203.0.113.10"     # a.test: learned, pinned, held at the first payload
CIDR = "203.0.113.200"      # --allowed-cidr: never held


def decision_cpu(hello, rounds=20000):
    """CPU seconds of one pure decision (read the hello, the rule), in this
    process."""
    policy = rule.GuardPolicy(("a.test", "*.example.com"))
    pinned = frozenset({"a.test"})
    began = time.process_time()
    for _ in range(rounds):
        decide.tcp(policy, pinned, 443, hello)
    return (time.process_time() - began) / rounds


def host_cpu():
    """CPU seconds the whole machine has spent busy (every core: user, system,
    softirq...; not idle or iowait), from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def json_run(endpoint, argv, timeout):
    done = endpoint.run([sys.executable, PEERS] + argv, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError("%s failed: %s" % (argv[0], done.stderr.strip()))
    return json.loads(done.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=400, help="TLS setups per path (latency)")
    ap.add_argument("--rate-seconds", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--iperf-seconds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    common.note("load average at start: %s" % common.load_average())
    common.note("the guard reads packets in %s (VMSAN_FASTPATH=0: in Python; native/vmsan_fastpath.c)"
                % fastpath.describe())
    hello = client_hello("a.test")
    with common.Sandbox() as sb, tempfile.TemporaryDirectory(prefix="vst-guard-bench-") as tmp:
        cert, key = make_certificate(tmp, "a.test")
        hello_file = os.path.join(tmp, "hello.bin")
        with open(hello_file, "wb") as out:
            out.write(hello)
        server = sb.internet.spawn([sys.executable, PEERS, "serve", cert, key], stdout=subprocess.PIPE)
        assert server.stdout.readline().strip() == b"ready"
        sb.internet.dns.set("a.test", "A", [PINNED])
        daemon = Daemon(sb, "--ttl-floor", "3600").start()
        vm = sb.vmsan("create", "--id", sb.unique_id("bench"), "--allowed-domain", "a.test,a.test:5201",
                      "--allowed-cidr", CIDR + "/32").out
        guest = sb.add_guest(vm)
        rcode, values = guest.dig("a.test", guest.dns_server)[:2]
        assert (rcode, values[:1]) == ("NOERROR", [PINNED]), (rcode, values)

        def decided():
            stats = daemon.stats()
            return stats["guard_accepted"] + stats["guard_refused"]

        # -- TLS setup latency, interleaved per connection ------------------------
        latency = {PINNED: [], CIDR: []}
        for _ in range(args.repeat):
            times = json_run(guest, ["latency", cert, "a.test", "%s,%s" % (PINNED, CIDR),
                                     str(args.connections)], timeout=600)
            for ip in latency:
                latency[ip] += times[ip]
        accepted_after_latency = daemon.stats()["guard_accepted"]

        # -- connection rate, alternating paths ---------------------------------------
        rates = {PINNED: [], CIDR: []}
        failed = {PINNED: 0, CIDR: 0}
        busy = {PINNED: 0.0, CIDR: 0.0}     # the machine's CPU seconds during each path's runs
        made = {PINNED: 0, CIDR: 0}
        guard_cpu = guard_sys = decisions = 0.0
        for _ in range(args.repeat):
            for ip in (PINNED, CIDR):
                (cpu0, sys0), dec0, host0 = daemon.guard_cpu(), decided(), host_cpu()
                out = json_run(guest, ["rate", hello_file, ip, str(args.rate_seconds), str(args.concurrency)],
                               timeout=args.rate_seconds + 60)
                busy[ip] += host_cpu() - host0
                made[ip] += out["done"]
                rates[ip].append(out["done"] / out["seconds"])
                failed[ip] += out["failed"]
                if ip == PINNED:
                    cpu1, sys1 = daemon.guard_cpu()
                    guard_cpu += cpu1 - cpu0
                    guard_sys += sys1 - sys0
                    decisions += decided() - dec0

        # -- bulk throughput of one accepted flow ------------------------------------------
        sb.internet.iperf3_server()
        bulk = {PINNED: [], CIDR: []}
        for _ in range(args.repeat):
            for ip in (PINNED, CIDR):
                bulk[ip].append(guest.iperf3(ip, seconds=args.iperf_seconds))
        counters = daemon.stats()
        log_lines = daemon.log().splitlines()
        refusals = [line for line in log_lines if ": refused " in line]
        faults = [line for line in log_lines if "cannot handle a packet" in line or "Error" in line]
        pure = decision_cpu(hello)

    lat_rows = []
    for label, ip in (("pinned (guarded)", PINNED), ("CIDR-allowed", CIDR)):
        values = latency[ip]
        lat_rows.append([label, len(values), "%.3f" % (common.median(values) * 1e3),
                         "%.3f" % (common.percentile(values, 99) * 1e3)])
    added = (common.median(latency[PINNED]) - common.median(latency[CIDR])) * 1e3
    common.print_table("TLS connection setup from the guest (connect + handshake), %d x %d per path, interleaved"
                       % (args.repeat, args.connections), ["path", "n", "median ms", "p99 ms"], lat_rows)
    common.note("added median: %.3f ms (target <= 0.3 ms); guarded flows accepted: %d"
                % (added, accepted_after_latency))

    rows = []
    for label, ip in (("pinned (guarded)", PINNED), ("CIDR-allowed", CIDR)):
        rows.append([label, "%.0f" % common.median(rates[ip]), "/".join("%.0f" % r for r in rates[ip]), failed[ip],
                     "%.2f" % (common.median(bulk[ip]) / 1e9), "/".join("%.2f" % (b / 1e9) for b in bulk[ip])])
    common.print_table("new cheap connections (%d in flight, %.0f s) and bulk throughput (iperf3, %d s)"
                       % (args.concurrency, args.rate_seconds, args.iperf_seconds),
                       ["path", "conn/s median", "runs", "failed", "Gbit/s median", "runs"], rows)
    rate_ratio = common.median(rates[PINNED]) / common.median(rates[CIDR])
    bulk_ratio = common.median(bulk[PINNED]) / common.median(bulk[CIDR])
    pairs = [g / c for g, c in zip(bulk[PINNED], bulk[CIDR])]
    rate_pairs = [g / c for g, c in zip(rates[PINNED], rates[CIDR])]
    common.note("connection-rate ratio guarded/CIDR: %.2f (target >= 0.8); per back-to-back pair: %s"
                % (rate_ratio, "/".join("%.2f" % r for r in rate_pairs)))
    common.note("throughput ratio guarded/CIDR: %.3f (target >= 0.95); per back-to-back pair: %s"
                % (bulk_ratio, "/".join("%.3f" % r for r in pairs)))
    per_conn = {ip: busy[ip] / made[ip] * 1e6 if made[ip] else float("nan") for ip in busy}
    common.note("the machine's CPU per cheap connection (all cores, %d of them, rate runs, the starts of the "
                "processes included): guarded %.1f us, CIDR %.1f us, added %.1f us"
                % (os.cpu_count(), per_conn[PINNED], per_conn[CIDR], per_conn[PINNED] - per_conn[CIDR]))
    per = guard_cpu / decisions * 1e6 if decisions else float("nan")
    per_sys = guard_sys / decisions * 1e6 if decisions else float("nan")
    common.note("guard CPU per decision (its thread, rate runs): %.1f us, of which %.1f us in the kernel, over %d "
                "decisions (target <= 100 us); the pure decision alone: %.1f us"
                % (per, per_sys, decisions, pure * 1e6))
    common.note("guard counters (the daemon's health answer): accepted %d, refused %d, messages %d, faults %d, "
                "wake-ups %d (%.1f messages each); its own count of its thread's CPU per decision: %.1f us"
                % (counters["guard_accepted"], counters["guard_refused"], counters["guard_messages"],
                   counters["guard_faults"], counters["guard_wakeups"],
                   counters["guard_messages"] / max(1, counters["guard_wakeups"]),
                   counters["guard_cpu_us"] / max(1, counters["guard_accepted"] + counters["guard_refused"])))
    for line in refusals[:5]:
        common.note("refused: %s" % line)
    for line in faults[:5]:
        common.note("fault: %s" % line)
    common.note("load average at end: %s" % common.load_average())


if __name__ == "__main__":
    main()
