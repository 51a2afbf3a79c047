"""One sandbox machine for the Ansible module tests (a throwaway host
network namespace with its internet, reached by a local connection whose
interpreter runs inside it), the modules and plays run on it, and probes of
its published ports."""

import os

import pytest
import yaml

from integration import snapshot
from sandbox import machines as vs

# the sandbox internet's servers, and the host's uplink address
WEB_A, WEB_B, BAD, UPLINK = "203.0.113.10", "203.0.113.11", "192.0.2.10", "198.51.100.2"


class Machine:
    """One sandbox machine with an inventory, and the modules run on it."""

    def __init__(self, sandbox, workdir):
        self.sandbox = sandbox
        self.facts = vs.machine_facts("h1", sandbox, str(workdir))
        self.inventory = vs.write_inventory(os.path.join(str(workdir), "inventory.yml"),
                                            vs.inventory([self.facts]))

    def vm_id(self, name):
        return self.sandbox.unique_id(name)

    def run(self, module, check_mode=False, diff=False, **args):
        args.setdefault("state_dir", self.sandbox.home)
        return vs.run_module(self.inventory, "h1", "vmsan.network." + module, args, check_mode=check_mode,
                             diff=diff)

    def ok(self, module, **args):
        result, output = self.run(module, **args)
        assert not result.get("failed"), output
        return result

    def snapshot(self):
        snap = snapshot.host(self.sandbox)
        for name in snap["namespaces"]:
            path = "/run/netns/" + name
            snap["iptables " + name] = snapshot.iptables(path)
            snap["ipsets " + name] = snapshot.ipsets(path)
            snap["links " + name] = snapshot.links(path)
        snap["state"] = snapshot.state_files(self.sandbox)
        return snap


@pytest.fixture
def machine(sandbox, tmp_path):
    """A Machine for the test (import it into the test module)."""
    return Machine(sandbox, tmp_path)


def published(machine, host_port, guest, guest_port):
    """What a client on the internet gets from the host's port HOST_PORT,
    with a server on GUEST_PORT in the guest."""
    guest.serve_tcp("0.0.0.0", guest_port, label="guest%d" % guest_port)
    return machine.sandbox.internet.tcp(UPLINK, host_port)


def play(tmp_path, name, tasks, hosts="h1"):
    """A playbook of TASKS on the machine; its path."""
    path = os.path.join(str(tmp_path), name + ".yml")
    with open(path, "w") as handle:
        yaml.safe_dump([{"name": name, "hosts": hosts, "gather_facts": False, "tasks": tasks}], handle)
    return path


def played(machine, playbook, *args):
    result = vs.run_playbook(playbook, machine.inventory, *args)
    recap = vs.recap(result.stdout).get("h1")
    assert recap is not None and recap["failed"] == 0, result.stdout[-3000:]
    return recap
