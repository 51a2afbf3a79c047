"""Converge (create or repair) and tear down a VM's network in the
kernel. Every step reads what the kernel has, decides the Changes (pure, in
``plan``) and makes them unless in check mode, so a check run reports the
same list and touches nothing."""

import os

from ..model import addressing as A
from ..model import changes as C
from ..model.changes import Change
from ..plan import devices
from ..plan import firewall as fp
from ..kernel import iptables as iptables_apply
from ..kernel import link_alias
from ..kernel.conntrack_size import table_size
from ..kernel import netconf
from ..kernel import netns as ns
from ..kernel import sysctl
from ..kernel import tc as bandwidth
from ..kernel import rtnl_query
from ..kernel.rtnetlink import Netlink
from ..kernel.rtnl_batch import Batch, is_up, link_index
from ..kernel.tap import create_persistent
from . import faults
from . import ownership
from . import policy as policy_apply
from . import ports

# The resolver's address lives on the host namespace's loopback: every VM
# namespace routes to it over its transit link, and no extra device is needed.
RESOLVER_LINK = "lo"


def _made(nl, changes, check_mode):
    """CHANGES (links, addresses, routes), made unless in check mode."""
    if changes and not check_mode:
        nl.apply(changes)
    return changes


def _converge_host(check_mode):
    """Host-namespace prerequisites shared by every VM: forwarding, and the
    resolver's address on the loopback."""
    changes = []
    if not netconf.forwarding():
        change = sysctl.ensure("net.ipv4.ip_forward", 1, check_mode)
        if change:
            changes.append(change)
    batch = Batch()
    if not is_up(RESOLVER_LINK):
        batch.up(RESOLVER_LINK)
    if check_mode:
        with Netlink() as nl:
            if A.RESOLVER_IP + "/32" not in nl.addresses(nl.index(RESOLVER_LINK)):
                changes.append(Change(C.ADDRESS, RESOLVER_LINK, (A.RESOLVER_IP + "/32",)))
        return changes
    batch.address(RESOLVER_LINK, A.RESOLVER_IP, 32, tolerate_existing=True)
    return changes + batch.commit()


def _converge_tap(nl, record, check_mode, home=None):
    """The TAP with the gateway address, in the current namespace; with
    --no-netns (the host's namespace) marked with its owner."""
    slot, owner = record.slot, record.tap_owner
    tap = A.tap_name(slot)
    msg = nl.link(tap) if link_index(tap) is not None else None
    changes = devices.tap_plan(tap, owner, msg is not None, Netlink.tun_info(msg) if msg is not None else None)
    if changes and changes[0].kind == C.RECREATE_TAP and not check_mode:
        nl.delete_link(tap)
    if changes:
        if check_mode:
            return changes
        create_persistent(tap, owner)
    change = sysctl.ensure("net.ipv6.conf.%s.disable_ipv6" % tap, 1, check_mode)
    if change:
        changes.append(change)
    changes += _ensure_forwarding(tap, check_mode, strict_source=True)
    changes += _made(nl, nl.connected_plan(tap, A.host_ip(slot), 30, A.guest_ip(slot)), check_mode)
    changes += _ensure_unreachable(slot, check_mode)
    if record.netns is None:
        changes += _ensure_marker(tap, record, home, check_mode)
    return changes


def _ensure_forwarding(ifname, check_mode, strict_source=False):
    """IPv4 forwarding on for packets arriving on IFNAME (which exists);
    STRICT_SOURCE: its reverse-path filter strict too (the TAP: ARP and
    packets only from the guest's own addresses)."""
    conf = netconf.device_conf(link_index(ifname))
    changes = []
    if not conf.get_attr("NETCONFA_FORWARDING"):
        changes.append(Change(C.FORWARDING, ifname))
    if strict_source and conf.get_attr("NETCONFA_RP_FILTER") != netconf.RP_FILTER_STRICT:
        changes.append(Change(C.STRICT_SOURCE, ifname))
    if changes and not check_mode:
        batch = Batch()
        batch.forwarding(ifname, strict_source=strict_source)
        batch.commit()
    return changes


def _network_address(slot):
    return str(A.subnet(slot).network_address)


def _ensure_unreachable(slot, check_mode):
    """The TAP's network address unreachable, so the strict reverse-path
    filter takes ARP only from the guest's own address: while a route leads
    to it (the TAP's connected /30), add the unreachable /32."""
    dst = _network_address(slot)
    if rtnl_query.route_get(dst) is None:
        return []
    if not check_mode:
        batch = Batch()
        batch.unreachable(dst)
        batch.commit()
    return [Change(C.UNREACHABLE, dst + "/32")]


