"""The policy's moving parts besides the iptables rules: the VM's IP sets and
its tracked connections. Each step reads the kernel, decides (``plan.sets``,
``plan.firewall``: pure) and makes the Changes unless in check mode.
Functions run in the namespace that holds the VM's TAP unless they enter it
themselves (``_in_fw_ns``)."""

import socket
from contextlib import contextmanager

from ..model import addressing as A
from ..model import changes as C
from ..model import domains
from ..model.changes import Change
from ..plan import firewall as fp
from ..plan import sets as set_plan
from ..kernel import conntrack
from ..kernel import netns as ns
from ..kernel.ipset_wire import IpsetSocket
from ..kernel.ipsets import SetManager

_PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}


def needs_sets(policy):
    return bool(set_plan.wanted_sets(policy))


@contextmanager
def _in_fw_ns(record):
    """Enter the namespace that holds the VM's TAP (the VM's own, or stay in
    the host's for --no-netns)."""
    if record.netns and not ns.exists(record.netns):
        yield False
        return
    with ns.entered(record.netns):
        yield True


def _observe(sets, record):
    """{set name: None (absent), True (the learned set) or its networks}."""
    have = {}
    for role in set_plan.wanted_sets(record.policy):
        name = fp.set_name(record.id, role)
        if not sets.exists(name):
            have[name] = None
        else:
            have[name] = True if role == "dns" else sets.networks(name)
    return have


def _run(sets, steps):
    for step in steps:
        if step.action == "create_learned":
            sets.create_learned_set(step.name)
        elif step.action == "fill":
            sets.replace_networks(step.name, step.networks)
        elif step.action == "edit":
            sets.edit_networks(step.name, step.remove, step.add, narrow_first=step.narrow_first)
        elif step.action == "destroy":
            sets.destroy(step.name)


def apply_sets(record, check_mode, sets):
    """Create the sets the policy needs and give the CIDR sets their contents
    (before the rules that reference them). SETS: an open SetManager."""
    steps = set_plan.fill_steps(record.id, record.policy, _observe(sets, record))
    if not check_mode:
        _run(sets, steps)
    return [s.change for s in steps]


def _present(sets, record, roles=set_plan.ROLES):
    """The names of the VM's sets of ROLES that exist (one lookup each)."""
    return {name for name in (fp.set_name(record.id, role) for role in roles) if sets.exists(name)}


def destroy_unused_sets(record, check_mode, sets=None):
    """Destroy the VM's sets the policy no longer uses (after the rules that
    referenced them are gone). SETS: an open SetManager, or None: one is
    opened only if there is a set to destroy. Only the sets the policy does
    not use are looked up, with header requests in one write (ipset_wire):
    a policy without sets, which has none to look at otherwise, opens no
    pyroute2 IPSet socket (~1 ms, and its asyncio core) to learn that there
    is nothing to destroy."""
    unused = [fp.set_name(record.id, role) for role in set_plan.ROLES
              if role not in set_plan.wanted_sets(record.policy)]
    with IpsetSocket() as wire:
        present = wire.existing(unused)
    steps = set_plan.unused_steps(record.id, record.policy, present)
    if steps and not check_mode:
        if sets is None:
            with SetManager() as own:
                _run(own, steps)
        else:
            _run(sets, steps)
    return [s.change for s in steps]


def destroy_all_sets(record, check_mode):
    with SetManager() as sets:
        names = _present(sets, record)
        changes = [Change(C.DESTROY_SET, name) for name in (fp.set_name(record.id, r) for r in set_plan.ROLES)
                   if name in names]
        if not check_mode:
            for change in changes:
                sets.destroy(change.subject)
    return changes


def existing_sets(record):
    with SetManager() as sets:
        return sorted(_present(sets, record), key=[fp.set_name(record.id, r) for r in set_plan.ROLES].index)


def _cut_forbidden(record, policy, learned, check_mode):
    """Delete tracked connections from the guest that POLICY forbids, so their
    next packet is judged by the new rules (and dropped)."""
    guest = A.guest_ip(record.slot)
    changes, doomed = [], []
    # the namespace's count first (no table walk, no pyroute2 socket): a
    # dump, even a filtered one, walks the hash table every namespace
    # shares (~3.5 ms idle, more on a busy host) to find nothing
    if not conntrack.tracked_count():
        return []
    with conntrack.Table() as table:
        for entry in table.entries(orig={"saddr": guest}):
            orig = entry.tuple_orig
            if orig.saddr != guest:
                continue
            reply = entry.tuple_reply
            if reply is not None and reply.saddr == A.RESOLVER_IP:
                continue        # DNS redirected to the host resolver
            proto = _PROTOCOLS.get(orig.proto)
            if fp.outbound_allowed(policy, orig.daddr, proto, orig.dport, learned):
                continue
            detail = (proto or orig.proto, orig.sport, orig.daddr, orig.dport)
            changes.append(Change(C.CUT_CONNECTION, orig.saddr, detail))
            doomed.append(entry)
        if not check_mode:
            table.delete(doomed)
    return changes


def after_policy_change(record, check_mode, before_policy=None):
    """Prune learned addresses and cut connections the new policy forbids.
    BEFORE_POLICY (a Policy): the policy the rules held until now; when the
    new one lets out all that it did, no connection can be forbidden and the
    conntrack table is not read."""
    policy = record.policy
    with _in_fw_ns(record) as present:
        if not present:
            return []
        if not policy.learns_names:
            # no domains: the rules no longer name the learned set (it was
            # destroyed with the other unused sets), nothing to prune
            changes, learned = [], {}
        else:
            # audit mode learns every name: nothing it learned is forgotten
            with SetManager() as sets:
                forgotten, learned = sets.prune_learned(
                    fp.set_name(record.id, "dns"),
                    lambda name: policy.audit or domains.allowed(name, policy.allowed_domains), check_mode)
            changes = [Change(C.FORGET_LEARNED, address, (name or "?",)) for address, name in forgotten]
        if before_policy is not None and fp.allows_all_that(before_policy, policy):
            return changes
        changes += _cut_forbidden(record, policy, learned, check_mode)
    return changes


def connections(record):
    """Tracked connections of the guest in the host namespace (its outbound
    flows are masqueraded there and published ports are DNATed there, in
    both modes; a VM namespace takes its own table with it)."""
    # filtered by the kernel, and no dump at all when the table is empty
    return conntrack.of_address(A.guest_ip(record.slot))


def forget_connections(record, check_mode):
    """On removal: delete the guest's tracked connections in the host
    namespace (the VM's own namespace takes its table with it)."""
    entries = connections(record)
    if not entries:
        return []
    changes = [Change(C.DELETE_CONNECTIONS, A.guest_ip(record.slot), (len(entries),))]
    if not check_mode:
        with conntrack.Table() as table:
            table.delete(entries)
    return changes
