#!/usr/bin/env python3
"""One guest attacks the host resolver; another VM's DNS is timed meanwhile.

    sudo .venv/bin/python bench/resolver_hostile_bench.py [--seconds 10] [--fuzz 20000]

Everything runs in a throwaway sandbox (tests/sandbox). Two VMs: the
attacker (custom: ``*.example.test``, ``*.many.test``, ``*.big.test``) and
the victim (custom: ``*.victim.test``), each with a guest behind its TAP;
``vmsan resolver`` with its default budgets; the upstream is the sandbox's
authoritative DNS. While everything runs, the victim asks, from its guest,
one name over and over (cached: answered from the resolver's caches) and
a new name every 20 ms (uncached: every one goes upstream), and the
resolver's memory (VmRSS) and log are sampled.

Phases, one after another:

* quiet: nothing else (the victim's quiet p50/p99);
* fuzz: FUZZ malformed messages over UDP in batches of 1000 (every kind of
  sandbox/dns_attacks.malformed, compression bombs included) and, with each
  batch, 10 TCP connections of dns_attacks.tcp_abuse (64 KB messages and a
  64 KB compression bomb, lying length prefixes); after each batch the
  victim asks once more (within 100 ms is the target);
* flood: UDP as fast as the attacker's guest sends, SECONDS;
* tcp-stuck: 16 TCP connections with 1000 pipelined queries each, never read;
* tcp-idle: 300 TCP connections held open;
* padded: one name, each query with another EDNS padding;
* many: names of 64 addresses each, a new one each time, 8 at a time;
* after: quiet again.

Then: 200 fresh lookups and the source ports the upstream saw them from;
and a resolver whose upstream forges answers (wrong id from its port, right
id from another port, the name in the wrong case) before the real one.

Printed: per phase the victim's cached and uncached median/p99/max and lost
queries, the ratio of the uncached p99 to its quiet value, the resolver's
peak memory and CPU, the log lines written (and how many of them name the
attacker). Timings are printed, never asserted.

``--hops``: the victim's uncached queries are also captured (sandbox/
dns_hops: kernel timestamps of packet sockets) at its guest's eth0, its
TAP, the host's end of its veth and the uplink; per phase, each hop's
median and p99 and its share of the time of the slowest 5% of the queries
(where the p99 comes from): the guest's relay in, the VM's namespace to the
host, the resolver until it asks upstream, the upstream, the resolver until
the answer reaches the TAP, the relay out, and the guest's own process.

The sandbox runs the attacker's guest and its VMM stand-in (the relay) as
processes on the same cores as the resolver and the victim: a flood costs
the host a core or two outside the resolver. The resolver runs as the
product runs it: at the priority of its systemd unit (Nice=-10, which the
daemon takes itself when started at nice 0, as here; printed with the
results); ``--daemon-nice 0`` runs it at the nice value it is started with
(the configuration before, for comparison). ``--attacker-nice 19`` gives
the attacker's relay and processes only the CPU that is left, as a host
that shares CPU out per VM would, so that what remains is what the resolver
lets one guest do to another.
"""

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

import common as C
from sandbox import dns_attacks, dns_hops, guard, procs, topology

from ansible_collections.vmsan.network.plugins.module_utils.kernel.ipsets import SetManager
from ansible_collections.vmsan.network.plugins.module_utils.model import addressing
from ansible_collections.vmsan.network.plugins.module_utils.resolver import health

AUTH_DNS = "203.0.113.53"
SYNTHETIC_DNS = "203.0.113.56"      # dns_attacks upstream: a process of its own in the internet namespace
RESOLVER = ("169.254.64.1", 53)
TESTS = os.path.join(C.REPO, "tests")     # where sandbox/ is, for the processes started in guests
MEMORY_BOUND_MIB = 160      # what docs/domain-policies.md states for these attacks
FUZZ_BATCH = 1000
PHASES = ("quiet", "fuzz", "flood", "tcp-stuck", "tcp-idle", "padded", "many", "after")
TCP_PER_BATCH = 10
UNIT = os.path.join(C.REPO, "roles", "vmsan_host", "files", "vmsan-resolver.service")
DAEMON_ENV = {}             # --daemon-nice N: VMSAN_DAEMON_NICE for the resolvers started here


