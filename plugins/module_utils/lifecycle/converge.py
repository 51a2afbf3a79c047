"""Converge (create or repair) and tear down a VM's network in the
kernel. Every step compares the desired state with what the kernel has and
returns the list of changes; in check mode the same list, touching nothing."""

import os

from ..model import addressing as A
from ..plan import firewall as fp
from ..kernel import iptables as iptables_apply
from ..kernel import netconf
from ..kernel import netns as ns
from ..kernel import sysctl
from ..kernel.rtnetlink import Netlink
from ..kernel.rtnl_batch import Batch, is_up, link_index
from ..model.inputs import policy_from_dict, port_spec
from . import faults

# The resolver's address lives on the host namespace's loopback: every VM
# namespace routes to it over its transit link, and no extra device is needed.
RESOLVER_LINK = "lo"


def record_policy(record):
    return policy_from_dict(record["policy"])


def record_ports(record):
    return [port_spec("published_ports", text) for text in record.get("published_ports", [])]


def firewall_plans(record):
    """(plan for the VM's namespace, plan for the host namespace)."""
    policy, ports = record_policy(record), record_ports(record)
    in_host = record["netns"] is None
    vm_plan = fp.vm_plan(record, policy, ports, in_host_namespace=in_host)
    host = fp.merge(fp.host_plan(), fp.published_plan(record, ports))
    if in_host:
        return None, fp.merge(host, vm_plan)
    return vm_plan, host


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
                changes.append("address %s/32 on %s" % (A.RESOLVER_IP, RESOLVER_LINK))
        return changes
    batch.address(RESOLVER_LINK, A.RESOLVER_IP, 32, tolerate_existing=True)
    return changes + batch.commit()


def _converge_tap(nl, record, check_mode):
    """The TAP with the gateway address, in the current namespace."""
    slot = record["slot"]
    tap = A.tap_name(slot)
    changes = []
    msg = nl.link(tap) if link_index(tap) is not None else None
    owner = record.get("tap_owner")
    if msg is not None:
        info = Netlink.tun_info(msg)
        wrong = info is None or info["multi_queue"] or (owner is not None and info["owner"] != owner) \
            or (owner is None and info["owner"] not in (None, 0xFFFFFFFF))
        if wrong:
            changes.append("recreate TAP %s (kind, queues or owner differ)" % tap)
            if not check_mode:
                nl.delete_link(tap)
            msg = None
    if msg is None:
        if not any(c.startswith("recreate TAP") for c in changes):
            changes.append("create TAP %s%s" % (tap, "" if owner is None else " owned by uid %d" % owner))
        if check_mode:
            return changes
        from ..kernel.tap import create_persistent
        create_persistent(tap, owner)
    change = sysctl.ensure("net.ipv6.conf.%s.disable_ipv6" % tap, 1, check_mode)
    if change:
        changes.append(change)
    changes += _ensure_forwarding(tap, check_mode)
    changes += nl.ensure_connected(tap, A.host_ip(slot), 30, A.guest_ip(slot), check_mode)
    return changes


def _ensure_forwarding(ifname, check_mode):
    """IPv4 forwarding on for packets arriving on IFNAME (which exists)."""
    if netconf.forwarding(link_index(ifname)):
        return []
    if not check_mode:
        batch = Batch()
        batch.forwarding(ifname)
        batch.commit()
    return ["IPv4 forwarding on %s" % ifname]


# In a VM's namespace IPv6 is off for every device (all, and default for
# the ones made later); forwarding is switched on per device (netconf.py).
VM_NETNS_SYSCTLS = (("net.ipv6.conf.all.disable_ipv6", 1), ("net.ipv6.conf.default.disable_ipv6", 1))


