"""Published ports: conflicts refused before anything changes, the host-side
settings a published port needs beyond its DNAT rules, the clean-up after a
port goes, and ``vmsan port add|remove|list``.

The DNAT rules themselves are data (``firewall_plan.published_plan``) applied
with the VM's other rules; this module holds what is not a rule:

* ``check_conflicts``: another VM's port, or a socket on the host, holds the
  host port (run under the state lock, before any change);
* ``converge_loopback``: ``route_localnet`` on the host-side interface towards
  the VM, without which the kernel refuses to route a packet from 127.0.0.1
  (``curl 127.0.0.1:PORT`` on the host) to the guest;
* ``after_ports_change``: connections still tracked through a port that is no
  longer published are cut, and a ``pub`` chain left empty is deleted.
"""

import ipaddress
import os
import socket

from . import addressing as A
from . import firewall_plan as fp
from . import sysctl
from .errors import ConflictError, InputError
from .inputs import as_list, port_list, port_spec, port_to_text, ports_collide

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


# --------------------------------------------------------------------------
# who holds a host port
# --------------------------------------------------------------------------
def _decode_address(family, addr_hex):
    raw = bytes.fromhex(addr_hex)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[::-1])
    return socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def host_sockets(protocol, proc_net="/proc/thread-self/net"):
    """[(address, port, inode)] of sockets listening (TCP) or bound and
    unconnected (UDP) in this thread's network namespace, IPv4 and IPv6."""
    found = []
    for family, suffix in ((socket.AF_INET, ""), (socket.AF_INET6, "6")):
        try:
            with open(os.path.join(proc_net, protocol + suffix)) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state != (_TCP_LISTEN if protocol == "tcp" else _UDP_UNCONNECTED):
                        continue
                    addr_hex, port_hex = local.split(":")
                    found.append((_decode_address(family, addr_hex), int(port_hex, 16), inode))
        except FileNotFoundError:
            continue
    return found


def socket_covers(addr, host_ip):
    """Whether a socket bound to ADDR receives what the DNAT of a port
    published on HOST_IP would take away (0.0.0.0: every IPv4 address)."""
    if addr in ("0.0.0.0", "::"):
        return True          # every address (IPv6 "::" is dual-stack by default)
    if addr.startswith("::ffff:") and "." in addr:
        addr = addr[len("::ffff:"):]
    if ":" in addr:
        return False         # an IPv6 address: IPv4 DNAT never touches it
    return host_ip in ("0.0.0.0", addr)


def _process_of(inode):
    """'name (pid N)' of a process holding socket INODE, or None."""
    target = "socket:[%s]" % inode
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = "/proc/%s/fd" % pid
        try:
            for fd in os.listdir(fd_dir):
                if os.readlink(os.path.join(fd_dir, fd)) == target:
                    with open("/proc/%s/comm" % pid) as handle:
                        return "%s (pid %s)" % (handle.read().strip(), pid)
        except OSError:
            continue
    return None


def host_holder(spec, sockets, name_process=None):
    """A description of the socket among SOCKETS (``host_sockets``) that
    holds SPEC's host port, or None. NAME_PROCESS(inode) names its owner."""
    for addr, port, inode in sockets:
        if port == spec.host_port and socket_covers(addr, spec.host_ip):
            who = name_process(inode) if name_process else None
            return "%s listening on %s:%d/%s" % (who or "a process on the host", addr, port, spec.protocol)
    return None


def check_conflicts(store, vm_id, ports):
    """Refuse ports that another VM publishes or a host socket holds. Runs
    under the state lock and before any change, so a refusal changes nothing."""
    if not ports:
        return
    mine = set()
    if store.exists(vm_id):
        mine = set(store.load(vm_id).get("published_ports", []))
    others = [(r["id"], text, port_spec("published_ports", text))
              for r in store.all() if r["id"] != vm_id for text in r.get("published_ports", [])]
    sockets = {}
    for spec in ports:
        for other_id, text, other in others:
            if ports_collide(spec, other):
                raise ConflictError("host port %d/%s is already published by VM %r (as %s); choose another "
                                    "host port, or remove it there first"
                                    % (spec.host_port, spec.protocol, other_id, text))
        if port_to_text(spec) in mine:
            continue    # ours already: our DNAT, not a listener, holds it
        if spec.protocol not in sockets:
            sockets[spec.protocol] = host_sockets(spec.protocol)
        holder = host_holder(spec, sockets[spec.protocol], _process_of)
        if holder:
            raise ConflictError("host port %d/%s is held by %s; choose another host port"
                                % (spec.host_port, spec.protocol, holder))


