"""Reachability probes that run inside a namespace: TCP, UDP, ICMP, HTTP, DNS,
a long-lived stream and iperf3.

Every probe is bounded by a timeout (about a second by default) and says
"did not work" as None/False instead of raising, because half of the tests
assert that something is blocked. A TCP connection that delivers nothing is
not success: a probe returns what the server sent, or None.
"""

import ipaddress
import json
import random
import socket
import struct
import threading
import time

from dnslib import QTYPE, RCODE, DNSRecord

from .packets import icmp_echo

DEFAULT_TIMEOUT = 1.0


def _family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _read_until_eof(sock, deadline, limit=1 << 20):
    """Read what the peer sends until it closes, the deadline passes or ``limit``."""
    data = b""
    while len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def at_once(*calls):
    """Run probes together, one thread each; their results, in the order given.

    Each call takes no arguments (``lambda: guest.tcp(ip, 7001)``). A probe
    that must fail waits out its whole timeout, so a test that proves twenty
    things closed waits one timeout instead of twenty. Probes enter their
    namespace per thread (``entered``), so they do not disturb one another.
    """
    results = [None] * len(calls)
    errors = []

    def run(index, call):
        try:
            results[index] = call()
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class Stream:
    """A TCP connection to a server that keeps sending (the internet's port
    9001); tells whether bytes are still arriving."""

    def __init__(self, sock):
        self._sock = sock
        self.connected = sock is not None
        self.bytes = 0
        self.last_data = None  # monotonic time of the last byte
        self.closed_by_peer = False
        self._stop = threading.Event()
        self._thread = None
        if sock is not None:
            self._thread = threading.Thread(target=self._read, name="stream", daemon=True)
            self._thread.start()

    def _read(self):
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.closed_by_peer = True  # reset
                return
            if not chunk:
                self.closed_by_peer = True
                return
            self.bytes += len(chunk)
            self.last_data = time.monotonic()

    def is_flowing(self, window=0.3):
        """Wait ``window`` seconds; True if new bytes arrived during it."""
        if not self.connected:
            return False
        before = self.bytes
        time.sleep(window)
        return self.bytes > before

    def wait_stopped(self, timeout=1.0, quiet=0.2):
        """True once no byte arrived for ``quiet`` seconds, within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.last_data or 0.0
            if self.closed_by_peer or time.monotonic() - last >= quiet:
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Probes:
    """Mixin for a namespace endpoint: needs ``entered()``, ``run()``,
    ``track(closer)`` (cleanup registration) and ``dns_server`` (the resolver
    this endpoint would use for names)."""

    dns_server = None

    def tcp(self, ip, port, timeout=DEFAULT_TIMEOUT, send=None):
        """Connect, optionally send ``send``, return what the server sent (str) or None."""
        deadline = time.monotonic() + timeout
        with self.entered():
            sock = socket.socket(_family(ip), socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((ip, port))
            if send:
                sock.sendall(send.encode() if isinstance(send, str) else send)
            data = _read_until_eof(sock, deadline)
        except OSError:
            return None
        finally:
            sock.close()
        return data.decode(errors="replace") if data else None

    def udp(self, ip, port, payload=b"vmsan-probe", timeout=DEFAULT_TIMEOUT):
        """Send one datagram, return the first reply (str) or None."""
        with self.entered():
            sock = socket.socket(_family(ip), socket.SOCK_DGRAM)
        try:
            sock.settimeout(timeout)
            sock.connect((ip, port))  # so an ICMP error surfaces as an exception
            sock.send(payload.encode() if isinstance(payload, str) else payload)
            data = sock.recv(65535)
        except OSError:
            return None
        finally:
            sock.close()
        return data.decode(errors="replace") if data else None

    def ping(self, ip, timeout=DEFAULT_TIMEOUT):
        """One ICMP echo (IPv4); True if the matching reply came back in time."""
        ident, seq = random.getrandbits(16), random.getrandbits(16)
        deadline = time.monotonic() + timeout
        with self.entered():
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            sock.sendto(icmp_echo(ident, seq), (ip, 0))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left)
                packet, src = sock.recvfrom(65535)
                header_len = (packet[0] & 0x0F) * 4
                icmp_type, _, _, r_ident, r_seq = struct.unpack(
                    "!BBHHH", packet[header_len : header_len + 8]
                )
                if icmp_type == 0 and src[0] == ip and (r_ident, r_seq) == (ident, seq):
                    return True
        except OSError:
            return False
        finally:
            sock.close()

    def resolve(self, name, server=None, timeout=DEFAULT_TIMEOUT):
        """First A address of ``name`` from ``server`` (default: this endpoint's resolver)."""
        rcode, addresses, _ = self.dig(name, server or self.dns_server, timeout=timeout)
        return addresses[0] if rcode == "NOERROR" and addresses else None

    def http(self, host_or_ip, port=80, path="/", host_header=None, timeout=DEFAULT_TIMEOUT):
        """HTTP/1.0 GET; returns the body of a response (str) or None.

        A name is resolved first through this endpoint's resolver, as a guest
        would, and sent as the Host header.
        """
        ip = host_or_ip
        if not _is_ip(host_or_ip):
            ip = self.resolve(host_or_ip, timeout=timeout)
            if ip is None:
                return None
            host_header = host_header or host_or_ip
        request = f"GET {path} HTTP/1.0\r\nHost: {host_header or host_or_ip}\r\n\r\n"
        response = self.tcp(ip, port, timeout=timeout, send=request)
        if not response or not response.startswith("HTTP/") or "\r\n\r\n" not in response:
            return None
        return response.split("\r\n\r\n", 1)[1]

    def dig(self, name, server, tcp=False, qtype="A", timeout=DEFAULT_TIMEOUT, port=53):
        """Ask ``server`` for ``name``.

        Returns ``(rcode, values, elapsed_seconds)``: rcode is the DNS rcode
        name (NOERROR, NXDOMAIN, REFUSED, ...), or TIMEOUT, or ERROR:<reason>
        when no answer came; values are the rdata strings of the answer records
        of type ``qtype`` (addresses for A/AAAA), CNAMEs along the way left out.
        """
        query = DNSRecord.question(name, qtype.upper())
        start = time.monotonic()
        with self.entered():
            family = _family(server)
            kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
            sock = socket.socket(family, kind)
        try:
            sock.settimeout(timeout)
            sock.connect((server, port))
            wire = query.pack()
            if tcp:
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                reply = _read_dns_over_tcp(sock, start + timeout)
            else:
                sock.send(wire)
                reply = _read_dns_over_udp(sock, query.header.id, start + timeout)
        except socket.timeout:
            return "TIMEOUT", [], time.monotonic() - start
        except OSError as e:
            return f"ERROR:{e.strerror or e}", [], time.monotonic() - start
        finally:
            sock.close()
        elapsed = time.monotonic() - start
        if reply is None:
            return "TIMEOUT", [], elapsed
        try:
            record = DNSRecord.parse(reply)
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad answer
            return f"ERROR:unparsable reply ({e})", [], elapsed
        wanted = getattr(QTYPE, qtype.upper())
        values = [str(rr.rdata).rstrip(".") for rr in record.rr if rr.rtype == wanted]
        return RCODE[record.header.rcode], values, elapsed

    def stream(self, ip, port=9001, timeout=DEFAULT_TIMEOUT):
        """Open a connection to a streaming server; see :class:`Stream`."""
        with self.entered():
            sock = socket.socket(_family(ip), socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((ip, port))
        except OSError:
            sock.close()
            sock = None
        stream = Stream(sock)
        self.track(stream.close)
        return stream

    def iperf3(self, server_ip, port=5201, seconds=3, reverse=False, extra=()):
        """Run an iperf3 client here; returns the received rate in bit/s.

        ``reverse`` measures server -> this endpoint.
        """
        argv = ["iperf3", "-c", server_ip, "-p", str(port), "-t", str(seconds), "-J"]
        if reverse:
            argv.append("-R")
        result = self.run([*argv, *extra], timeout=seconds + 20)
        report = json.loads(result.stdout or "{}")
        if "error" in report or result.returncode != 0:
            raise RuntimeError(f"iperf3 failed: {report.get('error') or result.stderr}")
        return report["end"]["sum_received"]["bits_per_second"]


def _read_dns_over_udp(sock, query_id, deadline):
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        data = sock.recv(65535)
        if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == query_id:
            return data


def _read_dns_over_tcp(sock, deadline):
    data = b""
    while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        chunk = sock.recv(65535)
        if not chunk:
            return None  # closed before a whole message
        data += chunk
    return data[2 : 2 + struct.unpack("!H", data[:2])[0]]
