"""The modules vmsan_vm, vmsan_network_policy and vmsan_port, run by Ansible
(ad-hoc ``ansible``, local connection) on a sandbox machine: the interpreter
is a wrapper that runs inside the sandbox host namespace. Every behaviour is
proved from a guest attached to the VM's TAP, or from the sandbox internet."""

import os
import subprocess

import pytest

from integration import snapshot
from integration.ansible_machine import BAD, UPLINK, WEB_A, WEB_B, machine, play, played, published  # noqa: F401  (machine: a fixture)
from integration.changes import C
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.changes import Change
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord
from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as fp
from sandbox import machines as vs


pytestmark = pytest.mark.integration



def test_vm_converges_once_and_its_policy_holds(machine):
    name = machine.vm_id("web")
    first = machine.ok("vmsan_vm", name=name, allowed_cidrs=[WEB_A], published_ports=["8080:80"])
    vm = first["vm"]
    assert first["changed"] and first["changes"][0] == str(Change(C.CREATE_VM, name, (vm["slot"],)))
    assert vm["id"] == name and vm["tap"] == "fhvm%d" % vm["slot"] and vm["netns"] == "vmsan-" + name
    assert vm["boot_args"].startswith("ip=%s::%s:" % (vm["guest_ip"], vm["host_ip"]))
    assert vm["firecracker"]["host_dev_name"] == vm["tap"]

    second = machine.ok("vmsan_vm", name=name, allowed_cidrs=[WEB_A], published_ports=["8080:80"])
    assert second["changed"] is False and second["changes"] == []

    guest = machine.sandbox.add_guest(vm)
    assert guest.tcp(WEB_A, 9000)
    assert guest.tcp(WEB_B, 9000) is None
    assert guest.udp(BAD, 9000) is None
    assert (published(machine, 8080, guest, 80) or "").startswith("guest80")


def test_audit_mode_through_the_modules_lets_through_then_the_list_holds(machine):
    name = machine.vm_id("aud")
    vm = machine.ok("vmsan_vm", name=name, network_policy="custom", audit=True)["vm"]
    assert vm["audit"] is True
    guest = machine.sandbox.add_guest(vm)
    assert guest.tcp(WEB_B, 9000)                    # the custom policy allows nothing, audit lets it through
    assert guest.tcp(vm["host_ip"], 22, timeout=0.3) is None       # the isolation baseline stays
    changed = machine.ok("vmsan_network_policy", vm=name, allowed_cidrs=[WEB_A])
    assert changed["changed"] and changed["vm"]["audit"] is False
    assert guest.tcp(WEB_A, 9000) and guest.tcp(WEB_B, 9000) is None


def test_check_mode_reports_the_plan_and_changes_nothing(machine):
    name = machine.vm_id("chk")
    before = machine.snapshot()
    planned = machine.ok("vmsan_vm", check_mode=True, name=name, network_policy="deny-all")
    assert planned["changed"] and planned["changes"][0] == str(Change(C.CREATE_VM, name, (0,)))
    assert snapshot.diff(before, machine.snapshot()) == {}

    machine.ok("vmsan_vm", name=name, network_policy="deny-all")
    guest = machine.sandbox.add_guest(machine.ok("vmsan_vm", name=name, network_policy="deny-all")["vm"])
    assert guest.tcp(WEB_A, 9000) is None

    # A policy change on a running VM: check mode plans exactly what the real
    # run then does, and until then the guest is still locked down.
    before = machine.snapshot()
    plan = machine.ok("vmsan_network_policy", check_mode=True, vm=name, allowed_cidrs=[WEB_A])
    assert plan["changed"] and plan["vm"]["network_policy"] == "custom"
    assert snapshot.diff(before, machine.snapshot()) == {}
    assert guest.tcp(WEB_A, 9000) is None
    done = machine.ok("vmsan_network_policy", vm=name, allowed_cidrs=[WEB_A])
    assert done["changes"] == plan["changes"]
    assert guest.tcp(WEB_A, 9000) and guest.tcp(WEB_B, 9000) is None


