"""The lifecycle of a VM's network: converge (create or repair), update,
remove, and read back. This is the one orchestrator both faces call.

Every operation compares the desired state with what the kernel has (not only
with the state file), changes only what differs, and returns the list of
changes; in check mode it returns the same list and touches nothing.
"""

import os
import secrets
import time

from . import addressing as A
from . import faults
from . import firewall_plan as fp
from . import iptables_apply
from . import netconf
from . import netns as ns
from . import sysctl
from .errors import ConflictError, NotRootError, VmsanError
from .inputs import Policy, policy_from_dict, policy_to_dict, port_spec, port_to_text
from .netlink import Netlink
from .netlink_batch import Batch, is_up, link_index
from .state import StateStore

# The resolver's address lives on the host namespace's loopback: every VM
# namespace routes to it over its transit link, and no extra device is needed.
RESOLVER_LINK = "lo"


def require_root():
    if os.geteuid() != 0:
        raise NotRootError("vmsan must run as root: it changes network namespaces, links and firewall rules")


class Result(object):
    def __init__(self, vm=None):
        self.changes = []
        self.warnings = []
        self.vm = vm
        self.diff = None

    @property
    def changed(self):
        return bool(self.changes)

    def as_dict(self):
        out = {"changed": self.changed, "changes": list(self.changes), "warnings": list(self.warnings)}
        if self.vm is not None:
            out["vm"] = self.vm
        return out


def new_id():
    return "vm-" + secrets.token_hex(4)


def facts(record):
    """What ``create`` returns: everything a VMM needs to attach."""
    slot = record["slot"]
    return {
        "id": record["id"],
        "slot": slot,
        "tap": A.tap_name(slot),
        "netns": record["netns"],
        "host_ip": A.host_ip(slot),
        "guest_ip": A.guest_ip(slot),
        "subnet": str(A.subnet(slot)),
        "mac": A.guest_mac(slot),
        "boot_args": A.boot_args(slot),
        "firecracker": A.firecracker_interface(slot),
        "network_policy": record["policy"]["mode"],
        "allowed_domains": list(record["policy"]["allowed_domains"]),
        "allowed_cidrs": list(record["policy"]["allowed_cidrs"]),
        "denied_cidrs": list(record["policy"]["denied_cidrs"]),
        "published_ports": list(record.get("published_ports", [])),
        "bandwidth": record.get("bandwidth"),
        "bandwidth_in": record.get("bandwidth_in"),
        "tap_owner": record.get("tap_owner"),
    }


def record_policy(record):
    return policy_from_dict(record["policy"])


def record_ports(record):
    return [port_spec("published_ports", text) for text in record.get("published_ports", [])]


# --------------------------------------------------------------------------
# desired firewall of a VM, and where it lives
# --------------------------------------------------------------------------
def firewall_plans(record):
    """(plan for the VM's namespace, plan for the host namespace)."""
    policy, ports = record_policy(record), record_ports(record)
    in_host = record["netns"] is None
    vm_plan = fp.vm_plan(record, policy, ports, in_host_namespace=in_host)
    host = fp.merge(fp.host_plan(), fp.published_plan(record, ports))
    if in_host:
        return None, fp.merge(host, vm_plan)
    return vm_plan, host


# --------------------------------------------------------------------------
# converge pieces
# --------------------------------------------------------------------------
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
        from .tap import create_persistent
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
        from .tap import create_persistent
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
    from . import policy_apply
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
    from . import bandwidth
    if shaping:
        changes += bandwidth.converge(record, check_mode, fresh)
    return changes


# --------------------------------------------------------------------------
# teardown
# --------------------------------------------------------------------------
def teardown(record, check_mode=False):
    """Remove everything of the VM; return the changes."""
    from . import policy_apply
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
    from . import bandwidth
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
    from . import policy_apply
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
    from . import bandwidth
    found += bandwidth.leftovers(record)
    return found