# --------------------------------------------------------------------------
# host-side settings and clean-up
# --------------------------------------------------------------------------
def host_side_interface(record):
    """The host namespace's interface towards the VM: its veth, or the TAP
    itself with --no-netns."""
    slot = record["slot"]
    return A.veth_names(slot)[0] if record["netns"] else A.tap_name(slot)


def reachable_on_loopback(ports):
    """Whether one of PORTS is published on a loopback address (or on all)."""
    return any(p.host_ip == "0.0.0.0" or ipaddress.IPv4Address(p.host_ip) in LOOPBACK for p in ports)


def converge_loopback(record, check_mode=False, fresh=False):
    """route_localnet on the host-side interface: 1 while the VM publishes a
    port reachable on 127.0.0.1, else 0 (the kernel default). Runs in the
    host namespace, after the links exist. FRESH: the interface was made by
    this create and has the default, so 0 needs no look (a /proc/sys lookup
    costs ~1 ms on a host with a thousand namespaces)."""
    key = "net.ipv4.conf.%s.route_localnet" % host_side_interface(record)
    wanted = 1 if reachable_on_loopback(_specs(record)) else 0
    if fresh and not wanted:
        return []
    change = sysctl.ensure(key, wanted, check_mode)
    if change is None and check_mode and wanted and not os.path.exists(sysctl.path(key)):
        return ["sysctl %s=1" % key]        # no such interface yet: a VM still to be made
    return [change] if change else []


def _specs(record):
    return [port_spec("published_ports", t) for t in record.get("published_ports", [])]


def tracked_through(guest_ip, spec, entries):
    """The conntrack entries (pyroute2 ConntrackEntry) that run through the
    published port SPEC to GUEST_IP: DNATed from SPEC's host port to the
    guest's port."""
    proto = socket.IPPROTO_TCP if spec.protocol == "tcp" else socket.IPPROTO_UDP
    found = []
    for entry in entries:
        orig, reply = entry.tuple_orig, entry.tuple_reply
        if orig is None or reply is None or orig.proto != proto:
            continue
        if orig.dport != spec.host_port or reply.saddr != guest_ip or reply.sport != spec.guest_port:
            continue
        if spec.host_ip != "0.0.0.0" and orig.daddr != spec.host_ip:
            continue
        found.append(entry)
    return found


def _delete_entries(ct, entries):
    for entry in entries:
        try:
            ct.entry("del", tuple_orig=entry.tuple_orig)
        except Exception:
            pass    # ended meanwhile


