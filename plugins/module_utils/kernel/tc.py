"""Bandwidth caps through tc (pyroute2): reading and changing the kernel
(the steps are planned by ``plan.bandwidth``), in the namespace that holds the VM's
TAP (its own, or the host's with --no-netns).

Both directions are shaped (queued and sent at the cap), not policed, so TCP
settles at the cap instead of collapsing under drops:

* what the guest RECEIVES (``bandwidth_in``) leaves the host through the TAP:
  an HTB qdisc ``1:`` at the TAP's root sends everything (``default 1``) to
  its one class ``1:1`` with rate = ceil = the cap;
* what the guest SENDS (``bandwidth``) arrives on the TAP: the TAP's ingress
  qdisc redirects every frame (u32 match-all, mirred egress redirect) to the
  VM's IFB device ``ifb-fhvm<slot>``, whose root carries the same HTB. The IFB
  hands each frame back to the stack as received on the TAP, so the firewall
  (anti-spoofing, policy) sees it exactly as before.

The cap counts what crosses the TAP: whole Ethernet frames, headers included
(TCP goodput over 1500-byte frames is about 95.6 % of it, see docs/bandwidth.md).

The TAP's root and ingress qdiscs belong to vmsan. Every function compares
with the kernel first and returns the changes it made (or, in check mode,
would make); a cap is changed in place, so the TAP is never recreated.
"""

import errno

from ..model import changes as C
from ..model.changes import Change
from ..model.errors import KernelError, VmsanError
from ..plan.bandwidth import absent, burst, caps, describe, ifb_alias, ifb_name, plan
from . import netns as ns
from .rtnl_batch import link_index
from .rtnl_query import delete_link
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.rtnl import TC_H_ROOT
except ImportError:  # the faces name the missing library (missing_required_lib)
    NetlinkError = ()
    TC_H_ROOT = 0xFFFFFFFF

ROOT_HANDLE = 0x10000        # 1:
CLASS_HANDLE = 0x10001       # 1:1, the one class everything goes to
INGRESS_HANDLE = 0xFFFF0000  # ffff:
FILTER_PRIO = 10
ETH_P_ALL = 0x0003
MIRRED_EGRESS_REDIRECT = 1   # tc_mirred.h TCA_EGRESS_REDIR
# DRR quantum of the single class. Explicit, so HTB does not derive it from
# the rate and warn in the kernel log for rates above ~16 mbit or below 80 kbit.
QUANTUM = 65536
# An IFB starts with a 32-packet queue; HTB's leaf takes its limit from it.
# Give it what a NIC (and the TAP) has, so a burst is queued, not dropped.
IFB_TXQLEN = 1000
U32_MAX = 0xFFFFFFFF


# --------------------------------------------------------------------------
# reading the kernel
# --------------------------------------------------------------------------
def _htb_rate(message):
    """Rate in bytes/s of an HTB class message (64-bit rates included)."""
    options = message.get_attr("TCA_OPTIONS")
    if options is None:
        return None
    parms = options.get_attr("TCA_HTB_PARMS")
    if parms is None:
        return None
    rate, ceil = parms["rate"], parms["ceil"]
    if rate == U32_MAX:
        rate = options.get_attr("TCA_HTB_RATE64") or rate
    if ceil == U32_MAX:
        ceil = options.get_attr("TCA_HTB_CEIL64") or ceil
    return rate if rate == ceil else -1     # -1: ours, but not a plain cap


def open_ipr():
    """An rtnetlink socket whose requests ask the kernel to echo: a qdisc
    "get" is then answered with that one qdisc. (A dump would list every
    qdisc of every device in the namespace: with --no-netns and a thousand
    TAPs that is a second per look instead of a fraction of a millisecond.)"""
    from pyroute2.iproute.linux import IPRoute
    try:
        return IPRoute(nlm_echo=True)
    except NetlinkError as exc:
        raise KernelError(exc.code, "open an rtnetlink socket for tc")


def _qdisc(ipr, index, parent):
    """The qdisc of device INDEX attached at PARENT (TC_H_ROOT or ingress),
    or None."""
    try:
        if parent == TC_H_ROOT:
            found = ipr.tc("get", index=index, parent=TC_H_ROOT)
        else:
            found = ipr.tc("get", "ingress", index)
    except NetlinkError as exc:
        if exc.code in (errno.ENOENT, errno.EINVAL):
            return None
        raise
    for msg in found:
        if msg.get("event") == "RTM_NEWQDISC" and msg["index"] == index:
            return msg
    return None


