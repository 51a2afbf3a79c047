#!/usr/bin/env python3
"""Tenancy benchmarks (issue 16), each in a sandbox of its own:

  storm   20 parallel mixed commands (create, network, port, remove) on 10
          VMs for 60 s, every 5th killed with SIGKILL at a random moment;
          then doctor (every VM correct or removable?), restore (twice),
          remove, and the host compared with how it was before;
  list    `vmsan list` with N VMs: the status checks (lifecycle/health.py)
          against reading the records alone, in-process, same run;
  flows   a guest opens UDP flows until its budget stops it; another
          guest's TCP connects meanwhile; the host table's count against
          its reserved bound; connect latency with and without the flood;
  hostcap guests whose budgets together exceed the host-wide cap flood it;
          the host table's count against the cap;
  cost    the rate of new flows with N flows tracked, with and without the
          budget rules (connlimit walks the flows of its key).

  sudo .venv/bin/python bench/tenancy_bench.py storm [--seconds 60 --workers 20 --vms 10 --kill-every 5]
  sudo .venv/bin/python bench/tenancy_bench.py list [--vms 100 --rounds 30]
  sudo .venv/bin/python bench/tenancy_bench.py flows [--budget 5000]
  sudo .venv/bin/python bench/tenancy_bench.py hostcap [--vms 5]
  sudo .venv/bin/python bench/tenancy_bench.py cost [--sizes 100,1000,5000,20000]
"""

import argparse
import os
import statistics
import struct
import sys
import time

import common  # noqa: F401  (VMSAN_SANDBOX_ONLY, the sandbox on sys.path)
from common import Sandbox

from integration.test_tenancy import host_state, kill_midway, open_udp_flows, run_mixed_commands

from ansible_collections.vmsan.network.plugins.module_utils.kernel.conntrack_size import table_size
from ansible_collections.vmsan.network.plugins.module_utils.plan.budgets import host_caps


def _load():
    return "load %s" % " ".join(open("/proc/loadavg").read().split()[:3])


def storm(args):
    with Sandbox() as sb:
        before = host_state(sb)
        ids = [sb.unique_id("s%d" % n) for n in range(args.vms)]
        began = time.monotonic()
        run, killed = run_mixed_commands(sb, ids, args.seconds, args.workers, args.kill_every)
        print("storm: %d commands in %.0f s by %d workers on %d VMs, %d killed with SIGKILL (%s)"
              % (run, time.monotonic() - began, args.workers, args.vms, killed, _load()))
        kill_midway(sb, [sb.unique_id("k%d" % n) for n in range(args.vms)])
        print("then %d creates at once, each killed 0.1-0.8 s after its start" % args.vms)
        doctor = sb.vmsan("doctor", check=False).out
        vms = [c for c in doctor["checks"] if c["name"].startswith("vm ")]
        stale = [c for c in doctor["checks"] if c["name"].startswith("stale ")]
        ok = [c for c in vms if c["status"] == "ok"]
        removable = [c for c in vms if c["status"] != "ok" and "vmsan remove" in c["detail"]]
        other = [c for c in vms if c not in ok and c not in removable]
        print("doctor: %d VMs: %d ok, %d drifted and named removable, %d neither; %d stale devices"
              % (len(vms), len(ok), len(removable), len(other), len(stale)))
        for check in removable[:5] + other + stale:
            print("  %s %s: %s" % (check["status"], check["name"], check["detail"][:200]))
        first = sb.vmsan("restore").out
        second = sb.vmsan("restore").out
        statuses = {v["id"]: v["status"] for v in sb.vmsan("list").out}
        print("restore: changed=%s (%d changes); again: changed=%s; list: %s"
              % (first["changed"], sum(len(r["changes"]) for r in first["vms"].values()), second["changed"],
                 ", ".join("%d %s" % (list(statuses.values()).count(s), s) for s in sorted(set(statuses.values())))))
        for vm_id in statuses:
            sb.vmsan("remove", vm_id)
        after = host_state(sb)
        diff = sorted(k for k in before if before[k] != after[k])
        print("after remove: host as before: %s%s" % (not diff, "" if not diff else " (differs: %s)" % diff))
        return 0 if not other and not diff and not second["changed"] else 1


