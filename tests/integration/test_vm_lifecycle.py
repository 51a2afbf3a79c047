"""The VM network sandbox (issue: slots, namespaces, TAP, state, create/list/
show/remove), proved from guests inside the test sandbox."""

import concurrent.futures
import json
import os
import subprocess

import pytest

from integration import snapshot
from integration.changes import C, of_kind

pytestmark = pytest.mark.integration

WEB = "203.0.113.10"


def create(sandbox, name, *flags):
    return sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out


def test_allow_all_guest_reaches_internet_with_its_own_addressing(sandbox):
    vm = create(sandbox, "a")
    assert vm["netns"] == "vmsan-" + vm["id"] and vm["tap"] == "fhvm%d" % vm["slot"]
    guest = sandbox.add_guest(vm)
    reply = guest.tcp(WEB, 9000)
    # the internet sees the host's uplink address: the guest was masqueraded
    assert reply and reply.split() == ["hello", WEB, "198.51.100.2"]
    assert guest.udp(WEB, 9000)
    assert guest.ping(WEB)
    # the guest has exactly its /30, its gateway and its MAC
    addrs = json.loads(guest.run(["ip", "-j", "addr", "show", "eth0"]).stdout)[0]
    assert addrs["address"] == vm["mac"]
    assert [(a["local"], a["prefixlen"]) for a in addrs["addr_info"] if a["family"] == "inet"] == [(vm["guest_ip"], 30)]
    # the TAP in the VM's namespace carries the gateway
    tap = json.loads(subprocess.run(["nsenter", "--net=/run/netns/" + vm["netns"], "ip", "-j", "addr", "show",
                                     vm["tap"]], capture_output=True, text=True, check=True).stdout)[0]
    assert [a["local"] for a in tap["addr_info"] if a["family"] == "inet"] == [vm["host_ip"]]
    assert vm["boot_args"] == "ip=%s::%s:255.255.255.252::eth0:off:%s" % (vm["guest_ip"], vm["host_ip"], vm["host_ip"])
    assert vm["firecracker"] == {"iface_id": "eth0", "guest_mac": vm["mac"], "host_dev_name": vm["tap"]}


def test_no_netns_guest_reaches_internet_and_is_warned(sandbox):
    result = sandbox.vmsan("create", "--id", sandbox.unique_id("nn"), "--no-netns")
    assert result.out["netns"] is None and "host network namespace" in result.err
    guest = sandbox.add_guest(result.out)
    assert guest.tcp(WEB, 9000)


def test_two_vms_distinct_slots_and_state_survives_the_process(sandbox):
    one, two = create(sandbox, "one"), create(sandbox, "two")
    assert one["slot"] != two["slot"] and one["tap"] != two["tap"] and one["mac"] != two["mac"]
    for vm in (one, two):
        shown = sandbox.vmsan("show", vm["id"]).out
        for key in ("slot", "tap", "netns", "guest_ip", "host_ip", "mac"):
            assert shown[key] == vm[key]
    listed = {v["id"]: v["slot"] for v in sandbox.vmsan("list").out}
    assert listed == {one["id"]: one["slot"], two["id"]: two["slot"]}


def test_twenty_concurrent_creates_get_distinct_slots(sandbox):
    ids = [sandbox.unique_id("c%d" % i) for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: sandbox.vmsan("create", "--id", i, check=False), ids))
    assert all(r.rc == 0 for r in results), [r.err for r in results if r.rc]
    slots = [r.out["slot"] for r in results]
    assert len(set(slots)) == 20
    states = snapshot.state_files(sandbox)
    assert len(states) == 20
    for text in states.values():
        data = json.loads(text)
        assert data["schema"] == 1 and data["status"] == "ready"
    assert sorted(json.loads(t)["slot"] for t in states.values()) == sorted(slots)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        removed = list(pool.map(lambda i: sandbox.vmsan("remove", i, check=False), ids))
    assert all(r.rc == 0 for r in removed), [r.err for r in removed if r.rc]