def _shaper_rate(ipr, index):
    """The cap (bytes/s) of vmsan's HTB at the root of device INDEX; None if
    the root is not that HTB (another qdisc, or the kernel's default); -1 if
    it is vmsan's HTB without a usable class (drift: rebuild it)."""
    root = _qdisc(ipr, index, TC_H_ROOT)
    if root is None or root.get_attr("TCA_KIND") != "htb" or root["handle"] != ROOT_HANDLE:
        return None
    init = root.get_attr("TCA_OPTIONS")
    init = init.get_attr("TCA_HTB_INIT") if init is not None else None
    if init is None or init["defcls"] != CLASS_HANDLE & 0xFFFF:
        return -1
    for msg in ipr.get_classes(index=index):
        if msg["index"] == index and msg["handle"] == CLASS_HANDLE and msg["parent"] in (TC_H_ROOT, ROOT_HANDLE):
            return _htb_rate(msg)
    return -1


def _ingress_present(ipr, index):
    return _qdisc(ipr, index, INGRESS_HANDLE) is not None


def _redirect_target(ipr, index):
    """ifindex that the TAP's ingress match-all filter redirects to, or None."""
    try:
        filters = ipr.get_filters(index=index, parent=INGRESS_HANDLE)
    except NetlinkError:
        return None
    for msg in filters:
        if msg.get_attr("TCA_KIND") != "u32":
            continue
        options = msg.get_attr("TCA_OPTIONS")
        acts = options.get_attr("TCA_U32_ACT") if options is not None else None
        if acts is None:
            continue
        for _unused, act in acts["attrs"]:
            if act.get_attr("TCA_ACT_KIND") != "mirred":
                continue
            parms = act.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
            if parms is not None and parms["eaction"] == MIRRED_EGRESS_REDIRECT:
                return parms["ifindex"]
    return None


def _link(ipr, ifname):
    """The link message of IFNAME (one lookup by name, not a dump), or None."""
    try:
        found = ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return found[0] if found else None


def _kind(link):
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def read(ipr, want):
    """What the kernel has for WANT's devices, in this thread's namespace
    (None for the TAP fields when the TAP does not exist)."""
    tap = _link(ipr, want.tap)
    named = _link(ipr, want.ifb)
    ifb = named if named is not None and _kind(named) == "ifb" else None
    have = absent()
    if tap is not None:
        have["tap_index"] = tap["index"]
        have["root"] = _shaper_rate(ipr, tap["index"])
        have["ingress"] = _ingress_present(ipr, tap["index"])
        if have["ingress"]:
            have["redirect_to"] = _redirect_target(ipr, tap["index"])
    if ifb is not None:
        have["ifb_index"] = ifb["index"]
        have["ifb_up"] = bool(ifb["flags"] & 1)
        have["ifb_root"] = _shaper_rate(ipr, ifb["index"])
    # a stranger with the IFB's name: treated as absent, and replaced
    have["ifb_foreign"] = named is not None and ifb is None
    return have


