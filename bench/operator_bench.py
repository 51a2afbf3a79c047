#!/usr/bin/env python3
"""What the operator's view costs (docs/operator.md), and what a guest's
dropped packets cost another guest (issue 17: "a guest sending 100 000
packets that are dropped: the log grows by no more than its limit, and
another guest's DNS latency and throughput stay within 10 % of before").

    sudo .venv/bin/python bench/operator_bench.py [--rounds 3] [--seconds 3]
        [--issue-rounds 3 --packets 100000 --kinds policy,spoofed,ipv6]
        [--flood-rounds 3 --flood-cpu 0.5]

Everything runs inside a throwaway sandbox (tests/sandbox): a VM "bench"
(custom: ``a.example.test``, ``203.0.113.0/24``, denied ``192.0.2.0/24``)
and, for the flood phases, a second VM "other", each with a guest behind
its TAP. The daemon's upstream is dnsmasq in the internet namespace
(every name under ``example.test`` is 203.0.113.10). Each measurement
starts ``vmsan daemon`` afresh. Three phases, each off with 0 rounds:

1. ``--rounds``: the event log and metrics on (``--metrics-listen``, a
   scrape every second) against ``--no-event-log`` without metrics, rounds
   alternating off/on, measured from the "bench" guest: cached DNS
   queries/s (dnsperf, 100 outstanding) and throughput (iperf3 to the
   internet, SECONDS). The bar is >= 0.95.

2. ``--issue-rounds``: the issue's case. The "other" guest is measured
   (below) with "bench" idle, and while "bench" sends PACKETS dropped
   packets of each kind in ``--kinds`` (policy: to the denied CIDR;
   spoofed: a forged source; ipv6) spread over the measurement at a stated
   rate (PACKETS over the idle measurement's length, or ``--rate``); modes
   alternate, and each round ends with idle once more (its ratio to idle is
   the noise floor of the comparison). Reported: the ratios against idle (the bar:
   within 10 %), the packets the kernel counted, and the event log's growth
   against its limit.

3. ``--flood-rounds``: the stress case. "bench" sends to the denied CIDR as
   fast as its Python loop does; "other" measured idle, during the flood,
   during the flood with the log and metrics off, during the flood with
   "bench"'s processes (its relay, the stand-in VMM, and its sender, the
   guest's CPU) held to ``--flood-cpu`` cores by a cgroup as a Firecracker
   jailer's per-VM cgroup would (made and removed here), with the same cap
   and a bare ``-j DROP`` ahead of vmsan's rules (the flood meets none of
   vmsan's drop path: its cost, inside the cap and outside), with the same cap
   and no packets at all, the sender only burning its CPU (the control for
   "two cores shared with a busy guest": what the capped flood costs beyond
   it is the drop path's work outside the VM's cgroup), and during the same
   flood to an allowed destination (forwarded, not dropped: the control for
   "is a drop dearer than forwarding"). The CPU of the flooder's sender and
   relay, the daemon and ksoftirqd is reported for every mode.

What "other" is measured on, in this order: DNS latency, one query at a
time at ``--latency-rate`` a second for ``--latency-seconds``, of a cached
name and of names never asked before (each goes upstream; a lost query
counts as the timeout, 1 s); cached DNS queries/s (dnsperf, 100
outstanding, SECONDS); throughput to the internet (iperf3, SECONDS).
"""

import argparse
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

from sandbox import procs

import common
import operator_load

UPSTREAM = "203.0.113.54"      # dnsmasq, in the internet namespace
ANSWER = "203.0.113.10"
METRICS = "127.0.0.1:9464"
BUDGET = ("--vm-queries-per-second", "1000000", "--vm-upstream-queries", "4096")
LOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "operator_load.py")
LATENCY_TIMEOUT = 1.0
# the kernel's counter of each kind's drops (vmsan show: counters.dropped)
REASON = {"policy": "policy", "spoofed": "spoofed", "ipv6": "ipv6", "allowed": None}


