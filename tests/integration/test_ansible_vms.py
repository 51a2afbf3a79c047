"""The fleet module vmsan_vms, run by Ansible on a sandbox machine: a VM
list converged in one module run for each state of the resource module
convention, check mode that plans what the real run then does, one diff
per VM, and lists refused before anything changes. Every behaviour is proved
from guests attached to the VMs' TAPs, or from the sandbox internet."""

import os

import pytest

from integration import snapshot
from integration.ansible_machine import BAD, UPLINK, WEB_A, WEB_B, machine, published  # noqa: F401  (machine: a fixture)
from sandbox import machines as vs
from sandbox.probes import at_once

pytestmark = pytest.mark.integration



def names(items):
    return [item["name"] for item in items]


def guest_of(machine, name):
    return machine.sandbox.add_guest(vs.vm_facts(machine.facts, name))


def test_merged_converges_a_list_in_one_run_and_gathered_gives_it_back(machine):
    a, b, c = (machine.vm_id(n) for n in ("open", "shut", "cust"))
    config = [{"name": a},
              {"name": b, "network_policy": "deny-all"},
              {"name": c, "allowed_cidrs": [WEB_A], "denied_cidrs": [BAD], "published_ports": ["8080:80"],
               "bandwidth": "50mbit"}]
    first = machine.ok("vmsan_vms", config=config, state="merged")
    assert first["changed"] and first["before"] == [] and sorted(first["changes"]) == sorted([a, b, c])
    assert names(first["after"]) == sorted([a, b, c]) and sorted(first["vms"]) == sorted([a, b, c])
    assert [first["vms"][n]["slot"] for n in (a, b, c)] == [0, 1, 2]
    second = machine.ok("vmsan_vms", config=config, state="merged")
    assert second["changed"] is False and second["changes"] == {} and second["after"] == first["after"]

    opened, shut, custom = (guest_of(machine, n) for n in (a, b, c))
    assert at_once(lambda: opened.tcp(WEB_A, 9000), lambda: custom.tcp(WEB_A, 9000)) and all(
        r is None for r in at_once(lambda: shut.tcp(WEB_A, 9000), lambda: custom.tcp(WEB_B, 9000),
                                   lambda: custom.udp(BAD, 9000)))
    assert (published(machine, 8080, custom, 80) or "").startswith("guest80")

    gathered = machine.ok("vmsan_vms", state="gathered")
    assert gathered["changed"] is False and gathered["gathered"] == first["after"]
    cust = next(item for item in gathered["gathered"] if item["name"] == c)
    assert cust == {"name": c, "netns": True, "slot": 2, "network_policy": "custom", "allowed_cidrs": [WEB_A + "/32"],
                    "denied_cidrs": [BAD + "/32"], "published_ports": ["8080:80/tcp"], "bandwidth": "50mbit"}
    # what gathered returns, given back as config, is what the host has
    assert machine.ok("vmsan_vms", config=gathered["gathered"], state="replaced")["changed"] is False
    assert machine.ok("vmsan_vms", config=gathered["gathered"], state="overridden")["changed"] is False


def test_merged_keeps_and_replaced_resets_what_an_item_leaves_out(machine):
    name = machine.vm_id("web")
    machine.ok("vmsan_vms", config=[{"name": name, "allowed_cidrs": [WEB_A], "published_ports": ["8080:80"]}])
    guest = guest_of(machine, name)
    # a port added by vmsan_port: merged adds its own and keeps that one
    machine.ok("vmsan_port", vm=name, host_port=9090, guest_port=90)
    merged = machine.ok("vmsan_vms", config=[{"name": name, "published_ports": ["7070:70"]}], state="merged")
    assert merged["vms"][name]["published_ports"] == ["8080:80/tcp", "9090:90/tcp", "7070:70/tcp"]
    assert merged["vms"][name]["allowed_cidrs"] == [WEB_A + "/32"]
    assert guest.tcp(WEB_A, 9000) and guest.tcp(WEB_B, 9000) is None
    # replaced: exactly the item, the rest defaults (allow-all, no other port)
    replaced = machine.ok("vmsan_vms", config=[{"name": name, "published_ports": ["9090:90"]}], state="replaced")
    assert replaced["vms"][name]["published_ports"] == ["9090:90/tcp"]
    assert replaced["vms"][name]["network_policy"] == "allow-all"
    assert guest.tcp(WEB_B, 9000)
    assert (published(machine, 9090, guest, 90) or "").startswith("guest90")
    assert machine.sandbox.internet.tcp(UPLINK, 8080) is None and machine.sandbox.internet.tcp(UPLINK, 7070) is None


