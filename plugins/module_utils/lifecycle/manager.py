"""The lifecycle of a VM's network: converge (create or repair), update,
remove, and read back. This is the one orchestrator both faces call.

Every operation compares the desired state with what the kernel has (not only
with the state file), changes only what differs, and returns the Changes; in
check mode it returns the same list and touches nothing. Every
read-modify-write of a VM (an option left out keeps the VM's current value,
a port added among the others) reads the VM under the state lock, so a
concurrent change is never lost.
"""

import os
import time

from ..model import addressing as A
from ..model import changes as C
from ..model.changes import Change
from ..model.errors import ConflictError, NotRootError, VmsanError
from ..model.facts import facts
from ..model.records import KEEP, Bandwidth, BrokenRecord, VmRecord
from ..plan import firewall as fp
from ..kernel import iptables as iptables_apply
from ..kernel import netns as ns
from . import health
from . import ownership
from . import policy as policy_apply
from . import ports as port_apply
from . import status
from .converge import converge, leftovers, teardown, teardown_host
from .state import StateStore


def require_root():
    if os.geteuid() != 0:
        raise NotRootError("vmsan must run as root: it changes network namespaces, links and firewall rules")


def creation_stamp(clock=time.time_ns):
    """The ``created`` of a new record: UTC to the microsecond. The resolver
    and the pin journal tell a VM recreated under the same id, slot and
    namespace name by it (resolver/core.VmPolicy.identity), so it must
    differ between a remove and the next create: a stamp to the second made
    a VM recreated within the same second look like the old one, whose
    learned addresses the resolver then thought still in the new, empty set."""
    seconds, nanoseconds = divmod(clock(), 10 ** 9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%06dZ" % (nanoseconds // 1000)


class Result(object):
    """What an operation did: its Changes and warnings, and the VM before and
    after (VmRecords; None where there is none)."""

    def __init__(self, before=None, after=None):
        self.changes = []
        self.warnings = []
        self.before = before
        self.after = after

    @property
    def changed(self):
        return bool(self.changes)

    @property
    def record(self):
        """The VM the result is about: as it is after the run, or, after a
        removal, as it was."""
        return self.after if self.after is not None else self.before

    @property
    def vm(self):
        """The facts of ``record`` (empty when there is no VM)."""
        return facts(self.record) if self.record is not None else None


def new_id():
    # os.urandom, not secrets: secrets imports hashlib and OpenSSL (~2 ms)
    # for the same four random bytes
    return "vm-" + os.urandom(4).hex()


def _kept(value, current):
    return current if value is KEEP else value


def _limits(given, current):
    """GIVEN (a Limits with KEEP fields, or KEEP) over CURRENT."""
    return current if given is KEEP else given.over(current)


class Manager(object):
    def __init__(self, state_dir=None):
        self.store = StateStore(state_dir)

    # -- reads ----------------------------------------------------------------
    def get(self, vm_id):
        """The VmRecord of VM_ID."""
        return self.store.load(vm_id)

    def list(self):
        """Every VM: VmRecords, and BrokenRecords for unreadable state files."""
        return self.store.scan()

    def kernel_rules(self, record):
        """The VM's rules as the kernel has them now."""
        result = {}
        if record.netns and ns.exists(record.netns):
            with ns.entered(record.netns):
                result["vm_namespace"] = iptables_apply.dump()
        own = set(fp.vm_chains(record.id))
        result["host_namespace"] = {t: {c: r for c, r in chains.items() if c in own}
                                    for t, chains in iptables_apply.dump().items()}
        return result

    # -- create or converge -------------------------------------------------------
    def ensure(self, vm_id, use_netns=True, slot=None, policy=KEEP, ports=KEEP, bandwidth=KEEP,
               bandwidth_in=KEEP, tap_owner=KEEP, check_mode=False, must_be_new=False, limits=KEEP,
               others_checked=False):
        """Create the VM or converge an existing one to these settings (KEEP
        or None for policy: the VM's current value; for a new VM the
        default). PORTS: PortSpecs, or a function from the VM's current
        ports (none for a new VM) to the new list, called under the state
        lock (``vmsan_vm`` adding its ports to the others). OTHERS_CHECKED:
        the caller has checked the ports against every other VM as they
        will be (the fleet module's plan, in check mode, where the VMs that
        give up a port earlier in the run have not saved that yet); the
        host's sockets are still checked."""
        require_root()
        with self.store.locked():
            existing = self.store.load(vm_id) if self.store.exists(vm_id) else None
            self._refuse_move(vm_id, existing, use_netns, slot, must_be_new)
            base = existing or VmRecord(vm_id, -1, A.netns_name(vm_id) if use_netns else None)
            if callable(ports):
                ports = ports(list(base.ports))
            wanted = base.but(
                policy=_kept(policy, base.policy) or base.policy,
                ports=tuple(_kept(ports, base.ports)),
                bandwidth=Bandwidth(_kept(bandwidth, base.bandwidth.send), _kept(bandwidth_in, base.bandwidth.receive)),
                tap_owner=_kept(tap_owner, base.tap_owner),
                limits=_limits(limits, base.limits))
            warnings = port_apply.check_conflicts(self.store, vm_id, wanted.ports, other_vms=not others_checked)
            if existing is not None:
                result = Result(existing)
                result.changes, result.after = self._update(existing, wanted, check_mode)
            elif check_mode:
                result = self._plan_new(wanted, slot)
            else:
                result = self._create(wanted, slot)
        result.warnings += warnings
        if not use_netns:
            result.warnings.append("VM %s shares the host network namespace (--no-netns): its rules live in the "
                                   "host's tables, which weakens isolation" % vm_id)
        return result

    def _refuse_move(self, vm_id, existing, use_netns, slot, must_be_new):
        if existing is None:
            return
        if must_be_new:
            raise ConflictError("VM %r already exists (slot %d); use 'vmsan network' to change it "
                                "or 'vmsan remove' first" % (vm_id, existing.slot), "id")
        if slot is not None and existing.slot != slot:
            raise ConflictError("VM %r holds slot %d; a VM cannot move to slot %d (remove it first)"
                                % (vm_id, existing.slot, slot), "slot")
        if bool(existing.netns) != bool(use_netns):
            raise ConflictError("VM %r was created %s; changing that needs a remove first"
                                % (vm_id, "with its own namespace" if existing.netns else "with --no-netns"))

    @staticmethod
    def _stamped(record, slot):
        return record.but(slot=slot, status="creating", created=creation_stamp())

    def _plan_new(self, wanted, slot):
        """Check mode, new VM: what a create would do, with nothing reserved."""
        if slot is None:
            slot = self.store.lowest_free_slot(A.MAX_SLOT)
            if slot is None:
                raise VmsanError("no free slot left (0-%s are all held)" % A.MAX_SLOT)
        record = self._stamped(wanted, slot)
        result = Result(after=record)
        result.changes = [Change(C.CREATE_VM, record.id, (slot,))] + converge(record, True, home=self.store.root)
        return result

    def _reserve(self, wanted, slot):
        """(slot, warnings): a slot this directory holds for WANTED and no
        other VM's devices occupy in the kernel (ownership.py). A wanted
        SLOT that the kernel says is another's is refused, naming the
        owner; without one, such slots are passed over."""
        if wanted.netns and ns.exists(wanted.netns):
            raise ConflictError("network namespace %s already exists and is not a VM of state directory %s: %s"
                                % (wanted.netns, self.store.root, ownership.namespace_owner(wanted.netns)))
        passed, warnings = set(), []
        while True:
            got = self.store.reserve_slot(wanted.id, slot, A.MAX_SLOT, skip=passed)
            owner = ownership.slot_owner(got)
            if owner is None or ownership.is_mine(owner, self.store.root, wanted.id):
                return got, warnings
            self.store.release_slot(got, wanted.id)
            if slot is not None:
                raise ConflictError("slot %d is not free on this host: %s" % (got, ownership.describe(owner)))
            passed.add(got)
            warnings.append("slot %d passed over: %s" % (got, ownership.describe(owner)))

    def _create(self, wanted, slot):
        """A new VM: its slot reserved and its record written before any
        kernel change (a killed run leaves something removable), rolled back
        when a step fails."""
        got, warnings = self._reserve(wanted, slot)
        record = self._stamped(wanted, got)
        self.store.save(record, durable=False)
        try:
            changes = [Change(C.CREATE_VM, record.id, (record.slot,))] + converge(record, home=self.store.root)
        except BaseException:
            self._rollback(record)
            raise
        record = record.but(status="ready")
        self.store.save(record)
        result = Result(after=record)
        result.changes = changes
        result.warnings = warnings
        return result

    def _rollback(self, record):
        try:
            teardown(record, home=self.store.root)
        finally:
            self.store.delete(record.id)
            self.store.release_slot(record.slot, record.id)
        self._teardown_host_if_unused()

    def _teardown_host_if_unused(self, check_mode=False):
        """The host-wide parts, when no VM of any state directory is left
        on the host (no vmsan device in the host namespace), else nothing."""
        if self.store.ids() or ownership.host_users():
            return []
        return teardown_host(check_mode)

    def _update(self, before, after, check_mode, devices=True, shaping=True):
        """Converge an existing VM to AFTER; policy changes also prune learned
        addresses and cut connections the new policy forbids. Returns (the
        Changes, AFTER as saved)."""
        after = after.but(status="ready")
        changes = []
        if before.settings != after.settings or before.status != "ready":
            changes.append(Change(C.UPDATE_SETTINGS, after.id))
        changes += converge(after, check_mode, devices=devices, shaping=shaping, home=self.store.root)
        if before.policy != after.policy:
            changes += policy_apply.after_policy_change(after, check_mode, before.policy)
        if before.ports != after.ports:
            changes += port_apply.after_ports_change(before, after, check_mode)
        if changes and not check_mode:
            self.store.save(after)
        return changes, after

    # -- live changes -----------------------------------------------------------
    def update(self, vm_id, policy=KEEP, bandwidth=KEEP, bandwidth_in=KEEP, ports=KEEP, check_mode=False,
               limits=KEEP):
        """Change settings of an existing VM (KEEP, or None for policy: keep).
        PORTS: the new list of PortSpecs, or a function from the current
        list to the new one, called under the state lock (``vmsan port add``:
        no concurrent edit is lost)."""
        require_root()
        with self.store.locked():
            before = self.store.load(vm_id)
            if callable(ports):
                ports = ports(list(before.ports))
            after = before.but(
                policy=_kept(policy, before.policy) or before.policy,
                ports=tuple(_kept(ports, before.ports)),
                bandwidth=Bandwidth(_kept(bandwidth, before.bandwidth.send),
                                    _kept(bandwidth_in, before.bandwidth.receive)),
                limits=_limits(limits, before.limits))
            warnings = port_apply.check_conflicts(self.store, vm_id, after.ports) if ports is not KEEP else []
            # the shapers are read only when the caller names a cap (so a
            # repeated --bandwidth repairs drift; a policy change skips them)
            shaping = bandwidth is not KEEP or bandwidth_in is not KEEP
            result = Result(before)
            result.changes, result.after = self._update(before, after, check_mode, devices=False, shaping=shaping)
            result.warnings = warnings
        return result

    # -- after a reboot, and checks ----------------------------------------------
    def restore(self, vm_ids=None):
        """Rebuild the network of every VM (or of VM_IDS) from its state
        file: a full converge of each under the state lock, so a second run
        changes nothing. Returns {id: Result}; unknown ids are NotFoundError
        before anything changes."""
        require_root()
        ids = list(vm_ids) if vm_ids else self.store.ids()
        for vm_id in ids:
            if not self.store.exists(vm_id):
                self.store.load(vm_id)          # raises NotFoundError
        results = {}
        for vm_id in ids:
            with self.store.locked():
                record = self.store.load(vm_id)
                result = Result(record)
                result.changes, result.after = self._update(record, record, False)
                results[vm_id] = result
        return results

    def statuses(self):
        """[(record, status, reasons)] of every VM (lifecycle/status.py)."""
        return status.statuses(self.store)

    def checks(self):
        """[VmCheck] of every VM against the kernel, and the stale devices
        of this directory (for ``vmsan doctor``)."""
        records = self.store.scan()
        found = [health.VmCheck(r.id, "broken", [r.error]) if isinstance(r, BrokenRecord)
                 else health.check(r, self.store.root) for r in records]
        return found, health.stale_devices(records, self.store.root)

    # -- removal ------------------------------------------------------------------
    def remove(self, vm_id, check_mode=False, missing_ok=False):
        require_root()
        with self.store.locked():
            if not self.store.exists(vm_id):
                if missing_ok:
                    return Result()
                self.store.load(vm_id)   # raises NotFoundError
            record = self.store.load(vm_id)
            result = Result(before=record)
            result.changes = teardown(record, check_mode, home=self.store.root)
            if check_mode:
                result.changes.append(Change(C.FORGET_VM, vm_id))
                return result
            left = leftovers(record, home=self.store.root)
            if left:
                raise VmsanError("VM %s was removed but these remain: %s" % (vm_id, "; ".join(left)))
            self.store.delete(vm_id)
            self.store.release_slot(record.slot, vm_id)
            result.changes.append(Change(C.FORGET_VM, vm_id))
            result.changes += self._teardown_host_if_unused()
        return result