# --------------------------------------------------------------------------
# the operations
# --------------------------------------------------------------------------
class Manager(object):
    def __init__(self, state_dir=None):
        self.store = StateStore(state_dir)

    # -- reads ----------------------------------------------------------------
    def get(self, vm_id):
        return facts(self.store.load(vm_id))

    def list(self):
        return [facts(r) for r in self.store.all()]

    def show(self, vm_id):
        """Facts plus the rules as the kernel has them now."""
        record = self.store.load(vm_id)
        out = facts(record)
        out["kernel_rules"] = self.kernel_rules(record)
        return out

    def kernel_rules(self, record):
        result = {}
        if record["netns"] and ns.exists(record["netns"]):
            with ns.entered(record["netns"]):
                result["vm_namespace"] = iptables_apply.dump()
        result["host_namespace"] = {
            t: {c: r for c, r in chains.items() if c.startswith("vmsan-%s-" % record["id"])}
            for t, chains in iptables_apply.dump().items()}
        return result

    # -- writes ---------------------------------------------------------------
    def _new_record(self, vm_id, slot, use_netns, policy, ports, bandwidth, bandwidth_in, tap_owner):
        return {
            "id": vm_id, "slot": slot,
            "netns": A.netns_name(vm_id) if use_netns else None,
            "policy": policy_to_dict(policy),
            "published_ports": [port_to_text(p) for p in ports],
            "bandwidth": bandwidth, "bandwidth_in": bandwidth_in,
            "tap_owner": tap_owner, "status": "creating",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def ensure(self, vm_id, use_netns=True, slot=None, policy=None, ports=(), bandwidth=None,
               bandwidth_in=None, tap_owner=None, check_mode=False, must_be_new=False):
        """Create the VM or converge an existing one to these settings."""
        require_root()
        policy = policy or Policy("allow-all", (), (), ())
        result = Result()
        with self.store.locked():
            existing = self.store.load(vm_id) if self.store.exists(vm_id) else None
            if existing and must_be_new:
                raise ConflictError("VM %r already exists (slot %d); use 'vmsan network' to change it "
                                    "or 'vmsan remove' first" % (vm_id, existing["slot"]))
            if existing and slot is not None and existing["slot"] != slot:
                raise ConflictError("VM %r holds slot %d; a VM cannot move to slot %d (remove it first)"
                                    % (vm_id, existing["slot"], slot))
            if existing and bool(existing["netns"]) != bool(use_netns):
                raise ConflictError("VM %r was created %s; changing that needs a remove first"
                                    % (vm_id, "with its own namespace" if existing["netns"] else "with --no-netns"))
            from .ports import check_conflicts
            check_conflicts(self.store, vm_id, ports)
            if existing is None:
                if check_mode:
                    wanted = slot if slot is not None else self.store.lowest_free_slot(A.MAX_SLOT)
                    if wanted is None:
                        raise VmsanError("no free slot left (0-%s are all held)" % A.MAX_SLOT)
                    record = self._new_record(vm_id, wanted, use_netns, policy, ports, bandwidth, bandwidth_in, tap_owner)
                    result.changes = ["create VM %s in slot %d" % (vm_id, wanted)] + converge(record, True)
                    result.vm = facts(record)
                    result.diff = {"before": {}, "after": result.vm}
                    return result
                slot_taken = self.store.reserve_slot(vm_id, slot, A.MAX_SLOT)
                record = self._new_record(vm_id, slot_taken, use_netns, policy, ports, bandwidth, bandwidth_in, tap_owner)
                # first, so a killed run leaves something removable
                self.store.save(record, durable=False)
                try:
                    result.changes = ["create VM %s in slot %d" % (vm_id, slot_taken)] + converge(record)
                except BaseException:
                    self._rollback(record)
                    raise
                record["status"] = "ready"
                self.store.save(record)
            else:
                record = dict(existing)
                record.update({"policy": policy_to_dict(policy),
                               "published_ports": [port_to_text(p) for p in ports],
                               "bandwidth": bandwidth, "bandwidth_in": bandwidth_in, "tap_owner": tap_owner})
                result.changes = self._update(existing, record, check_mode)
            result.vm = facts(record)
            if existing is not None:
                result.diff = {"before": facts(existing), "after": result.vm}
            else:
                result.diff = {"before": {}, "after": result.vm}
        if use_netns is False:
            result.warnings.append("VM %s shares the host network namespace (--no-netns): its rules live in the "
                                   "host's tables, which weakens isolation" % vm_id)
        return result

    def _rollback(self, record):
        try:
            teardown(record)
        finally:
            self.store.delete(record["id"])
            self.store.release_slot(record["slot"], record["id"])
        if not self.store.ids():
            teardown_host()

    def _update(self, before, after, check_mode, devices=True, shaping=True):
        """Converge an existing VM to AFTER; policy changes also prune learned
        addresses and cut connections the new policy forbids."""
        from . import policy_apply
        changes = []
        settings_differ = any(before.get(k) != after.get(k) for k in
                              ("policy", "published_ports", "bandwidth", "bandwidth_in", "tap_owner", "status"))
        if settings_differ:
            changes.append("update settings of VM %s" % after["id"])
        after["status"] = "ready"
        changes += converge(after, check_mode, devices=devices, shaping=shaping)
        if before["policy"] != after["policy"]:
            changes += policy_apply.after_policy_change(after, check_mode,
                                                        policy_from_dict(before["policy"]))
        if before.get("published_ports") != after.get("published_ports"):
            from . import ports
            changes += ports.after_ports_change(before, after, check_mode)
        if changes and not check_mode:
            self.store.save(after)
        return changes

    def update(self, vm_id, policy=None, bandwidth=False, bandwidth_in=False, ports=None, check_mode=False):
        """Change settings of an existing VM (``False``/``None``: keep).
        PORTS: the new list of PortSpecs, or a function from the current
        list to the new one (``vmsan port add``: no concurrent edit is lost)."""
        require_root()
        result = Result()
        with self.store.locked():
            before = self.store.load(vm_id)
            after = dict(before)
            if policy is not None:
                after["policy"] = policy_to_dict(policy)
            if bandwidth is not False:
                after["bandwidth"] = bandwidth
            if bandwidth_in is not False:
                after["bandwidth_in"] = bandwidth_in
            if ports is not None:
                if callable(ports):     # an edit of the current ports, made under the lock
                    ports = ports(record_ports(before))
                from .ports import check_conflicts
                check_conflicts(self.store, vm_id, ports)
                after["published_ports"] = [port_to_text(p) for p in ports]
            # the shapers are read only when the caller names a cap (so a
            # repeated --bandwidth repairs drift; a policy change skips them)
            shaping = bandwidth is not False or bandwidth_in is not False
            result.changes = self._update(before, after, check_mode, devices=False, shaping=shaping)
            result.vm = facts(after)
            result.diff = {"before": facts(before), "after": result.vm}
        return result

    def remove(self, vm_id, check_mode=False, missing_ok=False):
        require_root()
        result = Result()
        with self.store.locked():
            if not self.store.exists(vm_id):
                if missing_ok:
                    return result
                self.store.load(vm_id)   # raises NotFoundError
            record = self.store.load(vm_id)
            result.vm = facts(record)
            result.changes = teardown(record, check_mode)
            result.diff = {"before": result.vm, "after": {}}
            if check_mode:
                result.changes.append("forget VM %s" % vm_id)
                return result
            left = leftovers(record)
            if left:
                raise VmsanError("VM %s was removed but these remain: %s" % (vm_id, "; ".join(left)))
            self.store.delete(vm_id)
            self.store.release_slot(record["slot"], vm_id)
            result.changes.append("forget VM %s" % vm_id)
            if not self.store.ids():
                result.changes += teardown_host()
        return result
