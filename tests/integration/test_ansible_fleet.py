"""The playbooks on a fleet of three sandbox machines (each a throwaway host
network namespace with its own internet behind it, reached by a local
connection whose interpreter runs inside that namespace):

* site.yml converges every host, and a second run changes nothing;
* --check --diff on a changed inventory shows the planned rules and applies
  none (iptables-legacy-save and ipsets of every namespace compared), and the
  guests still behave as before; the real run then applies exactly that;
* change_policy.yml changes one VM's policy on every host that has it.
"""

import contextlib
import os

import pytest

from integration import snapshot
from sandbox import machines as vs

REPO = vs.REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE = os.path.join(REPO, "playbooks", "site.yml")
CHANGE_POLICY = os.path.join(REPO, "playbooks", "change_policy.yml")
WEB_A, WEB_B, UPLINK = "203.0.113.10", "203.0.113.11", "198.51.100.2"


def vm_list(machine, web_cidr=WEB_A):
    prefix = machine["prefix"]
    return [
        {"name": prefix + "-web", "allowed_cidrs": [web_cidr], "published_ports": ["8080:80"]},
        {"name": prefix + "-shut", "network_policy": "deny-all"},
    ]


class Fleet:
    def __init__(self, stack, workdir):
        self.workdir = str(workdir)
        started = vs.start_machines(3, self.workdir, stack)
        self.machines = [facts for facts, sandbox in started]
        self.sandboxes = {facts["name"]: sandbox for facts, sandbox in started}
        self.guests = {}

    def write_inventory(self, name, web_cidrs=None, quarantine=()):
        web_cidrs = web_cidrs or {}
        data = vs.inventory(
            self.machines,
            extra_group_vars={"vmsan_vms_prune": True},
            per_host=lambda m: {"vmsan_vms": vm_list(m, web_cidrs.get(m["name"], WEB_A))},
            subgroups={"quarantine": {"hosts": list(quarantine),
                                      "vars": {"vmsan_vms_policy_override": "deny-all"}}} if quarantine else None)
        return vs.write_inventory(os.path.join(self.workdir, name), data)

    def guest(self, host, vm):
        """A guest on VM (web or shut) of HOST, attached once."""
        key = (host, vm)
        if key not in self.guests:
            machine = next(m for m in self.machines if m["name"] == host)
            facts = vs.vm_facts(machine, "%s-%s" % (machine["prefix"], vm))
            self.guests[key] = self.sandboxes[host].add_guest(facts)
        return self.guests[key]

    def kernel(self):
        """iptables-legacy-save and ipsets of every namespace of the fleet."""
        state = {}
        for machine in self.machines:
            sandbox = self.sandboxes[machine["name"]]
            paths = [sandbox.host.path] + ["/run/netns/" + n for n in snapshot.product_namespaces(machine["prefix"])]
            for path in paths:
                state[path] = (snapshot.iptables(path), snapshot.ipsets(path))
        return state


@pytest.fixture
def fleet(sandbox_reaped, tmp_path):
    with contextlib.ExitStack() as stack:
        yield Fleet(stack, tmp_path)


def played(result):
    assert "PLAY RECAP" in result.stdout, result.stdout[-3000:]
    return vs.recap(result.stdout)


def changed_tasks(result):
    """The task headers and 'changed' lines of a run, for failure messages."""
    lines = result.stdout.splitlines()
    return [line for i, line in enumerate(lines)
            if line.startswith("changed:") or (line.startswith("TASK") and any(
                later.startswith("changed:") for later in lines[i + 1:i + 8]))]