@pytest.mark.parametrize("flags", [
    (),
    ("--no-netns",),
    ("--network-policy", "custom", "--allowed-cidr", "203.0.113.0/24", "--denied-cidr", "203.0.113.128/25",
     "--publish-port", "8080,9090/udp"),
    ("--no-netns", "--network-policy", "deny-all", "--publish-port", "8081"),
])
def test_create_then_remove_leaves_the_host_as_before(sandbox, flags):
    before = snapshot.host(sandbox)
    vm = create(sandbox, "r", *flags)
    guest = sandbox.add_guest(vm)
    guest.tcp(WEB, 9000)                      # leave tracked connections behind
    guest.dig("a.example.test", vm["host_ip"], timeout=0.3)     # (DNS is let through under every policy)
    during = snapshot.host(sandbox)
    assert during != before and during["connections"], "the guest's flow is tracked in the host namespace"
    sandbox.remove_guest(guest)
    sandbox.vmsan("remove", vm["id"])
    assert snapshot.diff(before, snapshot.host(sandbox)) == {}
    assert not os.path.exists("/run/netns/vmsan-" + vm["id"])


def test_remove_verifies_and_reports(sandbox):
    vm = create(sandbox, "v")
    out = sandbox.vmsan("remove", vm["id"]).out
    assert out["changed"] and of_kind(out, C.DELETE_NETNS, vm["netns"])
    again = sandbox.vmsan("remove", vm["id"], check=False)
    assert again.rc == 2 and "no VM with id" in again.err


@pytest.mark.parametrize("args,rc,words", [
    (("create", "--id", "has space"), 2, "--id: invalid VM id"),
    (("create", "--id", "x" * 300), 2, "--id: invalid VM id"),
    (("create", "--frobnicate"), 2, "unrecognized arguments: --frobnicate"),
    (("create", "--slot", "99999"), 2, "--slot"),
    (("remove", "no-such-vm"), 2, "no VM with id 'no-such-vm'"),
    (("show", "no-such-vm"), 2, "no VM with id"),
    (("create", "--tap-owner", "no-such-user-x"), 2, "--tap-owner"),
])
def test_bad_input_is_refused_and_changes_nothing(sandbox, args, rc, words):
    existing = create(sandbox, "keep")
    before, states = snapshot.host(sandbox), snapshot.state_files(sandbox)
    result = sandbox.vmsan(*args, check=False, json_out=False)
    assert result.rc == rc and words in result.err and result.out == ""
    assert snapshot.diff(before, snapshot.host(sandbox)) == {}
    assert snapshot.state_files(sandbox) == states
    assert sandbox.vmsan("show", existing["id"]).out["slot"] == existing["slot"]


@pytest.mark.parametrize("point", ["after-netns", "after-links", "after-firewall"])
def test_failure_part_way_rolls_back(sandbox, point):
    before = snapshot.host(sandbox)
    result = sandbox.vmsan("create", "--id", sandbox.unique_id("f"), check=False, env={"VMSAN_FAIL_AT": point})
    assert result.rc == 1 and "injected failure" in result.err
    assert snapshot.diff(before, snapshot.host(sandbox)) == {}
    assert snapshot.state_files(sandbox) == {}


@pytest.mark.parametrize("point", ["after-netns", "after-links", "after-firewall"])
def test_killed_part_way_is_removable_and_recreatable(sandbox, point):
    before = snapshot.host(sandbox)
    vm_id = sandbox.unique_id("k")
    result = sandbox.vmsan("create", "--id", vm_id, check=False, env={"VMSAN_FAIL_AT": point + ":kill"})
    assert result.rc == -9
    assert sandbox.vmsan("list").out[0]["id"] == vm_id     # the record was written first
    sandbox.vmsan("remove", vm_id)
    assert snapshot.diff(before, snapshot.host(sandbox)) == {}
    vm = sandbox.vmsan("create", "--id", vm_id).out
    assert sandbox.add_guest(vm).tcp(WEB, 9000)


