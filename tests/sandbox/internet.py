"""The sandbox's "internet": a namespace behind the host's uplink with web,
echo, stream, DoT/DoH-looking and DNS servers on documentation addresses."""

import time

from . import services
from . import topology as t
from .dns import AuthoritativeDns, DnsServer, rogue_answer
from .endpoint import Endpoint
from .servers import TcpServer, UdpServer


class Internet(Endpoint):
    """Servers (all threads of the test process, stopped on cleanup):

    * TCP 9000 ``hello <local-ip> <peer-ip>`` then close; UDP 9000 answers
      each datagram with the same kind of line (IPv4 and IPv6);
    * TCP 80 HTTP/1.0 ``vmsan-ok <local-ip>``;
    * TCP 9001 a line every 20 ms until the client closes;
    * TCP 853 ``dot ...`` and TCP 443 ``doh ...`` on connect;
    * DNS: ``self.dns`` (authoritative, mutable) on 203.0.113.53 and
      ``self.rogue_dns`` (answers every A with 192.0.2.66) on 192.0.2.53.

    ``udp_received()`` / ``tcp_connections()`` say who reached them.
    """

    label = "hello"
    dns_server = t.AUTH_DNS

    def configure(self):
        """Addresses of the internet side (the uplink itself is made by the sandbox)."""
        lines = [f"addr add {ip}/32 dev lo" for ip in t.INTERNET_IPS]
        lines += [
            f"addr add {t.INET_IP6}/128 dev lo",
            f"addr add {t.INET_UPLINK_IP}/{t.UPLINK_PREFIXLEN} dev {t.INET_IFNAME}",
            # nodad: usable at once, no 1-2 s of duplicate address detection
            f"addr add {t.INET_UPLINK_IP6}/{t.UPLINK_PREFIXLEN6} dev {t.INET_IFNAME} nodad",
            f"link set {t.INET_IFNAME} up",
        ]
        self.ip(*lines)

    def start_servers(self):
        self.records = services.Recorder()
        rec = self.records
        every_v4 = [*t.INTERNET_IPS, t.INET_UPLINK_IP]
        every_v6 = [t.INET_IP6, t.INET_UPLINK_IP6]

        def tcp(port, handler, name):
            binds = [("0.0.0.0", port), ("::", port)]  # every address, v4 and v6
            self._serve(TcpServer(self.name, binds, handler, name=name))

        tcp(t.GREETING_PORT, services.greeting("hello", rec), "inet-hello")
        tcp(t.HTTP_PORT, services.http(rec), "inet-http")
        tcp(t.STREAM_PORT, services.stream(rec), "inet-stream")
        tcp(t.DOT_PORT, services.greeting("dot", rec), "inet-dot")
        tcp(t.DOH_PORT, services.greeting("doh", rec), "inet-doh")
        # One UDP socket per address, so that replies leave from the address
        # that was asked (NAT on the host matches them only then).
        udp_binds = [(ip, t.GREETING_PORT) for ip in every_v4 + every_v6]
        self._serve(UdpServer(self.name, udp_binds, services.echo_line("hello", rec), "inet-udp"))

        self.dns = AuthoritativeDns(self.name, t.AUTH_DNS)
        self.track(self.dns.close)
        self.rogue_dns = DnsServer(self.name, t.ROGUE_DNS, rogue_answer)
        self.track(self.rogue_dns.close)

    def _serve(self, server):
        self.track(server.close)
        server.start()

    # -- what reached the internet --------------------------------------------

    def udp_received(self):
        """Datagrams that reached UDP 9000 (any address), oldest first."""
        return self.records.items("udp")

    def tcp_connections(self):
        """Connections accepted by the TCP servers (9000, 80, 9001, 853, 443)."""
        return self.records.items("tcp")

    def clear_records(self):
        self.records.clear()
        self.dns.clear()
        self.rogue_dns.clear()

    # -- iperf3 -------------------------------------------------------------

    def iperf3_server(self, port=t.IPERF_PORT, timeout=5.0):
        """Start ``iperf3 -s`` here (stopped on cleanup) and wait until it listens."""
        proc = self.spawn(["iperf3", "-s", "-p", str(port)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listening = self.run(["ss", "-Hltn", f"sport = :{port}"]).stdout.strip()
            if listening:
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"iperf3 server on port {port} did not start")