def test_site_converges_a_fleet_once_and_check_diff_applies_nothing(fleet):
    inventory = fleet.write_inventory("inventory.yml")

    first = played(vs.run_playbook(SITE, inventory))
    assert set(first) == {"h1", "h2", "h3"}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 and r["changed"] > 0 for r in first.values()), first

    run = vs.run_playbook(SITE, inventory)
    second = played(run)
    assert all(r["failed"] == 0 and r["changed"] == 0 for r in second.values()), changed_tasks(run)

    for host in ("h1", "h2", "h3"):
        web, shut = fleet.guest(host, "web"), fleet.guest(host, "shut")
        assert web.tcp(WEB_A, 9000) and web.tcp(WEB_B, 9000) is None, host
        assert shut.tcp(WEB_A, 9000) is None, host
        web.serve_tcp("0.0.0.0", 80, label="web-" + host)
        assert (fleet.sandboxes[host].internet.tcp(UPLINK, 8080) or "").startswith("web-" + host)

    # The inventory changes: h1's web VM moves to another address, h2 goes
    # into quarantine (every VM deny-all); h3 stays as it is.
    changed = fleet.write_inventory("changed.yml", web_cidrs={"h1": WEB_B}, quarantine=["h2"])
    before = fleet.kernel()
    check = vs.run_playbook(SITE, changed, "--check", "--diff")
    planned = played(check)
    assert all(r["failed"] == 0 for r in planned.values()), check.stdout[-3000:]
    assert planned["h1"]["changed"] > 0 and planned["h2"]["changed"] > 0 and planned["h3"]["changed"] == 0
    h1_web, h2_web = fleet.machines[0]["prefix"] + "-web", fleet.machines[1]["prefix"] + "-web"
    assert "-# ipset vmsan-%s-allow: %s/32\n+# ipset vmsan-%s-allow: %s/32" % (h1_web, WEB_A, h1_web, WEB_B) \
        in check.stdout
    # deny-all: the allowlist leaves h2's out chain (which ends in DROP)
    assert "\n--A vmsan-%s-out -m set --match-set vmsan-%s-allow dst -j ACCEPT\n" % (h2_web, h2_web) in check.stdout
    assert '+  "network_policy": "deny-all"' in check.stdout
    # nothing applied: the kernel and the guests are as before
    assert fleet.kernel() == before
    assert fleet.guest("h1", "web").tcp(WEB_A, 9000) and fleet.guest("h1", "web").tcp(WEB_B, 9000) is None
    assert fleet.guest("h2", "web").tcp(WEB_A, 9000)

    # the real run applies what the check showed
    applied = played(vs.run_playbook(SITE, changed))
    assert {h: r["changed"] > 0 for h, r in applied.items()} == {"h1": True, "h2": True, "h3": False}
    assert fleet.guest("h1", "web").tcp(WEB_B, 9000) and fleet.guest("h1", "web").tcp(WEB_A, 9000) is None
    assert fleet.guest("h2", "web").tcp(WEB_A, 9000) is None
    assert fleet.guest("h3", "web").tcp(WEB_A, 9000)
    # published ports are inbound: quarantine leaves them working
    assert (fleet.sandboxes["h2"].internet.tcp(UPLINK, 8080) or "").startswith("web-h2")
    assert all(r["changed"] == 0 for r in played(vs.run_playbook(SITE, changed)).values())


def test_change_policy_playbook_reaches_every_host_with_the_vm(fleet):
    inventory = fleet.write_inventory("inventory.yml")
    assert all(r["failed"] == 0 for r in played(vs.run_playbook(SITE, inventory)).values())
    # h3 does not have the VM: the playbook leaves it alone
    h3 = fleet.machines[2]
    assert played(vs.run_playbook(SITE, inventory, "--limit", "h3", "-e",
                                  '{"vmsan_vms": [{"name": "%s-shut", "network_policy": "deny-all"}]}'
                                  % h3["prefix"]))["h3"]["failed"] == 0

    args = ("-e", "vmsan_vm={{ vmsan_sandbox_prefix }}-web", "-e", "vmsan_network_policy=deny-all")
    result = vs.run_playbook(CHANGE_POLICY, inventory, *args)
    recap = played(result)
    assert {h: r["changed"] for h, r in recap.items()} == {"h1": 1, "h2": 1, "h3": 0}, result.stdout[-3000:]
    assert all(r["failed"] == 0 for r in recap.values())
    for host in ("h1", "h2"):
        assert fleet.guest(host, "web").tcp(WEB_A, 9000) is None, host
    assert all(r["changed"] == 0 for r in played(vs.run_playbook(CHANGE_POLICY, inventory, *args)).values())
    # a VM that no host has: a failure that says so, not changed=0 (issue 16)
    missing = vs.run_playbook(CHANGE_POLICY, inventory, "-e", "vmsan_vm=nosuchvm", "-e", "vmsan_network_policy=deny-all")
    assert missing.returncode != 0, missing.stdout[-3000:]
    assert "has a VM named nosuchvm" in missing.stdout
    assert all(r["changed"] == 0 for r in played(missing).values())
