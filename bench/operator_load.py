#!/usr/bin/env python3
"""The load of bench/operator_bench.py's flood phases: a sender that a
guest runs (as a program, stdlib only, like the guest's own code) and a
CPU cap for a VM's processes, as a Firecracker jailer's per-VM cgroup
gives them.

The sender, run inside a guest's namespace:

    operator_load.py send --kind policy|allowed|spoofed|ipv6 --count N --rate R
                          [--seconds S] [--cgroup-procs FILE] [--gateway-mac M --guest-mac M]

sends COUNT packets (0: no limit) at RATE a second (0: as fast as a Python
loop sends), stops after SECONDS or on SIGTERM, and prints one JSON line:
``{"sent": n, "seconds": s}``. With ``--cgroup-procs`` it first moves itself
into that cgroup, so none of its packets escape the cap. Kinds:

* ``policy``: UDP to 192.0.2.10 (the flooding VM's denied CIDR), ports
  9000-9199: dropped by the policy (counted ``policy``);
* ``allowed``: the same to 203.0.113.10, an allowed destination: forwarded
  (the control: is a drop dearer than forwarding?);
* ``spoofed``: UDP with the source 198.51.100.77 (raw socket): dropped by
  the anti-spoofing rule (``spoofed``);
* ``ipv6``: UDP/IPv6 frames to the gateway's MAC (packet socket): dropped
  by the kernel on arrival (``ipv6``), copied to the daemon's IPv6 reader;
* ``spin``: no packet at all, only the CPU a sender would burn (the control
  for "the cores are shared with a busy guest").

The JSON line also has ``cpu``: the sender's own CPU seconds.
"""

import argparse
import json
import os
import signal
import socket
import struct
import sys
import time

DENIED = "192.0.2.10"
ALLOWED = "203.0.113.10"
SPOOFED_SOURCE = "198.51.100.77"
IPV6_SOURCE = "2001:db8:ffff::2"
IPV6_DESTINATION = "2001:db8::1"
PORTS = 200                 # destination ports 9000..9199: one flow each
BATCH = 200                 # packets between looks at the clock (the old bench's loop)
PAYLOAD = b"x"


# --------------------------------------------------------------------------
# the sender (runs in the guest)
# --------------------------------------------------------------------------
def _mac(text):
    return bytes(int(part, 16) for part in text.split(":"))


def _udp(src_port, dst_port, payload):
    return struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload


def _ipv4(src, dst, payload):
    # IP_HDRINCL: the kernel fills in the checksum (and the id, left 0)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, socket.IPPROTO_UDP, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + payload


def _ipv6(src, dst, payload):
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), socket.IPPROTO_UDP, 64,
                       socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)) + payload


