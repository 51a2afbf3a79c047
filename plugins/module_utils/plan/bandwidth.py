"""Bandwidth caps as data: the caps a VM's record asks for, the steps that
turn what the kernel has (``kernel.tc.read``) into them, and how each step
is reported. Pure: the decisions are unit-tested without a kernel.

Both directions are shaped (queued and sent at the cap), not policed, so TCP
settles at the cap instead of collapsing under drops: what the guest
RECEIVES (``bandwidth_in``) is shaped by an HTB at the TAP's root; what it
SENDS (``bandwidth``) is redirected from the TAP's ingress to the VM's IFB
``ifb-fhvm<slot>``, whose root carries the same HTB (``kernel.tc``).
"""

from collections import namedtuple

from ..model import addressing as A
from ..model import changes as C
from ..model.changes import Change


BURST_FRAME = 1600

Shapers = namedtuple("Shapers", "tap ifb receive send")
# what tc is to hold for a VM: tap, ifb: device names; receive / send: the
# cap in bytes per second or None (from the record's Bandwidth, in bit/s)


def absent():
    """What ``read`` returns when none of the VM's devices exist."""
    return {"tap_index": None, "root": None, "ingress": False, "redirect_to": None,
            "ifb_index": None, "ifb_up": False, "ifb_root": None, "ifb_foreign": False}


# --------------------------------------------------------------------------
# pure: names, desired state, rendering
# --------------------------------------------------------------------------
def ifb_name(slot):
    """The IFB that shapes what the guest in SLOT sends: named after its TAP
    (at most 13 characters, slots go to 16382)."""
    return "ifb-" + A.tap_name(slot)


def ifb_alias(vm_id):
    return "vmsan %s: shapes what the guest sends" % vm_id


def bytes_per_second(bits):
    """A cap in bit/s (``inputs.rate``) -> what tc takes (bytes/s), or None."""
    if not bits:
        return None
    return max(1, int(bits) // 8)


def caps(record):
    """The Shapers of RECORD (a VmRecord)."""
    slot = record.slot
    return Shapers(A.tap_name(slot), ifb_name(slot),
                   bytes_per_second(record.bandwidth.receive), bytes_per_second(record.bandwidth.send))


def burst(bytes_ps):
    """Bytes the class may send at once after an idle moment: one
    millisecond at the cap plus a full frame (what tc computed when the
    kernel ticked at 1000 Hz; tc's default today is a single frame, which
    starves fast caps between two timer runs)."""
    return bytes_ps // 1000 + BURST_FRAME


def rate_text(bytes_ps):
    """bytes/s -> the way a user writes it (50mbit); exact, never rounded."""
    bits = bytes_ps * 8
    for unit, size in (("gbit", 1000 ** 3), ("mbit", 1000 ** 2), ("kbit", 1000)):
        if bits >= size and bits % size == 0:
            return "%d%s" % (bits // size, unit)
    return "%dbit" % bits


def plan(want, have):
    """The steps that turn HAVE (see ``read``) into WANT (Shapers): a list of
    (action, argument) tuples, in the order they must run. Pure, so the
    decisions are unit-tested without a kernel.

    Actions: ``shape_root`` / ``reshape_root`` / ``unshape_root`` (TAP egress),
    ``create_ifb`` / ``ifb_up`` / ``shape_ifb`` / ``reshape_ifb``,
    ``redirect`` / ``unredirect`` (TAP ingress), ``delete_ifb``.
    The IFB is shaped before traffic is redirected to it, and traffic stops
    being redirected before the IFB goes.
    """
    steps = []
    # what the guest receives: the TAP's root
    if want.receive:
        if have["root"] is None:
            steps.append(("shape_root", want.receive))
        elif have["root"] != want.receive:
            steps.append(("reshape_root", (have["root"], want.receive)))
    elif have["root"] is not None:
        steps.append(("unshape_root", None))
    # what the guest sends: IFB, its shaper, then the redirect
    if want.send:
        fresh = have["ifb_index"] is None
        if fresh:
            steps.append(("create_ifb", None))
        elif not have["ifb_up"]:
            steps.append(("ifb_up", None))
        if fresh or have["ifb_root"] is None:
            steps.append(("shape_ifb", want.send))
        elif have["ifb_root"] != want.send:
            steps.append(("reshape_ifb", (have["ifb_root"], want.send)))
        if fresh or have["redirect_to"] != have["ifb_index"]:
            steps.append(("redirect", None))
    else:
        if have["ingress"]:
            steps.append(("unredirect", None))
        if have["ifb_index"] is not None:
            steps.append(("delete_ifb", None))
    return steps


def _was(bytes_ps):
    return "was %s" % rate_text(bytes_ps) if bytes_ps > 0 else "was not a plain cap"


def describe(step, want):
    """The Change a step makes."""
    action, arg = step
    tap, ifb = want.tap, want.ifb
    make = {
        "shape_root": lambda: Change(C.SHAPE_RECEIVE, tap, (rate_text(arg),)),
        "reshape_root": lambda: Change(C.RESHAPE_RECEIVE, tap, (rate_text(arg[1]), _was(arg[0]))),
        "unshape_root": lambda: Change(C.UNSHAPE_RECEIVE, tap),
        "create_ifb": lambda: Change(C.CREATE_IFB, ifb, (tap,)),
        "ifb_up": lambda: Change(C.LINK_UP, ifb),
        "shape_ifb": lambda: Change(C.SHAPE_SEND, ifb, (rate_text(arg),)),
        "reshape_ifb": lambda: Change(C.RESHAPE_SEND, ifb, (rate_text(arg[1]), _was(arg[0]))),
        "redirect": lambda: Change(C.REDIRECT, tap, (ifb,)),
        "unredirect": lambda: Change(C.UNREDIRECT, tap),
        "delete_ifb": lambda: Change(C.DELETE_IFB, ifb),
    }[action]
    return make()
