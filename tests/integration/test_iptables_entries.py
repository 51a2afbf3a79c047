"""The binary rule comparison (iptables_entries) against the real kernel:
every rule vmsan plans reads back from a committed table with the key it was
written with, and a rule changed by hand is seen as changed."""

import pytest

from integration.changes import C, of_kind
from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as fp
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables as apply
from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables_entries as E
from ansible_collections.vmsan.network.plugins.module_utils.kernel.ipsets import SetManager
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord
from sandbox import guard

pytestmark = pytest.mark.integration


def planned_rules(vm_id):
    vm = VmRecord(vm_id, 7, None)
    ports = inputs.port_list("published_ports", "8080,53/udp")
    custom = inputs.policy(None, None, "203.0.113.0/24", "203.0.113.128/25")
    plans = [fp.vm_plan(vm, custom, ports), fp.vm_plan(vm, inputs.policy("deny-all"), ports),
             fp.host_plan(), fp.published_plan(vm, ports)]
    by_table = {}
    for plan in plans:
        for group in (plan.owned, plan.members, plan.hooks):
            for (table, _chain), rules in group.items():
                by_table.setdefault(table, []).extend(rules)
    return by_table


def test_every_planned_rule_reads_back_with_its_key(sandbox):
    vm_id = sandbox.unique_id("ent")
    with guard.entered(sandbox.host.name):
        with SetManager() as sets:
            for kind in ("allow", "deny"):
                sets.create_net_set("vmsan-%s-%s" % (vm_id, kind))
            sets.create_learned_set("vmsan-%s-dns" % vm_id)
        try:
            for table_name, rules in planned_rules(vm_id).items():
                chain = "vmsan-%s-t" % vm_id
                table = apply.open_table(table_name)
                try:
                    # jumps in the plan need their chains
                    for target in {r[-1] for r in rules if r[-2] == "-j" and r[-1].lower().startswith("vmsan-")}:
                        if not table.is_chain(target):
                            table.create_chain(target)
                    table.create_chain(chain)
                    wanted = [apply.encode(r) for r in rules]
                    for rule in wanted:
                        table.append_entry(chain, rule.buf)
                    table.commit()
                finally:
                    table.close()
                table = apply.open_table(table_name)
                try:
                    have = E.read_chain(table, chain)
                    assert [h.key for h in have] == [w.key for w in wanted], table_name
                    assert len(have) > 3
                    # a rule changed in the kernel is a different rule
                    other = apply.encode(("-s", "192.0.2.9/32", "-j", "ACCEPT"))
                    assert all(other.key != h.key for h in have)
                finally:
                    table.close()
        finally:
            for table_name in ("raw", "nat", "filter"):
                table = apply.open_table(table_name)
                try:
                    ours = [c.name for c in table.chains if c.name.lower().startswith("vmsan-")]
                    for name in ours:
                        table.flush_entries(name)
                    for name in ours:
                        table.delete_chain(name)
                    table.commit()
                finally:
                    table.close()
            with SetManager() as sets:
                for kind in ("allow", "deny", "dns"):
                    sets.destroy("vmsan-%s-%s" % (vm_id, kind))


def test_a_hand_edited_rule_is_repaired(sandbox):
    """Replace one rule of a VM's chain by hand with a look-alike (another
    address): the next converge sees it, rewrites it, and then is quiet."""
    vm = sandbox.vmsan("create", "--id", sandbox.unique_id("ed"), "--network-policy", "custom",
                       "--allowed-cidr", "203.0.113.0/24").out
    chain = "vmsan-%s-out" % vm["id"]
    with guard.entered(vm["netns"]):
        table = apply.open_table("filter")
        try:
            have = E.read_chain(table, chain)
            # the policy's drop (a jump to the counted drop chain of its reason)
            position, drop = next((i, r.label) for i, r in enumerate(have) if r.label.startswith("VMSAN-DROP"))
            table.replace_entry(chain, apply.encode(("-d", "192.0.2.77/32", "-j", drop)).buf, position)
            table.commit()
        finally:
            table.close()
    first = sandbox.vmsan("network", vm["id"], "--network-policy", "custom", "--allowed-cidr", "203.0.113.0/24",
                          "--json").out
    assert first["changed"] is True
    assert of_kind(first, C.SET_CHAIN, chain)
    again = sandbox.vmsan("network", vm["id"], "--network-policy", "custom", "--allowed-cidr", "203.0.113.0/24",
                          "--json").out
    assert again["changed"] is False