def list_bench(args):
    from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.manager import Manager
    with Sandbox() as sb:
        for n in range(args.vms):
            sb.vmsan("create", "--id", sb.unique_id("l%d" % n), json_out=False)
        manager = Manager(sb.home)
        times = {"records only (before)": [], "records + status (list now)": []}
        with sb.host.entered():
            for _ in range(args.rounds):
                for label, call in (("records only (before)", manager.list),
                                    ("records + status (list now)", manager.statuses)):
                    began = time.perf_counter()
                    call()
                    times[label].append((time.perf_counter() - began) * 1000)
        base = statistics.median(times["records only (before)"])
        print("list, %d VMs, %d rounds, in-process (%s)" % (args.vms, args.rounds, _load()))
        for label, values in times.items():
            values.sort()
            print("  %-28s median %7.2f ms  p99 %7.2f ms  x%.2f" % (
                label, statistics.median(values), values[int(len(values) * 0.99) - 1 if len(values) > 1 else 0],
                statistics.median(values) / base))
        for n in range(args.vms):
            sb.vmsan("remove", sb.unique_id("l%d" % n), json_out=False)
    return 0


def flows(args):
    with Sandbox() as sb:
        x_vm = sb.vmsan("create", "--id", sb.unique_id("x"), "--limit-connections", str(args.budget)).out
        y_vm = sb.vmsan("create", "--id", sb.unique_id("y")).out
        x, y = sb.add_guest(x_vm), sb.add_guest(y_vm)

        def connects(n):
            lat, ok = [], 0
            for _ in range(n):
                began = time.perf_counter()
                ok += bool(y.tcp("203.0.113.10", 9000))
                lat.append((time.perf_counter() - began) * 1000)
            return ok, statistics.median(lat), sorted(lat)[int(n * 0.99) - 1]
        quiet = connects(args.connects)
        began = time.monotonic()
        answered = open_udp_flows(x, int(args.budget * 1.5))
        flood = time.monotonic() - began
        during = connects(args.connects)
        with sb.host.entered():
            size = table_size()
        caps = host_caps(size.limit)
        print("flows: guest X (budget %d) sent %d UDP flows in %.1f s, %d answered; (%s)"
              % (args.budget, int(args.budget * 1.5), flood, answered, _load()))
        print("  guest Y TCP connects: quiet %d/%d (median %.2f ms, p99 %.2f ms); while X is at its budget %d/%d "
              "(median %.2f ms, p99 %.2f ms)" % (quiet[0], args.connects, quiet[1], quiet[2], during[0],
                                                 args.connects, during[1], during[2]))
        print("  host table: %d entries of %d; VM flows capped at %d forwarded + %d to the resolver, %d reserved"
              % (size.entries, size.limit, caps.forward, caps.resolver, caps.reserve))
    return 0