def _strict_source_possible(check_mode=False):
    """A device's reverse-path filter is the higher of its own and the
    namespace's ``all`` (2, loose, on some distributions, which a new
    namespace inherits): in a VM's namespace ``all`` is lowered to 1 when it
    is 2, so the TAP's strict filter holds. Read through netlink; written
    through /proc/sys only then (sysctl.py says why that is avoided)."""
    conf = netconf.device_conf()
    if conf.get_attr("NETCONFA_RP_FILTER") != 2:
        return []
    change = sysctl.ensure("net.ipv4.conf.all.rp_filter", 1, check_mode)
    return [change] if change else []


def _ensure_marker(ifname, record, home, check_mode):
    """IFNAME (a host-side device of RECORD) marked with its owner."""
    if home is None:
        return []
    wanted = ownership.marker(home, record.id)
    if link_alias.alias(ifname) == wanted:
        return []
    if not check_mode:
        batch = Batch()
        batch.mark_owner(ifname, wanted)
        batch.commit()
    return [Change(C.MARK_OWNER, ifname, (wanted,))]


# In a VM's namespace IPv6 is off for every device (all, and default for
# the ones made later); forwarding is switched on per device (netconf.py).
VM_NETNS_SYSCTLS = (("net.ipv6.conf.all.disable_ipv6", 1), ("net.ipv6.conf.default.disable_ipv6", 1))


def _create_vm_netns(record, home=None):
    """Build a VM's namespace from nothing: no queries, since everything is
    new; the requests of each namespace go out as one netlink batch."""
    slot, name = record.slot, record.netns
    host_veth, vm_veth = A.veth_names(slot)
    transit_host, transit_vm = A.transit(slot)
    tap = A.tap_name(slot)
    ns.create(name)
    changes = [Change(C.CREATE_NETNS, name)]
    faults.point("after-netns")
    fd = os.open(ns.path(name), os.O_RDONLY)
    try:
        batch = Batch()
        batch.veth(host_veth, vm_veth, fd)
        changes += batch.commit()
    finally:
        os.close(fd)
    with ns.entered(name):
        sysctl.ensure_all(VM_NETNS_SYSCTLS)
        changes += C.inside(name, _strict_source_possible())
        create_persistent(tap, record.tap_owner)
        changes.append(Change(C.CREATE_TAP, tap))
        batch = Batch()
        if home is not None:
            batch.mark_owner(vm_veth, ownership.marker(home, record.id))
        batch.up("lo")
        batch.address(vm_veth, transit_vm, 30)
        batch.forwarding(vm_veth)
        batch.up(vm_veth)
        batch.route("0.0.0.0", 0, transit_host, vm_veth)
        batch.address(tap, A.host_ip(slot), 30)
        batch.forwarding(tap, strict_source=True)
        batch.unreachable(_network_address(slot))
        batch.up(tap)
        changes += C.inside(name, batch.commit())
    sysctl.ensure("net.ipv6.conf.%s.disable_ipv6" % host_veth, 1)
    batch = Batch()
    if home is not None:
        batch.mark_owner(host_veth, ownership.marker(home, record.id))
    batch.address(host_veth, transit_host, 30)
    batch.up(host_veth)
    batch.route(str(A.subnet(slot).network_address), 30, transit_vm, host_veth)
    return changes + batch.commit()