def test_diff_shows_facts_and_rules_before_and_after(machine):
    name = machine.vm_id("dif")
    machine.ok("vmsan_vm", name=name, allowed_cidrs=[WEB_A])
    result, output = machine.run("vmsan_network_policy", diff=True, vm=name, network_policy="deny-all")
    assert result["changed"], output
    assert "--- before: %s (rules)" % name in output
    assert '-  "network_policy": "custom"' in output and '+  "network_policy": "deny-all"' in output
    # the out chain loses the allowlist and ends in a plain DROP
    assert "\n--A vmsan-%s-out -m set --match-set vmsan-%s-allow dst -j ACCEPT\n" % (name, name) in output
    assert "\n-# ipset vmsan-%s-allow: %s/32\n" % (name, WEB_A) in output


BAD_INPUT = [
    # (module, args, parameter, CLI command whose message must match)
    ("vmsan_vm", {"allowed_cidrs": ["10.0.0.1/8"]}, "allowed_cidrs", ["create", "--allowed-cidr", "10.0.0.1/8"]),
    ("vmsan_vm", {"published_ports": ["99999"]}, "published_ports", ["create", "--publish-port", "99999"]),
    ("vmsan_vm", {"network_policy": "deny-all", "denied_cidrs": ["10.0.0.0/8"]}, "network_policy",
     ["create", "--network-policy", "deny-all", "--denied-cidr", "10.0.0.0/8"]),
    ("vmsan_vm", {"network_policy": "open"}, "network_policy", ["create", "--network-policy", "open"]),
    ("vmsan_vm", {"allowed_domains": ["*"]}, "allowed_domains", ["create", "--allowed-domain", "*"]),
    ("vmsan_network_policy", {"allowed_cidrs": ["300.1.1.1"]}, "allowed_cidrs",
     ["network", "{vm}", "--allowed-cidr", "300.1.1.1"]),
    ("vmsan_vm", {"network_policy": "deny-all", "audit": True}, "audit",
     ["create", "--network-policy", "deny-all", "--audit"]),
    ("vmsan_port", {"host_port": 0}, "host_port", None),
    ("vmsan_port", {"host_port": 80, "guest_port": 70000}, "guest_port", None),
]


@pytest.mark.parametrize("module,args,param,cli", BAD_INPUT, ids=[c[2] + "-" + c[0] for c in BAD_INPUT])
def test_bad_input_names_the_parameter_and_changes_nothing(machine, module, args, param, cli):
    existing = machine.vm_id("ok")
    machine.ok("vmsan_vm", name=existing, network_policy="deny-all")
    guest = machine.sandbox.add_guest(machine.ok("vmsan_vm", name=existing, network_policy="deny-all")["vm"])
    target = {"vmsan_vm": {"name": existing}}.get(module, {"vm": existing})
    before = machine.snapshot()

    result, output = machine.run(module, **dict(target, **args))

    assert result.get("failed") and result["msg"].startswith(param + ": "), output
    assert result.get("param") == param
    if cli:
        argv = [a.format(vm=existing) for a in cli]
        err = machine.sandbox.vmsan(*argv, json_out=False, check=False).err.strip()
        flag = {"allowed_cidrs": "--allowed-cidr", "published_ports": "--publish-port",
                "network_policy": "--network-policy", "allowed_domains": "--allowed-domain", "audit": "--audit"}[param]
        assert err == "vmsan: " + result["msg"].replace(param + ":", flag + ":", 1)
    assert snapshot.diff(before, machine.snapshot()) == {}
    assert guest.tcp(WEB_A, 9000) is None


def test_port_module_adds_and_removes_one_port_only(machine):
    name = machine.vm_id("prt")
    vm = machine.ok("vmsan_vm", name=name, published_ports=["8080:80"])["vm"]
    guest = machine.sandbox.add_guest(vm)

    added = machine.ok("vmsan_port", vm=name, host_port=9090, guest_port=90)
    assert added["changed"] and added["published_ports"] == ["8080:80/tcp", "9090:90/tcp"]
    assert machine.ok("vmsan_port", vm=name, host_port=9090, guest_port=90)["changed"] is False
    assert (published(machine, 8080, guest, 80) or "").startswith("guest80")
    assert (published(machine, 9090, guest, 90) or "").startswith("guest90")

    removed = machine.ok("vmsan_port", vm=name, host_port=8080, state="absent")
    assert removed["changed"] and removed["published_ports"] == ["9090:90/tcp"]
    assert machine.ok("vmsan_port", vm=name, host_port=8080, state="absent")["changed"] is False
    assert machine.sandbox.internet.tcp(UPLINK, 8080) is None
    assert (machine.sandbox.internet.tcp(UPLINK, 9090) or "").startswith("guest90")

    # vmsan_vm without published_ports keeps what vmsan_port set
    assert machine.ok("vmsan_vm", name=name)["changed"] is False


