"""Outbound policies, the isolation baseline and live policy updates
(docs/contract.md, "Policies"), proved from guests against the sandbox's internet."""

import json
import subprocess
import time

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import addressing as A
from integration import snapshot
from integration.changes import C, of_kind
from sandbox import packets
from sandbox.probes import at_once

pytestmark = pytest.mark.integration

WEB_A, WEB_B, APEX, BAD = "203.0.113.10", "203.0.113.11", "203.0.113.200", "192.0.2.10"


def make_vm(sandbox, name, *flags):
    vm = sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out
    return vm, sandbox.add_guest(vm)


def reach(guest, ip):
    """What the guest gets through to IP: tcp, udp, icmp (probed together)."""
    tcp, udp, icmp = at_once(lambda: guest.tcp(ip, 9000), lambda: guest.udp(ip, 9000), lambda: guest.ping(ip))
    return {"tcp": bool(tcp), "udp": bool(udp), "icmp": icmp}


ALL = {"tcp": True, "udp": True, "icmp": True}
NONE = {"tcp": False, "udp": False, "icmp": False}


def test_allow_all_lets_tcp_udp_icmp_out(sandbox):
    _, guest = make_vm(sandbox, "aa")
    assert reach(guest, WEB_A) == ALL and reach(guest, BAD) == ALL


def test_deny_all_lets_nothing_out(sandbox):
    _, guest = make_vm(sandbox, "da", "--network-policy", "deny-all")
    assert reach(guest, WEB_A) == NONE and reach(guest, BAD) == NONE
    assert guest.http(WEB_A) is None


def test_custom_allowed_cidr(sandbox):
    _, guest = make_vm(sandbox, "ca", "--allowed-cidr", "203.0.113.0/24")
    assert reach(guest, WEB_A) == ALL
    assert reach(guest, BAD) == NONE


def test_denied_cidr_wins_over_allowed(sandbox):
    _, guest = make_vm(sandbox, "cd", "--allowed-cidr", "203.0.113.0/24", "--denied-cidr", "203.0.113.128/25")
    assert reach(guest, WEB_A) == ALL
    assert reach(guest, APEX) == NONE
    assert reach(guest, BAD) == NONE


def test_custom_with_only_denied_leaves_the_rest_open(sandbox):
    vm, guest = make_vm(sandbox, "od", "--denied-cidr", "203.0.113.128/25")
    assert vm["network_policy"] == "custom"
    assert reach(guest, APEX) == NONE
    assert reach(guest, WEB_A) == ALL and reach(guest, BAD) == ALL


def test_seed_guide_commands_work_as_written(sandbox):
    for flags in (["--network-policy", "allow-all"], ["--network-policy", "deny-all"],
                  ["--allowed-cidr", "10.0.0.0/8,192.168.1.0/24"], ["--denied-cidr", "10.0.0.0/8"],
                  ["--publish-port", "8080,3000"], ["--no-netns"]):
        vm = sandbox.vmsan("create", *flags).out
        sandbox.vmsan("remove", vm["id"])


POLICIES = {
    "allow-all": [],
    "deny-all": ["--network-policy", "deny-all"],
    "custom": ["--allowed-cidr", "0.0.0.0/0"],
    "allow-all-no-netns": ["--no-netns"],
}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_isolation_baseline(sandbox, policy):
    other, other_guest = make_vm(sandbox, "o", *POLICIES[policy])
    vm, guest = make_vm(sandbox, "g", *POLICIES[policy])
    other_guest_server = other_guest.serve_tcp("0.0.0.0", 7001)
    host_service = sandbox.host.serve_tcp("0.0.0.0", 7002)
    assert other_guest_server and host_service
    # another VM's guest and gateway, this VM's own gateway, the host's uplink,
    # a transit address, the metadata address: nothing answers.
    targets = [other["guest_ip"], other["host_ip"], vm["host_ip"], "198.51.100.2",
               A.transit(other["slot"])[0], A.transit(vm["slot"])[0], A.RESOLVER_IP]
    calls = []
    for ip in targets:
        calls += [lambda ip=ip: guest.tcp(ip, 7001), lambda ip=ip: guest.tcp(ip, 7002),
                  lambda ip=ip: guest.ping(ip, timeout=0.3)]
    results = at_once(*calls)
    for index, ip in enumerate(targets):
        tcp_7001, tcp_7002, pong = results[3 * index:3 * index + 3]
        assert tcp_7001 is None and tcp_7002 is None, ip
        assert not pong, ip
    sniff = sandbox.host.sniff("uplink0", packets.ipv4_to("169.254.169.254"))
    assert guest.tcp("169.254.169.254", 80) is None
    time.sleep(0.2)
    assert sniff.count == 0
    # the sniffer would have seen it: the host itself can send there
    sandbox.host.tcp("169.254.169.254", 80, timeout=0.2)
    assert sniff.wait_for(1, timeout=1.0)
    # from the other side, too: the host's own service saw no guest
    assert not [p for p in host_service.received() if p.src_ip.startswith("172.16.")]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_forged_source_ip_mac_and_ipv6_do_not_leave(sandbox, policy):
    vm, guest = make_vm(sandbox, "s", *POLICIES[policy])
    # the internet's UDP server answers real packets: prove the path first
    assert bool(guest.udp(WEB_A, 9000)) is (policy != "deny-all")
    sandbox.internet.clear_records()
    sniff6 = sandbox.host.sniff("uplink0", packets.all_of(packets.ipv6, packets.payload_contains(b"ipv6-probe")))
    guest.send_spoofed_udp("172.16.200.2", WEB_A, 9000, b"forged-ip")
    guest.send_spoofed_udp("198.51.100.77", WEB_A, 9000, b"forged-ip2")
    guest.send_frame_with_mac("06:00:de:ad:be:ef", WEB_A, 9000, b"forged-mac")
    guest.send_ipv6()
    # a control packet with the right source does arrive
    guest.send_spoofed_udp(vm["guest_ip"], WEB_A, 9000, b"control")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and not any(b"control" in p.payload for p in sandbox.internet.udp_received()):
        time.sleep(0.05)
    payloads = [p.payload for p in sandbox.internet.udp_received()]
    if policy != "deny-all":
        assert any(b"control" in p for p in payloads)
    assert not any(b"forged" in p for p in payloads)
    assert sniff6.count == 0, sniff6.frames
    # the sniffer does see such a packet when one leaves (from the host itself)
    sandbox.host.udp("2001:db8::1", 9000, payload=b"ipv6-probe-control")
    assert sniff6.wait_for(1, timeout=1.0)


