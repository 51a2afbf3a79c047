"""Self-test of the real-guest fixture, independent of the product.

Each test makes its own network namespace with a persistent TAP ``fhvm0`` at
172.16.0.1/30 (slot 0 of docs/contract.md, "Addressing"), plays the host side itself and boots
the real guest on that TAP. They show that the fixture's verdicts mean something:
right boot_args pass, a wrong gateway or a MAC the host does not expect fail, and a
port the guest listens on is reachable from the namespace.
"""

from __future__ import annotations

import os
import time

import pytest

from .boot import GuestError, boot_guest, boot_vm, design_boot_args, start_guest
from .netns import ScratchNetns

pytestmark = pytest.mark.realguest

TAP = "fhvm0"
SLOT0_ARGS = design_boot_args(0)  # ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1
MAC = "02:00:ac:10:00:02"
OTHER_MAC = "02:00:ac:10:00:66"
OFFLINK = "203.0.113.10"  # an address of the namespace behind the gateway (on lo)


@pytest.fixture
def slot0(realguest_artifacts):
    """Namespace with TAP fhvm0 172.16.0.1/30, OFFLINK on lo and a payload server on :9000."""
    with ScratchNetns("rgself") as ns:
        ns.add_tap(TAP, "172.16.0.1/30")
        ns.add_local_address(f"{OFFLINK}/32")
        ns.payload_server("0.0.0.0", 9000, "HOST-PAYLOAD")
        yield ns
    # ScratchNetns removed the namespace, the TAP and the servers.
    assert not os.path.exists(ns.path)


def _boot(ns, boot_args, probes, mac=MAC, art=None, **kw):
    return boot_guest(ns.name, TAP, mac, boot_args, probes, timeout=60, artifacts=art, **kw)


def test_slot0_tcp_payload(slot0, realguest_artifacts):
    run = _boot(slot0, SLOT0_ARGS, ["tcp:172.16.0.1:9000", f"tcp:{OFFLINK}:9000"], art=realguest_artifacts)
    assert run.net_ok, run.net_detail
    assert f"mac={MAC}" in run.net_detail and "addr=172.16.0.2/30 gw=172.16.0.1 dns=172.16.0.1" in run.net_detail
    assert run.all_ok, run.summary()
    assert "payload=HOST-PAYLOAD to 172.16.0.2" in run.result(0).detail
    assert "payload=HOST-PAYLOAD to 172.16.0.2" in run.result(f"tcp:{OFFLINK}:9000").detail
    assert run.done and run.exit_code == 0
    assert 0 < run.boot_to_result < 30


@pytest.mark.parametrize(
    "boot_args, route_error",
    [
        # a gateway outside the /30: the guest cannot even install the default route
        ("ip=172.16.0.2::172.16.1.1:255.255.255.252::eth0:off:172.16.0.1", True),
        # a wider netmask makes a wrong gateway look on-link: the route is accepted,
        # but nobody answers ARP for it, so traffic behind it goes nowhere
        ("ip=172.16.0.2::172.16.0.5:255.255.255.0::eth0:off:172.16.0.1", False),
    ],
    ids=["off-subnet", "on-link-but-absent"],
)
def test_wrong_gateway_fails(slot0, realguest_artifacts, boot_args, route_error):
    probes = ["tcp:172.16.0.1:9000", f"tcp:{OFFLINK}:9000", f"ping:{OFFLINK}"]
    run = _boot(slot0, boot_args, probes, art=realguest_artifacts)
    assert run.complete
    assert not run.all_ok
    # behind the gateway: fails
    assert not run.ok(f"tcp:{OFFLINK}:9000"), run.summary()
    assert not run.ok(f"ping:{OFFLINK}"), run.summary()
    # the on-link host side still answers: the failure is the gateway, not the guest
    assert run.ok("tcp:172.16.0.1:9000"), run.summary()
    if route_error:
        assert run.net_ok is False and "route default via 172.16.1.1" in run.net_detail
    else:
        assert run.net_ok is True


def test_unexpected_mac_fails(slot0, realguest_artifacts):
    # The namespace accepts frames from the TAP only with the MAC it expects.
    slot0.run("iptables", "-w", "-A", "INPUT", "-i", TAP, "-m", "mac", "!", "--mac-source", MAC, "-j", "DROP")
    probes = ["tcp:172.16.0.1:9000"]
    # (the good case through boot_vm, with a dict shaped like `vmsan create --json --no-netns`)
    vm = {"netns": None, "tap": TAP, "mac": MAC, "boot_args": SLOT0_ARGS, "guest_ip": "172.16.0.2"}
    good = boot_vm(vm, probes, host_netns=slot0.name, artifacts=realguest_artifacts)
    assert good.all_ok, good.summary()
    bad = _boot(slot0, SLOT0_ARGS, probes, mac=OTHER_MAC, art=realguest_artifacts)
    assert f"mac={OTHER_MAC}" in bad.net_detail
    assert bad.complete and not bad.ok(0), bad.summary()
    assert bad.result(0).detail.startswith("timeout")