# --------------------------------------------------------------------------
# the daemon and its upstream
# --------------------------------------------------------------------------
def start_upstream(sb):
    sb.internet.ip("addr add %s/32 dev lo" % UPSTREAM)
    sb.internet.spawn(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
                       "--user=root", "--group=root", "--pid-file=", "--log-facility=-",
                       "--listen-address=" + UPSTREAM, "--address=/example.test/" + ANSWER,
                       "--local-ttl=3600", "--dns-forward-max=10000"])


def start_daemon(sb, on, label):
    flags = ["daemon", "--upstream", UPSTREAM] + list(BUDGET)
    flags += ["--metrics-listen", METRICS] if on else ["--no-event-log"]
    proc = sb.vmsan_spawn(*flags, log_name="daemon-%s-%s.log" % (label, "on" if on else "off"))
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


# --------------------------------------------------------------------------
# what a guest measures
# --------------------------------------------------------------------------
def dnsperf(guest, path, seconds):
    done = guest.run(["dnsperf", "-s", guest.dns_server, "-d", path, "-q", "100", "-l", str(seconds), "-t", "2"],
                     timeout=seconds + 30)
    match = re.search(r"Queries per second:\s+([0-9.]+)", done.stdout)
    if not match:
        raise RuntimeError("dnsperf: %s" % (done.stderr or done.stdout))
    return float(match.group(1))


def latencies(guest, path, rate, seconds, once):
    """Per-query latencies (s) of one query at a time, RATE a second, for
    SECONDS (ONCE: through PATH once, each name asked a single time); a lost
    query counts as the timeout. Returns (latencies, lost)."""
    argv = ["dnsperf", "-s", guest.dns_server, "-d", path, "-q", "1", "-Q", str(rate), "-l", str(seconds),
            "-t", str(int(LATENCY_TIMEOUT)), "-v"] + (["-n", "1"] if once else [])
    done = guest.run(argv, timeout=seconds + 30)
    answered = [float(m.group(1)) for m in re.finditer(r"^> \S+ \S+ \S+ ([0-9.]+)$", done.stdout, re.M)]
    lost = re.search(r"Queries lost:\s+([0-9]+)", done.stdout)
    if lost is None:
        raise RuntimeError("dnsperf: %s" % (done.stderr or done.stdout))
    lost = int(lost.group(1))
    return answered + [LATENCY_TIMEOUT] * lost, lost


class Probe(object):
    """The other guest's measurements, one call per mode."""

    def __init__(self, sb, guest, args):
        self.sb, self.guest, self.args = sb, guest, args
        self.cached = os.path.join(sb.home, "cached.txt")
        with open(self.cached, "w") as handle:
            handle.write("a.example.test A\n" * 50)
        self.serial = 0

    def fresh(self):
        """A file of names never asked before (under *.u.example.test)."""
        self.serial += 1
        count = int(self.args.latency_rate * self.args.latency_seconds) + 10
        path = os.path.join(self.sb.home, "fresh-%d.txt" % self.serial)
        with open(path, "w") as handle:
            handle.writelines("n%d-%d.u.example.test A\n" % (self.serial, i) for i in range(count))
        return path

    def measure(self):
        a = self.args
        began = time.monotonic()
        cached, cached_lost = latencies(self.guest, self.cached, a.latency_rate, a.latency_seconds, False)
        fresh, fresh_lost = latencies(self.guest, self.fresh(), a.latency_rate, a.latency_seconds, True)
        qps = dnsperf(self.guest, self.cached, a.seconds)
        bps = self.guest.iperf3(ANSWER, seconds=a.seconds)
        return {"cached_latency": cached, "cached_lost": cached_lost, "uncached_latency": fresh,
                "uncached_lost": fresh_lost, "qps": qps, "bps": bps, "window": time.monotonic() - began}


