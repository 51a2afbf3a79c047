"""Sockets of the host namespace: who listens on a port (from
/proc/thread-self/net) and which process holds a socket."""

import os
import socket

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


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


def process_of(inode):
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