def _cut_connections(record, gone, check_mode):
    """Delete the tracked connections through the ports in GONE: in the host
    namespace (where their DNAT is remembered), and, with the VM's own
    namespace, their twins there (where they were accepted as replies). The
    next packet is then judged afresh: from the client it finds no DNAT (the
    host answers with a reset or port unreachable), from the guest it is new
    outbound traffic that the VM's policy decides on."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
    from . import netns as ns
    guest = A.guest_ip(record["slot"])
    changes, doomed = [], []
    ct = Conntrack()
    try:
        entries = list(ct.dump_entries(tuple_reply=NFCTAttrTuple(saddr=guest)))
        for spec in gone:
            through = tracked_through(guest, spec, entries)
            if through:
                changes.append("cut %d connection(s) through the unpublished port %s"
                               % (len(through), port_to_text(spec)))
                doomed += through
        if doomed and not check_mode:
            _delete_entries(ct, doomed)
    finally:
        ct.close()
    if not doomed or check_mode or record["netns"] is None or not ns.exists(record["netns"]):
        return changes
    # As the VM's namespace saw them: from the host entry's reply destination
    # (the client, or the host's masqueraded address) to the guest's port.
    twins = {(e.tuple_orig.proto, e.tuple_reply.daddr, e.tuple_reply.dport, e.tuple_reply.sport) for e in doomed}
    with ns.entered(record["netns"]):
        ct = Conntrack()
        try:
            inner = [e for e in ct.dump_entries(tuple_orig=NFCTAttrTuple(daddr=guest))
                     if (e.tuple_orig.proto, e.tuple_orig.saddr, e.tuple_orig.sport, e.tuple_orig.dport) in twins]
            _delete_entries(ct, inner)
        finally:
            ct.close()
    return changes


def _drop_pub_chain(record, check_mode):
    from . import iptables_apply
    chain = fp.chain_name(record["id"], "pub")
    table = iptables_apply.open_table("nat")
    try:
        if not table.is_chain(chain):
            return []
        if not check_mode:
            table.flush_entries(chain)
            table.delete_chain(chain)
            table.commit()
    finally:
        table.close()
    return ["nat: delete chain %s (no port published)" % chain]


def after_ports_change(before, after, check_mode=False):
    """After the rules were converged to AFTER's ports: cut the connections
    still tracked through ports that BEFORE had and AFTER has not (else they
    would keep flowing without a rule), and delete the emptied ``pub`` chain.
    Runs in the host namespace, where the DNAT happens."""
    old, new = _specs(before), _specs(after)
    gone = [p for p in old if p not in new]
    changes = []
    if gone:
        changes += _cut_connections(after, gone, check_mode)
    if old and not new:
        changes += _drop_pub_chain(after, check_mode)
    return changes


# --------------------------------------------------------------------------
# vmsan port add|remove|list
# --------------------------------------------------------------------------
def _names_guest_port(text):
    """Whether TEXT (one port mapping) says its guest port explicitly."""
    parts = text.partition("/")[0].split(":")
    if len(parts) >= 2 and "." in parts[0]:
        parts = parts[1:]
    return len(parts) == 2


def with_added(vm_id, current, given):
    """CURRENT plus GIVEN (PortSpecs). A port already published identically is
    kept as it is; one whose host side is published with another mapping is
    refused (remove it first), naming both."""
    wanted = list(current)
    for spec in given:
        if spec in wanted:
            continue
        for port in wanted:
            if ports_collide(port, spec):
                raise ConflictError("VM %s already publishes host port %d/%s as %s; remove that first to publish %s"
                                    % (vm_id, spec.host_port, spec.protocol, port_to_text(port), port_to_text(spec)))
        wanted.append(spec)
    return wanted


def without(vm_id, current, texts):
    """CURRENT without the ports TEXTS name. A port is named by its host side
    (host address, host port, protocol); a guest port, if given, must match."""
    wanted = list(current)
    for text in texts:
        spec = port_spec("published_ports", text)
        key = (spec.host_ip, spec.host_port, spec.protocol)
        match = [p for p in wanted if (p.host_ip, p.host_port, p.protocol) == key]
        if not match or (_names_guest_port(text) and match[0].guest_port != spec.guest_port):
            raise InputError("published_ports", "VM %s does not publish %s" % (vm_id, text),
                             "one of: %s" % (", ".join(port_to_text(p) for p in current) or "(none)"))
        wanted.remove(match[0])
    return wanted


class PortCommands(object):
    """``vmsan port add|remove|list VM ...``: ports of a running VM, its other
    ports untouched."""

    def __init__(self, manager):
        self.manager = manager

    def run(self, args, out):
        if args.port_command == "list":
            vm = self.manager.get(args.vm)
            lines = ["%s -> guest port %d/%s%s" % (port_to_text(p), p.guest_port, p.protocol,
                                                   "" if p.host_ip == "0.0.0.0" else " (only on %s)" % p.host_ip)
                     for p in port_list("published_ports", vm["published_ports"])]
            out(args, vm["published_ports"], "\n".join(lines) or "(no published ports)")
            return 0
        given = port_list("published_ports", args.ports)     # syntax and duplicates, before anything
        texts = as_list("published_ports", args.ports)

        def edit(current):
            if args.port_command == "add":
                return with_added(args.vm, current, given)
            return without(args.vm, current, texts)

        # the edit runs under the state lock, on the VM's ports as they are then
        result = self.manager.update(args.vm, ports=edit)
        out(args, result.as_dict(), "\n".join("changed: %s" % c for c in result.changes) or "no change")
        return 0
