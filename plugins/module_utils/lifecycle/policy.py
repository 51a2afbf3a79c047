"""The policy's moving parts besides the iptables rules: the VM's IP sets and
its tracked connections. Functions run in the namespace that holds the VM's
TAP unless they enter it themselves (``_in_fw_ns``)."""

import socket
from contextlib import contextmanager

from ..model import addressing as A
from ..model import domains
from ..plan import firewall as fp
from ..kernel import netns as ns
from ..model.inputs import policy_from_dict
from ..kernel.ipsets import SetManager, storable


def Conntrack():
    # imported when first used: ~25 ms of imports (asyncio) a create does not need
    from pyroute2.conntrack import Conntrack as _Conntrack
    return _Conntrack()


def NFCTAttrTuple(**fields):
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple as _NFCTAttrTuple
    return _NFCTAttrTuple(**fields)


ROLES = ("allow", "deny", "dns")


def wanted_sets(policy):
    if policy.mode != "custom":
        return {}
    out = {}
    if policy.allowed_cidrs:
        out["allow"] = policy.allowed_cidrs
    if policy.denied_cidrs:
        out["deny"] = policy.denied_cidrs
    if policy.allowed_domains:
        out["dns"] = None     # filled by the resolver
    return out


@contextmanager
def _in_fw_ns(record):
    """Enter the namespace that holds the VM's TAP (the VM's own, or stay in
    the host's for --no-netns)."""
    if record["netns"] and not ns.exists(record["netns"]):
        yield False
        return
    with ns.entered(record["netns"]):
        yield True


def apply_sets(record, check_mode, sets):
    """Create the sets the policy needs and give the CIDR sets their contents
    (before the rules that reference them). SETS: an open SetManager."""
    policy = policy_from_dict(record["policy"])
    changes = []
    for role, networks in wanted_sets(policy).items():
        name = fp.set_name(record["id"], role)
        present = sets.exists(name)
        if role == "dns":
            if not present:
                changes.append("create ipset %s" % name)
                if not check_mode:
                    sets.create_learned_set(name)
            continue
        if not present:
            changes.append("set ipset %s (%d networks)" % (name, len(networks)))
            if not check_mode:
                sets.replace_networks(name, networks)
            continue
        have, wanted = sets.networks(name), set(storable(networks))
        if have == wanted:
            continue
        remove, add = sorted(have - wanted), sorted(wanted - have)
        changes.append("set ipset %s (%d networks: %d added, %d removed)" % (name, len(wanted), len(add), len(remove)))
        if check_mode:
            continue
        if len(remove) + len(add) > len(wanted):
            sets.replace_networks(name, networks)      # mostly new: fill a fresh set and swap it in
        else:
            sets.edit_networks(name, remove, add, narrow_first=(role == "allow"))
    return changes


def destroy_unused_sets(record, check_mode, sets):
    """Destroy the VM's sets the policy no longer uses (after the rules that
    referenced them are gone). SETS: an open SetManager."""
    policy = policy_from_dict(record["policy"])
    keep = set(wanted_sets(policy))
    changes = []
    for role in ROLES:
        name = fp.set_name(record["id"], role)
        if role not in keep and sets.exists(name):
            changes.append("destroy ipset %s" % name)
            if not check_mode:
                sets.destroy(name)
    return changes


def destroy_all_sets(record, check_mode):
    changes = []
    with SetManager() as sets:
        for role in ROLES:
            name = fp.set_name(record["id"], role)
            if sets.exists(name):
                changes.append("destroy ipset %s" % name)
                if not check_mode:
                    sets.destroy(name)
    return changes


def existing_sets(record):
    with SetManager() as sets:
        return [fp.set_name(record["id"], r) for r in ROLES if sets.exists(fp.set_name(record["id"], r))]


def learned_addresses(record):
    """{address: comment} of the VM's learned set (empty if none)."""
    with _in_fw_ns(record) as present:
        if not present:
            return {}
        with SetManager() as sets:
            return _learned(sets, record)


