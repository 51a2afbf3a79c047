"""The internet's DNS: an authoritative server whose records a test can change
while it runs, and a "rogue" server that tells a test it was reached.

Both answer over UDP and TCP (RFC 1035 two-byte length prefix) and keep a log
of the queries they saw, so a test can prove that a query did or did not get
through to them.
"""

import socket
import struct
import threading
import time
from dataclasses import dataclass

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord

from .servers import TcpServer, UdpServer

DEFAULT_TTL = 60

# name -> list of (rtype, value[, ttl]). Documented in docs/testing.md.
DEFAULT_RECORDS = {
    "example.test": [("A", "203.0.113.200")],
    "a.example.test": [("A", "203.0.113.10")],
    "b.example.test": [("A", "203.0.113.11")],
    "a.b.example.test": [("A", "203.0.113.10")],
    "multi.example.test": [("A", "203.0.113.10"), ("A", "203.0.113.11")],
    "alias.example.test": [("CNAME", "a.example.test")],
    "chain.example.test": [("CNAME", "alias.example.test")],
    "v6.example.test": [("AAAA", "2001:db8::1")],
    "dual.example.test": [("A", "203.0.113.11"), ("AAAA", "2001:db8::1")],
    "short.example.test": [("A", "203.0.113.11", 2)],
    "rebind.example.test": [("A", "127.0.0.1"), ("A", "203.0.113.10")],
    "badexample.test": [("A", "192.0.2.10")],
    "api.example.com": [("A", "203.0.113.10")],
    "www.example.com": [("A", "203.0.113.11")],
    "example.com": [("A", "203.0.113.200")],
    "github.com": [("A", "203.0.113.200")],
    "api.github.com": [("A", "203.0.113.10")],
    "raw.api.github.com": [("A", "203.0.113.11")],
}

ROGUE_ANSWER = "192.0.2.66"

_RDATA = {"A": A, "AAAA": AAAA, "CNAME": CNAME}


def _key(name):
    return str(name).rstrip(".").lower()


@dataclass(frozen=True)
class Query:
    src_ip: str
    src_port: int
    name: str
    qtype: str
    proto: str
    time: float


class Zone:
    """Records by name; thread safe, since servers read while tests write."""

    def __init__(self, records=None):
        self._lock = threading.Lock()
        self._records = {}
        self.reset(records)

    def reset(self, records=None):
        """Back to ``records`` (default: DEFAULT_RECORDS)."""
        with self._lock:
            self._records = {}
        for name, entries in (DEFAULT_RECORDS if records is None else records).items():
            for entry in entries:
                rtype, value, *ttl = entry
                self.add(name, rtype, value, ttl=ttl[0] if ttl else DEFAULT_TTL)

    def set(self, name, rtype, values, ttl=DEFAULT_TTL):
        """Replace the ``rtype`` records of ``name`` (a CNAME replaces everything)."""
        rtype = rtype.upper()
        if rtype not in _RDATA:
            raise ValueError(f"unsupported record type {rtype!r} (A, AAAA, CNAME)")
        if isinstance(values, str):
            values = [values]
        with self._lock:
            kept = [
                r
                for r in self._records.get(_key(name), [])
                if rtype != "CNAME" and r[0] != rtype and r[0] != "CNAME"
            ]
            self._records[_key(name)] = kept + [(rtype, v, ttl) for v in values]

    def add(self, name, rtype, value, ttl=DEFAULT_TTL):
        """Add one record next to those already there."""
        rtype = rtype.upper()
        if rtype not in _RDATA:
            raise ValueError(f"unsupported record type {rtype!r} (A, AAAA, CNAME)")
        with self._lock:
            self._records.setdefault(_key(name), []).append((rtype, value, ttl))

    def remove(self, name, rtype=None):
        """Forget ``name`` (or only its ``rtype`` records); it then gets NXDOMAIN."""
        with self._lock:
            if rtype is None:
                self._records.pop(_key(name), None)
            else:
                left = [r for r in self._records.get(_key(name), []) if r[0] != rtype.upper()]
                if left:
                    self._records[_key(name)] = left
                else:
                    self._records.pop(_key(name), None)

    def records(self, name):
        with self._lock:
            return list(self._records.get(_key(name), []))

    def answer(self, request):
        """Build the authoritative reply: follows CNAMEs inside the zone."""
        reply = request.reply(aa=1, ra=0)
        qname = request.q.qname
        qtype = QTYPE[request.q.qtype]
        name = qname
        for _ in range(8):  # bounded CNAME chain
            records = self.records(name)
            if not records:
                if name == qname:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            cnames = [r for r in records if r[0] == "CNAME"]
            if cnames and qtype != "CNAME":
                target = cnames[0][1]
                reply.add_answer(RR(name, QTYPE.CNAME, ttl=cnames[0][2], rdata=CNAME(target)))
                name = target
                continue
            for rtype, value, ttl in records:
                if rtype == qtype:
                    rdata = _RDATA[rtype](value)
                    reply.add_answer(RR(name, getattr(QTYPE, rtype), ttl=ttl, rdata=rdata))
            return reply
        return reply