# --------------------------------------------------------------------------
# changing the kernel
# --------------------------------------------------------------------------
def _ignore(codes, call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in codes:
            raise
        return None


def _shape(ipr, index, bytes_ps, rebuild):
    """Root HTB 1: (default 1:1) with class 1:1 at BYTES_PS on device INDEX.
    With REBUILD the root is replaced first (a foreign or broken root)."""
    if rebuild:
        _delete_root(ipr, index)
        ipr.tc("add", "htb", index, ROOT_HANDLE, default=CLASS_HANDLE & 0xFFFF)
    # "replace" changes an existing class in place: its queue and the packets
    # in it stay, so a new cap takes effect without a hiccup
    ipr.tc("add-class" if rebuild else "replace-class", "htb", index, CLASS_HANDLE, parent=ROOT_HANDLE,
           rate=bytes_ps, ceil=bytes_ps, burst=burst(bytes_ps), cburst=burst(bytes_ps), quantum=QUANTUM)


def _delete_root(ipr, index):
    """Delete the root qdisc of INDEX unless it is the kernel's default."""
    root = _qdisc(ipr, index, TC_H_ROOT)
    if root is not None and root["handle"] != 0:
        _ignore((errno.ENOENT, errno.EINVAL), ipr.tc, "del", index=index, parent=TC_H_ROOT, handle=root["handle"])


def _delete_ingress(ipr, index):
    _ignore((errno.ENOENT, errno.EINVAL), ipr.tc, "del", "ingress", index, INGRESS_HANDLE)


def _redirect(ipr, tap_index, ifb_index):
    """Replace the TAP's ingress qdisc with one whose only filter sends every
    frame to the IFB (a fresh qdisc drops any stale filter with it)."""
    _delete_ingress(ipr, tap_index)
    ipr.tc("add", "ingress", tap_index, INGRESS_HANDLE)
    ipr.tc("add-filter", "u32", tap_index, parent=INGRESS_HANDLE, prio=FILTER_PRIO, protocol=ETH_P_ALL,
           target=0, keys=["0x0/0x0+0"],
           action=dict(kind="mirred", direction="egress", action="redirect", ifindex=ifb_index))


def _run_steps(ipr, want, have, steps, record):
    tap_index = have["tap_index"]
    for action, arg in steps:
        if action == "shape_root":
            _shape(ipr, tap_index, arg, rebuild=True)
        elif action == "reshape_root":
            before, after = arg
            _shape(ipr, tap_index, after, rebuild=(before == -1))
        elif action == "unshape_root":
            _delete_root(ipr, tap_index)
        elif action == "create_ifb":
            if have["ifb_foreign"]:
                _ignore((errno.ENODEV,), ipr.link, "del", index=_link(ipr, want.ifb)["index"])
            ipr.link("add", ifname=want.ifb, kind="ifb", txqlen=IFB_TXQLEN)
            index = _link(ipr, want.ifb)["index"]
            ipr.link("set", index=index, ifalias=ifb_alias(record.id))
            ipr.link("set", index=index, state="up")
            have["ifb_index"] = index
        elif action == "ifb_up":
            ipr.link("set", index=have["ifb_index"], state="up")
        elif action == "shape_ifb":
            _shape(ipr, have["ifb_index"], arg, rebuild=True)
        elif action == "reshape_ifb":
            before, after = arg
            _shape(ipr, have["ifb_index"], after, rebuild=(before == -1))
        elif action == "redirect":
            _redirect(ipr, tap_index, have["ifb_index"])
        elif action == "unredirect":
            _delete_ingress(ipr, tap_index)
        elif action == "delete_ifb":
            _ignore((errno.ENODEV,), ipr.link, "del", index=have["ifb_index"])


def _prefixed(record, changes):
    return C.inside(record.netns, changes)


def converge(record, check_mode=False, fresh=False):
    """Make the VM's caps in the kernel match RECORD's ``bandwidth`` (what the
    guest sends) and ``bandwidth_in`` (what it receives). FRESH: the VM's
    namespace was made by this very create, so it holds no qdisc and no IFB;
    without caps there is nothing to read or change."""
    want = caps(record)
    if fresh and not (want.send or want.receive):
        return []
    if record.netns is not None and not ns.exists(record.netns):
        if check_mode:      # a VM still to be created: everything is new
            return _prefixed(record, [describe(s, want) for s in plan(want, absent())])
        raise VmsanError("network namespace %s of VM %s is missing" % (record.netns, record.id))
    with ns.entered(record.netns):
        with open_ipr() as ipr:
            try:
                have = read(ipr, want)
                if have["tap_index"] is None and not check_mode:
                    if want.receive or want.send:
                        raise VmsanError("cannot cap bandwidth: TAP %s does not exist" % want.tap)
                steps = plan(want, have)
                changes = [describe(s, want) for s in steps]
                if steps and not check_mode:
                    _run_steps(ipr, want, have, steps, record)
            except NetlinkError as exc:
                raise KernelError(exc.code, "shape the bandwidth of VM %s" % record.id)
    return _prefixed(record, changes)


def teardown(record, check_mode=False):
    """Remove the VM's IFB (the TAP's qdiscs go with the TAP). With its own
    namespace the IFB would go with the namespace too; it is deleted first
    anyway, so a namespace kept alive by an open TAP holds no shaper."""
    name = ifb_name(record.slot)
    changes = []
    places = [None]
    if record.netns is not None and ns.exists(record.netns):
        places.insert(0, record.netns)
    for place in places:
        with ns.entered(place):
            if link_index(name) is None:
                continue        # an ioctl says so: no rtnetlink socket needed
            with open_ipr() as ipr:
                try:
                    link = _link(ipr, name)
                    if link is None or _kind(link) != "ifb":
                        continue
                    changes.append(Change(C.DELETE_IFB, name, netns=place))
                    if not check_mode:
                        delete_link(link["index"], name)
                except NetlinkError as exc:
                    raise KernelError(exc.code, "delete IFB %s" % name)
    return changes


def leftovers(record):
    """The VM's IFB if it is still in the host namespace (a VM namespace that
    is left is reported by vm.leftovers, with everything in it)."""
    if link_index(ifb_name(record.slot)) is None:
        return []
    with open_ipr() as ipr:
        link = _link(ipr, ifb_name(record.slot))
    return ["link %s" % ifb_name(record.slot)] if link is not None and _kind(link) == "ifb" else []
