#!/usr/bin/env python3
"""A self-contained demo of vmsan network's main job, in throwaway namespaces.

It builds a sandbox (a fake host whose only uplink goes to a fake internet
with documentation addresses, its own DNS and web servers), starts the host
resolver, creates one VM per policy with the real ``vmsan`` command, attaches
a guest to each VM's TAP, and prints which probes each guest's policy lets
through. Then it changes one VM's policy live and probes again. Nothing
outside the sandbox's own namespaces is touched, and everything is removed
at the end.

Run as root after ``scripts/setup.sh``:  .venv/bin/python demo/demo.py
"""

import os
import sys
import time

from sandbox import Sandbox  # the test harness, installed in the venv by scripts/setup.sh

PROBES = [
    ("web by name", lambda g: g.http("a.example.test", timeout=1.5) if g.resolve("a.example.test") else None),
    ("other name", lambda g: g.http("b.example.test", timeout=1.5) if g.resolve("b.example.test") else None),
    ("tcp 203.0.113.10", lambda g: g.tcp("203.0.113.10", 9000)),
    ("tcp 192.0.2.10", lambda g: g.tcp("192.0.2.10", 9000)),
    ("udp 203.0.113.11", lambda g: g.udp("203.0.113.11", 9000)),
    ("ping 203.0.113.10", lambda g: g.ping("203.0.113.10")),
    ("dns sent to 192.0.2.53", lambda g: _rogue_dns(g)),
    ("metadata 169.254.169.254", lambda g: g.tcp("169.254.169.254", 80)),
    ("host 198.51.100.2:22", lambda g: g.tcp("198.51.100.2", 22)),
]

VMS = [
    ("open", ["--network-policy", "allow-all"]),
    ("closed", ["--network-policy", "deny-all"]),
    ("names", ["--allowed-domain", "a.example.test"]),
    ("cidrs", ["--allowed-cidr", "203.0.113.0/24", "--denied-cidr", "203.0.113.10/32"]),
]


def _rogue_dns(guest):
    """A query sent straight to another DNS server: answered by whom?"""
    rcode, values, _ = guest.dig("a.example.test", "192.0.2.53", timeout=1.0)
    if rcode == "NOERROR" and "192.0.2.66" in values:
        return "rogue"                       # the rogue server answered directly
    return None if rcode != "NOERROR" else "host resolver: " + ",".join(values)


def mark(value):
    if value == "rogue":
        return "direct"        # allowed by allow-all: answered by the server asked
    if value in (None, False, ""):
        return "  --  "
    return "  ok  "


def table(sandbox, guests):
    width = max(len(p[0]) for p in PROBES)
    head = " " * (width + 2) + "".join("%-9s" % name for name, _ in guests)
    print(head)
    for label, probe in PROBES:
        row = "%-*s  " % (width, label)
        for _, guest in guests:
            row += "%-9s" % mark(probe(guest))
        print(row)


def main():
    if os.geteuid() != 0:
        sys.exit("the demo builds network namespaces: run it as root")
    print("Building a sandbox: fake host, fake internet (198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24)...")
    with Sandbox() as sandbox:
        sandbox.host.serve_tcp("0.0.0.0", 22)          # a service on the host that guests must not reach
        sandbox.vmsan_spawn("resolver", "--upstream", "203.0.113.53")
        guests = []
        for name, flags in VMS:
            vm = sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out
            print("created %-16s slot %-3d %-6s policy %-9s %s" % (vm["id"], vm["slot"], vm["tap"],
                                                                 vm["network_policy"], " ".join(flags)))
            guests.append((name, sandbox.add_guest(vm)))
        _wait_for_resolver(guests[0][1])
        print("\nWhat each guest's policy lets through (ok = the guest read the server's answer):\n")
        table(sandbox, guests)

        vm_id = sandbox.unique_id("names")
        print("\nLive update: vmsan network %s --network-policy deny-all" % vm_id)
        began = time.monotonic()
        sandbox.vmsan("network", vm_id, "--network-policy", "deny-all")
        print("(applied in %.0f ms; the TAP and the guest stay as they are)\n" % ((time.monotonic() - began) * 1000))
        table(sandbox, [g for g in guests if g[0] == "names"])
        for name, _ in VMS:
            sandbox.vmsan("remove", sandbox.unique_id(name))
    print("\nSandbox removed; nothing of the demo is left.")


def _wait_for_resolver(guest, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if guest.dig("a.example.test", guest.gateway, timeout=0.5)[0] == "NOERROR":
            return
        time.sleep(0.1)
    print("warning: the host resolver did not answer within %.0f s" % timeout)


if __name__ == "__main__":
    main()
