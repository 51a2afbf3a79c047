"""Published ports: conflicts refused before anything changes, the host-side
settings a published port needs beyond its DNAT rules, the clean-up after a
port goes, and ``vmsan port add|remove|list``.

The DNAT rules themselves are data (``firewall_plan.published_plan``) applied
with the VM's other rules; this module holds what is not a rule:

* ``check_conflicts``: another VM's port, or a socket on the host, holds the
  host port, or the host has no such address (run under the state lock,
  before any change);
* ``converge_loopback``: ``route_localnet`` on the host-side interface towards
  the VM, without which the kernel refuses to route a packet from 127.0.0.1
  (``curl 127.0.0.1:PORT`` on the host) to the guest;
* ``after_ports_change``: connections still tracked through a port that is no
  longer published are cut, and a ``pub`` chain left empty is deleted.
"""

import os

from ..model import addressing as A
from ..model import changes as C
from ..model.changes import Change
from ..model.errors import ConflictError, InputError
from ..model.records import ANY_ADDRESS, BrokenRecord
from ..plan import firewall as fp
from ..plan.ports import host_holder, host_side_interface, reachable_on_loopback, tracked_through
from ..kernel import conntrack
from ..kernel import iptables as iptables_apply
from ..kernel import netns as ns
from ..kernel import rtnl_query
from ..kernel import sysctl
from ..kernel.host_sockets import host_sockets, process_of


def check_conflicts(store, vm_id, ports, other_vms=True):
    """Refuse ports that another VM publishes or a host socket holds. Runs
    under the state lock and before any change, so a refusal changes nothing.
    Returns warnings: a VM whose state file cannot be read is skipped (one
    broken file must not stop every create on the host), and said so.
    OTHER_VMS=False: the caller checked the other VMs' ports; only the
    host's sockets are looked at."""
    if not ports:
        return []
    warnings, mine, others = [], set(), []
    for record in store.scan():
        if not other_vms and record.id != vm_id:
            continue
        if isinstance(record, BrokenRecord):
            warnings.append("the published ports of VM %s are not checked: %s" % (record.id, record.error))
        elif record.id == vm_id:
            mine = set(record.ports)
        else:
            others.append(record)
    sockets = {}
    for spec in ports:
        if spec.host_ip != ANY_ADDRESS and spec not in mine and not rtnl_query.is_local(spec.host_ip):
            raise InputError("published_ports", "%s: %s is not an address of this host" % (spec.text, spec.host_ip),
                             "an address the host has (ip -4 address), or no address for all of them")
        for other in others:
            for port in other.ports:
                if spec.collides(port):
                    raise ConflictError("host port %d/%s is already published by VM %r (as %s); choose another "
                                        "host port, or remove it there first"
                                        % (spec.host_port, spec.protocol, other.id, port.text), "published_ports")
        if spec in mine:
            continue    # ours already: our DNAT, not a listener, holds it
        if spec.protocol not in sockets:
            sockets[spec.protocol] = host_sockets(spec.protocol)
        holder = host_holder(spec, sockets[spec.protocol], process_of)
        if holder:
            raise ConflictError("host port %d/%s is held by %s; choose another host port"
                                % (spec.host_port, spec.protocol, holder), "published_ports")
    return warnings


def converge_loopback(record, check_mode=False, fresh=False):
    """route_localnet on the host-side interface: 1 while the VM publishes a
    port reachable on 127.0.0.1, else 0 (the kernel default). Runs in the
    host namespace, after the links exist. FRESH: the interface was made by
    this create and has the default, so 0 needs no look (a /proc/sys lookup
    costs ~1 ms on a host with a thousand namespaces)."""
    key = "net.ipv4.conf.%s.route_localnet" % host_side_interface(record)
    wanted = 1 if reachable_on_loopback(record.ports) else 0
    if fresh and not wanted:
        return []
    change = sysctl.ensure(key, wanted, check_mode)
    if change is None and check_mode and wanted and not os.path.exists(sysctl.path(key)):
        return [Change(C.SYSCTL_NEW, key, ("1",))]        # no such interface yet: a VM still to be made
    return [change] if change else []


def _cut_connections(record, gone, check_mode):
    """Delete the tracked connections through the ports in GONE: in the host
    namespace (where their DNAT is remembered), and, with the VM's own
    namespace, their twins there (where they were accepted as replies). The
    next packet is then judged afresh: from the client it finds no DNAT (the
    host answers with a reset or port unreachable), from the guest it is new
    outbound traffic that the VM's policy decides on."""
    guest = A.guest_ip(record.slot)
    changes, doomed = [], []
    with conntrack.Table() as table:
        entries = table.entries(reply={"saddr": guest})
        for spec in gone:
            through = tracked_through(guest, spec, entries)
            if through:
                changes.append(Change(C.CUT_PORT_CONNECTIONS, spec.text, (len(through),)))
                doomed += through
        if doomed and not check_mode:
            table.delete(doomed)
    if not doomed or check_mode or record.netns is None or not ns.exists(record.netns):
        return changes
    # As the VM's namespace saw them: from the host entry's reply destination
    # (the client, or the host's masqueraded address) to the guest's port.
    twins = {(e.tuple_orig.proto, e.tuple_reply.daddr, e.tuple_reply.dport, e.tuple_reply.sport) for e in doomed}
    with ns.entered(record.netns):
        with conntrack.Table() as table:
            table.delete([e for e in table.entries(orig={"daddr": guest})
                          if (e.tuple_orig.proto, e.tuple_orig.saddr, e.tuple_orig.sport,
                              e.tuple_orig.dport) in twins])
    return changes


def _drop_pub_chain(record, check_mode):
    chain = fp.chain_name(record.id, "pub")
    if not iptables_apply.delete_chain("nat", chain, check_mode):
        return []
    return [Change(C.DELETE_EMPTY_CHAIN, chain, ("nat",))]


def after_ports_change(before, after, check_mode=False):
    """After the rules were converged to AFTER's ports: cut the connections
    still tracked through ports that BEFORE had and AFTER has not (else they
    would keep flowing without a rule), and delete the emptied ``pub`` chain.
    Runs in the host namespace, where the DNAT happens."""
    old, new = before.ports, after.ports
    gone = [p for p in old if p not in new]
    changes = []
    if gone:
        changes += _cut_connections(after, gone, check_mode)
    if old and not new:
        changes += _drop_pub_chain(after, check_mode)
    return changes
