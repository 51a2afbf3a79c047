"""Links, addresses, routes, the TAP and sysctls as decisions: what the
kernel has (read by ``kernel.rtnetlink``, ``kernel.sysctl``) in, the Changes
that make it what a VM needs out. Pure, so the decisions are unit-tested
without root; ``kernel.rtnetlink.Netlink.apply`` and ``kernel.sysctl`` make
them, and check mode reports them without making them."""

from ..model import changes as C
from ..model.changes import Change


def address_plan(ifname, cidr, addresses, exclusive=True):
    """IFNAME (which exists) holds the IPv4 address CIDR and, if EXCLUSIVE,
    no other. ADDRESSES: the "a.b.c.d/p" it holds now."""
    changes = [Change(C.REMOVE_ADDRESS, ifname, (stale,)) for stale in sorted(addresses - {cidr})] \
        if exclusive else []
    if cidr not in addresses:
        changes.append(Change(C.ADDRESS, ifname, (cidr,)))
    return changes


def connected_is_right(index, up, route, local_ip):
    """Whether the link INDEX is up and the kernel reaches the peer straight
    out of it from LOCAL_IP (ROUTE: the (gateway, oif, prefsrc) of the route
    it would use to the peer). A lookup that does not grow with the number
    of addresses in the namespace, unlike a dump of them."""
    return bool(up) and route == (None, index, local_ip)


def connected_plan(ifname, cidr, up, addresses):
    """IFNAME holds CIDR and is up (when ``connected_is_right`` said no)."""
    changes = address_plan(ifname, cidr, addresses)
    if not up:
        changes.append(Change(C.LINK_UP, ifname))
    return changes


def route_plan(dst, gateway, ifname, index, route):
    """A route to DST via GATEWAY on IFNAME (INDEX, None if it does not
    exist); ROUTE: what the kernel would use now for an address inside DST."""
    if index is not None and route is not None and route[:2] == (gateway, index):
        return []
    return [Change(C.ROUTE_DEV, dst, (gateway, ifname))]


def tap_is_wrong(info, owner):
    """Whether an existing device named like the VM's TAP must be recreated:
    not a TAP (INFO None), multi-queue, or owned by someone else than OWNER
    (None: root only, which the kernel shows as no owner or -1)."""
    if info is None or info["multi_queue"]:
        return True
    if owner is not None:
        return info["owner"] != owner
    return info["owner"] not in (None, 0xFFFFFFFF)


def tap_plan(tap, owner, exists, info):
    """The TAP: created (EXISTS False), recreated (``tap_is_wrong``), or kept."""
    if exists and not tap_is_wrong(info, owner):
        return []
    if exists:
        return [Change(C.RECREATE_TAP, tap)]
    if owner is None:
        return [Change(C.CREATE_TAP, tap)]
    return [Change(C.CREATE_OWNED_TAP, tap, (owner,))]


def sysctl_plan(key, wanted, current):
    """KEY set to WANTED; CURRENT: its value now (text), None if there is no
    such key (a device not made yet: nothing to change)."""
    if current is None or current == str(wanted):
        return []
    return [Change(C.SYSCTL, key, (str(wanted), current))]