def _ifindex(vm):
    ns = ["nsenter", "--net=/run/netns/" + vm["netns"]] if vm["netns"] else []
    return json.loads(subprocess.run(ns + ["ip", "-j", "link", "show", vm["tap"]], capture_output=True,
                                     text=True, check=True).stdout)[0]["ifindex"]


def test_live_update_keeps_allowed_flows_and_cuts_forbidden_ones(sandbox):
    vm, guest = make_vm(sandbox, "lu")
    index = _ifindex(vm)
    with guest.stream(WEB_A, 9001) as stream:
        assert stream.is_flowing()
        out = sandbox.vmsan("network", vm["id"], "--allowed-cidr", "203.0.113.0/24").out
        assert out["changed"]
        assert stream.is_flowing(), "an update that keeps the flow allowed must not disturb it"
        sandbox.vmsan("network", vm["id"], "--network-policy", "deny-all")
        cut_at = time.monotonic()
        assert stream.wait_stopped(timeout=1.0, quiet=0.2)
        assert time.monotonic() - cut_at < 1.0
        assert not stream.is_flowing(window=0.5)
    assert reach(guest, WEB_A) == NONE
    assert _ifindex(vm) == index
    sandbox.vmsan("network", vm["id"], "--network-policy", "allow-all")
    assert reach(guest, WEB_A) == ALL and _ifindex(vm) == index


def test_live_update_from_allowed_cidr_to_another_range(sandbox):
    vm, guest = make_vm(sandbox, "lr", "--allowed-cidr", "203.0.113.0/24")
    with guest.stream(WEB_A, 9001) as stream:
        assert stream.is_flowing()
        sandbox.vmsan("network", vm["id"], "--allowed-cidr", "192.0.2.0/24")
        assert stream.wait_stopped(timeout=1.0, quiet=0.2)
    assert reach(guest, BAD) == ALL and reach(guest, WEB_A) == NONE


def test_widening_update_keeps_the_flow_and_a_whole_internet_cidr_is_stable(sandbox):
    """A change that only widens (no conntrack walk: allows_all_that) keeps
    the flow; 0.0.0.0/0 is stored as two /1 halves, and the next run with the
    same list reports no change."""
    vm, guest = make_vm(sandbox, "wd", "--allowed-cidr", "203.0.113.0/25")
    with guest.stream(WEB_A, 9001) as stream:
        assert stream.is_flowing()
        out = sandbox.vmsan("network", vm["id"], "--allowed-cidr", "203.0.113.0/24,192.0.2.0/24").out
        assert out["changed"] and not of_kind(out, C.CUT_CONNECTION)
        assert stream.is_flowing()
    assert reach(guest, BAD) == ALL
    whole = sandbox.vmsan("network", vm["id"], "--allowed-cidr", "0.0.0.0/0").out
    assert whole["changed"]
    assert reach(guest, WEB_A) == ALL and reach(guest, BAD) == ALL
    assert sandbox.vmsan("network", vm["id"], "--allowed-cidr", "0.0.0.0/0").out["changed"] is False
    # and 169.254.169.254 stays closed: 0.0.0.0/0 does not open link-local
    assert guest.tcp("169.254.169.254", 80) is None