# --------------------------------------------------------------------------
# the flooding guest
# --------------------------------------------------------------------------
class Flood(object):
    """One run of operator_load.py's sender in the flooding guest."""

    def __init__(self, guest, kind, count=0, rate=0, cap=None):
        argv = [sys.executable, LOAD, "send", "--kind", kind, "--count", count, "--rate", rate]
        if cap is not None:
            argv += ["--cgroup-procs", cap.procs]
        if kind == "ipv6":
            argv += ["--gateway-mac", guest.gateway_mac(), "--guest-mac", guest.mac]
        self.proc = guest.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, wait):
        """Sent and seconds: after the sender is done (WAIT) or stopped now."""
        if not wait and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=120)
        if self.proc.returncode != 0:
            raise RuntimeError("the sender failed: %s" % err.strip())
        return json.loads(out.strip().splitlines()[-1])


class CpuWatch(object):
    """CPU seconds that groups of processes use from now on."""

    def __init__(self, groups):
        self.groups = groups
        self.start = {name: self._sum(pids) for name, pids in groups.items()}

    def _sum(self, pids):
        return sum(operator_load.cpu_seconds(pid) or 0.0 for pid in pids)

    def used(self):
        return {name: round(self._sum(pids) - self.start[name], 3) for name, pids in self.groups.items()}


def counters(sb, vm_id):
    """The VM's drops by reason, and "tap": the packets its TAP took from
    the guest (what reached the host; a relay that falls behind leaves the
    rest in the guest's own queue)."""
    out = sb.vmsan("show", vm_id).out["counters"]
    return dict(out["dropped"], tap=out["sent"]["packets"])


class EventLogWatch(object):
    """The event log's growth over one mode: bytes and the lines of VM."""

    def __init__(self, sb, vm_id):
        self.dir = os.path.join(sb.home, "events")
        self.path = os.path.join(self.dir, "events.jsonl")
        self.vm_id = vm_id
        self.size, self.offset = self._total(), self._size(self.path)

    def _size(self, path):
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    def _total(self):
        if not os.path.isdir(self.dir):
            return 0
        return sum(self._size(os.path.join(self.dir, f)) for f in os.listdir(self.dir))

    def growth(self):
        """(bytes, {kind: lines of VM}) since this watch began."""
        kinds = {}
        offset = self.offset if self._size(self.path) >= self.offset else 0    # rotated meanwhile
        if os.path.exists(self.path):
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                for line in handle:
                    event = json.loads(line)
                    if event.get("vm") == self.vm_id:
                        kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
        return self._total() - self.size, kinds


def log_limit(seconds):
    """The most lines the event log takes of one VM in SECONDS: PER_VM events
    a window then one summary line, counting a part window at each end."""
    from ansible_collections.vmsan.network.plugins.module_utils.telemetry import eventlog
    windows = math.ceil(seconds / eventlog.WINDOW) + 1
    return windows * (eventlog.PER_VM + 1), eventlog.PER_VM


# --------------------------------------------------------------------------
# the phases
# --------------------------------------------------------------------------
def overhead_rounds(sb, guest, args):
    results = {"off": {"qps": [], "bps": []}, "on": {"qps": [], "bps": []}}
    names = os.path.join(sb.home, "names.txt")
    with open(names, "w") as handle:
        handle.write("a.example.test A\n" * 50)
    for round_no in range(args.rounds):
        for mode in ("off", "on"):
            common.check_stop()
            proc = start_daemon(sb, mode == "on", "overhead%d" % round_no)
            scraper = Scraper(sb) if mode == "on" else None
            try:
                if scraper:
                    scraper.start()
                guest.dig("a.example.test", guest.dns_server)        # cached from here on
                results[mode]["qps"].append(dnsperf(guest, names, args.seconds))
                results[mode]["bps"].append(guest.iperf3(ANSWER, seconds=args.seconds))
            finally:
                if scraper:
                    scraper.stop.set()
                    scraper.join(5)
                procs.stop(proc)
            common.progress("round %d %s: %.0f q/s, %.2f Gbit/s" % (
                round_no + 1, mode, results[mode]["qps"][-1], results[mode]["bps"][-1] / 1e9))
    return results


