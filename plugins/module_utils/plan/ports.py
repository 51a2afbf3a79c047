"""Published ports as data: which host socket or tracked connection a
port concerns, and the edits of a VM's port list. Pure."""

import ipaddress
import socket

from ..model import addressing as A
from ..model.errors import ConflictError, InputError
from ..model.inputs import port_spec, port_to_text, ports_collide


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
    slot = record["slot"]
    return A.veth_names(slot)[0] if record["netns"] else A.tap_name(slot)


def reachable_on_loopback(ports):
    """Whether one of PORTS is published on a loopback address (or on all)."""
    return any(p.host_ip == "0.0.0.0" or ipaddress.IPv4Address(p.host_ip) in LOOPBACK for p in ports)


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