def test_a_vm_task_and_a_port_task_on_one_vm_converge(machine, tmp_path):
    """Issue 14, item 5: vmsan_vm sets published_ports, then vmsan_port adds
    one: the second run of the play changes nothing (before, each run took
    the other's port away and put it back: changed=2 every time)."""
    name, home = machine.vm_id("cmp"), machine.sandbox.home
    vm_task = {"name": "The VM", "vmsan.network.vmsan_vm": {"name": name, "published_ports": ["8080:80"],
                                                              "state_dir": home}}
    port_task = {"name": "One more port", "vmsan.network.vmsan_port": {"vm": name, "host_port": 9090,
                                                                        "guest_port": 90, "state_dir": home}}
    compose = play(tmp_path, "compose", [vm_task, port_task])
    assert played(machine, compose)["changed"] == 2
    assert played(machine, compose)["changed"] == 0
    guest = machine.sandbox.add_guest(vs.vm_facts(machine.facts, name))
    assert (published(machine, 8080, guest, 80) or "").startswith("guest80")
    assert (published(machine, 9090, guest, 90) or "").startswith("guest90")

    # an empty list adds nothing and takes nothing away
    assert machine.ok("vmsan_vm", name=name, published_ports=[])["changed"] is False
    # exclusive: the list is the VM's whole list; vmsan_port's port goes
    only = machine.ok("vmsan_vm", name=name, published_ports=["8080:80"], published_ports_exclusive=True)
    assert only["changed"] and only["vm"]["published_ports"] == ["8080:80/tcp"]
    assert machine.sandbox.internet.tcp(UPLINK, 9090) is None
    assert (machine.sandbox.internet.tcp(UPLINK, 8080) or "").startswith("guest80")
    assert machine.ok("vmsan_vm", name=name, published_ports=[], published_ports_exclusive=True)["vm"][
        "published_ports"] == []
    assert machine.sandbox.internet.tcp(UPLINK, 8080) is None


def test_port_owned_by_another_vm_is_refused(machine):
    first, second = machine.vm_id("p1"), machine.vm_id("p2")
    machine.ok("vmsan_vm", name=first, published_ports=["8080:80"])
    machine.ok("vmsan_vm", name=second)
    before = machine.snapshot()
    result, output = machine.run("vmsan_port", vm=second, host_port=8080)
    assert result.get("failed") and "already published by VM %r" % first in result["msg"], output
    assert snapshot.diff(before, machine.snapshot()) == {}


def test_drift_is_repaired_by_the_next_run(machine):
    name = machine.vm_id("drf")
    vm = machine.ok("vmsan_vm", name=name, allowed_cidrs=[WEB_A])["vm"]
    guest = machine.sandbox.add_guest(vm)
    assert guest.tcp(WEB_A, 9000)
    # someone flushes the VM's rules: the namespace fails closed
    subprocess.run(["nsenter", "--net=/run/netns/" + vm["netns"], "iptables-legacy", "-w", "-F", "vmsan-%s-out" % name],
                   check=True)
    assert guest.tcp(WEB_A, 9000) is None
    repaired = machine.ok("vmsan_vm", name=name, allowed_cidrs=[WEB_A])
    # the module reports changes as text (its RETURN): the exact line of that Change
    record = VmRecord(name, vm["slot"], vm["netns"])
    rules = fp.vm_plan(record, inputs.policy(allowed_cidrs=[WEB_A])).owned[("filter", "vmsan-%s-out" % name)]
    assert str(Change(C.SET_CHAIN, "vmsan-%s-out" % name, ("filter", len(rules)), vm["netns"])) in repaired["changes"]
    assert guest.tcp(WEB_A, 9000) and guest.tcp(WEB_B, 9000) is None
    assert machine.ok("vmsan_vm", name=name, allowed_cidrs=[WEB_A])["changed"] is False
    # forwarding is switched on per device in the VM's namespace: switched
    # off by hand on the TAP, the guest is cut off until the next run
    ns = ["nsenter", "--net=/run/netns/" + vm["netns"]]
    subprocess.run(ns + ["sysctl", "-qw", "net.ipv4.conf.%s.forwarding=0" % vm["tap"]], check=True)
    assert guest.tcp(WEB_A, 9000) is None
    repaired = machine.ok("vmsan_vm", name=name, allowed_cidrs=[WEB_A])
    assert str(Change(C.FORWARDING, vm["tap"], netns=vm["netns"])) in repaired["changes"]
    assert guest.tcp(WEB_A, 9000)
    assert machine.ok("vmsan_vm", name=name, allowed_cidrs=[WEB_A])["changed"] is False