def one_mode(sb, probe, flooder, label, on=True, kind=None, count=0, rate=0, cap=None, wait=False):
    """The other guest measured once, with the flooder sending KIND (None:
    idle) meanwhile; the daemon started afresh (event log ON or off)."""
    common.check_stop()
    proc = start_daemon(sb, on, label)
    watch = EventLogWatch(sb, flooder.id)
    before = counters(sb, flooder.id)
    flood = None
    try:
        probe.guest.dig("a.example.test", probe.guest.dns_server)      # cached from here on
        if cap is not None:
            cap.add(flooder.relay.pid)
            throttled = cap.throttled()
        if kind:
            flood = Flood(flooder, kind, count, rate, cap)
            time.sleep(0.2)
        cpu = CpuWatch({"daemon": [proc.pid], "relay": [flooder.relay.pid],
                        "ksoftirqd": operator_load.softirq_threads()})
        result = probe.measure()
        if flood is not None:
            result.update(flood.finish(wait))
            flood = None
            time.sleep(0.3)          # the daemon reads the last copies
        result["cpu_seconds"] = cpu.used()
        if cap is not None:
            now = cap.throttled()
            result["throttled"] = [now[0] - throttled[0], now[1] - throttled[1]]
    finally:
        if flood is not None:
            procs.stop(flood.proc)
        if cap is not None:
            cap.release()
        procs.stop(proc)
    after = counters(sb, flooder.id)
    result["dropped"] = {r: after[r] - before[r] for r in after}
    result["log_bytes"], result["log_lines"] = watch.growth()
    return result


def issue_rounds(sb, probe, flooder, args):
    """The issue's case: PACKETS dropped packets of each kind at a stated rate."""
    out = {"idle": []}
    out.update({k: [] for k in args.kinds})
    out["idle again"] = []
    rate = args.rate
    for round_no in range(args.issue_rounds):
        out["idle"].append(one_mode(sb, probe, flooder, "issue%d-idle" % round_no))
        if not rate:
            # PACKETS over the length of a measurement (the first idle one's)
            rate = max(100, int(args.packets / out["idle"][0]["window"]))
        common.progress("issue round %d idle: %s" % (round_no + 1, brief(out["idle"][-1])))
        kinds = args.kinds[round_no % len(args.kinds):] + args.kinds[:round_no % len(args.kinds)]
        for kind in kinds:
            result = one_mode(sb, probe, flooder, "issue%d-%s" % (round_no, kind), kind=kind,
                              count=args.packets, rate=rate, wait=True)
            result["rate"] = rate
            out[kind].append(result)
            common.progress("issue round %d %s: %s; sent %d in %.1f s (window %.1f s)" % (
                round_no + 1, kind, brief(result), result["sent"], result["seconds"], result["window"]))
        # idle once more, last: its ratio to idle is the noise floor of the comparison
        out["idle again"].append(one_mode(sb, probe, flooder, "issue%d-idle-again" % round_no))
        common.progress("issue round %d idle again: %s" % (round_no + 1, brief(out["idle again"][-1])))
    return out


STRESS = (("idle", True, None, False), ("flood", True, "policy", False), ("flood_off", False, "policy", False),
          ("flood_capped", True, "policy", True), ("plain_capped", True, "policy", True),
          ("spin_capped", True, "spin", True), ("flood_allowed", True, "allowed", False))


class PlainDrop(object):
    """A bare ``-j DROP`` of the denied CIDR first in FORWARD of the flooding
    VM's namespace (made by vmsan in this sandbox), so its flood skips
    vmsan's rules: no policy chain, no counted jump, no limit, no NFLOG. The
    baseline of "what vmsan's drop path costs"; removed on exit."""

    def __init__(self, guest):
        self.netns = guest.vm_netns_path
        self.rule = ["FORWARD", "-i", guest.tap, "-d", "192.0.2.0/24", "-j", "DROP"]

    def _iptables(self, *args):
        subprocess.run(["nsenter", "--net=%s" % self.netns, "--", "iptables-legacy", "-w"] + list(args),
                       check=True, capture_output=True)

    def __enter__(self):
        self._iptables("-I", *self.rule[:1] + ["1"] + self.rule[1:])
        return self

    def __exit__(self, *exc):
        self._iptables("-D", *self.rule)


