"""A host's VM list as decisions: what the fleet module ``vmsan_vms`` does
for each state of the network resource module convention of
ansible.netcommon, which VMs it removes, the order in which it converges
the others, which slot each new VM gets, and the conflicts between listed
VMs it refuses before anything changes (docs/ansible.md, "vmsan_vms").

Pure: ``plan`` reads the records the host has and returns steps;
faces/ansible_fleet.py runs them through lifecycle.manager, which still
checks every VM under the state lock (a host socket on a port, a VM made
meanwhile).
"""

from dataclasses import dataclass, replace
from typing import Optional

from ..model import addressing as A
from ..model.errors import ConflictError, InputError, VmsanError
from ..model.records import ALLOW_ALL, DEFAULT_LIMITS, KEEP, BrokenRecord
from .ports import with_added

MERGED, REPLACED, OVERRIDDEN, DELETED, GATHERED = "merged", "replaced", "overridden", "deleted", "gathered"
STATES = (MERGED, REPLACED, OVERRIDDEN, DELETED, GATHERED)


@dataclass(frozen=True)
class Wanted:
    """One item of ``config``, parsed: what the task gave, KEEP for an
    option it left out. INDEX: its place in the list (for messages)."""
    index: int
    id: str
    netns: object = KEEP            # bool
    slot: Optional[int] = None
    policy: object = KEEP           # Policy
    ports: object = KEEP            # tuple of PortSpec
    bandwidth: object = KEEP        # bit/s or None
    bandwidth_in: object = KEEP
    tap_owner: object = KEEP        # uid or None
    limits: object = KEEP           # Limits (fields KEEP where left out)


@dataclass(frozen=True)
class Remove:
    id: str


@dataclass(frozen=True)
class Ensure:
    """Create or converge one VM (the arguments of ``Manager.ensure``).
    MERGE_PORTS: PORTS are added to the VM's ports as they are under the
    state lock (one on the same host side is replaced), the others kept.
    SLOT: the slot to ask for (None: the VM's own, or the lowest free, which
    PREDICTED_SLOT names for a new VM, so check mode reports the slot the
    real run gives)."""
    id: str
    use_netns: bool
    slot: Optional[int]
    policy: object
    ports: object
    merge_ports: bool
    bandwidth: object
    bandwidth_in: object
    tap_owner: object
    new: bool
    predicted_slot: Optional[int]
    limits: object = KEEP

    def ports_of(self, current):
        """The VM's ports after this step, given its CURRENT ones."""
        if self.ports is KEEP:
            return tuple(current)
        if self.merge_ports:
            return tuple(with_added(self.id, list(current), self.ports, replace=True))
        return tuple(self.ports)


def _label(item, param):
    return "config[%d].%s" % (item.index, param)


def _refuse_duplicates(wanted):
    seen = {}
    for item in wanted:
        if item.id in seen:
            raise InputError("config[%d].name" % item.index,
                             "VM %r is listed twice (config[%d] and config[%d])" % (item.id, seen[item.id], item.index),
                             "each VM once")
        seen[item.id] = item.index


def _ensure(state, item, existing):
    """The Ensure of ITEM for STATE: merged keeps what the item leaves out,
    replaced and overridden give it the default."""
    def given(value, default):
        if value is not KEEP:
            return value
        return KEEP if state == MERGED else default
    if item.netns is not KEEP:
        use_netns = item.netns
    else:
        use_netns = existing.netns is not None if (existing is not None and state == MERGED) else True
    ports = given(item.ports, ())
    return Ensure(item.id, use_netns, item.slot, given(item.policy, ALLOW_ALL), ports,
                  state == MERGED and ports is not KEEP, given(item.bandwidth, None), given(item.bandwidth_in, None),
                  given(item.tap_owner, None), existing is None, None, _limits(state, item.limits))


def _limits(state, limits):
    """The budgets of an Ensure: merged keeps what the item leaves out;
    replaced and overridden give every budget left out its default."""
    if state == MERGED:
        return limits
    return DEFAULT_LIMITS if limits is KEEP else limits.over(DEFAULT_LIMITS)


def _refuse_moves(item, step, existing):
    """What the core refuses for an existing VM, refused for the whole list
    before any VM changes."""
    if isinstance(existing, BrokenRecord):
        raise VmsanError("config[%d]: VM %s cannot be converged: %s" % (item.index, item.id, existing.error))
    if existing is None:
        return
    if item.slot is not None and item.slot != existing.slot:
        raise ConflictError("%s: VM %r holds slot %d; a VM cannot move to slot %d (remove it first)"
                            % (_label(item, "slot"), item.id, existing.slot, item.slot))
    if step.use_netns != (existing.netns is not None):
        raise ConflictError("%s: VM %r was created %s; changing that needs a remove first"
                            % (_label(item, "netns"), item.id,
                               "with its own namespace" if existing.netns else "without one (netns: false)"))


