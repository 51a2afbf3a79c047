"""What the product would set up, done by hand, for the harness's self-tests
and for demos without the product: never used to test the product itself."""


def make_fake_vm(sandbox, slot=0, in_netns=False):
    """Make the link ``vmsan create`` would make, and nothing else: a
    persistent TAP ``fhvm<slot>`` with 172.16.<slot>.1/30, in the sandbox
    host namespace or in a namespace of its own (``<prefix>-vm<slot>``).

    Returns the VM dict of docs/contract.md, "Addressing" (what ``vmsan create --json``
    prints) and the namespace that holds the TAP.
    """
    where = sandbox.add_namespace(f"vm{slot}") if in_netns else sandbox.host
    tap = f"fhvm{slot}"
    host_ip, guest_ip = f"172.16.{slot}.1", f"172.16.{slot}.2"
    where.ip(
        f"tuntap add dev {tap} mode tap vnet_hdr",
        f"addr add {host_ip}/30 dev {tap}",
        f"link set {tap} up",
    )
    vm = {
        "id": f"fake{slot}",
        "slot": slot,
        "tap": tap,
        "netns": where.name if in_netns else None,
        "host_ip": host_ip,
        "guest_ip": guest_ip,
        "mac": f"02:fc:00:00:{slot >> 8:02x}:{slot & 0xFF:02x}",
    }
    return vm, where


def masquerade(sandbox):
    """Route guests out of the sandbox host with NAT, as the product would
    (inside the sandbox's host namespace, like everything here)."""
    sandbox.host.sysctl("net.ipv4.ip_forward", 1)
    sandbox.host.run(
        ["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", "uplink0", "-j", "MASQUERADE"],
        check=True,
    )