def test_a_small_edit_of_long_lists_is_made_in_place(sandbox):
    """One CIDR swapped in a list of several: the set is edited by the
    difference (not refilled), and the guest meets the new lists."""
    others = ["10.%d.0.0/16" % i for i in range(6)]
    vm, guest = make_vm(sandbox, "ed", "--allowed-cidr", ",".join(others + ["203.0.113.0/24"]),
                        "--denied-cidr", "203.0.113.128/25," + ",".join("10.%d.1.0/24" % i for i in range(6)))
    assert reach(guest, WEB_A) == ALL and reach(guest, BAD) == NONE and reach(guest, APEX) == NONE
    out = sandbox.vmsan("network", vm["id"], "--allowed-cidr", ",".join(others + ["192.0.2.0/24"]),
                        "--denied-cidr", "192.0.2.128/25," + ",".join("10.%d.1.0/24" % i for i in range(6)),
                        "--json").out
    edits = {c["subject"]: c["detail"] for c in of_kind(out, C.EDIT_SET)}
    assert edits == {"vmsan-%s-allow" % vm["id"]: [7, 1, 1], "vmsan-%s-deny" % vm["id"]: [7, 1, 1]}, out["changes"]
    assert reach(guest, BAD) == ALL and reach(guest, WEB_A) == NONE
    with_deny = sandbox.vmsan("network", vm["id"], "--allowed-cidr", ",".join(others + ["192.0.2.0/24"]),
                              "--denied-cidr", "192.0.2.0/28," + ",".join("10.%d.1.0/24" % i for i in range(6)),
                              "--json").out
    assert [c["detail"] for c in of_kind(with_deny, C.EDIT_SET, "vmsan-%s-deny" % vm["id"])] == [[7, 1, 1]]
    assert reach(guest, BAD) == NONE         # 192.0.2.10 now inside the edited deny list


def test_flushed_rules_are_restored_by_the_next_run(sandbox):
    vm, guest = make_vm(sandbox, "fl", "--network-policy", "deny-all")
    ns = "/run/netns/" + vm["netns"]
    subprocess.run(["nsenter", "--net=" + ns, "iptables-legacy", "-w", "-F"], check=True)
    subprocess.run(["nsenter", "--net=" + ns, "iptables-legacy", "-w", "-P", "FORWARD", "ACCEPT"], check=True)
    assert guest.tcp(WEB_A, 9000), "with the rules flushed and the policy opened, traffic passes"
    first = sandbox.vmsan("network", vm["id"], "--network-policy", "deny-all").out
    assert first["changed"]
    assert guest.tcp(WEB_A, 9000) is None
    assert sandbox.vmsan("network", vm["id"], "--network-policy", "deny-all").out["changed"] is False


@pytest.mark.parametrize("args,words", [
    (["--allowed-cidr", "10.0.0.0/8,10.1.2"], "--allowed-cidr: invalid IPv4 address"),
    (["--allowed-cidr", "10.0.0.0/33"], "--allowed-cidr: invalid prefix length"),
    (["--denied-cidr", "10.0.300.0/24"], "--denied-cidr: invalid IPv4 address"),
    (["--network-policy", "allow-some"], "--network-policy: unknown policy"),
    (["--network-policy", "deny-all", "--allowed-cidr", "10.0.0.0/8"], "--network-policy: deny-all cannot"),
    (["--allowed-domain", "*.*.example.com"], "--allowed-domain:"),
])
def test_bad_policy_input_changes_no_rule(sandbox, args, words):
    vm, _ = make_vm(sandbox, "bp", "--allowed-cidr", "203.0.113.0/24")
    vm_ns = "/run/netns/" + vm["netns"]
    before = (snapshot.iptables(sandbox.host.path), snapshot.iptables(vm_ns), snapshot.state_files(sandbox))
    for cmd in (["network", vm["id"]] + args, ["create", "--id", sandbox.unique_id("bp2")] + args):
        result = sandbox.vmsan(*cmd, check=False, json_out=False)
        assert result.rc == 2 and words in result.err, result.err
        after = (snapshot.iptables(sandbox.host.path), snapshot.iptables(vm_ns), snapshot.state_files(sandbox))
        assert after == before


def test_unknown_vm_for_network_is_refused(sandbox):
    before = snapshot.host(sandbox)
    result = sandbox.vmsan("network", "ghost", "--network-policy", "deny-all", check=False)
    assert result.rc == 2 and "no VM with id 'ghost'" in result.err
    assert snapshot.diff(before, snapshot.host(sandbox)) == {}


def test_show_prints_effective_policy_and_kernel_rules(sandbox):
    vm, _ = make_vm(sandbox, "sh", "--allowed-cidr", "203.0.113.0/24", "--denied-cidr", "203.0.113.128/25")
    shown = sandbox.vmsan("show", vm["id"]).out
    assert shown["network_policy"] == "custom"
    out_rules = shown["kernel_rules"]["vm_namespace"]["filter"]["vmsan-%s-out" % vm["id"]]
    assert any(r.get("set", {}).get("match-set") == ["vmsan-%s-deny" % vm["id"], "dst"] for r in out_rules)
    text = sandbox.vmsan("show", vm["id"], json_out=False).out
    assert "policy:    custom" in text and "vmsan-%s-out" % vm["id"] in text