def flood_udp(guest, count, rate, targets=("203.0.113.10", "203.0.113.11", "203.0.113.200", "192.0.2.10")):
    """COUNT new UDP flows from one socket of the guest (a new destination
    port each), paced at RATE a second (what the test relay forwards; an
    unanswered flow stays tracked for 30 s)."""
    import socket
    with guest.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        began, sent = time.monotonic(), 0
        try:
            for n in range(count):
                sock.sendto(b"f", (targets[n // 64000 % len(targets)], 1024 + n % 64000))
                sent += 1
                if n % 200 == 199:
                    time.sleep(max(0.0, began + sent / rate - time.monotonic()))
        finally:
            sock.close()
    return sent


def _checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def flood_tap(vm, count, targets=("203.0.113.10", "203.0.113.11", "203.0.113.200", "192.0.2.10")):
    """COUNT new UDP flows written straight into the VM's TAP, as its VMM
    would (the sandbox's relay forwards ~6000 frames a second, too few to
    fill a table before unanswered flows expire after 30 s): frames from the
    guest's MAC and address, a new destination port each. The VM must have
    no guest attached (a single-queue TAP takes one reader)."""
    import fcntl
    import socket
    from sandbox import guard
    with guard.entered(vm["netns"]):
        info = fcntl.ioctl(socket.socket(), 0x8927, struct.pack("256s", vm["tap"].encode()))    # SIOCGIFHWADDR
        gateway_mac = info[18:24]
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", vm["tap"].encode(), 0x0002 | 0x1000))  # TUNSETIFF TAP|NO_PI
        src_mac = bytes.fromhex(vm["mac"].replace(":", ""))
        src = socket.inet_aton(vm["guest_ip"])
        began = time.monotonic()
        for n in range(count):
            dst = socket.inet_aton(targets[n // 64000 % len(targets)])
            udp = struct.pack("!HHHH", 40000, 1024 + n % 64000, 9, 0) + b"f"
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0, src, dst)
            ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
            os.write(fd, gateway_mac + src_mac + b"\x08\x00" + ip + udp)
        return time.monotonic() - began
    finally:
        os.close(fd)


def hostcap(args):
    """The host-wide cap: guests whose budgets together exceed it flood;
    the host namespace's table stays under cap + reserve."""
    with Sandbox() as sb:
        with sb.host.entered():
            limit = table_size().limit
        caps = host_caps(limit)
        per_vm = caps.forward // (args.vms - 1) + 1000
        vms = [sb.vmsan("create", "--id", sb.unique_id("h%d" % n), "--limit-connections", str(per_vm)).out
               for n in range(args.vms)]
        calm = sb.add_guest(vms[-1])
        import threading
        sent, peak = [], [0]
        began = time.monotonic()
        floods = [threading.Thread(target=lambda vm=vm: sent.append(per_vm + 5000) or flood_tap(vm, per_vm + 5000))
                  for vm in vms[:-1]]
        for t in floods:
            t.start()
        while any(t.is_alive() for t in floods):
            with sb.host.entered():
                peak[0] = max(peak[0], table_size().entries)
            time.sleep(0.5)
        flood = time.monotonic() - began
        with sb.host.entered():
            size = table_size()
            peak[0] = max(peak[0], size.entries)
        ok = sum(bool(calm.tcp("203.0.113.10", 9000)) for _ in range(20))
        print("hostcap: table limit %d; caps: %d forwarded + %d resolver, %d reserved; %d VMs with budgets of %d "
              "sent %d flows into their TAPs in %.1f s (%s)" % (limit, caps.forward, caps.resolver, caps.reserve, args.vms - 1,
                                                per_vm, sum(sent), flood, _load()))
        print("  host table: peak %d entries, %d after the flood (bound: cap %d + the host's own); a further "
              "guest's TCP connects: %d/20 (the cap is shared by the VMs: past it every VM's new flows are "
              "refused, the host's reserve stays free)" % (peak[0], size.entries, caps.forward, ok))
    return 0


def cost(args):
    """What connlimit costs a new flow: with N flows of the VM already
    tracked, the rate of 2000 more new flows written into its TAP with the
    budget rules (the VM's, the host-wide one), then with both deleted by
    hand, in the same sandbox."""
    import subprocess
    print("new-flow rate with N tracked flows of one VM, budget rules vs none (%s)" % _load())
    for size in args.sizes:
        with Sandbox() as sb:
            vm = sb.vmsan("create", "--id", sb.unique_id("c"), "--limit-connections", "1048576").out
            flood_tap(vm, size, ("203.0.113.10",))
            rated = {}
            rated["rules"] = 2000 / flood_tap(vm, 2000, ("203.0.113.11",))
            subprocess.run(["nsenter", "--net=/run/netns/" + vm["netns"], "iptables-legacy", "-w", "-D",
                            "vmsan-%s-out" % vm["id"], "1"], check=True)
            sb.host.run(["iptables-legacy", "-w", "-D", "VMSAN-HOST-FWD", "1"], check=True)
            rated["none"] = 2000 / flood_tap(vm, 2000, ("203.0.113.200",))
            print("  N=%-7d with the rules %8.0f flows/s (%.1f us each), without %8.0f flows/s (%.1f us): x%.2f"
                  % (size, rated["rules"], 1e6 / rated["rules"], rated["none"], 1e6 / rated["none"],
                     rated["none"] / rated["rules"]))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("storm")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--workers", type=int, default=20)
    p.add_argument("--vms", type=int, default=10)
    p.add_argument("--kill-every", type=int, default=5)
    p = sub.add_parser("list")
    p.add_argument("--vms", type=int, default=100)
    p.add_argument("--rounds", type=int, default=30)
    p = sub.add_parser("cost")
    p.add_argument("--sizes", type=lambda text: [int(x) for x in text.split(",")], default=[100, 1000, 5000, 20000])
    p = sub.add_parser("hostcap")
    p.add_argument("--vms", type=int, default=5)
    p = sub.add_parser("flows")
    p.add_argument("--budget", type=int, default=5000)
    p.add_argument("--connects", type=int, default=200)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("tenancy_bench.py builds network namespaces: run as root", file=sys.stderr)
        return 2
    return {"storm": storm, "list": list_bench, "flows": flows, "hostcap": hostcap, "cost": cost}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
