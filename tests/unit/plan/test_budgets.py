"""The connection budgets as rules (plan/budgets.py, plan/firewall.py)."""

from ansible_collections.vmsan.network.plugins.module_utils.model.records import Limits, VmRecord
from ansible_collections.vmsan.network.plugins.module_utils.plan import budgets
from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as fp


def test_host_caps_keep_a_reserve_below_the_table_limit():
    for limit in (4096, 65536, 262144, 1048576):
        caps = budgets.host_caps(limit)
        assert caps.forward + caps.resolver + caps.reserve == limit
        assert caps.reserve >= limit // 8 and caps.forward < limit


def test_the_budget_heads_the_out_chain_and_the_cap_chain_refuses():
    vm = VmRecord("web", 3, "vmsan-web", limits=Limits(connections=500))
    plan = fp.vm_plan(vm, vm.policy)
    out = plan.owned[("filter", "vmsan-web-out")]
    assert out[0][-2:] == ("-j", "vmsan-web-cap") and "500" in out[0] and "NEW" in out[0]
    assert plan.owned[("filter", "vmsan-web-cap")] == [("-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"),
                                                       ("-j", "DROP")]
    # in the VM's own namespace the resolver is not local: the in chain needs no budget
    assert "connlimit" not in plan.owned[("filter", "vmsan-web-in")][0]
    flat = fp.vm_plan(vm.but(netns=None), vm.policy, in_host_namespace=True)
    assert flat.owned[("filter", "vmsan-web-in")][0] == out[0]


def test_the_host_caps_head_the_shared_chains_only_with_a_known_limit():
    assert ("filter", budgets.HOST_CAP_CHAIN) not in fp.host_plan().owned
    plan = fp.host_plan(262144)
    caps = budgets.host_caps(262144)
    assert str(caps.forward) in plan.owned[("filter", "VMSAN-HOST-FWD")][0]
    assert str(caps.resolver) in plan.owned[("filter", "VMSAN-HOST-IN")][0]
    assert "cap" in fp.CHAIN_ROLES and "vmsan-web-cap" in fp.vm_chains("web")