def test_drift_is_repaired_by_the_next_run(sandbox):
    vm = create(sandbox, "d")
    ns = "/run/netns/" + vm["netns"]
    subprocess.run(["nsenter", "--net=" + ns, "ip", "link", "del", vm["tap"]], check=True)
    subprocess.run(["nsenter", "--net=" + sandbox.host.path, "iptables-legacy", "-w", "-t", "nat", "-F",
                    "VMSAN-HOST-NAT"], check=True)
    again = sandbox.vmsan("network", vm["id"], "--network-policy", "allow-all").out
    assert again["changed"]
    assert of_kind(again, C.CREATE_TAP, vm["tap"]) and of_kind(again, C.SET_CHAIN, "VMSAN-HOST-NAT")
    assert sandbox.add_guest(vm).tcp(WEB, 9000)
    assert sandbox.vmsan("network", vm["id"], "--network-policy", "allow-all").out["changed"] is False


def test_tap_owner_lets_an_unprivileged_vmm_open_it(sandbox):
    vm = create(sandbox, "o", "--tap-owner", "65534")
    info = json.loads(subprocess.run(["nsenter", "--net=/run/netns/" + vm["netns"], "ip", "-d", "-j", "link", "show",
                                      vm["tap"]], capture_output=True, text=True, check=True).stdout)[0]
    assert info["linkinfo"]["info_kind"] == "tun"
    assert info["linkinfo"]["info_data"]["user"] in ("nobody", 65534, "65534")
    assert info["num_rx_queues"] == 1 and info["linkinfo"]["info_data"]["multi_queue"] is False


@pytest.mark.parametrize("other_flags", [("--publish-port", "8080"), ("--no-netns",)])
def test_removing_a_vm_leaves_a_vm_whose_id_extends_its_own(sandbox, other_flags):
    """Regression: ids may contain '-', so the chains of VM 'web' are not
    'every chain named vmsan-web-*' (VM 'web-2' has vmsan-web-2-pub, and
    with --no-netns vmsan-web-2-spoof... in the host namespace). Removing
    'web' failed with a libiptc traceback and left its namespace behind."""
    web = create(sandbox, "web")
    other = sandbox.vmsan("create", "--id", web["id"] + "-2", *other_flags).out
    guest = sandbox.add_guest(other)
    guest.serve_tcp(other["guest_ip"], 8080, label="web-2")
    before = snapshot.iptables(sandbox.host.path)
    removed = sandbox.vmsan("remove", web["id"], check=False)
    assert removed.rc == 0, removed.err
    assert "Traceback" not in removed.err
    assert not os.path.exists("/run/netns/vmsan-" + web["id"])
    # the other VM keeps every chain and still works
    after = snapshot.iptables(sandbox.host.path)
    prefix = "vmsan-%s-" % other["id"]

    def own(rules):
        return sorted(line for line in rules.splitlines() if prefix in line)
    assert own(before) and own(after) == own(before)
    assert guest.tcp(WEB, 9000)
    if "--publish-port" in other_flags:
        assert (sandbox.internet.tcp("198.51.100.2", 8080) or "").startswith("web-2")
    sandbox.remove_guest(guest)
    sandbox.vmsan("remove", other["id"])


def test_an_unreadable_state_file_breaks_only_its_own_vm(sandbox):
    """Regression: one corrupt state file made 'list' and every create with
    ports fail for the whole host. That VM is reported as broken; the others
    are listed, and creates go on."""
    good = create(sandbox, "good")
    with open(os.path.join(sandbox.home, "vms", "broken.json"), "w") as handle:
        handle.write("{not json")
    listed = sandbox.vmsan("list", check=False)
    assert listed.rc == 0, listed.err
    by_id = {v["id"]: v for v in listed.out}
    assert by_id[good["id"]]["slot"] == good["slot"]
    assert "corrupt" in by_id["broken"]["broken"]
    text = sandbox.vmsan("list", json_out=False, check=False)
    assert text.rc == 0 and "broken" in text.out
    made = sandbox.vmsan("create", "--id", sandbox.unique_id("ports"), "--publish-port", "8080", check=False)
    assert made.rc == 0, made.err
    assert "broken.json" in made.err        # warned: that VM's ports could not be checked
    os.unlink(os.path.join(sandbox.home, "vms", "broken.json"))
    for vm_id in (good["id"], made.out["id"]):
        sandbox.vmsan("remove", vm_id)