def test_listen_published_port_style(slot0, realguest_artifacts):
    with start_guest(
        slot0.name, TAP, MAC, SLOT0_ARGS, ["listen:tcp:8080:20:1"], timeout=60, artifacts=realguest_artifacts
    ) as guest:
        guest.wait_ready(timeout=40)
        ok, text = slot0.tcp_read("172.16.0.2", 8080, timeout=5)
        run = guest.wait()
    assert ok, text
    assert text.startswith("VMSAN-PAYLOAD listen 8080 vmsan-guest 172.16.0.2"), text
    assert run.result(0).ok and run.result(0).detail == "served=1", run.summary()
    # ended on the first client (COUNT=1), not after the full 20 s
    assert run.boot_to_result < 20


def test_probe_kinds(slot0, realguest_artifacts):
    """Every probe kind, passing and failing, in one boot."""
    slot0.dns_server("172.16.0.1", {"a.example.test": OFFLINK, "r.example.test": "REFUSED"})
    slot0.http_server(OFFLINK, 80)
    slot0.silent_server("0.0.0.0", 9002)
    expect = {
        "dns:a.example.test": (True, f"addrs={OFFLINK}"),
        "dns:A.Example.TEST.": (True, f"addrs={OFFLINK}"),
        "dns:nope.example.test": (False, "NXDOMAIN"),
        "dns:r.example.test": (False, "REFUSED"),
        "dns6:a.example.test": (False, "noanswer"),
        f"dns:a.example.test@{OFFLINK}": (False, "timeout"),  # no DNS server there
        "http:a.example.test": (True, "body=HTTP-OK host=a.example.test path=/"),
        "http:a.example.test/missing": (False, "404"),
        "http:a.example.test:9000/x": (False, "wget"),  # not HTTP: wget rejects the reply
        "tcp:a.example.test:9000": (True, "payload=HOST-PAYLOAD"),
        "tcp:172.16.0.1:9001": (False, "refused"),
        "tcp:172.16.0.1:9002": (False, "nopayload"),  # connects, reads nothing
        "tcp:nope.example.test:9000": (False, "dns NXDOMAIN"),
        f"ping:{OFFLINK}": (True, "time="),
        "ping:198.51.100.7": (False, "noreply"),  # nothing there, no route in the namespace
        "listen:tcp:8081:1": (False, "served=0"),  # nobody came
        "sleep:0": (True, "slept=0"),
        "bogus:1": (False, "unknown probe"),
    }
    run = _boot(slot0, SLOT0_ARGS, list(expect), art=realguest_artifacts)
    assert run.complete, run.summary()
    for i, (spec, (ok, needle)) in enumerate(expect.items()):
        r = run.result(i)
        assert r.spec == spec
        assert r.ok is ok and needle in r.detail, f"{spec}: {r}\n{run.summary()}"


def test_timeout_kills_qemu(slot0, realguest_artifacts):
    guest = start_guest(slot0.name, TAP, MAC, SLOT0_ARGS, ["sleep:30"], timeout=3, artifacts=realguest_artifacts)
    with guest:
        with pytest.raises(GuestError, match="timed out") as excinfo:
            guest.wait()
    assert guest.proc.returncode is not None
    assert excinfo.value.run.timed_out and not excinfo.value.run.complete


def test_refuses_missing_tap_and_own_namespace(slot0, realguest_artifacts):
    with pytest.raises(GuestError, match="does not exist"):
        start_guest(slot0.name, "fhvm9", MAC, SLOT0_ARGS, ["sleep:0"], artifacts=realguest_artifacts)
    with pytest.raises(GuestError, match="own network namespace"):
        start_guest("/proc/self/ns/net", TAP, MAC, SLOT0_ARGS, ["sleep:0"], artifacts=realguest_artifacts)
    with pytest.raises(ValueError):
        start_guest(slot0.name, TAP, MAC, SLOT0_ARGS, ["tcp:1.2.3.4:5 x"], artifacts=realguest_artifacts)


def test_build_is_warm(realguest_artifacts):
    from . import build as rg_build

    t0 = time.monotonic()
    art = rg_build.build()
    assert time.monotonic() - t0 < 2
    assert art == realguest_artifacts
    with open(art.vmlinux, "rb") as fh:
        assert fh.read(5) == b"\x7fELF\x02"