class Sampler(object):
    """The resolver's VmRSS and CPU time (user + system, all its threads),
    every 0.25 s."""

    def __init__(self, proc):
        self.proc, self.samples = proc, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.25):
            self.samples.append((time.monotonic(), rss_mib(self.proc.pid), cpu_seconds(self.proc.pid)))

    def peak(self, start, end):
        values = [v for t, v, _c in self.samples if start <= t <= end and v is not None]
        return max(values) if values else float("nan")

    def cpu_share(self, start, end):
        """The resolver's CPU seconds per second between START and END (1.0: one core)."""
        inside = [(t, c) for t, _v, c in self.samples if start <= t <= end and c is not None]
        if len(inside) < 2:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def stop(self):
        self._stop.set()
        self._thread.join(2)


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def nice_of(pid):
    """The nice value of process PID's main thread (field 19 of its stat)."""
    with open("/proc/%d/stat" % pid) as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[16])


def unit_nice(path=UNIT):
    """The Nice= of the daemon's systemd unit (None: it sets none)."""
    with open(path) as handle:
        for line in handle:
            if line.startswith("Nice="):
                return int(line.split("=", 1)[1])
    return None


def log_lines(proc):
    with open(proc.log_path) as handle:
        return handle.read().splitlines()


def start_resolver(sb, *flags, upstream=AUTH_DNS, name="resolver"):
    proc = sb.vmsan_spawn("resolver", "--upstream", upstream, "--ttl-floor", "60", "--grace", "60", *flags,
                          log_name="%s.log" % name, env=DAEMON_ENV)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "listening on" in open(proc.log_path).read():
            return proc
        time.sleep(0.05)
    raise RuntimeError("the resolver did not start: %s" % open(proc.log_path).read())


def make_vm(sb, name, *flags):
    vm = sb.vmsan("create", "--id", sb.unique_id(name), *flags).out
    return vm, sb.add_guest(vm)


def counters(sb):
    with guard.entered(sb.host.name):
        answer = health.probe(RESOLVER, timeout=2.0)
    if not answer.ok:
        C.progress("health query: %s" % answer.detail)
    return answer.stats


def learned_count(sb, vm):
    with guard.entered(vm["netns"]):
        with SetManager() as sets:
            return len(sets.members("vmsan-%s-dns" % vm["id"]))


