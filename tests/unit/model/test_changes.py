"""Changes are values (model/changes.py): their text is the line users and
the docs read, and code looks at their kind."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import changes as C
from ansible_collections.vmsan.network.plugins.module_utils.model.changes import Change
from ansible_collections.vmsan.network.plugins.module_utils.plan import devices
from ansible_collections.vmsan.network.plugins.module_utils.plan import sets
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs


@pytest.mark.parametrize("change,text", [
    (Change(C.CREATE_VM, "web", (3,)), "create VM web in slot 3"),
    (Change(C.SET_CHAIN, "vmsan-web-out", ("filter", 9), "vmsan-web"),
     "vmsan-web: filter: set chain vmsan-web-out (9 rules)"),
    (Change(C.SET_MEMBERS, "VMSAN-FORWARD", ("filter", "web")), "filter: set web's rules in VMSAN-FORWARD"),
    (Change(C.HOOK, "INPUT", ("filter", "VMSAN-INPUT, VMSAN-HOST-IN")), "filter: hook VMSAN-INPUT, VMSAN-HOST-IN into INPUT"),
    (Change(C.SYSCTL, "net.ipv4.ip_forward", ("1", "0")), "sysctl net.ipv4.ip_forward=1 (was 0)"),
    (Change(C.EDIT_SET, "vmsan-web-allow", (7, 1, 1)), "set ipset vmsan-web-allow (7 networks: 1 added, 1 removed)"),
    (Change(C.CUT_CONNECTION, "172.16.3.2", ("tcp", 4000, "203.0.113.10", 9000)),
     "cut connection tcp 172.16.3.2:4000 -> 203.0.113.10:9000"),
    (Change(C.ROUTE, "0.0.0.0/0", ("169.254.64.5",)), "route 0.0.0.0/0 via 169.254.64.5"),
    (Change(C.ROUTE_DEV, "172.16.3.0/30", ("169.254.64.14", "vmsan-h3")),
     "route 172.16.3.0/30 via 169.254.64.14 dev vmsan-h3"),
    (Change(C.CREATE_OWNED_TAP, "fhvm3", (1000,)), "create TAP fhvm3 owned by uid 1000"),
    (Change(C.DELETE_EMPTY_CHAIN, "vmsan-web-pub", ("nat",)), "nat: delete chain vmsan-web-pub (no port published)"),
])
def test_text_is_todays_message(change, text):
    assert str(change) == text


def test_every_kind_renders_and_unknown_kinds_are_refused():
    for kind in C.KINDS:
        assert str(Change(kind, "x", tuple(range(5))))
    with pytest.raises(ValueError):
        Change("made_up", "x")


def test_inside_prefixes_the_namespace_and_data_round_trips():
    made = C.inside("vmsan-web", [Change(C.LINK_UP, "lo")])
    assert [str(c) for c in made] == ["vmsan-web: link lo up"]
    assert made[0].as_dict() == {"kind": "link_up", "subject": "lo", "detail": [], "netns": "vmsan-web"}
    assert C.of_kind(made + [Change(C.FORWARDING, "fhvm3")], C.FORWARDING) == [Change(C.FORWARDING, "fhvm3")]


# -- plan/devices: the decisions that used to be threaded through effects ----------
def test_address_plan_removes_strays_and_adds_the_address():
    assert devices.address_plan("fhvm3", "172.16.3.1/30", {"172.16.3.1/30"}) == []
    assert devices.address_plan("fhvm3", "172.16.3.1/30", {"10.9.9.9/8"}) == [
        Change(C.REMOVE_ADDRESS, "fhvm3", ("10.9.9.9/8",)), Change(C.ADDRESS, "fhvm3", ("172.16.3.1/30",))]
    assert devices.address_plan("fhvm3", "172.16.3.1/30", {"10.9.9.9/8"}, exclusive=False) == [
        Change(C.ADDRESS, "fhvm3", ("172.16.3.1/30",))]


def test_connected_plan_brings_the_link_up():
    assert devices.connected_is_right(7, True, (None, 7, "172.16.3.1"), "172.16.3.1")
    assert not devices.connected_is_right(7, False, (None, 7, "172.16.3.1"), "172.16.3.1")
    assert not devices.connected_is_right(7, True, ("10.0.0.1", 2, "10.0.0.2"), "172.16.3.1")
    assert [c.kind for c in devices.connected_plan("fhvm3", "172.16.3.1/30", False, {"172.16.3.1/30"})] == [C.LINK_UP]


def test_route_plan():
    assert devices.route_plan("0.0.0.0/0", "169.254.64.5", "vmsan-g0", 4, ("169.254.64.5", 4, None)) == []
    assert devices.route_plan("0.0.0.0/0", "169.254.64.5", "vmsan-g0", 4, None) == [
        Change(C.ROUTE_DEV, "0.0.0.0/0", ("169.254.64.5", "vmsan-g0"))]


@pytest.mark.parametrize("exists,info,owner,kinds", [
    (False, None, None, [C.CREATE_TAP]),
    (False, None, 1000, [C.CREATE_OWNED_TAP]),
    (True, {"owner": None, "multi_queue": False}, None, []),
    (True, {"owner": 0xFFFFFFFF, "multi_queue": False}, None, []),
    (True, {"owner": 1000, "multi_queue": False}, 1000, []),
    (True, {"owner": 1000, "multi_queue": False}, None, [C.RECREATE_TAP]),
    (True, {"owner": None, "multi_queue": True}, None, [C.RECREATE_TAP]),
    (True, None, None, [C.RECREATE_TAP]),          # a device of that name that is not a TAP
])
def test_tap_plan(exists, info, owner, kinds):
    assert [c.kind for c in devices.tap_plan("fhvm3", owner, exists, info)] == kinds


def test_sysctl_plan():
    assert devices.sysctl_plan("net.ipv4.ip_forward", 1, "1") == []
    assert devices.sysctl_plan("net.ipv4.conf.x.route_localnet", 1, None) == []
    assert devices.sysctl_plan("net.ipv4.ip_forward", 1, "0") == [Change(C.SYSCTL, "net.ipv4.ip_forward", ("1", "0"))]


# -- plan/sets ------------------------------------------------------------------------
def test_fill_steps_create_fill_and_edit_in_the_safe_order():
    policy = inputs.policy(None, "a.example.com", "10.0.0.0/8,192.0.2.0/24", "10.1.0.0/16")
    fresh = sets.fill_steps("web", policy, {"vmsan-web-allow": None, "vmsan-web-deny": None, "vmsan-web-dns": None})
    assert [(s.change.kind, s.action) for s in fresh] == [(C.FILL_SET, "fill"), (C.FILL_SET, "fill"),
                                                           (C.CREATE_SET, "create_learned")]
    have = {"vmsan-web-allow": {"10.0.0.0/8", "198.51.100.0/24"}, "vmsan-web-deny": {"10.1.0.0/16"},
            "vmsan-web-dns": True}
    [edit] = sets.fill_steps("web", policy, have)
    assert edit.action == "edit" and edit.narrow_first
    assert edit.remove == ("198.51.100.0/24",) and edit.add == ("192.0.2.0/24",)
    assert str(edit.change) == "set ipset vmsan-web-allow (2 networks: 1 added, 1 removed)"
    mostly_new = sets.fill_steps("web", inputs.policy(None, None, "192.0.2.0/24"),
                                 {"vmsan-web-allow": {"10.0.0.0/8", "10.1.0.0/16"}})
    assert [s.action for s in mostly_new] == ["fill"]


def test_unused_sets_are_destroyed_and_learned_names_pruned():
    steps = sets.unused_steps("web", inputs.policy("deny-all"), {"vmsan-web-allow", "vmsan-web-dns"})
    assert [str(s.change) for s in steps] == ["destroy ipset vmsan-web-allow", "destroy ipset vmsan-web-dns"]
    forget, kept = sets.prune({"203.0.113.1": "a.example.com", "203.0.113.2": None, "203.0.113.3": "b.example"},
                              lambda name: name.endswith("example.com"))
    assert forget == [("203.0.113.2", ""), ("203.0.113.3", "b.example")] and kept == {"203.0.113.1": "a.example.com"}


# -- kernel/iptables: the per-table decisions, on rules as keys ---------------------
class Rule(object):
    def __init__(self, key, comment=None):
        self.key, self.comment = key, comment


def test_table_steps_decide_from_keys_alone():
    pytest.importorskip("iptc")
    from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables
    part = iptables.TablePlan(hooks={"FORWARD": [("-j", "VMSAN-FORWARD")]},
                              owned={"vmsan-web-out": [("-j", "DROP")]},
                              members={"VMSAN-FORWARD": [("-i", "fhvm3", "-j", "vmsan-web-out")]},
                              policies={"FORWARD": "DROP"})
    wanted = {"vmsan-web-out": [Rule("drop")], "VMSAN-FORWARD": [Rule("jump-web")], "FORWARD": [Rule("hook")]}
    same = iptables.Observed({"vmsan-web-out": [Rule("drop")], "VMSAN-FORWARD": [Rule("jump-other", "vmsan:other"),
                                                                                  Rule("jump-web", "vmsan:web")],
                              "FORWARD": [Rule("hook"), Rule("docker")]}, {"FORWARD": "DROP"})
    assert iptables.table_steps("filter", part, "web", same, wanted) == []
    drifted = iptables.Observed({"vmsan-web-out": None, "VMSAN-FORWARD": [Rule("jump-web-old", "vmsan:web")],
                                 "FORWARD": [Rule("docker"), Rule("hook")]}, {"FORWARD": "ACCEPT"})
    steps = iptables.table_steps("filter", part, "web", drifted, wanted)
    assert [str(s.change) for s in steps] == [
        "filter: create chain vmsan-web-out", "filter: set chain vmsan-web-out (1 rules)",
        "filter: set web's rules in VMSAN-FORWARD", "filter: hook VMSAN-FORWARD into FORWARD",
        "filter: policy FORWARD DROP"]
    members, hook = steps[2], steps[3]
    assert members.delete == (0,) and hook.delete == (1,)        # the stale jump, the misplaced hook


def test_table_steps_delete_absent_chains_last_and_only_if_there():
    pytest.importorskip("iptc")
    from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables
    part = iptables.TablePlan(hooks={}, owned={"vmsan-web-out": [("-j", "DROP")]}, members={}, policies={},
                              absent=frozenset({"vmsan-web-guard", "VMSAN-GUARD-EMPTY"}))
    wanted = {"vmsan-web-out": [Rule("drop")]}
    left = iptables.Observed({"vmsan-web-out": [Rule("jump-guard")], "vmsan-web-guard": [],
                              "VMSAN-GUARD-EMPTY": []}, {})
    steps = iptables.table_steps("filter", part, "web", left, wanted)
    assert [str(s.change) for s in steps] == [
        "filter: set chain vmsan-web-out (1 rules)", "filter: delete chain VMSAN-GUARD-EMPTY",
        "filter: delete chain vmsan-web-guard"]
    gone = iptables.Observed({"vmsan-web-out": [Rule("drop")], "vmsan-web-guard": None, "VMSAN-GUARD-EMPTY": None}, {})
    assert iptables.table_steps("filter", part, "web", gone, wanted) == []