def senders(kind, gateway_mac=None, guest_mac=None, ifname="eth0"):
    """PORTS callables, one per destination port, each sending one packet."""
    if kind in ("policy", "allowed"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = DENIED if kind == "policy" else ALLOWED
        return [lambda port=9000 + i: sock.sendto(PAYLOAD, (target, port)) for i in range(PORTS)]
    if kind == "spoofed":
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        packets = [_ipv4(SPOOFED_SOURCE, ALLOWED, _udp(40000, 9000 + i, PAYLOAD)) for i in range(PORTS)]
        return [lambda p=p: sock.sendto(p, (ALLOWED, 0)) for p in packets]
    if kind == "ipv6":
        if not (gateway_mac and guest_mac):
            raise SystemExit("send --kind ipv6: --gateway-mac and --guest-mac are needed (aa:bb:cc:dd:ee:ff)")
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.bind((ifname, 0))
        head = _mac(gateway_mac) + _mac(guest_mac) + struct.pack("!H", 0x86DD)
        frames = [head + _ipv6(IPV6_SOURCE, IPV6_DESTINATION, _udp(40002, 9000 + i, PAYLOAD)) for i in range(PORTS)]
        return [lambda f=f: sock.send(f) for f in frames]
    if kind == "spin":
        return [lambda: None]
    raise SystemExit("send --kind: one of policy, allowed, spoofed, ipv6, spin (got %r)" % kind)


def send(kind, count, rate, seconds, gateway_mac=None, guest_mac=None):
    """Send COUNT packets (0: unbounded) at RATE/s (0: flat out) for at most
    SECONDS (0: unbounded); returns (sent, seconds taken). A send the
    kernel refuses (a full queue) is counted as not sent and tried again."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    fire = senders(kind, gateway_mac, guest_mac)
    began = time.monotonic()
    end = began + seconds if seconds else float("inf")
    sent = 0
    # paced: batches of a hundredth of the rate (at least 1), each at its time
    batch = BATCH if not rate else max(1, int(rate / 100))
    while not stopping and (not count or sent < count):
        now = time.monotonic()
        if now >= end:
            break
        if rate:
            due = began + sent / float(rate)
            if due > now:
                time.sleep(min(due - now, end - now))
                continue
        todo = batch if not count else min(batch, count - sent)
        for i in range(todo):
            try:
                fire[(sent + i) % len(fire)]()
            except (BlockingIOError, OSError):
                todo = i
                break
        sent += todo
    return sent, time.monotonic() - began


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("send", help="send packets from this namespace")
    p.add_argument("--kind", required=True)
    p.add_argument("--count", type=int, default=0, help="packets in all (0: until --seconds or SIGTERM)")
    p.add_argument("--rate", type=float, default=0, help="packets a second (0: as fast as possible)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: no limit)")
    p.add_argument("--cgroup-procs", help="a cgroup's cgroup.procs: join it before sending")
    p.add_argument("--gateway-mac")
    p.add_argument("--guest-mac")
    args = parser.parse_args(argv)
    if args.cgroup_procs:
        with open(args.cgroup_procs, "w") as handle:
            handle.write("%d\n" % os.getpid())
    sent, took = send(args.kind, args.count, args.rate, args.seconds, args.gateway_mac, args.guest_mac)
    if args.kind == "spin":
        sent = 0
    cpu = os.times()
    sys.stdout.write(json.dumps({"sent": sent, "seconds": round(took, 3), "cpu": round(cpu.user + cpu.system, 3)})
                     + "\n")
    return 0


# --------------------------------------------------------------------------
# the CPU cap (runs in the bench)
# --------------------------------------------------------------------------
CGROUP_V1_CPU = "/sys/fs/cgroup/cpu"
CGROUP_V2 = "/sys/fs/cgroup"
PERIOD_US = 100000


class CpuCap(object):
    """A cgroup holding a VM's processes at CORES of CPU time (cfs quota per
    period, as the jailer's ``--cgroup cpu.cfs_quota_us=...`` on cgroup v1
    or ``cpu.max`` on v2), made in the cpu hierarchy's root and removed by
    close(). Processes are moved in with add() and back to the root when it
    closes. Raises OSError with the reason when no cpu cgroup is usable."""

    def __init__(self, name, cores):
        self.cores = cores
        quota = int(cores * PERIOD_US)
        if os.path.isfile(os.path.join(CGROUP_V1_CPU, "cpu.cfs_quota_us")):
            self.root, self.version = CGROUP_V1_CPU, 1
        elif "cpu" in _read(os.path.join(CGROUP_V2, "cgroup.subtree_control")).split():
            self.root, self.version = CGROUP_V2, 2
        else:
            raise OSError("no cgroup cpu controller at %s or %s" % (CGROUP_V1_CPU, CGROUP_V2))
        self.path = os.path.join(self.root, name)
        os.mkdir(self.path)
        try:
            if self.version == 1:
                _write(os.path.join(self.path, "cpu.cfs_period_us"), PERIOD_US)
                _write(os.path.join(self.path, "cpu.cfs_quota_us"), quota)
            else:
                _write(os.path.join(self.path, "cpu.max"), "%d %d" % (quota, PERIOD_US))
        except BaseException:
            os.rmdir(self.path)
            raise
        self.procs = os.path.join(self.path, "cgroup.procs")

    def add(self, pid):
        _write(self.procs, pid)

    def throttled(self):
        """(periods throttled, seconds throttled) so far."""
        stat = dict(line.split() for line in _read(os.path.join(self.path, "cpu.stat")).splitlines() if line)
        if self.version == 1:
            return int(stat.get("nr_throttled", 0)), int(stat.get("throttled_time", 0)) / 1e9
        return int(stat.get("nr_throttled", 0)), int(stat.get("throttled_usec", 0)) / 1e6

    def release(self):
        """Every process back to the root: the cgroup is empty again."""
        for pid in _read(self.procs).split():
            try:
                _write(os.path.join(self.root, "cgroup.procs"), pid)
            except OSError:
                pass            # gone meanwhile

    def close(self):
        if not os.path.isdir(self.path):
            return
        self.release()
        for _attempt in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)     # a moved process's last thread still leaving
        os.rmdir(self.path)


def cpu_seconds(pid):
    """User + system CPU seconds of process PID (all its threads) so far;
    None once it is gone."""
    fields = _read("/proc/%d/stat" % pid).rsplit(")", 1)[-1].split()
    if len(fields) < 13:
        return None
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def softirq_threads():
    """The pids of the kernel's ksoftirqd threads (where the network's
    deferred work runs, in no VM's cgroup)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _read("/proc/%s/comm" % entry).startswith("ksoftirqd/"):
            pids.append(int(entry))
    return pids


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _write(path, value):
    with open(path, "w") as handle:
        handle.write("%s\n" % value)


if __name__ == "__main__":
    sys.exit(main())
