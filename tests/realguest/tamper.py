"""Alter what ``vmsan create --json`` returned, to show that the real-guest tests notice.

In a test (tests/realguest/test_e2e.py)::

    bad = tampered(vm, gateway=other_slot_gateway(vm))   # boot_args with another gateway
    bad = tampered(vm, dns="169.254.64.1")                # boot_args with another DNS server
    bad = tampered(vm, mac=other_slot_mac(vm))            # another MAC (boot_args unchanged)

By hand, as a wrapper around the ``vmsan`` command (the sandbox runs ``$VMSAN_CMD``): every
command passes through untouched, except that the JSON ``create`` prints is tampered
with, so the unchanged e2e tests boot the guest with a wrong gateway, DNS or MAC while
the product's rules stay as they are::

    VMSAN_CMD=".venv/bin/python tests/realguest/tamper.py --gateway other-slot -- .venv/bin/vmsan" \\
        .venv/bin/python -m pytest tests/realguest/test_e2e.py -k "not tampered"
    # --dns IP (e.g. 169.254.64.1 or 203.0.113.53), --mac other-slot|MAC

``boot_args`` is the kernel's nfsroot-style
``ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys

from ansible_collections.vmsan.network.plugins.module_utils.model import addressing as A

IP_FIELDS = ("client", "server", "gateway", "netmask", "hostname", "device", "autoconf", "dns0", "dns1")


def parse_ip_arg(boot_args: str) -> dict:
    """The fields of the ``ip=`` word in *boot_args* (missing trailing fields are '')."""
    words = [w for w in boot_args.split() if w.startswith("ip=")]
    if len(words) != 1:
        raise ValueError(f"boot_args must hold exactly one ip= argument: {boot_args!r}")
    values = words[0][len("ip="):].split(":")
    if len(values) > len(IP_FIELDS):
        raise ValueError(f"too many fields in {words[0]!r}")
    values += [""] * (len(IP_FIELDS) - len(values))
    return dict(zip(IP_FIELDS, values))


def _with_ip_fields(boot_args: str, **changes) -> str:
    fields = parse_ip_arg(boot_args)
    fields.update(changes)
    ip_word = "ip=" + ":".join(fields[name] for name in IP_FIELDS).rstrip(":")
    return " ".join(ip_word if w.startswith("ip=") else w for w in boot_args.split())


def tampered(vm: dict, gateway: str | None = None, dns: str | None = None, mac: str | None = None) -> dict:
    """A copy of *vm* (``create``'s JSON) whose boot_args carry another gateway and/or
    DNS server, and/or whose MAC (also in the Firecracker entry) is another one."""
    bad = copy.deepcopy(vm)
    changes = {}
    if gateway is not None:
        changes["gateway"] = gateway
    if dns is not None:
        changes["dns0"] = dns
    if changes:
        bad["boot_args"] = _with_ip_fields(vm["boot_args"], **changes)
    if mac is not None:
        bad["mac"] = mac
        if isinstance(bad.get("firecracker"), dict):
            bad["firecracker"]["guest_mac"] = mac
    return bad


def _neighbour_slot(vm: dict) -> int:
    return vm["slot"] + 1 if vm["slot"] < A.MAX_SLOT else vm["slot"] - 1


def other_slot_gateway(vm: dict) -> str:
    """The gateway of the neighbouring slot (off this VM's /30): what a slot mix-up writes."""
    return A.host_ip(_neighbour_slot(vm))


def other_slot_mac(vm: dict) -> str:
    """The guest MAC of the neighbouring slot: what a slot mix-up hands the VMM."""
    return A.guest_mac(_neighbour_slot(vm))


def _wrap(argv: list) -> int:
    ap = argparse.ArgumentParser(description="run vmsan, tamper with the JSON that `create` prints")
    ap.add_argument("--gateway", help="gateway in boot_args: an IPv4 address or 'other-slot'")
    ap.add_argument("--dns", help="DNS server in boot_args")
    ap.add_argument("--mac", help="the MAC returned: a MAC or 'other-slot'")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- vmsan ARGS...")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the vmsan command after --")
    if "create" not in command[1:] or "--json" not in command:
        os.execvp(command[0], command)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        return done.returncode
    vm = json.loads(done.stdout)
    gateway = other_slot_gateway(vm) if args.gateway == "other-slot" else args.gateway
    mac = other_slot_mac(vm) if args.mac == "other-slot" else args.mac
    bad = tampered(vm, gateway=gateway, dns=args.dns, mac=mac)
    print(f"tamper.py: boot_args {vm['boot_args']} -> {bad['boot_args']}, mac {vm['mac']} -> {bad['mac']}",
          file=sys.stderr)
    print(json.dumps(bad))
    return 0


if __name__ == "__main__":
    sys.exit(_wrap(sys.argv[1:]))