def spawn_attack(guest, *args, nice=0):
    return guest.spawn((["nice", "-n", str(nice)] if nice else []) + [sys.executable, "-m", "sandbox.dns_attacks",
                                                                      *map(str, args)],
                       env=dict(os.environ, PYTHONPATH=TESTS), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def attack_result(proc, timeout):
    out, err = proc.communicate(timeout=timeout)
    lines = out.decode().strip().splitlines()
    return lines[-1] if lines else "(no result: %s)" % err.decode().strip()[-200:]


class Victim(object):
    """The victim's two watchers, processes in its guest (nothing else the
    bench does slows them): the same name every 10 ms (cached) and a new
    name every 20 ms (uncached)."""

    def __init__(self, guest, work):
        self.guest, self.work = guest, work
        self.procs, self.results = {}, {}

    def start(self):
        for kind, template, interval in (("cached", "c.victim.test", 0.01), ("uncached", "u%d.victim.test", 0.02)):
            self.procs[kind] = spawn_attack(self.guest, "probe", "--server", self.guest.dns_server, "--seconds", 3600,
                                            "--template", template, "--interval", interval,
                                            "--out", os.path.join(self.work, kind + ".json"))

    def stop(self):
        for kind, proc in self.procs.items():
            proc.terminate()
            proc.communicate(timeout=10)
            with open(os.path.join(self.work, kind + ".json")) as handle:
                self.results[kind] = [tuple(r) for r in json.load(handle)]

    def between(self, kind, start, end):
        return [r for r in self.results[kind] if start <= r[0] < end]


def stats(results):
    times = [r[1] for r in results if r[1] is not None]
    lost = len(results) - len(times)
    if not times:
        return {"n": len(results), "median": float("nan"), "p99": float("nan"), "max": float("nan"), "lost": lost}
    s = C.summary(times)
    return {"n": len(results), "median": s["median"], "p99": s["p99"], "max": s["max"], "lost": lost}


# --------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------
def fuzz(sb, attacker, victim_guest, total, rng):
    """FUZZ malformed messages: (messages sent, TCP streams, after-batch probe latencies, kinds, batch times)."""
    messages, streams = dns_attacks.malformed(rng), dns_attacks.tcp_abuse(rng)
    with attacker.entered():
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect((attacker.dns_server, 53))
    sent, tcp_sent, after, kinds, windows = 0, 0, [], {}, []
    try:
        while sent < total:
            began = time.monotonic()
            for _message in range(min(FUZZ_BATCH, total - sent)):
                kind, message = next(messages)
                try:
                    udp.send(message)
                except OSError:
                    pass
                sent += 1
                kinds[kind] = kinds.get(kind, 0) + 1
                if sent % 100 == 0:
                    time.sleep(0.002)       # a burst of 100, then the next: the attacker's guest keeps up
            held = []
            for _stream in range(TCP_PER_BATCH):
                kind, data, hold = next(streams)
                with attacker.entered():
                    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                conn.settimeout(2)
                try:
                    conn.connect((attacker.dns_server, 53))
                    conn.sendall(data)
                except OSError:
                    pass
                tcp_sent += 1
                kinds["tcp: " + kind] = kinds.get("tcp: " + kind, 0) + 1
                (held.append(conn) if hold else conn.close())
            for conn in held:
                conn.close()
            windows.append((began, time.monotonic()))
            rcode, _values, elapsed = victim_guest.dig("c.victim.test", victim_guest.dns_server, timeout=1.0)
            after.append(elapsed if rcode == "NOERROR" else None)
    finally:
        udp.close()
    return sent, tcp_sent, after, kinds, windows


def run(args):
    rng = random.Random(5452)
    out = {}
    with C.bench_sandbox() as sb:
        C.print_machine()
        dns = sb.internet.dns
        sb.internet.ip("addr add %s/32 dev lo" % SYNTHETIC_DNS)
        zone = spawn_attack(sb.internet, "upstream", "--server", SYNTHETIC_DNS, "--seconds", 3600)
        resolver = start_resolver(sb, upstream=SYNTHETIC_DNS)
        attacker_vm, attacker = make_vm(sb, "bad", "--allowed-domain", "*.example.test,*.many.test,*.big.test")
        victim_vm, victim_guest = make_vm(sb, "good", "--allowed-domain", "*.victim.test")
        if args.attacker_nice:          # the attacker's VMM (the relay) and guest get what CPU is left
            os.setpriority(os.PRIO_PROCESS, attacker.relay.pid, args.attacker_nice)

        def attack(*words):
            return spawn_attack(attacker, *words, nice=args.attacker_nice)
        out["nice"] = nice_of(resolver.pid)
        sampler = Sampler(resolver)
        hopper = start_hops(sb, victim_vm, victim_guest) if args.hops else None
        victim = Victim(victim_guest, sb.home)
        victim.start()
        time.sleep(1.0)             # the watchers' first queries
        phases = []

        def phase(name, action):
            if name not in args.phases:
                return
            C.progress("phase %s" % name)
            before_lines = len(log_lines(resolver))
            began = time.monotonic()
            result = action()
            ended = time.monotonic()
            lines = log_lines(resolver)[before_lines:]
            phases.append({"name": name, "start": began, "end": ended, "result": result,
                           "log_lines": len(lines),
                           "attacker_lines": sum(1 for line in lines if attacker_vm["id"] in line),
                           "alive": resolver.poll() is None})

        phase("quiet", lambda: time.sleep(args.seconds))
        phase("fuzz", lambda: fuzz(sb, attacker, victim_guest, args.fuzz, rng))
        phase("flood", lambda: attack_result(attack(
            "flood", "--server", attacker.dns_server, "--seconds", args.seconds, "--names", 5000,
            "--template", "flood%d.example.test"), args.seconds + 30))
        phase("tcp-stuck", lambda: attack_result(attack(
            "tcp-stuck", "--server", attacker.dns_server, "--seconds", args.seconds,
            "--name", "big.big.test", "--count", 1000), args.seconds + 30))
        phase("tcp-idle", lambda: attack_result(attack(
            "tcp-idle", "--server", attacker.dns_server, "--seconds", args.seconds, "--count", 300),
            args.seconds + 60))
        phase("padded", lambda: attack_result(attack(
            "padded", "--server", attacker.dns_server, "--seconds", args.seconds,
            "--name", "a.example.test", "--count", 1000000), args.seconds + 30))
        phase("many", lambda: attack_result(attack(
            "names", "--server", attacker.dns_server, "--seconds", args.seconds,
            "--template", "m%d.many.test", "--names", 1000000), args.seconds + 30))
        phase("after", lambda: time.sleep(args.seconds))
        victim.stop()
        sampler.stop()
        procs.stop(zone)
        out["hops"] = stop_hops(hopper) if hopper else None
        out["counters"] = counters(sb)
        out["attacker_learned"] = learned_count(sb, attacker_vm)
        out["victim_learned"] = learned_count(sb, victim_vm)
        out["full_lines"] = sum(1 for line in log_lines(resolver) if "is full" in line)
        out["log_total"] = len(log_lines(resolver))
        out["alive"] = resolver.poll() is None

        # 200 fresh lookups: the source ports the upstream saw (the sandbox's own DNS, which notes them)
        procs.stop(resolver)
        resolver = start_resolver(sb, name="ports")
        C.progress("ports")
        names = ["port%d.victim.test" % i for i in range(200)]
        for name in names:
            dns.set(name, "A", ["203.0.113.10"])
        dns.clear()
        answered = sum(victim_guest.dig(name, victim_guest.dns_server)[0] == "NOERROR" for name in names)
        seen = [q for q in dns.queries() if q.name.lower() in set(names)]
        out["ports"] = {"answered": answered, "queries": len(seen), "ports": len({q.src_port for q in seen}),
                        "mixed_case": sum(q.name != q.name.lower() for q in seen)}
        procs.stop(resolver)

        # forged answers
        C.progress("forged")
        forger = dns_attacks.ForgingUpstream(sb)
        forged_resolver = start_resolver(sb, upstream=forger.ADDRESS, name="forged")
        results = [victim_guest.dig("f%d.victim.test" % i, victim_guest.dns_server, timeout=2)[:2] for i in range(50)]
        out["forged"] = {"lookups": len(results), "real": sum(r == ("NOERROR", [forger.REAL]) for r in results),
                         "forged": sum(forger.FORGED in r[1] for r in results),
                         "ignored": counters(sb).get("ignored", 0),
                         "forged_learned": forger.FORGED in learned_set(sb, victim_vm)}
        procs.stop(forged_resolver)
        report(phases, victim, sampler, out, args)


HOP_POINTS = ("guest/out/q", "tap/in/q", "veth/in/q", "uplink/out/q", "uplink/in/r", "tap/out/r", "guest/in/r")
HOP_NAMES = ("guest's relay in", "VM namespace to host", "resolver: query to upstream", "upstream",
             "resolver: answer to TAP", "guest's relay out")


def start_hops(sb, vm, guest):
    """The capture of the victim's uncached queries at its guest's eth0, its TAP, the host's end of its veth
    and the uplink."""
    path = os.path.join(sb.home, "hops.json")
    points = [("guest", guest.name, topology.GUEST_IFNAME), ("tap", vm["netns"], vm["tap"]),
              ("veth", sb.host.name, addressing.veth_names(vm["slot"])[0]),
              ("uplink", sb.host.name, topology.UPLINK_IFNAME)]
    return dns_hops.start(sb.host, points, r"^u[0-9]+\.victim\.test$", path), path


def stop_hops(hopper):
    proc, path = hopper
    return dns_hops.hops(dns_hops.stop(proc, path), HOP_POINTS)


def hop_spans(phase, victim, captured):
    """[(total, {hop: seconds})] of the victim's uncached queries of PHASE that every capture point saw."""
    spans = []
    for i, (began, latency, _rcode) in enumerate(victim.results["uncached"]):
        stamps = captured.get("u%d.victim.test" % i)
        if not (phase["start"] <= began < phase["end"]) or latency is None or stamps is None:
            continue
        times = [stamps[key] for key in HOP_POINTS]
        hops = {name: end - start for name, start, end in zip(HOP_NAMES, times, times[1:])}
        hops["probe process"] = latency - (times[-1] - times[0])
        spans.append((latency, hops))
    return spans


def hop_rows(phases, victim, captured):
    """Per phase: median/p99 of each hop, and its share of the time of the slowest 5 % of the queries (where
    the p99 comes from)."""
    rows = []
    for p in phases:
        spans = hop_spans(p, victim, captured)
        slowest = sorted(spans, key=lambda span: span[0])[-max(1, len(spans) // 20):] if spans else []
        cells = [p["name"], len(spans)]
        for name in HOP_NAMES + ("probe process",):
            values = [hops[name] for _total, hops in spans]
            s = C.summary(values) if values else {"median": float("nan"), "p99": float("nan")}
            tail = sum(hops[name] for _total, hops in slowest) / sum(total for total, _hops in slowest) \
                if slowest else float("nan")
            cells.append("%s / %s / %.0f%%" % (C.ms(s["median"]), C.ms(s["p99"]), 100 * tail))
        totals = [total for total, _hops in spans]
        cells.append("%s / %s" % (C.ms(C.median(totals)), C.ms(C.percentile(totals, 99))) if totals else "-")
        rows.append(cells)
    return rows


def learned_set(sb, vm):
    with guard.entered(vm["netns"]):
        with SetManager() as sets:
            return {m["address"] for m in sets.members("vmsan-%s-dns" % vm["id"])}


def report(phases, victim, sampler, out, args):
    quiet = stats(victim.between("uncached", phases[0]["start"], phases[0]["end"]))
    rows = []
    for p in phases:
        cached = stats(victim.between("cached", p["start"], p["end"]))
        unc = stats(victim.between("uncached", p["start"], p["end"]))
        rows.append([p["name"], "%.1f" % (p["end"] - p["start"]),
                     cached["n"], C.ms(cached["median"]), C.ms(cached["p99"]), C.ms(cached["max"]), cached["lost"],
                     unc["n"], C.ms(unc["median"]), C.ms(unc["p99"]), C.ms(unc["max"]), unc["lost"],
                     C.times(C.ratio(unc["p99"], quiet["p99"])),
                     "%.0f" % sampler.peak(p["start"], p["end"]), "%.0f%%" % (100 * sampler.cpu_share(p["start"], p["end"])),
                     p["log_lines"], p["attacker_lines"],
                     "yes" if p["alive"] else "NO"])
    C.print_table("The victim's DNS while the attacker attacks (times in ms; p99 targets: cached < 50 ms, "
                  "uncached < 3x quiet)",
                  ["phase", "s", "cached n", "median", "p99", "max", "lost", "uncached n", "median", "p99", "max",
                   "lost", "p99/quiet", "RSS MiB", "resolver CPU", "log lines", "of the attacker", "resolver up"], rows)
    fuzz = [p for p in phases if p["name"] == "fuzz"]
    sent, tcp_sent, after, kinds, windows = fuzz[0]["result"] if fuzz else (0, 0, [], {}, [])
    answered = [a for a in after if a is not None]
    during = [[r for r in victim.between(kind, start, end)] for start, end in windows for kind in ("cached", "uncached")]
    worst = [max((r[1] if r[1] is not None else float("inf")) for r in batch) if batch else float("nan")
             for batch in during]
    C.note("")
    C.note("fuzz: %d malformed UDP messages and %d TCP streams in %d batches, %d kinds" % (
        sent, tcp_sent, len(after), len(kinds)))
    C.note("fuzz: the victim during each batch (%d queries): the slowest answer of each batch %s ms; batches whose "
           "every answer came within 100 ms: %d of %d" % (
               sum(len(b) for b in during), "/".join(C.ms(w) for w in worst[::2]), sum(w <= 0.1 for w in worst[::2]),
               len(worst) // 2))
    C.note("fuzz: the victim's query after each batch: %d of %d answered, the slowest %s ms, within 100 ms: %d" % (
        len(answered), len(after), C.ms(max(answered) if answered else float("nan")),
        sum(a <= 0.1 for a in answered)))
    C.note("attacks: " + "; ".join("%s %s" % (p["name"], p["result"]) for p in phases
                                    if p["name"] not in ("quiet", "fuzz", "after")))
    C.note("resolver: up at the end: %s; peak RSS %.0f MiB (bound stated: %d MiB); log %d lines in all, %d "
           "'set is full' lines; the attacker's set holds %d addresses, the victim's %d" % (
               "yes" if out["alive"] else "NO", max(v for _t, v, _c in sampler.samples if v is not None),
               MEMORY_BOUND_MIB, out["log_total"], out["full_lines"], out["attacker_learned"],
               out["victim_learned"]))
    C.note("resolver priority: nice %d (the unit %s says Nice=%s; the daemon takes that itself when started "
           "at nice 0, as here%s); the attacker's relay and attack processes nice %d, the victim's 0" % (
               out["nice"], os.path.relpath(UNIT, C.REPO), unit_nice(),
               ", but VMSAN_DAEMON_NICE=%s was given (--daemon-nice)" % DAEMON_ENV["VMSAN_DAEMON_NICE"]
               if DAEMON_ENV else "", args.attacker_nice))
    C.note("resolver counters: %s" % health.stats_text(out["counters"]))
    ports = out["ports"]
    C.note("upstream hygiene: %(answered)d of 200 lookups answered, the upstream saw %(queries)d queries from "
           "%(ports)d distinct source ports, %(mixed_case)d with a mixed-case name" % ports)
    forged = out["forged"]
    C.note("forged answers: %(lookups)d lookups against a forging upstream: %(real)d got the real address, "
           "%(forged)d the forged one; %(ignored)d answers ignored; forged address learned: %(forged_learned)s"
           % forged)
    if out["hops"] is not None:
        C.print_table("Where the victim's uncached query spent its time (kernel timestamps at the guest's eth0, "
                      "its TAP, the host's end of its veth and the uplink; median / p99 in ms of each hop, and its share of the "
                      "time of the slowest 5 % of the queries; probe process: the guest's own process, from send() to "
                      "its wake-up)",
                      ["phase", "n"] + list(HOP_NAMES) + ["probe process", "total"],
                      hop_rows(phases, victim, out["hops"]))
    C.note("# load average at the end: %s" % C.load_average())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each attack and quiet phase")
    parser.add_argument("--fuzz", type=int, default=20000, help="malformed UDP messages (TCP streams: 1 in 100)")
    parser.add_argument("--attacker-nice", type=int, default=0, metavar="N",
                        help="run the attacker's relay (its VMM) and attack processes at this nice value, as a host "
                             "that gives each VM its share of CPU would (default 0: the same as everyone)")
    parser.add_argument("--daemon-nice", type=int, metavar="N",
                        help="start the resolver with VMSAN_DAEMON_NICE=N (0: at the nice value it is started "
                             "with, the configuration before the daemon took the unit's priority; default: as "
                             "the product runs it)")
    parser.add_argument("--hops", action="store_true",
                        help="also capture the victim's uncached queries at each hop (its guest's eth0, its TAP, "
                             "the host's end of its veth, the uplink) and print where their time went, per phase")
    parser.add_argument("--phases", default=",".join(PHASES), type=lambda text: text.split(","),
                        help="which phases, comma-separated (default: all; quiet comes first whatever is chosen)")
    args = parser.parse_args()
    args.phases = ["quiet"] + [p for p in args.phases if p != "quiet"]
    unknown = [p for p in args.phases if p not in PHASES]
    if unknown:
        parser.error("unknown phases %s (choose from %s)" % (", ".join(unknown), ", ".join(PHASES)))
    if args.daemon_nice is not None:
        DAEMON_ENV["VMSAN_DAEMON_NICE"] = str(args.daemon_nice)
    run(args)


if __name__ == "__main__":
    main()