def _create_vm_netns(record):
    """Build a VM's namespace from nothing: no queries, since everything is
    new; the requests of each namespace go out as one netlink batch."""
    slot, name = record["slot"], record["netns"]
    host_veth, vm_veth = A.veth_names(slot)
    transit_host, transit_vm = A.transit(slot)
    tap = A.tap_name(slot)
    ns.create(name)
    changes = ["create network namespace %s" % name]
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
        from ..kernel.tap import create_persistent
        create_persistent(tap, record.get("tap_owner"))
        changes.append("create TAP %s" % tap)
        batch = Batch()
        batch.up("lo")
        batch.address(vm_veth, transit_vm, 30)
        batch.forwarding(vm_veth)
        batch.up(vm_veth)
        batch.route("0.0.0.0", 0, transit_host, vm_veth)
        batch.address(tap, A.host_ip(slot), 30)
        batch.forwarding(tap)
        batch.up(tap)
        changes += ["%s: %s" % (name, c) for c in batch.commit()]
    sysctl.ensure("net.ipv6.conf.%s.disable_ipv6" % host_veth, 1)
    batch = Batch()
    batch.address(host_veth, transit_host, 30)
    batch.up(host_veth)
    batch.route(str(A.subnet(slot).network_address), 30, transit_vm, host_veth)
    return changes + batch.commit()


def _converge_vm_netns(record, check_mode):
    """Namespace, veth pair with transit addresses and routes (netns mode)."""
    slot, name = record["slot"], record["netns"]
    host_veth, vm_veth = A.veth_names(slot)
    transit_host, transit_vm = A.transit(slot)
    changes = []
    if not ns.exists(name):
        if check_mode:
            return ["create network namespace %s" % name,
                    "create veth %s/%s, TAP %s and the VM's rules inside %s" % (host_veth, vm_veth, A.tap_name(slot), name)]
        if link_index(host_veth) is None:
            return _create_vm_netns(record)
        ns.create(name)
        changes.append("create network namespace %s" % name)
    with ns.entered(name):
        vm_veth_present = link_index(vm_veth) is not None
    with Netlink() as host_nl:
        if link_index(host_veth) is None or not vm_veth_present:
            changes.append("create veth pair %s (host) / %s (%s)" % (host_veth, vm_veth, name))
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
            changes += host_nl.ensure_connected(host_veth, transit_host, 30, transit_vm, check_mode)
            changes += host_nl.ensure_route(str(A.subnet(slot)), transit_vm, A.guest_ip(slot), host_veth, check_mode)
    with ns.entered(name):
        changes += ["%s: %s" % (name, c) for c in sysctl.ensure_all(VM_NETNS_SYSCTLS, check_mode)]
        with Netlink() as nl:
            if not is_up("lo"):
                changes += nl.ensure_up("lo", check_mode)
            if link_index(vm_veth) is not None:
                changes += ["%s: %s" % (name, c) for c in _ensure_forwarding(vm_veth, check_mode)]
                changes += nl.ensure_connected(vm_veth, transit_vm, 30, transit_host, check_mode)
                changes += nl.ensure_route("0.0.0.0/0", transit_host, "192.0.2.1", vm_veth, check_mode)
            changes += ["%s: %s" % (name, c) for c in _converge_tap(nl, record, check_mode)]
    return changes


def _converge_firewall(record, check_mode, fresh=False):
    """IP sets, then rules, then sets no rule needs any more. FRESH: the
    VM's namespace was just made, so it has no stale sets to look for."""
    from . import policy as policy_apply
    vm_plan, host_plan = firewall_plans(record)
    needs_sets = bool(policy_apply.wanted_sets(record_policy(record)))

    def in_fw_namespace(plan):
        if fresh and not needs_sets:
            return iptables_apply.apply(plan, record["id"], check_mode)
        with policy_apply.SetManager() as sets:
            out = policy_apply.apply_sets(record, check_mode, sets) if needs_sets else []
            out += iptables_apply.apply(plan, record["id"], check_mode)
            if not fresh:
                out += policy_apply.destroy_unused_sets(record, check_mode, sets)
        return out

    if record["netns"] is None:
        return in_fw_namespace(host_plan)
    changes = iptables_apply.apply(host_plan, record["id"], check_mode)
    if check_mode and not ns.exists(record["netns"]):
        return changes
    with ns.entered(record["netns"]):
        inner = in_fw_namespace(vm_plan)
    return changes + ["%s: %s" % (record["netns"], c) for c in inner]


def _devices_present(record):
    """Cheap existence check of the VM's namespace and links (ioctls only)."""
    slot = record["slot"]
    if record["netns"] is None:
        return link_index(A.tap_name(slot)) is not None
    if not ns.exists(record["netns"]) or link_index(A.veth_names(slot)[0]) is None:
        return False
    with ns.entered(record["netns"]):
        return link_index(A.tap_name(slot)) is not None and link_index(A.veth_names(slot)[1]) is not None


