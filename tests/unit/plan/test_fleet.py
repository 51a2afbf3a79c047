"""The fleet module's decisions (plan/fleet.py): what each state of the
resource module convention does with a VM list, the order of the steps, the
slots of new VMs, and the lists refused before anything changes. Pure."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import ConflictError, InputError, VmsanError
from ansible_collections.vmsan.network.plugins.module_utils.model.records import (ALLOW_ALL, DEFAULT_LIMITS, KEEP,
                                                                                  Bandwidth, Limits,
                                                                                  BrokenRecord, VmRecord)
from ansible_collections.vmsan.network.plugins.module_utils.plan import fleet
from ansible_collections.vmsan.network.plugins.module_utils.plan.fleet import Ensure, Remove, Wanted


def ports(text):
    return inputs.port_list("published_ports", text)


def host(*records):
    return {r.id: r for r in records}


WEB = VmRecord("web", 0, "vmsan-web", inputs.policy(allowed_cidrs=["192.0.2.0/24"]), ports("8080:80"),
               Bandwidth(50000000, None), 1000)
DB = VmRecord("db", 1, "vmsan-db", inputs.policy("deny-all"))
BARE = VmRecord("bare", 2, None)
HOST = host(WEB, DB, BARE)
SLOTS = (0, 1, 2)


def wanted(*items):
    return [Wanted(index=i, **item) for i, item in enumerate(items)]


def ensures(steps):
    return [s for s in steps if isinstance(s, Ensure)]


def test_merged_keeps_what_an_item_leaves_out_and_adds_ports():
    steps = fleet.plan("merged", wanted(dict(id="web", ports=ports("9090"))), HOST, SLOTS)
    (step,) = steps
    assert (step.policy, step.bandwidth, step.bandwidth_in, step.tap_owner) == (KEEP, KEEP, KEEP, KEEP)
    assert step.use_netns and step.merge_ports and not step.new
    assert step.ports_of(WEB.ports) == ports("8080:80,9090")
    # a port on the same host side replaces the VM's (a new guest port)
    replacing = fleet.plan("merged", wanted(dict(id="web", ports=ports("8080:81"))), HOST, SLOTS)[0]
    assert replacing.ports_of(ports("8080:80,53/udp")) == ports("8080:81,53/udp")
    # left out: the ports the VM has then
    assert fleet.plan("merged", wanted(dict(id="web")), HOST, SLOTS)[0].ports_of(ports("7070")) == ports("7070")


def test_merged_keeps_an_existing_vms_namespace_mode_and_gives_a_new_one_its_own():
    bare, new = fleet.plan("merged", wanted(dict(id="bare"), dict(id="new")), HOST, SLOTS)
    assert bare.use_netns is False and not bare.new
    assert new.use_netns is True and new.new


def test_replaced_gives_what_an_item_leaves_out_the_default():
    (step,) = fleet.plan("replaced", wanted(dict(id="web", ports=ports("9090"))), HOST, SLOTS)
    assert step.policy == ALLOW_ALL and (step.bandwidth, step.bandwidth_in, step.tap_owner) == (None, None, None)
    assert not step.merge_ports and step.ports_of(WEB.ports) == ports("9090")
    (step,) = fleet.plan("replaced", wanted(dict(id="db")), HOST, SLOTS)
    assert step.ports_of(()) == () and step.policy == ALLOW_ALL
    # replaced leaves the other VMs alone
    assert [s.id for s in fleet.plan("replaced", wanted(dict(id="db")), HOST, SLOTS)] == ["db"]


def test_budgets_left_out_are_kept_by_merged_and_defaulted_by_replaced():
    given = inputs.limits(limit_connections="500")
    (merged,) = fleet.plan("merged", wanted(dict(id="web", limits=given)), HOST, SLOTS)
    assert merged.limits is given                      # the DNS budgets KEEP: the manager keeps the VM's
    (replaced,) = fleet.plan("replaced", wanted(dict(id="web", limits=given)), HOST, SLOTS)
    assert replaced.limits == Limits(500) and replaced.limits.dns == DEFAULT_LIMITS.dns
    assert fleet.plan("replaced", wanted(dict(id="web")), HOST, SLOTS)[0].limits == DEFAULT_LIMITS
    assert fleet.plan("merged", wanted(dict(id="web")), HOST, SLOTS)[0].limits is KEEP


def test_overridden_removes_the_unlisted_vms_first():
    steps = fleet.plan("overridden", wanted(dict(id="db"), dict(id="new")), HOST, SLOTS)
    assert steps[:2] == [Remove("bare"), Remove("web")]
    assert [s.id for s in ensures(steps)] == ["db", "new"]
    # web's slot 0 and port are freed for the list
    assert ensures(steps)[1].predicted_slot == 0


def test_an_empty_list_removes_nothing_and_overridden_refuses_it():
    assert fleet.plan("deleted", [], HOST, SLOTS) == []
    assert fleet.plan("replaced", [], HOST, SLOTS) == [] and fleet.plan("merged", [], HOST, SLOTS) == []
    with pytest.raises(InputError) as caught:
        fleet.plan("overridden", [], HOST, SLOTS)
    assert caught.value.param == "config" and "state=deleted without config" in str(caught.value)


def test_deleted_removes_the_listed_vms_or_every_vm_without_config():
    assert fleet.plan("deleted", wanted(dict(id="web"), dict(id="gone")), HOST, SLOTS) == [Remove("web"),
                                                                                           Remove("gone")]
    assert fleet.plan("deleted", None, HOST, SLOTS) == [Remove("bare"), Remove("db"), Remove("web")]


def test_a_vm_whose_state_file_cannot_be_read_is_left_alone_unless_named():
    odd = host(WEB, BrokenRecord("odd", "corrupt"))
    assert fleet.plan("deleted", None, odd, (0,)) == [Remove("web")]
    assert fleet.plan("overridden", wanted(dict(id="new")), odd, (0, 1))[:1] == [Remove("web")]
    assert len(fleet.plan("overridden", wanted(dict(id="new")), odd, (0, 1))) == 2
    with pytest.raises(VmsanError, match="config\\[0\\]: VM odd cannot be removed: corrupt"):
        fleet.plan("deleted", wanted(dict(id="odd")), odd, (0, 1))


def test_config_is_needed_except_to_delete_or_gather():
    for state in ("merged", "replaced", "overridden"):
        with pytest.raises(InputError) as caught:
            fleet.plan(state, None, HOST, SLOTS)
        assert caught.value.param == "config"
    assert fleet.plan("gathered", None, HOST, SLOTS) == []


def test_new_vms_get_the_slots_the_real_run_gives_them():
    steps = fleet.plan("merged", wanted(dict(id="a"), dict(id="b", slot=3), dict(id="c")), HOST, (0, 1, 2))
    slots = {s.id: (s.slot, s.predicted_slot) for s in steps}
    # the lowest free slot at a's turn is 3, which b asks for: a is pinned
    # to 4; c then gets the lowest free one, the core's own pick (not pinned)
    assert slots == {"a": (4, 4), "b": (3, 3), "c": (None, 5)}
    # a slot the state directory holds (a broken VM's) is not given out
    broken = host(WEB, BrokenRecord("odd", "corrupt"))
    (step,) = fleet.plan("merged", wanted(dict(id="a")), broken, (0, 1))
    assert step.predicted_slot == 2


def test_a_slot_held_or_given_twice_is_refused():
    with pytest.raises(ConflictError, match="slot 1 is held by VM 'db'"):
        fleet.plan("merged", wanted(dict(id="a", slot=1)), HOST, SLOTS)
    with pytest.raises(InputError) as caught:
        fleet.plan("merged", wanted(dict(id="a", slot=7), dict(id="b", slot=7)), HOST, SLOTS)
    assert caught.value.param == "config[1].slot"
    # the slot of a VM that overridden removes first is free
    steps = fleet.plan("overridden", wanted(dict(id="a", slot=1)), HOST, SLOTS)
    assert steps[:3] == [Remove("bare"), Remove("db"), Remove("web")] and steps[3].predicted_slot == 1


def test_moves_are_refused_for_the_whole_list():
    with pytest.raises(ConflictError, match="holds slot 0; a VM cannot move to slot 3") as caught:
        fleet.plan("merged", wanted(dict(id="db"), dict(id="web", slot=3)), HOST, SLOTS)
    assert str(caught.value).startswith("config[1].slot: ")
    with pytest.raises(ConflictError, match="config\\[0\\].netns: VM 'bare' was created without one"):
        fleet.plan("merged", wanted(dict(id="bare", netns=True)), HOST, SLOTS)
    # replaced: a left-out netns is the default (its own namespace)
    with pytest.raises(ConflictError, match="netns"):
        fleet.plan("replaced", wanted(dict(id="bare")), HOST, SLOTS)
    with pytest.raises(VmsanError, match="cannot be converged: corrupt"):
        fleet.plan("merged", wanted(dict(id="odd")), host(BrokenRecord("odd", "corrupt")), (0,))


def test_a_name_listed_twice_is_refused():
    with pytest.raises(InputError) as caught:
        fleet.plan("merged", wanted(dict(id="a"), dict(id="a")), HOST, SLOTS)
    assert caught.value.param == "config[1].name" and "config[0] and config[1]" in str(caught.value)


def test_a_port_two_vms_would_publish_is_refused():
    # db would publish web's port, which web keeps (merged, replaced) ...
    for state in ("merged", "replaced"):
        with pytest.raises(ConflictError, match="8080/tcp would be published by VM 'web'"):
            fleet.plan(state, wanted(dict(id="db", ports=ports("8080"))), HOST, SLOTS)
    # ... two listed VMs asking for one port
    with pytest.raises(ConflictError, match="VM 'a' .* and by VM 'b'"):
        fleet.plan("merged", wanted(dict(id="a", ports=ports("7070")), dict(id="b", ports=ports("127.0.0.1:7070"))),
                   HOST, SLOTS)
    # a port that web gives up in the same run is free, whatever the order
    steps = fleet.plan("replaced", wanted(dict(id="db", ports=ports("8080")), dict(id="web")), HOST, SLOTS)
    assert [s.id for s in steps] == ["web", "db"]
    # ... and so is one of a VM that overridden removes
    steps = fleet.plan("overridden", wanted(dict(id="db", ports=ports("8080"))), HOST, SLOTS)
    assert steps[:2] == [Remove("bare"), Remove("web")]


def test_unknown_state():
    with pytest.raises(InputError) as caught:
        fleet.plan("purged", [], HOST, SLOTS)
    assert caught.value.param == "state"
