"""End to end with a real guest: what ``vmsan create`` returns boots a real Linux VM.

Each test makes a fresh sandbox (tests/sandbox: a host namespace with an uplink into a
fake internet), runs ``vmsan create`` in it, and boots the real Debian kernel under
QEMU on the VM's TAP (tests/realguest/boot.py), configured only by what ``create``
printed: the kernel command line holds ``create``'s ``boot_args`` (the guest's
``/init`` reads ``ip=`` from it: address, gateway, DNS server) and QEMU gives the NIC
``create``'s MAC. The guest's probes then show what the product's policy lets through.

The tampered tests boot the same VM with a wrong gateway, a wrong DNS server or another
MAC and show that the very checks the main tests make then fail: the main tests pass
because ``create`` returned the right values, not whatever it returned.
"""

from __future__ import annotations

import time

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import addressing as A
from sandbox import packets, procs
from sandbox.fixtures import *  # noqa: F401,F403  (fixture `sandbox`)

from .boot import boot_vm, start_vm
from .tamper import other_slot_gateway, other_slot_mac, parse_ip_arg, tampered

pytestmark = [pytest.mark.realguest, pytest.mark.integration]

UPSTREAM = "203.0.113.53"  # the sandbox internet's authoritative DNS
UPLINK = "198.51.100.2"  # the sandbox host's address on the internet (masquerade source)
WEB_A, WEB_B, APEX = "203.0.113.10", "203.0.113.11", "203.0.113.200"  # a./b.example.test, example.test
BOOT_TIMEOUT = 90  # seconds per guest, generous for a loaded 2-core machine under TCG

# What an allow-all guest sees: spec -> (ok, text in the probe's detail). Dicts keep
# their order: the guest runs the probes in this order.
ALLOW_ALL = {
    # by name through resolv.conf (= the DNS of boot_args), i.e. the host resolver
    "dns:a.example.test": (True, f"addrs={WEB_A}"),
    # the internet server names the address it was reached at and the client it saw:
    # the guest's traffic left masqueraded behind the host's uplink address
    "tcp:a.example.test:9000": (True, f"payload=hello {WEB_A} {UPLINK}"),
    "http:example.test": (True, f"body=vmsan-ok {APEX}"),
    # by address: routing through the gateway of boot_args, independent of DNS
    f"ping:{WEB_A}": (True, f"ip={WEB_A}"),
}


# -- helpers ----------------------------------------------------------------------------
def unmet(run, expect: dict) -> dict:
    """{spec: what the guest reported} for every probe that did not turn out as *expect* says."""
    out = {}
    for index, (spec, (ok, needle)) in enumerate(expect.items()):
        r = run.result(index)
        assert r.spec == spec
        if r.ok is not ok or needle not in r.detail:
            out[spec] = f"{'ok' if r.ok else 'fail'} {r.detail}"
    return out


def config_problems(vm: dict, run) -> list:
    """How the guest's network differs from the /30 ``create`` described: boot_args must
    name the host side as gateway and DNS (docs/contract.md, "Addressing"), and the guest must have come up
    with that address, gateway, DNS server and the MAC ``create`` returned."""
    problems = []
    ip = parse_ip_arg(vm["boot_args"])
    for field, want in (("client", vm["guest_ip"]), ("gateway", vm["host_ip"]), ("dns0", vm["host_ip"])):
        if ip[field] != want:
            problems.append(f"boot_args {field}={ip[field]!r}, expected {want}")
    if not run.net_ok:
        problems.append(f"guest network setup failed: {run.net_detail}")
    seen = f"mac={vm['mac']} addr={vm['guest_ip']}/30 gw={vm['host_ip']} dns={vm['host_ip']}"
    if seen not in run.net_detail:
        problems.append(f"guest came up as {run.net_detail!r}, expected {seen!r}")
    return problems


def verdict(vm: dict, run, expect: dict, **more) -> dict:
    """Every check of a main test, named; {} when all hold. Gathered into one assertion so
    a red run shows all that went wrong (the probes first: they are the guest's view)."""
    found = {"probes": unmet(run, expect), "config": config_problems(vm, run), **more}
    return {name: problem for name, problem in found.items() if problem}


def assert_all_hold(found: dict, run) -> None:
    if found:
        details = "\n".join(f"  {name}: {problem}" for name, problem in found.items())
        pytest.fail(f"failed checks: {', '.join(found)}\n{details}\n{run.summary()}", pytrace=False)


def create(sandbox, name, *flags) -> dict:
    vm = sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out
    # what a VMM is handed: the Firecracker entry must name the same TAP and MAC
    assert vm["firecracker"]["guest_mac"] == vm["mac"] and vm["firecracker"]["host_dev_name"] == vm["tap"], vm
    return vm


