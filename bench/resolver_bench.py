#!/usr/bin/env python3
"""The host resolver against dnsmasq doing the same job, in one run.

    sudo .venv/bin/python bench/resolver_bench.py [--seconds 5] [--repeat 3] [--baseline CMD]

Everything runs inside a throwaway sandbox (tests/sandbox): nothing touches
the machine's own network.

* upstream: dnsmasq in the sandbox's internet namespace on 203.0.113.54,
  answering every ``*.bench.test`` A query itself (TTL 3600), so the upstream
  is never what limits an uncached run;
* ``vmsan resolver --upstream 203.0.113.54`` on 169.254.64.1 in the sandbox
  host namespace, serving one VM (slot 0, guest 172.16.0.2, custom policy
  ``*.bench.test``) whose ``dns`` set it learns every answer into;
* ``dnsmasq --ipset=/bench.test/<set>`` on 169.254.64.2 in the same namespace,
  same upstream, adding every answer to an ipset of its own;
* with ``--baseline CMD`` (a ``vmsan`` command of another checkout, e.g. the
  one before a change), that one's resolver on 169.254.64.3 as well, same
  VM, same upstream: old and new measured in the same run;
* dnsperf in the host namespace, sending from 172.16.0.2 (an address on the
  host's lo, so the resolver takes the queries for that VM's).

One VM sends everything, far beyond the per-VM budget a resolver gives a
guest by default (1000 queries/s): the resolver under test runs with
``--vm-queries-per-second 1000000 --vm-upstream-queries 4096`` so that what
is measured is the resolver, not the budget (the budget is still checked for
every query). At the end, the resolver's own counters (its health answer:
hits of its caches, upstream queries, memory) are printed.

Guests' DNAT and TAP are left out on purpose: both resolvers get the same
loopback path, and what is measured is the resolvers.

Runs: throughput (dnsperf, 100 queries outstanding, SECONDS each, median of
REPEAT runs) and latency (one query outstanding, per-query latencies from
dnsperf -v: median and p99), each cached (50 names asked over and over after
a warm-up pass) and uncached (every name new, so every query goes upstream);
plus the upstream asked directly, the baseline for "added latency".
"""

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from sandbox import Sandbox, guard, procs

from ansible_collections.vmsan.network.plugins.module_utils.kernel.ipsets import SetManager
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import state as vm_state
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import StateStore

UPSTREAM = "203.0.113.54"
VMSAN = "169.254.64.1"
DNSMASQ = "169.254.64.2"
BASELINE = "169.254.64.3"
BENCH_BUDGET = ("--vm-queries-per-second", "1000000", "--vm-upstream-queries", "4096")
CLIENT = "172.16.0.2"           # guest address of slot 0
ANSWER = "203.0.113.10"
VM_ID = "bench"
DNSMASQ_SET = "bench-dnsmasq"
CACHED_NAMES = 50
LATENCY_QUERIES = 2000


def names_file(directory, label, names):
    path = os.path.join(directory, label + ".txt")
    with open(path, "w") as handle:
        handle.writelines("%s A\n" % n for n in names)
    return path


class Run(object):
    def __init__(self, text):
        self.text = text
        self.qps = _float(r"Queries per second:\s+([0-9.]+)", text)
        self.completed = int(_float(r"Queries completed:\s+([0-9]+)", text) or 0)
        self.lost = int(_float(r"Queries lost:\s+([0-9]+)", text) or 0)
        self.latencies = [float(m.group(2)) for m in re.finditer(r"^> (\S+) \S+ \S+ ([0-9.]+)$", text, re.M)]
        self.rcodes = {m.group(1) for m in re.finditer(r"^> (\S+) ", text, re.M)}


def _float(pattern, text):
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def dnsperf(sb, server, path, seconds=None, runs=None, outstanding=100, verbose=False, source=CLIENT):
    argv = ["dnsperf", "-s", server, "-d", path, "-q", str(outstanding), "-t", "2"]
    if source:
        argv += ["-a", source]
    if seconds:
        argv += ["-l", str(seconds)]
    if runs:
        argv += ["-n", str(runs)]
    if verbose:
        argv.append("-v")
    # With one query outstanding, dnsperf 2.10 sometimes waits ~30 ms between a
    # reply and the next query, whichever server it asks (seen with dnsmasq
    # and the upstream too): the latencies it reports are per query and not
    # affected, but such a run takes much longer.
    done = sb.host.run(argv, timeout=(seconds or 60) + 60 + (0.1 * (runs or 1) * _lines(path) if outstanding == 1 else 0))
    if done.returncode != 0:
        raise RuntimeError("dnsperf failed: %s" % (done.stderr or done.stdout))
    return Run(done.stdout)