def stress_rounds(sb, probe, flooder, args):
    """The flood flat out, with and without the log, under a CPU cap, and to
    an allowed destination."""
    out = {mode: [] for mode, _on, _kind, _capped in STRESS}
    cap = None
    try:
        cap = operator_load.CpuCap("vmsan-bench-%s" % sb.prefix, args.flood_cpu)
    except OSError as exc:
        common.note("# no CPU cap (%s): the capped mode is left out" % exc)
    try:
        for round_no in range(args.flood_rounds):
            for mode, on, kind, capped in STRESS:
                if capped and cap is None:
                    continue
                plain = PlainDrop(flooder) if mode.startswith("plain") else contextlib.nullcontext()
                with plain:
                    result = one_mode(sb, probe, flooder, "stress%d-%s" % (round_no, mode), on=on, kind=kind,
                                      cap=cap if capped else None)
                out[mode].append(result)
                common.progress("flood round %d %s: %s%s" % (round_no + 1, mode, brief(result),
                                                             "; sent %d" % result["sent"] if kind else ""))
    finally:
        if cap is not None:
            cap.close()
    return out


def brief(result):
    return "cached %s / uncached %s ms (median), %.0f q/s, %.2f Gbit/s" % (
        common.ms(common.median(result["cached_latency"])), common.ms(common.median(result["uncached_latency"])),
        result["qps"], result["bps"] / 1e9)


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------
def pooled(results, key):
    return [v for r in results for v in r[key]]


def measures(results):
    """The measures of the other guest over a mode's rounds: latencies
    pooled (median, p99), q/s and throughput as the median of the rounds."""
    cached, fresh = pooled(results, "cached_latency"), pooled(results, "uncached_latency")
    return {"cached median": common.median(cached), "cached p99": common.percentile(cached, 99),
            "uncached median": common.median(fresh), "uncached p99": common.percentile(fresh, 99),
            "qps": common.median([r["qps"] for r in results]), "bps": common.median([r["bps"] for r in results])}


ROWS = (("cached median", "DNS latency, cached, median (ms)", "latency"),
        ("cached p99", "DNS latency, cached, p99 (ms)", "latency"),
        ("uncached median", "DNS latency, uncached, median (ms)", "latency"),
        ("uncached p99", "DNS latency, uncached, p99 (ms)", "latency"),
        ("qps", "cached DNS queries/s", "rate"),
        ("bps", "throughput to the internet (Gbit/s)", "rate"))


def cell(key, value):
    if key == "qps":
        return "%.0f" % value
    if key == "bps":
        return "%.2f" % (value / 1e9)
    return common.ms(value)


def within(kind, ratio):
    """Inside the issue's 10 %: a latency at most 1.10 of idle, a rate at least 0.90."""
    return ratio <= 1.10 if kind == "latency" else ratio >= 0.90


def comparison_table(title, out, modes, labels):
    base = measures(out["idle"])
    got = {m: measures(out[m]) for m in modes if out.get(m)}
    headers = ["measure", "idle"]
    for m in got:
        headers += [labels[m], labels[m] + "/idle"]
    rows = []
    for key, label, kind in ROWS:
        row = [label, cell(key, base[key])]
        for m in got:
            ratio = common.ratio(got[m][key], base[key])
            row += [cell(key, got[m][key]), "%.3f%s" % (ratio, "" if within(kind, ratio) else " (out)")]
        rows.append(row)
    common.print_table(title, headers, rows)
    lost = ", ".join("%s %d/%d" % (m, sum(r["cached_lost"] + r["uncached_lost"] for r in out[m]),
                                   sum(len(r["cached_latency"]) + len(r["uncached_latency"]) for r in out[m]))
                     for m in ["idle"] + list(got))
    common.note("latency queries lost (counted as %.0f s): %s" % (LATENCY_TIMEOUT, lost))