def _converge_vm_netns(record, check_mode, home=None):
    """Namespace, veth pair with transit addresses and routes (netns mode)."""
    slot, name = record.slot, record.netns
    host_veth, vm_veth = A.veth_names(slot)
    transit_host, transit_vm = A.transit(slot)
    changes = []
    if not ns.exists(name):
        if check_mode:
            return [Change(C.CREATE_NETNS, name), Change(C.BUILD_NETNS, host_veth, (vm_veth, A.tap_name(slot), name))]
        if link_index(host_veth) is None:
            return _create_vm_netns(record, home)
        ns.create(name)
        changes.append(Change(C.CREATE_NETNS, name))
    with ns.entered(name):
        vm_veth_present = link_index(vm_veth) is not None
    with Netlink() as host_nl:
        if link_index(host_veth) is None or not vm_veth_present:
            changes.append(Change(C.CREATE_VETH_PAIR, host_veth, (vm_veth, name)))
            if not check_mode:
                host_nl.delete_link(host_veth)
                with ns.entered(name):
                    with Netlink() as vm_nl:
                        vm_nl.delete_link(vm_veth)
                fd = os.open(ns.path(name), os.O_RDONLY)
                try:
                    host_nl.create_veth(host_veth, vm_veth, fd)
                finally:
                    os.close(fd)
        if not check_mode or link_index(host_veth) is not None:
            change = sysctl.ensure("net.ipv6.conf.%s.disable_ipv6" % host_veth, 1, check_mode)
            if change:
                changes.append(change)
            changes += _made(host_nl, host_nl.connected_plan(host_veth, transit_host, 30, transit_vm), check_mode)
            changes += _made(host_nl, host_nl.route_plan(str(A.subnet(slot)), transit_vm, A.guest_ip(slot),
                                                         host_veth), check_mode)
            if link_index(host_veth) is not None:
                changes += _ensure_marker(host_veth, record, home, check_mode)
    with ns.entered(name):
        changes += C.inside(name, sysctl.ensure_all(VM_NETNS_SYSCTLS, check_mode))
        changes += C.inside(name, _strict_source_possible(check_mode))
        with Netlink() as nl:
            changes += _made(nl, nl.up_plan("lo"), check_mode)
            if link_index(vm_veth) is not None:
                changes += C.inside(name, _ensure_forwarding(vm_veth, check_mode))
                changes += _made(nl, nl.connected_plan(vm_veth, transit_vm, 30, transit_host), check_mode)
                changes += _made(nl, nl.route_plan("0.0.0.0/0", transit_host, "192.0.2.1", vm_veth), check_mode)
            changes += C.inside(name, _converge_tap(nl, record, check_mode, home))
    return changes


def _converge_firewall(record, check_mode, fresh=False):
    """IP sets, then rules, then sets no rule needs any more. FRESH: the
    VM's namespace was just made, so it has no stale sets to look for."""
    # the host-wide caps on VM flows follow the host table's limit (plan/budgets.py)
    vm_plan, host_plan = fp.plans_for(record, table_size().limit)
    needs_sets = policy_apply.needs_sets(record.policy)

    def in_fw_namespace(plan):
        if not needs_sets:
            # no set to fill: no pyroute2 IPSet socket, unless a stale set is to be destroyed
            out = iptables_apply.apply(plan, record.id, check_mode)
            return out if fresh else out + policy_apply.destroy_unused_sets(record, check_mode)
        with policy_apply.SetManager() as sets:
            out = policy_apply.apply_sets(record, check_mode, sets)
            out += iptables_apply.apply(plan, record.id, check_mode)
            if not fresh:
                out += policy_apply.destroy_unused_sets(record, check_mode, sets)
        return out

    if record.netns is None:
        return in_fw_namespace(host_plan)
    changes = iptables_apply.apply(host_plan, record.id, check_mode)
    if check_mode and not ns.exists(record.netns):
        return changes
    with ns.entered(record.netns):
        inner = in_fw_namespace(vm_plan)
    return changes + C.inside(record.netns, inner)


def _devices_present(record):
    """Cheap existence check of the VM's namespace and links (ioctls only)."""
    slot = record.slot
    if record.netns is None:
        return link_index(A.tap_name(slot)) is not None
    if not ns.exists(record.netns) or link_index(A.veth_names(slot)[0]) is None:
        return False
    with ns.entered(record.netns):
        return link_index(A.tap_name(slot)) is not None and link_index(A.veth_names(slot)[1]) is not None


def converge(record, check_mode=False, devices=True, shaping=True, home=None):
    """Make the kernel match RECORD; return the Changes (made or planned).
    DEVICES=False (a live change of policy, ports or caps) checks the VM's
    devices only for existence and converges them fully only if one is
    missing. SHAPING=False (with DEVICES=False: the caps did not change)
    leaves the bandwidth shapers unread. HOME: the state directory, named
    in the owner markers of the VM's host-side devices (ownership.py)."""
    ns.guard_sandbox()
    changes = _converge_host(check_mode)
    fresh = False
    if not devices and _devices_present(record):
        pass
    elif record.netns is None:
        shaping = True
        with Netlink() as nl:
            changes += _converge_tap(nl, record, check_mode, home)
    else:
        shaping = True
        fresh = not check_mode and not ns.exists(record.netns)
        changes += _converge_vm_netns(record, check_mode, home)
    if not check_mode:
        faults.point("after-links")
    changes += _converge_firewall(record, check_mode, fresh)
    if not check_mode:
        faults.point("after-firewall")
    changes += ports.converge_loopback(record, check_mode, fresh)
    if shaping:
        changes += bandwidth.converge(record, check_mode, fresh)
    return changes


