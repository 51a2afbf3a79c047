"""The lifecycle of a VM's network: converge (create or repair), update,
remove, and read back. This is the one orchestrator both faces call.

Every operation compares the desired state with what the kernel has (not only
with the state file), changes only what differs, and returns the list of
changes; in check mode it returns the same list and touches nothing.
"""

import os
import secrets
import time

from ..model import addressing as A
from ..kernel import iptables as iptables_apply
from ..kernel import netns as ns
from ..model.errors import ConflictError, NotRootError, VmsanError
from ..model.inputs import Policy, policy_from_dict, policy_to_dict, port_to_text
from .converge import converge, leftovers, record_ports, teardown, teardown_host
from .state import StateStore


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
        from . import policy as policy_apply
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
