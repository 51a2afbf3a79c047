"""Every read-modify-write of a VM happens inside the state lock (issue
12): vmsan_port and vmsan_vm read the VM's ports before the lock, so a
``vmsan port add`` that another process made in between was lost.

The kernel side is stubbed (the converge step only records what it would
write); the state store, its lock and the modules' code are real. The
concurrent edit is made the moment the module takes the lock, which is where
a process that held the lock just before would have left it."""

import contextlib
import json
import os

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import manager as manager_mod
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import policy as policy_mod
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import ports as ports_mod
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.modules import vmsan_port, vmsan_vm

pytest.importorskip("pyroute2")     # lifecycle.ports reads host sockets through the kernel layer


def _write_vm(root, vm_id, ports):
    os.makedirs(os.path.join(root, "vms"), exist_ok=True)
    record = {"schema": 1, "id": vm_id, "slot": 7, "netns": "vmsan-" + vm_id, "status": "ready",
              "policy": {"mode": "allow-all", "allowed_domains": [], "allowed_cidrs": [], "denied_cidrs": []},
              "published_ports": ports, "bandwidth": None, "bandwidth_in": None, "tap_owner": None,
              "created": "2026-01-01T00:00:00Z"}
    with open(os.path.join(root, "vms", vm_id + ".json"), "w") as handle:
        json.dump(record, handle)


def _ports_on_disk(root, vm_id):
    with open(os.path.join(root, "vms", vm_id + ".json")) as handle:
        return json.load(handle)["published_ports"]


@pytest.fixture
def racing(tmp_path, monkeypatch):
    """A Manager whose lock, when taken, first lets 'another process' add
    port 48200 to VM web (as a 'vmsan port add web 48200' that held the lock
    just before)."""
    root = str(tmp_path)
    _write_vm(root, "web", ["48100:48100/tcp"])
    monkeypatch.setattr(manager_mod, "require_root", lambda: None)

    for module, name in ((manager_mod, "converge"), (policy_mod, "after_policy_change"),
                         (ports_mod, "after_ports_change")):
        monkeypatch.setattr(module, name, lambda *args, **kwargs: [])     # no kernel
    manager = manager_mod.Manager(root)
    real_locked = manager.store.locked

    @contextlib.contextmanager
    def locked():
        with real_locked():
            if "48200:48200/tcp" not in _ports_on_disk(root, "web"):
                _write_vm(root, "web", _ports_on_disk(root, "web") + ["48200:48200/tcp"])
            yield
    monkeypatch.setattr(manager.store, "locked", locked)
    return root, manager


def test_vmsan_port_keeps_a_port_added_meanwhile(racing):
    root, manager = racing
    spec = inputs.port_spec("published_ports", "48300")
    vmsan_port.publish(manager, "web", spec, True, False)
    assert _ports_on_disk(root, "web") == ["48100:48100/tcp", "48200:48200/tcp", "48300:48300/tcp"]


def test_vmsan_vm_keeps_a_port_added_meanwhile(racing):
    """A vmsan_vm task that leaves published_ports out keeps the VM's ports
    as they are when it runs, not as they were before it took the lock."""
    root, manager = racing
    params = dict(name="web", state="present", netns=True, slot=None, network_policy="deny-all",
                  allowed_domains=None, allowed_cidrs=None, denied_cidrs=None, published_ports=None,
                  bandwidth=None, bandwidth_in=None, tap_owner=None, state_dir=root, published_ports_exclusive=False)
    vmsan_vm.ensure(manager, vmsan_vm.parse(params), True, False)
    assert _ports_on_disk(root, "web") == ["48100:48100/tcp", "48200:48200/tcp"]


def test_vmsan_vm_adds_its_ports_to_one_added_meanwhile(racing):
    """published_ports without published_ports_exclusive adds the task's
    ports to the VM's ports as they are under the lock."""
    root, manager = racing
    params = dict(name="web", state="present", netns=True, slot=None, network_policy=None, allowed_domains=None,
                  allowed_cidrs=None, denied_cidrs=None, published_ports=["48100", "48300"], bandwidth=None,
                  bandwidth_in=None, tap_owner=None, state_dir=root, published_ports_exclusive=False)
    vmsan_vm.ensure(manager, vmsan_vm.parse(params), True, False)
    assert _ports_on_disk(root, "web") == ["48100:48100/tcp", "48200:48200/tcp", "48300:48300/tcp"]
