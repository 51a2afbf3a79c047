"""Published ports: conflicts are refused before anything changes."""

import socket

from .errors import ConflictError
from .inputs import port_spec, ports_collide

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


def _host_listeners(protocol):
    """{(address, port)} of sockets listening (TCP) or bound (UDP) in this
    thread's network namespace, IPv4 and IPv6."""
    found = set()
    for family, suffix in ((socket.AF_INET, ""), (socket.AF_INET6, "6")):
        try:
            with open("/proc/thread-self/net/%s%s" % (protocol, suffix)) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if protocol == "tcp" and state != _TCP_LISTEN:
                        continue
                    if protocol == "udp" and state != _UDP_UNCONNECTED:
                        continue
                    addr_hex, port_hex = local.split(":")
                    if family == socket.AF_INET:
                        addr = socket.inet_ntop(family, bytes.fromhex(addr_hex)[::-1])
                    else:
                        raw = bytes.fromhex(addr_hex)
                        addr = socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                    found.add((addr, int(port_hex, 16)))
        except FileNotFoundError:
            continue
    return found


def host_holder(spec):
    """A description of the host socket that holds SPEC's host port, or None."""
    for addr, port in _host_listeners(spec.protocol):
        if port != spec.host_port:
            continue
        if addr in ("0.0.0.0", "::") or spec.host_ip in ("0.0.0.0", addr) or addr.endswith(":" + spec.host_ip):
            return "a process on the host listening on %s:%d/%s" % (addr, port, spec.protocol)
    return None


def check_conflicts(store, vm_id, ports):
    """Refuse ports that another VM publishes or a host process holds."""
    if not ports:
        return
    mine = set()
    if store.exists(vm_id):
        mine = set(store.load(vm_id).get("published_ports", []))
    others = [r for r in store.all() if r["id"] != vm_id]
    for spec in ports:
        for other in others:
            for text in other.get("published_ports", []):
                if ports_collide(spec, port_spec("published_ports", text)):
                    raise ConflictError("published_ports: host port %d/%s is already published by VM %r"
                                        % (spec.host_port, spec.protocol, other["id"]))
        from .inputs import port_to_text
        if port_to_text(spec) in mine:
            continue    # ours already: our DNAT, not a listener, holds it
        holder = host_holder(spec)
        if holder:
            raise ConflictError("published_ports: host port %d/%s is held by %s"
                                % (spec.host_port, spec.protocol, holder))


class PortCommands(object):
    """``vmsan port add|remove|list VM ...``: one port at a time on a running
    VM, the VM's other ports untouched."""

    def __init__(self, manager):
        self.manager = manager

    def run(self, args, out):
        from .inputs import port_list, port_to_text
        vm = self.manager.get(args.vm)
        current = list(port_list("published_ports", vm["published_ports"]))
        if args.port_command == "list":
            out(args, vm["published_ports"], "\n".join(vm["published_ports"]) or "(none)")
            return 0
        given = port_list("published_ports", args.ports)
        if args.port_command == "add":
            wanted = current + [p for p in given if p not in current]
        else:
            missing = [port_to_text(p) for p in given if p not in current]
            if missing:
                from .errors import InputError
                raise InputError("published_ports", "VM %s does not publish %s" % (args.vm, ", ".join(missing)),
                                 "one of: %s" % (", ".join(vm["published_ports"]) or "(none)"))
            wanted = [p for p in current if p not in given]
        port_list("published_ports", [port_to_text(p) for p in wanted])    # duplicates check
        result = self.manager.update(args.vm, ports=wanted)
        out(args, result.as_dict(), "\n".join("changed: %s" % c for c in result.changes) or "no change")
        return 0