def test_absent_removes_everything_once(machine):
    name = machine.vm_id("gone")
    empty = machine.snapshot()
    machine.ok("vmsan_vm", name=name, denied_cidrs=[BAD], published_ports=["8080"])
    assert os.path.exists("/run/netns/vmsan-" + name)
    planned = machine.ok("vmsan_vm", check_mode=True, name=name, state="absent")
    assert planned["changed"] and os.path.exists("/run/netns/vmsan-" + name)
    removed = machine.ok("vmsan_vm", name=name, state="absent")
    assert removed["changed"] and removed["vm"]["id"] == name
    assert not os.path.exists("/run/netns/vmsan-" + name)
    assert machine.ok("vmsan_vm", name=name, state="absent")["changed"] is False
    after = machine.snapshot()
    for key in ("links", "addresses", "iptables", "ipsets", "namespaces"):
        assert after[key] == empty[key], key


def _wrapper(machine, tmp_path, name, body):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


def test_missing_libraries_and_root_are_named(machine, tmp_path):
    """The interpreter running a module lacks a library, or is not root:
    one message that says which, before anything is touched."""
    ns = machine.facts["netns"]
    stub = tmp_path / "stub"
    for package in ("pyroute2", "iptc"):
        (stub / package).mkdir(parents=True)
        (stub / package / "__init__.py").write_text("")
    system = "/usr/bin/python3"
    cases = [
        ("sys", "exec nsenter --net=/run/netns/%s -- %s \"$@\"" % (ns, system), "(pyroute2)"),
        ("one", "PYTHONPATH=%s/one exec nsenter --net=/run/netns/%s -- %s \"$@\"" % (stub, ns, system),
         "(python-iptables)"),
        ("two", "PYTHONPATH=%s exec nsenter --net=/run/netns/%s -- %s \"$@\"" % (stub, ns, system), "(dnslib)"),
        ("nobody", "exec nsenter --net=/run/netns/%s -- setpriv --reuid=65534 --regid=65534 --clear-groups "
                   "%s \"$@\"" % (ns, vs.PYTHON), "must run as root"),
    ]
    (stub / "one").mkdir()
    (stub / "one" / "pyroute2").symlink_to(stub / "pyroute2")
    probe = subprocess.run([system, "-c", "import dnslib"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip("the system Python has dnslib: the library cases need one without")
    before = machine.snapshot()
    for label, body, expected in cases:
        python = _wrapper(machine, tmp_path, "python-" + label, body)
        for module, args in (("vmsan_vm", {"name": machine.vm_id("lib")}),
                             ("vmsan_port", {"vm": machine.vm_id("lib"), "host_port": 80}),
                             ("vmsan_network_policy", {"vm": machine.vm_id("lib"), "network_policy": "deny-all"})):
            result, output = vs.run_module(machine.inventory, "h1", "vmsan.network." + module, args,
                                           extra_vars={"ansible_python_interpreter": python})
            assert result.get("failed") and expected in result["msg"], (label, module, output)
            if label != "nobody":
                assert "Failed to import the required Python library" in result["msg"]
    assert snapshot.diff(before, machine.snapshot()) == {}