def _learned(sets, record):
    name = fp.set_name(record["id"], "dns")
    if not sets.exists(name):
        return {}
    return {m["address"]: m["comment"] for m in sets.members(name)}


def _prune_learned(sets, record, policy, check_mode):
    """Forget learned addresses whose name the new policy no longer allows;
    return the changes and the addresses still learned."""
    changes = []
    name = fp.set_name(record["id"], "dns")
    kept = {}
    for address, learned_for in _learned(sets, record).items():
        learned_for = learned_for or ""
        if domains.allowed(learned_for, policy.allowed_domains):
            kept[address] = learned_for
            continue
        changes.append("forget %s (learned for %s)" % (address, learned_for or "?"))
        if not check_mode:
            sets.forget(name, address)
    return changes, kept


def _entries_from(guest_ip):
    ct = Conntrack()
    try:
        tuple_orig = NFCTAttrTuple(saddr=guest_ip)
        return ct, list(ct.dump_entries(tuple_orig=tuple_orig))
    except Exception:
        ct.close()
        raise


def _cut_forbidden(record, policy, learned, check_mode):
    """Delete tracked connections from the guest that POLICY forbids, so their
    next packet is judged by the new rules (and dropped)."""
    guest = A.guest_ip(record["slot"])
    changes = []
    ct, entries = _entries_from(guest)
    try:
        for entry in entries:
            orig = entry.tuple_orig
            if orig.saddr != guest:
                continue
            reply = entry.tuple_reply
            if reply is not None and reply.saddr == A.RESOLVER_IP:
                continue        # DNS redirected to the host resolver
            proto = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}.get(orig.proto)
            if fp.outbound_allowed(policy, orig.daddr, proto, orig.dport, learned):
                continue
            changes.append("cut connection %s %s:%s -> %s:%s" % (proto or orig.proto, orig.saddr, orig.sport,
                                                                 orig.daddr, orig.dport))
            if not check_mode:
                try:
                    ct.entry("del", tuple_orig=orig)
                except Exception:
                    pass    # already gone
    finally:
        ct.close()
    return changes


def after_policy_change(record, check_mode, before_policy=None):
    """Prune learned addresses and cut connections the new policy forbids.
    BEFORE_POLICY (a Policy): the policy the rules held until now; when the
    new one lets out all that it did, no connection can be forbidden and the
    conntrack table is not read."""
    policy = policy_from_dict(record["policy"])
    with _in_fw_ns(record) as present:
        if not present:
            return []
        if not policy.allowed_domains:
            # no domains: the rules no longer name the learned set (it was
            # destroyed with the other unused sets), nothing to prune
            changes, learned = [], {}
        else:
            with SetManager() as sets:
                changes, learned = _prune_learned(sets, record, policy, check_mode)
        if before_policy is not None and fp.allows_all_that(before_policy, policy):
            return changes
        changes += _cut_forbidden(record, policy, learned, check_mode)
    return changes


def connections(record):
    """Tracked connections of the guest in the host namespace (its outbound
    flows are masqueraded there and published ports are DNATed there, in
    both modes; a VM namespace takes its own table with it)."""
    from ..kernel import conntrack     # filtered by the kernel, not a dump of the whole table
    return conntrack.of_address(A.guest_ip(record["slot"]))


def forget_connections(record, check_mode):
    """On removal: delete the guest's tracked connections in the host
    namespace (the VM's own namespace takes its table with it)."""
    changes = []
    entries = connections(record)
    if not entries:
        return changes
    changes.append("delete %d tracked connections of %s" % (len(entries), A.guest_ip(record["slot"])))
    if check_mode:
        return changes
    ct = Conntrack()
    try:
        for entry in entries:
            try:
                ct.entry("del", tuple_orig=entry.tuple_orig)
            except Exception:
                pass
    finally:
        ct.close()
    return changes