def _refuse_port_collisions(final):
    """FINAL: [(VM id, its ports after the run)], in order: no two VMs may
    publish colliding ports."""
    holders = {}
    for vm_id, ports in final:
        for spec in ports:
            for other_id, other in holders.get((spec.protocol, spec.host_port), ()):
                if other_id != vm_id and spec.collides(other):
                    raise ConflictError("published_ports: host port %d/%s would be published by VM %r (as %s) and by "
                                        "VM %r (as %s); choose another host port for one of them"
                                        % (spec.host_port, spec.protocol, other_id, other.text, vm_id, spec.text))
            holders.setdefault((spec.protocol, spec.host_port), []).append((vm_id, spec))


def _releases_a_port(step, existing):
    return existing is not None and bool(set(existing.ports) - set(step.ports_of(existing.ports)))


def _with_slots(steps, used_slots, have, removed):
    """STEPS with the slot each new VM gets, as the real run would give them
    one after another: the lowest slot free at its turn, never one that a
    later VM of the list asks for by number (that VM would find it taken)."""
    holder = {r.slot: r.id for r in have.values() if not isinstance(r, BrokenRecord)}
    taken = set(used_slots) - {have[vm_id].slot for vm_id in removed if not isinstance(have[vm_id], BrokenRecord)}
    asked = {s.slot for s in steps if s.new and s.slot is not None}
    out = []
    for step in steps:
        if not step.new:
            out.append(step)
            continue
        if step.slot is not None:
            if step.slot in taken:
                raise ConflictError("slot %d is held by VM %r; VM %r cannot have it"
                                    % (step.slot, holder.get(step.slot, "?"), step.id))
            slot, pinned = step.slot, step.slot
        else:
            free = (s for s in range(A.MAX_SLOT + 1) if s not in taken and s not in asked)
            slot = next(free, None)
            if slot is None:
                raise VmsanError("no free slot left for VM %s (0-%d are all held)" % (step.id, A.MAX_SLOT))
            lowest = next(s for s in range(A.MAX_SLOT + 1) if s not in taken)
            # asked for by number only when the lowest free slot is one a
            # later VM of the list wants; otherwise the core picks it (and
            # keeps its slot hint)
            pinned = None if slot == lowest else slot
        taken.add(slot)
        holder[slot] = step.id
        out.append(replace(step, slot=pinned, predicted_slot=slot))
    return out


def plan(state, wanted, have, used_slots=()):
    """The steps of STATE: a list of Remove and Ensure, in the order to run
    them. WANTED: the parsed ``config`` (a list of Wanted), or None when the
    task left it out. HAVE: {VM id: VmRecord or BrokenRecord} of the host.
    USED_SLOTS: the slots the state directory holds. Raises InputError or
    ConflictError for a list that cannot be converged, before any step."""
    if state not in STATES:
        raise InputError("state", "unknown state %r" % (state,), ", ".join(STATES))
    if state == GATHERED:
        return []
    if wanted is None and state != DELETED:
        raise InputError("config", "state=%s needs config, the list of VMs" % state, "a list of VMs, each with a name")
    readable = sorted(vm_id for vm_id, r in have.items() if not isinstance(r, BrokenRecord))
    if state == DELETED:
        # netcommon: no config means every VM of the host; a list given but
        # empty removes nothing (it never removes more than it names). A VM
        # whose state file cannot be read is left as it is, unless named.
        if wanted is None:
            return [Remove(vm_id) for vm_id in readable]
        for item in wanted:
            if isinstance(have.get(item.id), BrokenRecord):
                raise VmsanError("config[%d]: VM %s cannot be removed: %s" % (item.index, item.id, have[item.id].error))
        return [Remove(vm_id) for vm_id in dict.fromkeys(i.id for i in wanted)]
    if state == OVERRIDDEN and not wanted:
        raise InputError("config", "an empty list with state=overridden would remove every VM of the host",
                         "at least one VM; to remove them all, state=deleted without config")
    _refuse_duplicates(wanted)
    listed = {item.id for item in wanted}
    removed = [vm_id for vm_id in readable if vm_id not in listed] if state == OVERRIDDEN else []
    steps = []
    for item in wanted:
        existing = have.get(item.id)
        step = _ensure(state, item, existing if not isinstance(existing, BrokenRecord) else None)
        _refuse_moves(item, step, existing)
        steps.append(step)
    explicit = {}
    for item in wanted:
        if item.slot is not None and item.slot in explicit:
            raise InputError(_label(item, "slot"), "slot %d is given to VMs %r and %r"
                             % (item.slot, explicit[item.slot], item.id), "a slot for one VM only")
        explicit.setdefault(item.slot, item.id)
    staying = [r for vm_id, r in sorted(have.items())
               if vm_id not in listed and vm_id not in removed and not isinstance(r, BrokenRecord)]
    _refuse_port_collisions([(r.id, r.ports) for r in staying]
                            + [(s.id, s.ports_of(getattr(have.get(s.id), "ports", ()))) for s in steps])
    # VMs that give up a port go first, so that one listed after them can take it
    releasing = {s.id for s in steps if _releases_a_port(s, have.get(s.id))}
    steps = [s for s in steps if s.id in releasing] + [s for s in steps if s.id not in releasing]
    return [Remove(vm_id) for vm_id in removed] + _with_slots(steps, used_slots, have, removed)