def report_issue(out, args):
    labels = {k: k for k in args.kinds}
    labels["idle again"] = "idle again"
    comparison_table("the other guest while a guest sends %d dropped packets of a kind (%d rounds; latency at %s "
                     "queries/s for %s s, pooled; q/s and Gbit/s medians; ratio outside the 10 %% bar: (out); "
                     "idle again, measured last in each round: the noise floor)"
                     % (args.packets, args.issue_rounds, args.latency_rate, args.latency_seconds),
                     out, list(args.kinds) + ["idle again"], labels)
    rows = []
    for kind in args.kinds:
        for r in out[kind]:
            limit, per_vm = log_limit(r["seconds"] + 1.0)
            lines = sum(r["log_lines"].values())
            counted = r["dropped"].get(REASON[kind], 0)
            rows.append([kind, "%d" % r["rate"], "%d" % r["sent"], "%.1f" % r["seconds"], "%.1f" % r["window"],
                         "%d" % counted, "%d" % lines, "%d" % limit, "%d" % r["log_bytes"],
                         "yes" if lines <= limit else "NO"] + cores(r))
    common.print_table("the dropped packets and the event log (one row a round; limit: %d events of a VM a second "
                       "and one summary line)" % per_vm,
                       ["kind", "rate/s", "sent", "send s", "window s", "counted by the kernel", "log lines of the VM",
                        "limit", "log bytes", "within"] + CORES, rows)
    cpu_table(out, ["idle"] + list(args.kinds))


def report_stress(out, args):
    labels = {"flood": "flood", "flood_off": "flood, log+metrics off", "flood_capped":
              "flood, capped %.2g CPU" % args.flood_cpu, "spin_capped": "no packets, CPU burnt, capped",
              "plain_capped": "flood, capped, a bare DROP",
              "flood_allowed": "flood to an allowed address"}
    comparison_table("the other guest while a guest floods as fast as it can (%d rounds)" % args.flood_rounds,
                     out, [m for m, _o, _k, _c in STRESS[1:]], labels)
    rows = []
    for mode, _on, kind, _capped in STRESS[1:]:
        for r in out[mode]:
            counted = r["dropped"].get("policy", 0) if kind == "policy" else 0
            rows.append([labels[mode], "%d" % r["sent"], "%.1f" % r["seconds"],
                         "%.0f" % (r["sent"] / r["seconds"]) if r["seconds"] else "-", "%d" % r["dropped"]["tap"],
                         "%d" % counted,
                         "%d" % sum(r["log_lines"].values()), "%d" % r["log_bytes"],
                         "%.1f" % r["throttled"][1] if "throttled" in r else "-"] + cores(r))
    common.print_table("the floods (one row a round; CPU in cores over the measurement)",
                       ["mode", "sent", "seconds", "packets/s", "reached the TAP", "dropped (kernel)",
                        "log lines of the VM",
                        "log bytes", "throttled s"] + CORES, rows)
    cpu_table(out, [m for m, _o, _k, _c in STRESS if out.get(m)])


CORES = ["sender", "relay", "daemon", "ksoftirqd"]


def cpu_table(out, modes):
    rows = []
    for mode in modes:
        each = [[float(c) for c in cores(r)] for r in out[mode]]
        rows.append([mode] + ["%.2f" % common.median([e[i] for e in each]) for i in range(len(CORES))])
    common.print_table("CPU in cores over the measurement (medians of the rounds): the flooder's sender and relay, "
                       "the daemon, ksoftirqd", ["mode"] + CORES, rows)


def cores(r):
    """The CPU of the flooder's sender and relay, the daemon and ksoftirqd,
    in cores over the measurement."""
    used = dict(r["cpu_seconds"], sender=r.get("cpu", 0.0))
    return ["%.2f" % (used[k] / r["window"]) for k in CORES]


