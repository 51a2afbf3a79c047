"""Slot allocation in the state directory (plain files, no root needed)."""

import os

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model.errors import ConflictError, VmsanError
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import FREE_HINT, StateStore


@pytest.fixture
def store(tmp_path):
    return StateStore(str(tmp_path))


def test_slots_are_given_lowest_first_and_a_released_one_is_reused(store):
    assert [store.reserve_slot("vm%d" % i, max_slot=9) for i in range(4)] == [0, 1, 2, 3]
    store.release_slot(1, "vm1")
    assert store.lowest_free_slot(9) == 1
    assert store.reserve_slot("again", max_slot=9) == 1
    assert store.reserve_slot("next", max_slot=9) == 4


def test_the_hint_is_only_a_hint(store):
    for i in range(3):
        store.reserve_slot("vm%d" % i, max_slot=9)
    hint = os.path.join(store.slots_dir, FREE_HINT)
    os.unlink(hint)                       # lost: the links are listed
    assert store.reserve_slot("a", max_slot=9) == 3
    with open(hint, "w") as handle:       # too low (a crash between writes)
        handle.write("0\n")
    assert store.reserve_slot("b", max_slot=9) == 4
    with open(hint, "w") as handle:       # garbage
        handle.write("x")
    assert store.reserve_slot("c", max_slot=9) == 5
    assert store.used_slots() == {0, 1, 2, 3, 4, 5}


def test_release_of_a_slot_above_the_hint_leaves_the_hint(store):
    for i in range(3):
        store.reserve_slot("vm%d" % i, max_slot=9)
    store.release_slot(0, "vm0")
    store.release_slot(2, "vm2")
    assert store.reserve_slot("x", max_slot=9) == 0
    assert store.reserve_slot("y", max_slot=9) == 2


def test_a_wanted_slot_is_taken_or_refused(store):
    assert store.reserve_slot("a", wanted=5, max_slot=9) == 5
    assert store.reserve_slot("a", wanted=5, max_slot=9) == 5     # its own
    with pytest.raises(ConflictError, match="slot 5 is held by VM 'a'"):
        store.reserve_slot("b", wanted=5, max_slot=9)
    assert store.reserve_slot("b", max_slot=9) == 0


def test_a_full_range_is_refused(store):
    for i in range(3):
        store.reserve_slot("vm%d" % i, max_slot=2)
    with pytest.raises(VmsanError, match="no free slot left"):
        store.reserve_slot("late", max_slot=2)
    assert store.lowest_free_slot(2) is None


def test_a_valid_hint_spares_the_listing(store, monkeypatch):
    for i in range(3):
        store.reserve_slot("vm%d" % i, max_slot=9)

    def no_listing():
        raise AssertionError("the slot links were listed")

    monkeypatch.setattr(store, "used_slots", no_listing)
    assert store.reserve_slot("next", max_slot=9) == 3
    store.release_slot(1, "vm1")
    assert store.reserve_slot("again", max_slot=9) == 1
