"""Copies of the IPv6 packets a guest sends, for the event log. IPv6 is off
on a VM's TAP: the kernel drops every IPv6 packet on arrival, before
netfilter could copy it (so no NFLOG rule can), and counts it
(``link_counters.ipv6_discards``). A packet socket bound to the TAP and to
the IPv6 ethertype gets a copy of each such frame: the kernel hands it only
that device's IPv6 frames (IPv4 traffic never meets it), and when its small
receive buffer is full it drops the copy before making it, so a guest's flood
costs the reader nothing it does not read.

Open it in the namespace that holds the TAP; close it when the VM goes (an
open socket keeps a removed namespace alive).
"""

import errno
import socket

from ..model.errors import KernelError

ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
RCVBUF = 64 << 10
SNAP = 96


class Ipv6Copies(object):
    """IPv6 packets arriving on IFNAME (in this thread's namespace)."""

    def __init__(self, ifname, rcvbuf=RCVBUF):
        self.ifname = ifname
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
        except OSError as exc:
            raise KernelError(exc.errno, "open a packet socket for %s" % ifname)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass
            self.sock.bind((ifname, ETH_P_IPV6))
            self.sock.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise KernelError(exc.errno, "bind a packet socket to %s" % ifname)

    def fileno(self):
        return self.sock.fileno()

    def receive(self, limit=32):
        """Up to LIMIT IPv6 packets (their first SNAP bytes) waiting."""
        out = []
        for _count in range(limit):
            try:
                out.append(self.sock.recv(SNAP))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                if exc.errno == errno.ENETDOWN:
                    break
                raise KernelError(exc.errno, "read IPv6 copies of %s" % self.ifname)
        return out

    def close(self):
        self.sock.close()