def _ours(device, record, home):
    """Whether DEVICE exists and a teardown of RECORD may delete it: never
    another VM's (its owner marker names another VM or state directory)."""
    if link_index(device) is None:
        return False
    return home is None or ownership.device_deletable(device, home, record.id)


def teardown(record, check_mode=False, home=None):
    """Remove everything of the VM; return the Changes. HOME: the state
    directory; a host-side device marked as another's is left alone."""
    ns.guard_sandbox()
    slot, vm_id = record.slot, record.id
    host_veth, _unused = A.veth_names(slot)
    changes = iptables_apply.remove_owner(vm_id, fp.vm_chains(vm_id), check_mode)
    if slot_held_by_another(record, home):
        # the slot's devices, shaper and addresses are another VM's: only
        # what is named after this VM (chains above, its namespace) goes
        return changes + _delete_netns(record, check_mode)
    with Netlink() as nl:
        if _ours(host_veth, record, home):
            changes.append(Change(C.DELETE_VETH, host_veth))
            if not check_mode:
                nl.delete_link(host_veth)
        if record.netns is None and _ours(A.tap_name(slot), record, home):
            changes.append(Change(C.DELETE_TAP, A.tap_name(slot)))
            if not check_mode:
                nl.delete_link(A.tap_name(slot))
    if record.netns is None and not check_mode:
        batch = Batch()
        batch.unreachable(_network_address(slot), remove=True)
        changes += batch.commit()
    if record.netns is None:
        changes += policy_apply.destroy_all_sets(record, check_mode)
    changes += bandwidth.teardown(record, check_mode)
    changes += policy_apply.forget_connections(record, check_mode)
    return changes + _delete_netns(record, check_mode)


def _delete_netns(record, check_mode):
    if not (record.netns and ns.exists(record.netns)):
        return []
    if not check_mode:
        ns.remove(record.netns)
    return [Change(C.DELETE_NETNS, record.netns)]


def slot_held_by_another(record, home):
    """Whether RECORD's slot has a host-side device marked as another VM's
    (of this or another state directory): a stale record, or a slot taken
    by hand meanwhile."""
    if home is None:
        return False
    owner = ownership.slot_owner(record.slot)
    return owner is not None and owner.vm_id is not None and not ownership.is_mine(owner, home, record.id)


def teardown_host(check_mode=False):
    """With no VM left, remove the host-namespace rules and the resolver
    address, so the host is as it was before the first VM (forwarding is left
    on: other software may rely on it)."""
    changes = iptables_apply.remove_shared(check_mode)
    with Netlink() as nl:
        index = nl.index(RESOLVER_LINK)
        if index is not None and A.RESOLVER_IP + "/32" in nl.addresses(index):
            changes.append(Change(C.REMOVE_RESOLVER_ADDRESS, A.RESOLVER_IP, (RESOLVER_LINK,)))
            if not check_mode:
                nl.delete_address(RESOLVER_LINK, A.RESOLVER_IP + "/32")
    return changes


def leftovers(record, home=None):
    """What of the VM is still in the kernel (empty when removal is complete;
    another VM's devices at its slot are not its leftovers)."""
    slot, vm_id = record.slot, record.id
    found = []
    if record.netns and ns.exists(record.netns):
        found.append("network namespace %s" % record.netns)
    if slot_held_by_another(record, home):
        return found + ["chain %s/%s" % c for c in sorted(iptables_apply.existing_chains(fp.vm_chains(vm_id)))]
    with Netlink() as nl:
        for name in (A.veth_names(slot)[0], A.tap_name(slot) if record.netns is None else None):
            if name and _ours(name, record, home):
                found.append("link %s" % name)
        via = nl.route_get(A.guest_ip(slot))
        if record.netns and via is not None and via[0] == A.transit(slot)[1]:
            found.append("route to %s" % A.subnet(slot))
    found += ["chain %s/%s" % c for c in sorted(iptables_apply.existing_chains(fp.vm_chains(vm_id)))]
    if record.netns is None:
        found += ["ipset %s" % s for s in policy_apply.existing_sets(record)]
    found += ["conntrack entries of %s" % A.guest_ip(slot)] if policy_apply.connections(record) else []
    found += bandwidth.leftovers(record)
    return found