def converge(record, check_mode=False, devices=True, shaping=True):
    """Make the kernel match RECORD; return the changes (made or planned).
    DEVICES=False (a live change of policy, ports or caps) checks the VM's
    devices only for existence and converges them fully only if one is
    missing. SHAPING=False (with DEVICES=False: the caps did not change)
    leaves the bandwidth shapers unread."""
    ns.guard_sandbox()
    changes = _converge_host(check_mode)
    fresh = False
    if not devices and _devices_present(record):
        pass
    elif record["netns"] is None:
        shaping = True
        with Netlink() as nl:
            changes += _converge_tap(nl, record, check_mode)
    else:
        shaping = True
        fresh = not check_mode and not ns.exists(record["netns"])
        changes += _converge_vm_netns(record, check_mode)
    if not check_mode:
        faults.point("after-links")
    changes += _converge_firewall(record, check_mode, fresh)
    if not check_mode:
        faults.point("after-firewall")
    from . import ports
    changes += ports.converge_loopback(record, check_mode, fresh)
    from ..kernel import tc as bandwidth
    if shaping:
        changes += bandwidth.converge(record, check_mode, fresh)
    return changes


def teardown(record, check_mode=False):
    """Remove everything of the VM; return the changes."""
    from . import policy as policy_apply
    ns.guard_sandbox()
    slot, vm_id = record["slot"], record["id"]
    host_veth, _unused = A.veth_names(slot)
    changes = []
    prefix = "vmsan-%s-" % vm_id
    changes += iptables_apply.remove_owner(vm_id, iptables_apply.chains_of(prefix), check_mode)
    with Netlink() as nl:
        if nl.link(host_veth) is not None:
            changes.append("delete veth %s" % host_veth)
            if not check_mode:
                nl.delete_link(host_veth)
        if record["netns"] is None and nl.link(A.tap_name(slot)) is not None:
            changes.append("delete TAP %s" % A.tap_name(slot))
            if not check_mode:
                nl.delete_link(A.tap_name(slot))
    if record["netns"] is None:
        changes += policy_apply.destroy_all_sets(record, check_mode)
    from ..kernel import tc as bandwidth
    changes += bandwidth.teardown(record, check_mode)
    changes += policy_apply.forget_connections(record, check_mode)
    if record["netns"] and ns.exists(record["netns"]):
        changes.append("delete network namespace %s" % record["netns"])
        if not check_mode:
            ns.remove(record["netns"])
    return changes


def teardown_host(check_mode=False):
    """With no VM left, remove the host-namespace rules and the resolver
    address, so the host is as it was before the first VM (forwarding is left
    on: other software may rely on it)."""
    changes = iptables_apply.remove_shared(check_mode)
    with Netlink() as nl:
        index = nl.index(RESOLVER_LINK)
        if index is not None and A.RESOLVER_IP + "/32" in nl.addresses(index):
            changes.append("remove resolver address %s from %s" % (A.RESOLVER_IP, RESOLVER_LINK))
            if not check_mode:
                nl.ipr.addr("del", index=index, address=A.RESOLVER_IP, prefixlen=32)
    return changes


def leftovers(record):
    """What of the VM is still in the kernel (empty when removal is complete)."""
    from . import policy as policy_apply
    slot, vm_id = record["slot"], record["id"]
    found = []
    if record["netns"] and ns.exists(record["netns"]):
        found.append("network namespace %s" % record["netns"])
    with Netlink() as nl:
        for name in (A.veth_names(slot)[0], A.tap_name(slot) if record["netns"] is None else None):
            if name and nl.link(name) is not None:
                found.append("link %s" % name)
        via = nl.route_get(A.guest_ip(slot))
        if record["netns"] and via is not None and via[0] == A.transit(slot)[1]:
            found.append("route to %s" % A.subnet(slot))
    found += ["chain %s/%s" % c for c in sorted(iptables_apply.chains_of("vmsan-%s-" % vm_id))]
    if record["netns"] is None:
        found += ["ipset %s" % s for s in policy_apply.existing_sets(record)]
    found += ["conntrack entries of %s" % A.guest_ip(slot)] if policy_apply.connections(record) else []
    from ..kernel import tc as bandwidth
    found += bandwidth.leftovers(record)
    return found