def rogue_answer(request):
    """Every A query gets ROGUE_ANSWER; anything else an empty NOERROR."""
    reply = request.reply(aa=1, ra=0)
    if QTYPE[request.q.qtype] == "A":
        reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=DEFAULT_TTL, rdata=A(ROGUE_ANSWER)))
    return reply


class DnsServer:
    """``answer(DNSRecord) -> DNSRecord`` served on ``ip``:``port``, UDP and TCP."""

    def __init__(self, ns_name, ip, answer, port=53):
        self.ip = ip
        self._answer = answer
        self._lock = threading.Lock()
        self._queries = []
        self._udp = UdpServer(ns_name, [(ip, port)], self._on_datagram, name=f"dns-udp-{ip}")
        try:
            self._tcp = TcpServer(ns_name, [(ip, port)], self._on_stream, name=f"dns-tcp-{ip}")
        except BaseException:
            self._udp.close()
            raise
        self._udp.start()
        self._tcp.start()

    def queries(self):
        """Queries seen so far (oldest first)."""
        with self._lock:
            return list(self._queries)

    def clear(self):
        with self._lock:
            self._queries.clear()

    def close(self):
        self._udp.close()
        self._tcp.close()

    def _respond(self, wire, peer, proto):
        try:
            request = DNSRecord.parse(wire)
        except Exception:  # malformed query: a real server drops it too
            return None
        with self._lock:
            self._queries.append(
                Query(
                    peer.peer_ip,
                    peer.peer_port,
                    str(request.q.qname).rstrip("."),
                    QTYPE[request.q.qtype],
                    proto,
                    time.time(),
                )
            )
        return self._answer(request).pack()

    def _on_datagram(self, data, peer):
        return self._respond(data, peer, "udp")

    def _on_stream(self, conn, peer, stopping):
        while not stopping.is_set():
            head = _recv_exact(conn, 2)
            if head is None:
                return
            wire = _recv_exact(conn, struct.unpack("!H", head)[0])
            if wire is None:
                return
            reply = self._respond(wire, peer, "tcp")
            if reply is None:
                return
            conn.sendall(struct.pack("!H", len(reply)) + reply)


def _recv_exact(conn, size):
    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except socket.timeout:
            return None
        if not chunk:
            return None
        data += chunk
    return data


class AuthoritativeDns(DnsServer):
    """The zone's server; ``set``/``add``/``remove``/``reset`` change its records live."""

    def __init__(self, ns_name, ip, zone=None):
        self.zone = zone or Zone()
        super().__init__(ns_name, ip, self.zone.answer)

    def set(self, name, rtype, values, ttl=DEFAULT_TTL):
        self.zone.set(name, rtype, values, ttl)

    def add(self, name, rtype, value, ttl=DEFAULT_TTL):
        self.zone.add(name, rtype, value, ttl)

    def remove(self, name, rtype=None):
        self.zone.remove(name, rtype)

    def reset(self):
        self.zone.reset()
