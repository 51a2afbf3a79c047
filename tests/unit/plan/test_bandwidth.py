"""Bandwidth caps: the pure decisions (names, units, which tc steps a run
takes from a given kernel state). The kernel side is proved in
tests/integration/test_bandwidth.py."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.plan import bandwidth as bw
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.records import Bandwidth, VmRecord

def have(**kw):
    state = bw.absent()
    state["tap_index"] = 7
    state.update(kw)
    return state


def want(send=None, receive=None, slot=3):
    return bw.caps(VmRecord("web1", slot, "vmsan-web1", bandwidth=Bandwidth(send, receive)))


def actions(steps):
    return [a for a, _ in steps]


def test_ifb_is_named_after_its_tap_and_fits_ifnamsiz():
    assert bw.ifb_name(3) == "ifb-fhvm3"
    from ansible_collections.vmsan.network.plugins.module_utils.model.addressing import MAX_SLOT
    assert len(bw.ifb_name(MAX_SLOT)) <= 15


def test_caps_are_taken_in_bytes_per_second_from_bits():
    c = want(send=inputs.rate("bandwidth", "10mbit"), receive=inputs.rate("bandwidth_in", "50mbit"))
    assert c.send == 1250000 and c.receive == 6250000
    assert c.tap == "fhvm3" and c.ifb == "ifb-fhvm3"
    assert want().send is None and want().receive is None


@pytest.mark.parametrize("bits,text", [(10 ** 7, "10mbit"), (5 * 10 ** 10, "50gbit"), (8000, "8kbit"),
                                       (1500000, "1500kbit"), (8008, "8008bit")])
def test_rate_text_is_exact(bits, text):
    assert bw.rate_text(bits // 8) == text


def test_burst_is_a_millisecond_plus_a_frame():
    assert bw.burst(1250000) == 1250 + bw.BURST_FRAME
    assert bw.burst(1000) == 1 + bw.BURST_FRAME


def test_fresh_caps_shape_the_ifb_before_redirecting_to_it():
    steps = bw.plan(want(send=10 ** 7, receive=2 * 10 ** 7), have())
    assert actions(steps) == ["shape_root", "create_ifb", "shape_ifb", "redirect"]
    assert steps[0][1] == 2500000 and steps[2][1] == 1250000


def test_matching_kernel_means_no_step():
    w = want(send=10 ** 7, receive=10 ** 7)
    assert bw.plan(w, have(root=1250000, ingress=True, redirect_to=9, ifb_index=9, ifb_up=True,
                           ifb_root=1250000)) == []
    assert bw.plan(want(), have()) == []


def test_a_changed_cap_is_changed_in_place():
    w = want(send=5 * 10 ** 7, receive=5 * 10 ** 7)
    steps = bw.plan(w, have(root=1250000, ingress=True, redirect_to=9, ifb_index=9, ifb_up=True, ifb_root=1250000))
    assert steps == [("reshape_root", (1250000, 6250000)), ("reshape_ifb", (1250000, 6250000))]
    assert str(bw.describe(steps[0], w)).endswith("50mbit (was 10mbit) on fhvm3")


def test_removing_caps_stops_redirecting_before_the_ifb_goes():
    steps = bw.plan(want(), have(root=1250000, ingress=True, redirect_to=9, ifb_index=9, ifb_up=True,
                                 ifb_root=1250000))
    assert actions(steps) == ["unshape_root", "unredirect", "delete_ifb"]


@pytest.mark.parametrize("drift,expected", [
    ({"root": None}, ["shape_root"]),                         # someone deleted the TAP's qdisc
    ({"root": -1}, ["reshape_root"]),                         # ours, but not a plain cap
    ({"ingress": False, "redirect_to": None}, ["redirect"]),  # ingress qdisc flushed
    ({"redirect_to": 4}, ["redirect"]),                       # redirect to another device
    ({"ifb_up": False}, ["ifb_up"]),
    ({"ifb_root": None}, ["shape_ifb"]),
    ({"ifb_index": None, "ifb_up": False, "ifb_root": None}, ["create_ifb", "shape_ifb", "redirect"]),
])
def test_drift_is_repaired(drift, expected):
    w = want(send=10 ** 7, receive=10 ** 7)
    state = have(root=1250000, ingress=True, redirect_to=9, ifb_index=9, ifb_up=True, ifb_root=1250000)
    state.update(drift)
    assert actions(bw.plan(w, state)) == expected


def test_a_stray_ingress_qdisc_goes_when_no_send_cap():
    assert actions(bw.plan(want(), have(ingress=True))) == ["unredirect"]


def test_every_step_describes_itself():
    w = want(send=10 ** 7, receive=10 ** 7)
    for step in [("shape_root", 1), ("reshape_root", (-1, 2)), ("unshape_root", None), ("create_ifb", None),
                 ("ifb_up", None), ("shape_ifb", 3), ("reshape_ifb", (1, 3)), ("redirect", None),
                 ("unredirect", None), ("delete_ifb", None)]:
        text = str(bw.describe(step, w))
        assert "fhvm3" in text