def start_resolver(sandbox, timeout=20.0):
    """``vmsan resolver`` in the sandbox host; returns once it answers on its address.

    (The probe query comes from the host, not from a VM, so the resolver refuses it and
    logs a warning: any answer means it is serving.)"""
    proc = sandbox.vmsan_spawn("resolver", "--upstream", UPSTREAM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rcode = sandbox.host.dig("resolver-ready.invalid", A.RESOLVER_IP, timeout=0.3)[0]
        if rcode != "TIMEOUT" and not rcode.startswith("ERROR"):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    with open(proc.log_path) as fh:
        log = fh.read()
    procs.stop(proc)
    pytest.fail(f"vmsan resolver did not answer on {A.RESOLVER_IP}:53 (exit {proc.poll()}):\n{log}")


def resolver_sniffer(sandbox, vm):
    """Counts the guest's DNS packets that reach the host resolver's address, on the
    host side of the VM's transit veth (after the VM namespace's DNAT)."""
    host_veth = A.veth_names(vm["slot"])[0]
    return sandbox.host.sniff(
        host_veth, packets.all_of(packets.ipv4_from(vm["guest_ip"]), packets.ipv4_to(A.RESOLVER_IP, 53))
    )


def boot(vm, probes, artifacts):
    return boot_vm(vm, list(probes), timeout=BOOT_TIMEOUT, artifacts=artifacts)


@pytest.fixture
def allow_all_vm(sandbox, realguest_artifacts):
    """A default (allow-all) VM and the host resolver serving it."""
    vm = create(sandbox, "open")
    assert vm["network_policy"] == "allow-all" and vm["netns"], vm
    start_resolver(sandbox)
    return vm


# -- policies -----------------------------------------------------------------------------
def test_allow_all_reaches_internet_by_name(sandbox, allow_all_vm, realguest_artifacts):
    vm = allow_all_vm
    with resolver_sniffer(sandbox, vm) as to_resolver:
        run = boot(vm, ALLOW_ALL, realguest_artifacts)
    # the resolver mixes the case of what it asks (0x20, RFC 5452 hardening): names are
    # compared as DNS compares them, without case
    asked = {(q.name.lower(), q.src_ip) for q in sandbox.internet.dns.queries()}
    found = verdict(
        vm,
        run,
        ALLOW_ALL,
        # the names went through the host resolver: the guest's queries reached its
        # address (at least one per name) ...
        resolver_path=to_resolver.count < 2 and f"{to_resolver.count} guest DNS packets reached the resolver",
        # ... and upstream saw them (from the host: the resolver's, or masqueraded ones)
        upstream=not {("a.example.test", UPLINK), ("example.test", UPLINK)} <= asked and f"upstream saw {asked}",
    )
    assert_all_hold(found, run)


DENY_ALL = {
    "dns:a.example.test": (False, "REFUSED"),  # answered at once, not left to time out
    "tcp:a.example.test:9000": (False, "dns REFUSED"),
    f"dns:a.example.test@{UPSTREAM}": (False, "REFUSED"),  # DNS to any address ends at the resolver
    f"tcp:{WEB_A}:9000": (False, "timeout"),
    f"ping:{WEB_A}": (False, "noreply"),
}


def test_deny_all_reaches_nothing(sandbox, realguest_artifacts):
    vm = create(sandbox, "closed", "--network-policy", "deny-all")
    assert vm["network_policy"] == "deny-all"
    start_resolver(sandbox)
    run = boot(vm, DENY_ALL, realguest_artifacts)
    found = verdict(
        vm,
        run,
        DENY_ALL,
        # nothing of the guest's reached the internet, not even a DNS query
        internet=sandbox.internet.tcp_connections() + sandbox.internet.dns.queries(),
    )
    assert_all_hold(found, run)


CUSTOM = {
    # before the name was asked, its address is closed like any other
    f"tcp:{WEB_A}:9000": (False, "timeout"),
    "dns:a.example.test": (True, f"addrs={WEB_A}"),
    "tcp:a.example.test:9000": (True, f"payload=hello {WEB_A} {UPLINK}"),
    "http:a.example.test": (True, f"body=vmsan-ok {WEB_A}"),
    # not on the list: no answer, and the address stays closed
    "dns:b.example.test": (False, "NXDOMAIN"),
    "tcp:b.example.test:9000": (False, "dns NXDOMAIN"),
    f"dns:b.example.test@{UPSTREAM}": (False, "NXDOMAIN"),  # asking upstream directly ends at the resolver
    f"tcp:{WEB_B}:9000": (False, "timeout"),
}


def test_custom_allowlist_lets_exactly_listed_names_through(sandbox, realguest_artifacts):
    vm = create(sandbox, "listed", "--allowed-domain", "a.example.test")
    assert vm["network_policy"] == "custom" and vm["allowed_domains"] == ["a.example.test"], vm
    start_resolver(sandbox)
    run = boot(vm, CUSTOM, realguest_artifacts)
    asked = {q.name.lower() for q in sandbox.internet.dns.queries()}  # 0x20: without case
    reached = {c.dst_ip for c in sandbox.internet.tcp_connections()}
    found = verdict(
        vm,
        run,
        CUSTOM,
        # b.example.test never left the host; only a.example.test's address was reached
        upstream=asked != {"a.example.test"} and f"upstream was asked for {asked}",
        internet=reached != {WEB_A} and f"internet TCP servers reached: {reached}",
    )
    assert_all_hold(found, run)


# -- published port ------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["allow-all", "deny-all"])
def test_published_port_reaches_guest_server(sandbox, realguest_artifacts, policy):
    """Inbound, so under every policy: host :8080 (from the internet through the uplink,
    and from the host itself on 127.0.0.1) reaches a server in the real guest; with the
    port unpublished the same connection fails, published again it works again."""
    vm = create(sandbox, "web", "--network-policy", policy, "--publish-port", "8080")
    assert vm["published_ports"] == ["8080:8080/tcp"], vm
    payload = f"VMSAN-PAYLOAD listen 8080 vmsan-guest {vm['guest_ip']}\n"  # only the guest says this
    with start_vm(vm, ["listen:tcp:8080:20:3"], timeout=BOOT_TIMEOUT, artifacts=realguest_artifacts) as guest:
        guest.wait_ready(timeout=BOOT_TIMEOUT)
        from_internet = sandbox.internet.tcp(UPLINK, 8080, timeout=5)
        from_host = sandbox.host.tcp("127.0.0.1", 8080, timeout=5)
        sandbox.vmsan("port", "remove", vm["id"], "8080")
        unpublished = sandbox.internet.tcp(UPLINK, 8080, timeout=2)
        sandbox.vmsan("port", "add", vm["id"], "8080")
        republished = sandbox.internet.tcp(UPLINK, 8080, timeout=5)
        run = guest.wait()
    found = verdict(
        vm,
        run,
        {"listen:tcp:8080:20:3": (True, "served=3")},
        from_internet=from_internet != payload and f"internet -> {UPLINK}:8080 read {from_internet!r}",
        from_host=from_host != payload and f"host -> 127.0.0.1:8080 read {from_host!r}",
        unpublished=unpublished is not None and f"read {unpublished!r} after `port remove`",
        republished=republished != payload and f"read {republished!r} after `port add`",
    )
    assert_all_hold(found, run)


# -- tampered: the same checks fail when create's values are not the right ones -------------
def test_tampered_gateway_fails(sandbox, allow_all_vm, realguest_artifacts):
    vm = allow_all_vm
    bad = tampered(vm, gateway=other_slot_gateway(vm))  # the next slot's gateway: off this /30
    run = boot(bad, ALLOW_ALL, realguest_artifacts)
    assert any("gateway" in p for p in config_problems(bad, run)), run.summary()
    assert run.net_ok is False and f"route default via {other_slot_gateway(vm)}" in run.net_detail, run.summary()
    # DNS still works (the resolver is on-link at the right DNS address); everything
    # behind the gateway fails
    assert set(unmet(run, ALLOW_ALL)) == {"tcp:a.example.test:9000", "http:example.test", f"ping:{WEB_A}"}, (
        run.summary()
    )


def test_tampered_dns_fails(sandbox, allow_all_vm, realguest_artifacts):
    """The neighbouring slot's gateway as DNS server (what a slot mix-up writes):
    another VM's address, which no guest may reach, so every name fails; by
    address works."""
    vm = allow_all_vm
    bad = tampered(vm, dns=other_slot_gateway(vm))
    with resolver_sniffer(sandbox, vm) as to_resolver:
        run = boot(bad, ALLOW_ALL, realguest_artifacts)
    assert any("dns0" in p for p in config_problems(bad, run)), run.summary()
    assert set(unmet(run, ALLOW_ALL)) == {"dns:a.example.test", "tcp:a.example.test:9000", "http:example.test"}, (
        run.summary()
    )
    assert run.result("dns:a.example.test").detail.startswith("timeout"), run.summary()
    assert to_resolver.count == 0, to_resolver.frames


def test_tampered_dns_upstream_bypasses_resolver(sandbox, allow_all_vm, realguest_artifacts):
    """The upstream itself as DNS server: allow-all lets the guest ask it directly, so
    the probes pass; only the resolver-path check of the main test sees the mistake."""
    vm = allow_all_vm
    bad = tampered(vm, dns=UPSTREAM)
    with resolver_sniffer(sandbox, vm) as to_resolver:
        run = boot(bad, ALLOW_ALL, realguest_artifacts)
    assert unmet(run, ALLOW_ALL) == {}, run.summary()
    assert to_resolver.count == 0, to_resolver.frames  # the main test requires >= 2
    assert any("dns0" in p for p in config_problems(bad, run)), run.summary()


def test_tampered_mac_fails(sandbox, allow_all_vm, realguest_artifacts):
    """The next slot's MAC, not the one the anti-spoofing rules expect: every frame of the
    guest is dropped, so nothing works, not even DNS."""
    vm = allow_all_vm
    bad = tampered(vm, mac=other_slot_mac(vm))
    run = boot(bad, ALLOW_ALL, realguest_artifacts)
    assert f"mac={bad['mac']}" in run.net_detail, run.summary()  # QEMU really used the other MAC
    assert any("guest came up as" in p for p in config_problems(vm, run)), run.summary()
    assert set(unmet(run, ALLOW_ALL)) == set(ALLOW_ALL), run.summary()
    assert run.result("dns:a.example.test").detail.startswith("timeout"), run.summary()
