"""A guest: a namespace attached to a VM's TAP through the relay (the VMM's
stand-in), configured as ``vmsan create`` says the guest kernel would be."""

import contextlib
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

from . import procs, topology
from .endpoint import Endpoint
from .netns import Namespace, add_netns
from .packets import ETH_P_IP, ETH_P_IPV6, ethernet, udp_ipv4, udp_ipv6

RELAY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.py")
ARP_RETRANS_MS = 100
RELAY_READY_TIMEOUT = 10.0
GUEST_IP6 = "2001:db8:ffff::2"  # source of send_ipv6(): the guest has no IPv6 route


class RelayError(RuntimeError):
    pass


class Guest(Endpoint):
    """The guest side of one VM. ``vm`` is the dict ``vmsan create --json`` prints.

    Probes (``tcp``, ``udp``, ``ping``, ``http``, ``dig``, ``stream``, ...) run
    from the guest's namespace; names resolve through the VM's gateway, as the
    guest kernel's ``ip=`` boot argument says.
    """

    label = "guest"

    def __init__(self, name, vm, host_ns_path, cleanups):
        self._stack = contextlib.ExitStack()
        super().__init__(name, self._stack)
        cleanups.callback(self._stack.close)
        self.vm = dict(vm)
        self.id = vm.get("id")
        self.slot = vm.get("slot")
        self.tap = vm["tap"]
        self.guest_ip = vm["guest_ip"]
        self.gateway = vm["host_ip"]
        self.mac = vm["mac"]
        self.dns_server = vm["host_ip"]
        netns = vm.get("netns")
        self.vm_netns_path = f"/run/netns/{netns}" if netns else host_ns_path
        self.relay = None

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def attach(cls, name, vm, host_ns_path, cleanups):
        """Create the guest namespace, start the relay, configure ``eth0``."""
        guest = cls(name, vm, host_ns_path, cleanups)  # checks ``vm`` first
        add_netns(name)
        guest.track(guest.delete)
        try:
            guest._start_relay()
            guest._configure()
        except BaseException:
            guest.remove()
            raise
        return guest

    def remove(self):
        """Stop the guest: servers and probes here, the relay, then the namespace."""
        self._stack.close()

    def _start_relay(self):
        stderr = tempfile.TemporaryFile(mode="w+")
        self.track(stderr.close)
        argv = [
            sys.executable,
            RELAY_PATH,
            "--vm-netns",
            self.vm_netns_path,
            "--vm-tap",
            self.tap,
            "--guest-netns",
            self.path,
            "--guest-ifname",
            topology.GUEST_IFNAME,
        ]
        # The relay enters the namespaces itself (a thread per TAP open).
        self.relay = procs.spawn(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.track(lambda: procs.stop(self.relay))
        ready, _, _ = select.select([self.relay.stdout], [], [], RELAY_READY_TIMEOUT)
        line = self.relay.stdout.readline().strip() if ready else ""
        if line != "ready":
            procs.stop(self.relay)
            stderr.seek(0)
            raise RelayError(
                f"relay for {self.tap} in {self.vm_netns_path} did not start: "
                f"{stderr.read().strip() or 'no ready line'}"
            )

    def _configure(self):
        ifname = topology.GUEST_IFNAME
        self.ip(
            "link set lo up",
            # The first ARP request for the gateway can be lost while the
            # relay's threads are still starting on a loaded machine; the
            # kernel would ask again only after a second, the whole timeout
            # of a probe. A tenth of a second changes nothing else.
            f"ntable change name arp_cache dev {ifname} retrans {ARP_RETRANS_MS}",
            f"link set {ifname} address {self.mac}",
            f"addr add {self.guest_ip}/{topology.GUEST_PREFIXLEN} dev {ifname}",
            f"link set {ifname} up",
            f"route add default via {self.gateway}",
        )

    def relay_alive(self):
        return self.relay is not None and self.relay.poll() is None

    # -- link layer ---------------------------------------------------------

    def gateway_mac(self, timeout=1.0):
        """The gateway's MAC as the guest learns it (ARP), else the TAP's own."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.ip_json("neigh", "show", self.gateway, "dev", topology.GUEST_IFNAME):
                if entry.get("lladdr") and entry.get("state") != ["FAILED"]:
                    return entry["lladdr"]
            if time.monotonic() >= deadline:
                break
            self.udp(self.gateway, 9, timeout=0.05)  # makes the kernel ARP
        # The TAP is the guest's only L2 neighbour, so its MAC is the gateway's.
        return Namespace(self.vm_netns_path).ip_json("link", "show", self.tap)[0]["address"]

    def _send_frame(self, frame):
        with self.entered():
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((topology.GUEST_IFNAME, 0))
            sock.send(frame)
        finally:
            sock.close()

    # -- forged traffic -----------------------------------------------------

    def send_spoofed_udp(self, src_ip, dst_ip, port, payload=b"spoofed", src_port=40000):
        """A UDP/IPv4 packet with a source address that is not the guest's,
        routed by the guest kernel as usual (raw socket, IP_HDRINCL)."""
        payload = payload.encode() if isinstance(payload, str) else payload
        packet = udp_ipv4(src_ip, dst_ip, src_port, port, payload)
        with self.entered():
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            sock.sendto(packet, (dst_ip, 0))
        finally:
            sock.close()

    def send_frame_with_mac(
        self, src_mac, dst_ip, port, payload=b"forged-mac", dst_mac=None, src_port=40001
    ):
        """A valid UDP/IPv4 packet from the guest's IP to the gateway's MAC,
        in a frame whose source MAC is ``src_mac`` (AF_PACKET)."""
        payload = payload.encode() if isinstance(payload, str) else payload
        packet = udp_ipv4(self.guest_ip, dst_ip, src_port, port, payload)
        self._send_frame(ethernet(dst_mac or self.gateway_mac(), src_mac, ETH_P_IP, packet))

    def send_ipv6(
        self,
        dst_ip=topology.INET_IP6,
        port=topology.GREETING_PORT,
        payload=b"ipv6-probe",
        src_ip=GUEST_IP6,
        dst_mac=None,
        src_port=40002,
    ):
        """A UDP/IPv6 packet out of eth0 to the gateway's MAC (AF_PACKET), the
        way a guest with its own IPv6 configuration would send one."""
        payload = payload.encode() if isinstance(payload, str) else payload
        packet = udp_ipv6(src_ip, dst_ip, src_port, port, payload)
        self._send_frame(ethernet(dst_mac or self.gateway_mac(), self.mac, ETH_P_IPV6, packet))
