"""A VM's IP sets as decisions: which sets a policy needs, the steps that
turn the sets the kernel has into them, and which learned addresses a new
policy no longer allows. Pure; ``lifecycle.policy`` observes and applies
through ``kernel.ipsets``, and the resolver prunes with the same rule."""

from collections import namedtuple

from ..model import changes as C
from ..model.changes import Change
from . import firewall as fp

ROLES = ("allow", "deny", "dns")

Step = namedtuple("Step", "change action name networks remove add narrow_first")
# action: create_learned, fill (a fresh set swapped in), edit (in place), destroy


def _step(change, action, name, networks=(), remove=(), add=(), narrow_first=True):
    return Step(change, action, name, tuple(networks), tuple(remove), tuple(add), narrow_first)


def wanted_sets(policy):
    """{role: the CIDRs it holds, or None for the learned set} of POLICY."""
    if policy.mode != "custom":
        return {}
    out = {}
    if policy.allowed_cidrs:
        out["allow"] = policy.allowed_cidrs
    if policy.denied_cidrs:
        out["deny"] = policy.denied_cidrs
    if policy.learns_names:
        out["dns"] = None     # filled by the resolver
    return out


def storable(networks):
    """NETWORKS as a hash:net set can hold them: it cannot hold /0, which
    becomes its two /1 halves (canonical CIDR text in and out)."""
    out = []
    for net in networks:
        if net.endswith("/0"):
            out.extend(("0.0.0.0/1", "128.0.0.0/1"))
        else:
            out.append(net)
    return out


def fill_steps(vm_id, policy, have):
    """Steps that give the VM the sets POLICY needs, with their contents,
    before the rules that name them. HAVE: {set name: None (absent), True
    (present, contents not read: the learned set) or the set of networks}."""
    steps = []
    for role, networks in wanted_sets(policy).items():
        name = fp.set_name(vm_id, role)
        present = have.get(name)
        if role == "dns":
            if present is None:
                steps.append(_step(Change(C.CREATE_SET, name), "create_learned", name))
            continue
        if present is None:
            steps.append(_step(Change(C.FILL_SET, name, (len(networks),)), "fill", name, networks))
            continue
        wanted = set(storable(networks))
        if present == wanted:
            continue
        remove, add = sorted(present - wanted), sorted(wanted - present)
        change = Change(C.EDIT_SET, name, (len(wanted), len(add), len(remove)))
        if len(remove) + len(add) > len(wanted):
            steps.append(_step(change, "fill", name, networks))     # mostly new: fill a fresh set, swap it in
        else:
            # an allow list loses entries before it gains (never more open
            # than old or new), a deny list gains first (never less closed)
            steps.append(_step(change, "edit", name, networks, remove, add, narrow_first=(role == "allow")))
    return steps


def unused_steps(vm_id, policy, present):
    """Steps that destroy the VM's sets POLICY no longer uses (after the
    rules that named them are gone). PRESENT: the names that exist."""
    keep = {fp.set_name(vm_id, role) for role in wanted_sets(policy)}
    return [_step(Change(C.DESTROY_SET, name), "destroy", name)
            for name in (fp.set_name(vm_id, role) for role in ROLES) if name not in keep and name in present]


def prune(learned, allows):
    """Split LEARNED ({address: the name it was learned for}) by ALLOWS(name):
    (addresses to forget, as (address, name); {address: name} kept)."""
    forget, kept = [], {}
    for address, name in learned.items():
        name = name or ""
        if allows(name):
            kept[address] = name
        else:
            forget.append((address, name))
    return forget, kept