def test_check_mode_plans_what_the_real_run_does(machine):
    kept, moved, new1, new2 = (machine.vm_id(n) for n in ("kept", "moved", "new1", "new2"))
    machine.ok("vmsan_vms", config=[{"name": kept, "published_ports": ["8080:80"]}, {"name": moved}])
    config = [{"name": new1},                                   # takes the lowest free slot
              {"name": moved, "published_ports": ["8080:80"]},  # takes kept's port ...
              {"name": kept, "network_policy": "deny-all"},     # ... which kept gives up (replaced)
              {"name": new2, "slot": 7}]
    before = machine.snapshot()
    plan, output = machine.run("vmsan_vms", check_mode=True, diff=True, config=config, state="overridden")
    assert not plan.get("failed"), output
    assert snapshot.diff(before, machine.snapshot()) == {}
    # one diff per VM that changes, headed with its name
    for name in (kept, moved, new1, new2):
        assert output.count("--- before: VM %s\n" % name) == 1, output[-3000:]
    done = machine.ok("vmsan_vms", config=config, state="overridden")
    assert done["after"] == plan["after"] and done["vms"] == plan["vms"]
    # the changes of the VMs that exist are the same lines; a new VM's
    # namespace is summed up in check mode (nothing in it can be compared)
    assert sorted(done["changes"]) == sorted(plan["changes"])
    for name in (kept, moved):
        assert done["changes"][name] == plan["changes"][name]
    for name in (new1, new2):
        assert done["changes"][name][0] == plan["changes"][name][0]
    assert [done["vms"][n]["slot"] for n in (kept, moved, new1, new2)] == [0, 1, 2, 7]
    guest = guest_of(machine, moved)
    assert (published(machine, 8080, guest, 80) or "").startswith("guest80")
    assert guest_of(machine, kept).tcp(WEB_A, 9000) is None


def test_overridden_removes_the_unlisted_vms_and_deleted_the_listed_ones(machine):
    empty = machine.snapshot()
    vms = [machine.vm_id(n) for n in ("a", "b", "c")]
    machine.ok("vmsan_vms", config=[{"name": n, "published_ports": ["%d" % (8080 + i)]} for i, n in enumerate(vms)])
    # b goes; its slot and port go to d, in the same run
    d = machine.vm_id("d")
    over = machine.ok("vmsan_vms", config=[{"name": vms[0], "published_ports": ["8080"]},
                                           {"name": d, "published_ports": ["8081"]},
                                           {"name": vms[2], "published_ports": ["8082"]}], state="overridden")
    assert names(over["after"]) == sorted([vms[0], vms[2], d]) and over["vms"][d]["slot"] == 1
    assert not os.path.exists("/run/netns/vmsan-" + vms[1])
    # a list given but empty removes nothing
    before = machine.snapshot()
    assert machine.ok("vmsan_vms", config=[], state="deleted")["changed"] is False
    assert snapshot.diff(before, machine.snapshot()) == {}
    # the listed ones only; a VM that is not there is no change
    gone = machine.ok("vmsan_vms", config=[{"name": d}, {"name": vms[1]}], state="deleted")
    assert sorted(gone["changes"]) == [d] and names(gone["after"]) == sorted([vms[0], vms[2]])
    assert not os.path.exists("/run/netns/vmsan-" + d)
    # no config: every VM of the host, and nothing of them is left
    assert machine.ok("vmsan_vms", state="deleted")["after"] == []
    after = machine.snapshot()
    for key in ("links", "addresses", "iptables", "ipsets", "namespaces"):
        assert after[key] == empty[key], key


REFUSED = [
    # (config, state, param or None, words of the message)
    ([{"name": "{a}"}, {"name": "{b}", "allowed_cidrs": ["10.0.0.1/8"]}], "merged", "config[1].allowed_cidrs",
     "config[1].allowed_cidrs (VM {b}): '10.0.0.1/8' has host bits set"),
    ([{"name": "{a}"}, {"name": "{a}"}], "merged", "config[1].name", "is listed twice"),
    ([{"name": "{a}", "published_ports": ["9000"]}, {"name": "{b}", "published_ports": ["9000:90"]}], "replaced", None,
     "host port 9000/tcp would be published by VM '{a}'"),
    ([{"name": "{a}"}, {"name": "{keep}", "slot": 5}], "merged", None, "a VM cannot move to slot 5"),
    ([], "overridden", "config", "would remove every VM of the host"),
    (None, "merged", "config", "state=merged needs config"),
]


@pytest.mark.parametrize("config,state,param,words", REFUSED, ids=[r[3][:30] for r in REFUSED])
def test_a_list_that_cannot_be_converged_changes_nothing(machine, config, state, param, words):
    ids = {"a": machine.vm_id("a"), "b": machine.vm_id("b"), "keep": machine.vm_id("keep")}
    machine.ok("vmsan_vms", config=[{"name": ids["keep"], "network_policy": "deny-all"}])
    before = machine.snapshot()
    args = {"state": state}
    if config is not None:
        args["config"] = [{k: v.format(**ids) if isinstance(v, str) else v for k, v in item.items()} for item in config]
    result, output = machine.run("vmsan_vms", **args)
    assert result.get("failed") and words.format(**ids) in result["msg"], output
    assert result.get("param") == param
    assert snapshot.diff(before, machine.snapshot()) == {}