def _lines(path):
    with open(path) as handle:
        return sum(1 for _line in handle)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def wait_for(predicate, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError("%s did not come up" % what)


def setup(sb, work, baseline=None):
    sb.internet.ip("addr add %s/32 dev lo" % UPSTREAM)
    sb.host.ip("addr add %s/32 dev lo" % VMSAN, "addr add %s/32 dev lo" % DNSMASQ, "addr add %s/32 dev lo" % CLIENT,
               "addr add %s/32 dev lo" % BASELINE)
    common = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
              "--user=root", "--group=root", "--pid-file=", "--log-facility=-"]
    sb.internet.spawn(common + ["--listen-address=" + UPSTREAM, "--address=/bench.test/" + ANSWER,
                                "--local-ttl=3600", "--dns-forward-max=10000"])
    # The VM the resolver serves: a state file and its learned-address set.
    record = {"schema": 1, "id": VM_ID, "slot": 0, "netns": None, "status": "ready", "created": "bench",
              "policy": {"mode": "custom", "allowed_domains": ["*.bench.test"], "allowed_cidrs": [],
                         "denied_cidrs": []}}
    # the state file's codec reads the JSON into a record (older checkouts saved the dict itself)
    StateStore(sb.home).save(vm_state.decode(record) if hasattr(vm_state, "decode") else record)
    with guard.entered(sb.host.name):
        with SetManager() as sets:
            sets.create_learned_set("vmsan-%s-dns" % VM_ID)
    sb.host.run(["ipset", "create", DNSMASQ_SET, "hash:ip", "timeout", "300"], check=True)
    log = open(os.path.join(work, "dnsmasq.log"), "wb")
    sb.host.spawn(common + ["--listen-address=" + DNSMASQ, "--server=" + UPSTREAM, "--cache-size=10000",
                            "--dns-forward-max=1000", "--ipset=/bench.test/" + DNSMASQ_SET], stdout=log, stderr=log)
    resolver = sb.vmsan_spawn("resolver", "--upstream", UPSTREAM, "--listen", VMSAN, *BENCH_BUDGET,
                              log_name="resolver.log")
    resolvers = [resolver]
    if baseline:
        knows_budgets = "--vm-queries-per-second" in subprocess.run(
            shlex.split(baseline) + ["resolver", "--help"], capture_output=True, text=True).stdout
        old = sb.host.spawn(shlex.split(baseline) + ["resolver", "--upstream", UPSTREAM, "--listen", BASELINE]
                            + (list(BENCH_BUDGET) if knows_budgets else []),
                            env=sb.vmsan_env(), stdout=open(os.path.join(work, "baseline.log"), "wb"),
                            stderr=subprocess.STDOUT)
        old.log_path = os.path.join(work, "baseline.log")
        resolvers.append(old)
    for proc in resolvers:
        wait_for(lambda p=proc: "listening on" in open(p.log_path).read(), "vmsan resolver")
    probe = names_file(work, "probe", ["probe.bench.test"])
    for server in (UPSTREAM, DNSMASQ):
        source = None if server == UPSTREAM else CLIENT
        wait_for(lambda s=server, a=source: dnsperf(sb, s, probe, runs=1, outstanding=1, source=a).completed == 1,
                 server)
    return resolvers


def learned(sb, set_name):
    with guard.entered(sb.host.name):
        with SetManager() as sets:
            return {m["address"] for m in sets.members(set_name)}