def strip(out):
    """The raw results without the per-query latencies (their medians instead)."""
    return {m: [dict({k: v for k, v in r.items() if not k.endswith("_latency")},
                     cached_median=common.median(r["cached_latency"]),
                     uncached_median=common.median(r["uncached_latency"])) for r in rs]
            for m, rs in out.items()}


def kinds(text):
    chosen = [k.strip() for k in text.split(",") if k.strip()]
    wrong = [k for k in chosen if k not in ("policy", "spoofed", "ipv6")]
    if not chosen or wrong:
        raise argparse.ArgumentTypeError("comma-separated, of policy, spoofed, ipv6 (e.g. policy,ipv6)")
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of phase 1 (log and metrics on/off)")
    parser.add_argument("--seconds", type=int, default=3, help="length of a dnsperf and an iperf3 run")
    parser.add_argument("--issue-rounds", type=int, default=3, help="rounds of phase 2 (the issue's case)")
    parser.add_argument("--packets", type=int, default=100000, help="dropped packets a flood of phase 2 sends")
    parser.add_argument("--rate", type=int, default=0,
                        help="packets a second in phase 2 (default: PACKETS over an idle measurement)")
    parser.add_argument("--kinds", type=kinds, default=["policy", "spoofed", "ipv6"],
                        help="what phase 2's floods send: policy,spoofed,ipv6")
    parser.add_argument("--latency-rate", type=int, default=200, help="DNS latency queries a second")
    parser.add_argument("--latency-seconds", type=int, default=3, help="length of a DNS latency run")
    parser.add_argument("--flood-rounds", type=int, default=3, help="rounds of phase 3 (the flood flat out)")
    parser.add_argument("--flood-cpu", type=float, default=0.5,
                        help="cores the flooding VM's processes get in the capped mode of phase 3")
    args = parser.parse_args()
    if args.flood_cpu <= 0 or args.packets < 1 or args.latency_rate < 1 or args.latency_seconds < 1:
        parser.error("--flood-cpu, --packets, --latency-rate and --latency-seconds must be above 0")
    info = common.print_machine()
    began = time.monotonic()
    with common.bench_sandbox() as sb:
        vm = sb.vmsan("create", "--id", sb.unique_id("bench"), "--allowed-domain", "a.example.test",
                      "--allowed-cidr", "203.0.113.0/24", "--denied-cidr", "192.0.2.0/24").out
        flooder = sb.add_guest(vm)
        sb.internet.iperf3_server()
        start_upstream(sb)
        overhead = overhead_rounds(sb, flooder, args) if args.rounds else None
        issue = stress = None
        if args.issue_rounds or args.flood_rounds:
            other_vm = sb.vmsan("create", "--id", sb.unique_id("other"), "--allowed-domain",
                                "a.example.test,*.u.example.test", "--allowed-cidr", "203.0.113.0/24").out
            probe = Probe(sb, sb.add_guest(other_vm), args)
            issue = issue_rounds(sb, probe, flooder, args) if args.issue_rounds else None
            stress = stress_rounds(sb, probe, flooder, args) if args.flood_rounds else None
    if overhead:
        rows = []
        for what, label, fmt in (("qps", "cached DNS queries/s (dnsperf, guest)", "%.0f"),
                                 ("bps", "guest -> internet (iperf3), Gbit/s", "%.2f")):
            off, on = common.median(overhead["off"][what]), common.median(overhead["on"][what])
            scale = 1e9 if what == "bps" else 1
            rows.append([label, fmt % (off / scale), fmt % (on / scale), "%.3f" % (on / off)])
        common.print_table("event log and metrics on vs off (medians of %d rounds, %d s each)" % (
            args.rounds, args.seconds), ["measure", "off", "on", "on/off"], rows)
        print("raw:", overhead)
    if issue:
        report_issue(issue, args)
        print("raw issue:", json.dumps(strip(issue), sort_keys=True))
    if stress:
        report_stress(stress, args)
        print("raw flood:", json.dumps(strip(stress), sort_keys=True))
    common.print_end(info, began)


if __name__ == "__main__":
    common.run_main(main)
