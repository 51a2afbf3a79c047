"""Published ports as data: which host socket or tracked connection a
port concerns, and the one set of rules for editing a VM's port list (both
faces: ``vmsan port add|remove`` and ``vmsan_port``). Pure."""

import ipaddress
import socket

from ..model import addressing as A
from ..model.errors import ConflictError, InputError
from ..model.records import ANY_ADDRESS


LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


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


def host_holder(spec, sockets, name_process=None):
    """A description of the socket among SOCKETS (``host_sockets``) that
    holds SPEC's host port, or None. NAME_PROCESS(inode) names its owner."""
    for addr, port, inode in sockets:
        if port == spec.host_port and socket_covers(addr, spec.host_ip):
            who = name_process(inode) if name_process else None
            return "%s listening on %s:%d/%s" % (who or "a process on the host", addr, port, spec.protocol)
    return None


def host_side_interface(record):
    """The host namespace's interface towards the VM: its veth, or the TAP
    itself with --no-netns."""
    slot = record.slot
    return A.veth_names(slot)[0] if record.netns else A.tap_name(slot)


def reachable_on_loopback(ports):
    """Whether one of PORTS is published on a loopback address (or on all)."""
    return any(p.host_ip == ANY_ADDRESS or ipaddress.IPv4Address(p.host_ip) in LOOPBACK for p in ports)


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
        if spec.host_ip != ANY_ADDRESS and orig.daddr != spec.host_ip:
            continue
        found.append(entry)
    return found


def with_added(vm_id, current, given, replace=False):
    """CURRENT plus GIVEN (PortSpecs). A port already published identically is
    kept as it is. One whose host side collides with a port of the VM (same
    protocol and host port, overlapping host address) is refused, naming both
    (``vmsan port add``: remove it first), or with REPLACE takes that port's
    place, so the order of the others does not change (``vmsan_port``: a
    task that gives a new guest port)."""
    wanted = list(current)
    for spec in given:
        if spec in wanted:
            continue
        clashing = [i for i, port in enumerate(wanted) if port.collides(spec)]
        if clashing and not replace:
            port = wanted[clashing[0]]
            raise ConflictError("VM %s already publishes host port %d/%s as %s; remove that first to publish %s"
                                % (vm_id, spec.host_port, spec.protocol, port.text, spec.text), "published_ports")
        if clashing:
            wanted[clashing[0]] = spec
            wanted = [p for i, p in enumerate(wanted) if i not in clashing[1:]]
        else:
            wanted.append(spec)
    return wanted


def without(vm_id, current, selectors, missing_ok=False):
    """CURRENT without the ports SELECTORS name: (PortSpec, whether its
    guest port was given, the text the user gave). A port is named by its host side (host address,
    host port, protocol); a guest port, if given, must match. One the VM does
    not publish is an error naming what it does publish, unless MISSING_OK
    (``vmsan_port state=absent``: it is already so)."""
    wanted = list(current)
    for spec, guest_named, text in selectors:
        match = [p for p in wanted if p.host_side == spec.host_side]
        if match and guest_named and match[0].guest_port != spec.guest_port:
            match = []
        if not match:
            if missing_ok:
                continue
            raise InputError("published_ports", "VM %s does not publish %s" % (vm_id, text),
                             "one of: %s" % (", ".join(p.text for p in current) or "(none)"))
        wanted.remove(match[0])
    return wanted