def measure(sb, work, seconds, repeat, latency_queries=LATENCY_QUERIES, baseline=False):
    cached = names_file(work, "cached", ["c%d.bench.test" % i for i in range(CACHED_NAMES)])
    serial = [0]

    def fresh(label, count):
        serial[0] += 1
        return names_file(work, "u%d" % serial[0], ["%s%d-%d.bench.test" % (label, serial[0], i) for i in range(count)])

    results = {}
    servers = (("vmsan resolver", VMSAN), ("dnsmasq --ipset", DNSMASQ)) + ((("vmsan baseline", BASELINE),)
                                                                          if baseline else ())
    for _, server in servers:                     # warm the caches
        dnsperf(sb, server, cached, runs=2)
    for name, server in servers:
        results[name] = {"cached_qps": [], "uncached_qps": []}
    for _ in range(repeat):
        for name, server in servers:              # interleaved, so drift hits both
            results[name]["cached_qps"].append(dnsperf(sb, server, cached, seconds=seconds).qps)
            uncached = fresh("t", int(60000 * seconds))
            run = dnsperf(sb, server, uncached, seconds=seconds, runs=1)
            results[name]["uncached_qps"].append(run.qps)
    rounds = max(1, latency_queries // CACHED_NAMES)
    direct = dnsperf(sb, UPSTREAM, fresh("d", latency_queries), runs=1, outstanding=1, verbose=True, source=None)
    results["upstream (direct)"] = {"latency": direct.latencies}
    for name, server in servers:
        results[name]["cached_latency"] = dnsperf(sb, server, cached, runs=rounds, outstanding=1,
                                                  verbose=True).latencies
        results[name]["uncached_latency"] = dnsperf(sb, server, fresh("l", latency_queries), runs=1,
                                                    outstanding=1, verbose=True).latencies
    return results


def ms(seconds):
    return "%.3f" % (seconds * 1000)


def report(results, seconds, repeat):
    up = statistics.median(results["upstream (direct)"]["latency"])
    lines = ["", "DNS resolver benchmark (%d s runs, median of %d; latency: 1 query outstanding)"
             % (seconds, repeat), ""]
    columns = ("server", "cache", "queries/s", "median ms", "p99 ms", "added median ms")
    header = "%-18s %-9s %12s %11s %10s %16s" % columns
    lines += [header, "-" * len(header)]
    up_p99 = ms(percentile(results["upstream (direct)"]["latency"], 0.99))
    lines.append("%-18s %-9s %12s %11s %10s %16s" % ("upstream (direct)", "-", "-", ms(up), up_p99, "0"))
    for name in [n for n in ("vmsan resolver", "vmsan baseline", "dnsmasq --ipset") if n in results]:
        r = results[name]
        for kind in ("cached", "uncached"):
            lat = r[kind + "_latency"]
            lines.append("%-18s %-9s %12.0f %11s %10s %16s" % (
                name, kind, statistics.median(r[kind + "_qps"]), ms(statistics.median(lat)),
                ms(percentile(lat, 0.99)), ms(statistics.median(lat) - up)))
    v, d = results["vmsan resolver"], results["dnsmasq --ipset"]
    lines += ["",
              "throughput vmsan/dnsmasq: cached %.2f, uncached %.2f" % (
                  statistics.median(v["cached_qps"]) / statistics.median(d["cached_qps"]),
                  statistics.median(v["uncached_qps"]) / statistics.median(d["uncached_qps"])),
              "runs (queries/s): vmsan cached %s uncached %s; dnsmasq cached %s uncached %s" % (
                  _list(v["cached_qps"]), _list(v["uncached_qps"]), _list(d["cached_qps"]), _list(d["uncached_qps"]))]
    if "vmsan baseline" in results:
        b = results["vmsan baseline"]
        lines += ["throughput baseline/dnsmasq: cached %.2f, uncached %.2f; vmsan/baseline: cached %.2f, uncached %.2f" % (
            statistics.median(b["cached_qps"]) / statistics.median(d["cached_qps"]),
            statistics.median(b["uncached_qps"]) / statistics.median(d["uncached_qps"]),
            statistics.median(v["cached_qps"]) / statistics.median(b["cached_qps"]),
            statistics.median(v["uncached_qps"]) / statistics.median(b["uncached_qps"])),
            "runs (queries/s): baseline cached %s uncached %s" % (_list(b["cached_qps"]), _list(b["uncached_qps"]))]
    return "\n".join(lines)


def resolver_counters(sb, address=VMSAN):
    """The resolver's health answer, asked from the host namespace."""
    from ansible_collections.vmsan.network.plugins.module_utils.resolver import health
    with guard.entered(sb.host.name):
        return health.probe((address, 53), timeout=2.0)


def _list(values):
    return "/".join("%.0f" % x for x in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each throughput run")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per server and kind")
    parser.add_argument("--latency-queries", type=int, default=LATENCY_QUERIES,
                        help="queries per latency run (one outstanding at a time)")
    parser.add_argument("--baseline", metavar="CMD",
                        help="a vmsan command of another checkout whose resolver runs alongside (shell words)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("resolver_bench.py needs root (it builds network namespaces)")
    work = tempfile.mkdtemp(prefix="vmsan-resolver-bench-")
    try:
        with Sandbox() as sb:
            resolvers = setup(sb, work, args.baseline)
            results = measure(sb, work, args.seconds, args.repeat, args.latency_queries, bool(args.baseline))
            vmsan_set, dnsmasq_set = learned(sb, "vmsan-%s-dns" % VM_ID), learned(sb, DNSMASQ_SET)
            counters = resolver_counters(sb)
            old_counters = resolver_counters(sb, BASELINE) if args.baseline else None
            for proc in resolvers:
                procs.stop(proc)
            print(report(results, args.seconds, args.repeat))
            print("vmsan resolver counters: %s" % counters.detail)
            if old_counters is not None:
                print("vmsan baseline counters: %s" % old_counters.detail)
            print("learned: vmsan set %s, dnsmasq set %s" % (sorted(vmsan_set), sorted(dnsmasq_set)))
            if vmsan_set != {ANSWER} or dnsmasq_set != {ANSWER}:
                print("WARNING: a resolver did not learn the answer; its numbers are not comparable")
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
