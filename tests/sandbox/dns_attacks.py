"""Hostile DNS traffic a guest can send, for the resolver's hostile tests
(tests/integration/test_resolver_hostile.py) and bench
(bench/resolver_hostile_bench.py).

* ``malformed(rng)``: one malformed DNS message of each kind the resolver
  must survive, in turn (malformed headers, label and name limits,
  compression loops and bombs, qdcount 0 or > 1, records a query does not
  carry, responses, other opcodes, huge EDNS, garbage, empty datagrams);
  each is malformed by construction, none is a valid query;
* ``tcp_abuse(rng)``: byte streams for one TCP connection each: lying length
  prefixes, 64 KB messages, a message in pieces too slow to finish;
* ``Prober``: a thread asking a valid name from a namespace every few
  milliseconds, recording every answer's time (or its loss);
* the command line (run inside a guest, as a process of its own):
  ``flood`` (UDP as fast as it can), ``tcp-stuck`` (pipelined queries on
  TCP connections that never read), ``tcp-idle`` (many connections held
  open), ``padded`` (one name with a different padding each time),
  ``names`` (many names, a few at a time); and for the bench, processes
  that no other work of the bench slows down: ``probe`` (a watching guest:
  one query at a time, every latency written to a file) and ``upstream``
  (a DNS server of made-up names, ``synthetic_answer``). Each prints one
  JSON line of what it saw when it ends::

      python3 -m sandbox.dns_attacks flood --server 172.16.0.1 --seconds 10

Messages are built with dnslib where dnslib can build them and by hand
where it cannot (dnslib refuses to pack what is malformed).
"""

import argparse
import json
import random
import select
import socket
import struct
import sys
import threading
import time

from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord, EDNSOption

from .guard import entered

HEADER = struct.Struct("!6H")
QUESTION = b"\x01a\x07example\x04test\x00\x00\x01\x00\x01"


def header(rng, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return HEADER.pack(rng.getrandbits(16), flags, qd, an, ns, ar)


def _bomb(rng, records, depth=None):
    """A compression bomb: RECORDS additional records whose owner names are
    a label and a pointer to the name before (record k's name has k labels,
    reading them costs O(records^2) for a decoder without a budget); with
    DEPTH, the chain stops there and every later record points at its
    deepest name (DEPTH labels each, kept under Python's recursion limit)."""
    body = bytearray(header(rng, ar=records) + QUESTION)
    previous = 12
    for record in range(records):
        here = len(body)
        # type 65280 (private use): one byte of opaque rdata, then the next owner name
        body += b"\x01x" + struct.pack("!H", 0xC000 | previous) + b"\xff\x00\x00\x01\x00\x00\x00\x05\x00\x01z"
        if depth is None or record < depth:
            previous = here
    return bytes(body)


def _loop(rng):
    """A name that is a pointer to a pointer back to it."""
    return header(rng) + b"\xc0\x0e\xc0\x0c\x00\x01\x00\x01"


def _kinds():
    """(kind, maker(rng) -> bytes), every maker malformed by construction."""
    return [
        ("empty", lambda rng: b""),
        ("runt", lambda rng: bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 12)))),
        ("garbage", lambda rng: bytes([rng.getrandbits(8) & 0x7F]) + bytes(rng.getrandbits(8) for _ in
                                                                         range(rng.randrange(12, 500)))),
        ("qdcount 0", lambda rng: header(rng, qd=0) + QUESTION),
        ("qdcount 2", lambda rng: header(rng, qd=2) + QUESTION + QUESTION),
        ("qdcount 65535", lambda rng: header(rng, qd=65535) + QUESTION * 20),
        ("answer in a query", lambda rng: header(rng, an=1) + QUESTION
         + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x42"),
        ("authority in a query", lambda rng: header(rng, ns=3) + QUESTION),
        ("additional A record", lambda rng: header(rng, ar=1) + QUESTION
         + b"\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x42"),
        ("two OPT records", lambda rng: header(rng, ar=2) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" * 2),
        ("response", lambda rng: bytes(DNSRecord.question("a.example.test").reply().pack())),
        ("response with answers", lambda rng: header(rng, flags=0x8180, an=1) + QUESTION
         + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x42"),
        ("opcode STATUS", lambda rng: header(rng, flags=0x1100) + QUESTION),
        ("opcode NOTIFY", lambda rng: header(rng, flags=0x2100) + QUESTION),
        ("opcode UPDATE", lambda rng: header(rng, flags=0x2800, an=1, ns=1) + QUESTION),
        ("pointer loop", _loop),
        ("pointer into the header", lambda rng: header(rng) + b"\x01x\xc0\x02\x00\x01\x00\x01"),
        ("compression bomb 4 KB", lambda rng: _bomb(rng, 270)),
        ("compression bomb 500 B", lambda rng: _bomb(rng, 30)),
        ("label of 64", lambda rng: header(rng) + b"\x40" + b"x" * 64 + b"\x00\x00\x01\x00\x01"),
        ("reserved label type", lambda rng: header(rng) + b"\x80" + b"x" * 20 + b"\x00\x00\x01\x00\x01"),
        ("name of 256", lambda rng: header(rng) + (b"\x3f" + b"y" * 63) * 4 + b"\x00\x00\x01\x00\x01"),
        ("name cut short", lambda rng: header(rng) + b"\x3fabc"),
        ("no type and class", lambda rng: header(rng) + b"\x01a\x00"),
        ("trailing bytes", lambda rng: header(rng) + QUESTION + bytes(rng.randrange(1, 200))),
        ("huge EDNS", lambda rng: header(rng, ar=1) + QUESTION + b"\x00\x00\x29\xff\xff\x00\x00\x00\x00\x0f\xa4"
         + struct.pack("!HH", 12, 4000) + bytes(4000)),
        ("EDNS version 3", lambda rng: header(rng, ar=1) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x03\x00\x00\x00\x00"),
        ("OPT lying about its length", lambda rng: header(rng, ar=1) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\xff\xff"),
        ("8 KB of zeros", lambda rng: bytes(8192)),
    ]


KINDS = _kinds()


def malformed(rng):
    """Yields (kind, message) forever, the kinds in turn."""
    while True:
        for kind, make in KINDS:
            yield kind, make(rng)


def tcp_abuse(rng):
    """Yields (kind, bytes for one connection, then hold it open?) forever."""
    big = header(rng) + bytes(rng.getrandbits(8) for _ in range(65535 - 12))
    while True:
        yield "64 KB message", struct.pack("!H", 65535) + big, False
        yield "64 KB compression bomb", struct.pack("!H", 65535) + (_bomb(rng, 4360, depth=800) + bytes(65535))[:65535], False
        yield "prefix longer than the message", struct.pack("!H", 4000) + header(rng) + QUESTION, True
        yield "prefix shorter than the message", struct.pack("!H", 10) + header(rng) + QUESTION * 10, False
        yield "zero-length messages", b"\x00\x00" * 500, False
        yield "malformed messages", b"".join(struct.pack("!H", len(m)) + m for _k, m in
                                             (next(malformed(rng)) for _ in range(20)) if len(m) < 65536), False
        yield "one byte then silence", b"\x00", True


# --------------------------------------------------------------------------
# a well-behaved guest, watching
# --------------------------------------------------------------------------
class Prober(object):
    """Asks SERVER for NAMES in turn (A, UDP; or TCP) from the namespace of
    ENDPOINT, one query at a time, INTERVAL apart. ``results``: [(time
    sent, latency in seconds or None for no answer within TIMEOUT, rcode)]."""

    def __init__(self, endpoint, server, names, interval=0.02, timeout=1.0, tcp=False):
        self.endpoint, self.server, self.names = endpoint, server, list(names)
        self.interval, self.timeout, self.tcp = interval, timeout, tcp
        self.results = []
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 2)
        return self.results

    def _run(self):
        i = 0
        while not self._stop.is_set():
            name = self.names[i % len(self.names)]
            i += 1
            began = time.monotonic()
            rcode, _values, elapsed = self.endpoint.dig(name, self.server, tcp=self.tcp, timeout=self.timeout)
            self.results.append((began, elapsed if rcode in ("NOERROR", "NXDOMAIN") else None, rcode))
            rest = self.interval - (time.monotonic() - began)
            if rest > 0:
                self._stop.wait(rest)

    def between(self, start, end):
        return [r for r in self.results if start <= r[0] < end]


# --------------------------------------------------------------------------
# a forging upstream
# --------------------------------------------------------------------------
class ForgingUpstream(object):
    """An upstream on 203.0.113.55 that answers each query four times: a
    forgery with another id from its own port, a forgery with the right id
    from port 5353, a forgery with the right id and port and the name in
    lower case, then (50 ms later) the real answer."""

    ADDRESS, FORGED, REAL = "203.0.113.55", "192.0.2.66", "203.0.113.10"

    def __init__(self, sandbox):
        sandbox.internet.ip("addr add %s/32 dev lo" % self.ADDRESS)
        with entered(sandbox.internet.name):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ADDRESS, 53))
        self.other.bind((self.ADDRESS, 5353))
        self.sock.settimeout(0.2)
        self.asked = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        sandbox.internet.track(self.close)

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            query = DNSRecord.parse(data)
            self.asked.append((str(query.q.qname), peer))

            def answer(address, qid=query.header.id, name=query.q.qname):
                reply = DNSRecord.question(str(name)).reply()
                reply.header.id = qid
                reply.add_answer(RR(name, QTYPE.A, ttl=60, rdata=A(address)))
                return bytes(reply.pack())
            self.sock.sendto(answer(self.FORGED, qid=query.header.id ^ 0x0101), peer)
            self.other.sendto(answer(self.FORGED), peer)
            lowered = str(query.q.qname).lower()
            if lowered != str(query.q.qname):
                self.sock.sendto(answer(self.FORGED, name=lowered), peer)
            time.sleep(0.05)
            self.sock.sendto(answer(self.REAL), peer)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.other.close()


# --------------------------------------------------------------------------
# attacks, as processes inside a guest
# --------------------------------------------------------------------------
def _query(name, qid, qtype="A", pad=None):
    record = DNSRecord.question(name, qtype)
    record.header.id = qid
    if pad is not None:
        record.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(12, pad)]))
    return bytes(record.pack())


def flood(server, seconds, names, port=53):
    """UDP queries as fast as one socket takes them, replies read when they
    are there: {sent, replies: {rcode: count}}."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((server, port))
    sock.setblocking(False)
    wires = [_query(name, i & 0xFFFF) for i, name in enumerate(names)]
    sent, rcodes = 0, {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for wire in wires[sent % len(wires):sent % len(wires) + 64] or wires[:64]:
            try:
                sock.send(wire)
                sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                break
        _drain(sock, rcodes)
    stop = time.monotonic() + 1.0
    while time.monotonic() < stop:
        select.select([sock], [], [], 0.1)
        _drain(sock, rcodes)
    return {"sent": sent, "replies": rcodes}


def _drain(sock, rcodes):
    for _datagram in range(256):
        try:
            data = sock.recv(65535)
        except (BlockingIOError, ConnectionRefusedError):
            return
        rcode = RCODE.get(data[3] & 0xF, str(data[3] & 0xF)) if len(data) >= 4 else "runt"
        rcodes[rcode] = rcodes.get(rcode, 0) + 1


def tcp_stuck(server, seconds, name, connections=4, queries=400, port=53):
    """CONNECTIONS TCP connections, each sent QUERIES pipelined queries for
    NAME, none ever read: {opened, closed_by_server} after SECONDS."""
    socks = []
    for _conn in range(connections):
        sock = socket.create_connection((server, port), timeout=2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        wire = _query(name, 1)
        try:
            sock.sendall((struct.pack("!H", len(wire)) + wire) * queries)
        except OSError:
            pass
        socks.append(sock)
    time.sleep(seconds)
    closed = sum(1 for sock in socks if _closed_by_peer(sock))
    for sock in socks:
        sock.close()
    return {"opened": len(socks), "closed_by_server": closed}


def _closed_by_peer(sock):
    """A connection the server closed: a write fails (RST), or EOF is read
    once the unread answers are drained (bounded)."""
    sock.setblocking(False)
    try:
        for _chunk in range(1000):
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        pass
    except OSError:
        return True
    try:
        sock.send(b"\x00\x0c" + bytes(12))
        time.sleep(0.05)
        sock.send(b"\x00\x0c" + bytes(12))
    except OSError:
        return True
    return False


def tcp_idle(server, seconds, connections=300, port=53):
    """Open CONNECTIONS TCP connections and hold them: {opened, refused,
    open_after} (how many the server had not closed after SECONDS)."""
    socks, refused = [], 0
    for _conn in range(connections):
        try:
            socks.append(socket.create_connection((server, port), timeout=2))
        except OSError:
            refused += 1
    time.sleep(seconds)
    still = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                continue            # closed by the server
        except BlockingIOError:
            still += 1
        except OSError:
            continue
    for sock in socks:
        sock.close()
    return {"opened": len(socks), "refused": refused, "open_after": still}


def padded(server, count, name, port=53, seconds=None):
    """COUNT queries for NAME (for at most SECONDS), one at a time, each with
    a padding option of another length and content: {answered, rcodes}."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((server, port))
    sock.settimeout(1.0)
    rng = random.Random(7830)
    rcodes = {}
    end = time.monotonic() + seconds if seconds else None
    for i in range(count):
        if end is not None and time.monotonic() >= end:
            count = i
            break
        size = rng.randrange(0, 400)
        wire = _query(name, i & 0xFFFF, pad=bytes(rng.getrandbits(8) for _ in range(size)))
        sock.send(wire)
        try:
            data = sock.recv(65535)
            rcode = RCODE.get(data[3] & 0xF)
        except OSError:
            rcode = "TIMEOUT"
        rcodes[rcode] = rcodes.get(rcode, 0) + 1
    return {"answered": count - rcodes.get("TIMEOUT", 0), "rcodes": rcodes}


def names(server, seconds, template, count, port=53, outstanding=8):
    """Ask TEMPLATE % i for i in range(COUNT), OUTSTANDING at a time, for at
    most SECONDS: {asked, answers: {rcode: n}, addresses: [per answer]}."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((server, port))
    sock.setblocking(False)
    asked, waiting, rcodes, addresses = 0, {}, {}, []
    end = time.monotonic() + seconds
    while time.monotonic() < end and (asked < count or waiting):
        while asked < count and len(waiting) < outstanding:
            qid = asked & 0xFFFF
            sock.send(_query(template % asked, qid))
            waiting[qid] = time.monotonic()
            asked += 1
        select.select([sock], [], [], 0.2)
        for _datagram in range(64):
            try:
                data = sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                break
            reply = DNSRecord.parse(data)
            waiting.pop(reply.header.id, None)
            rcode = RCODE.get(reply.header.rcode)
            rcodes[rcode] = rcodes.get(rcode, 0) + 1
            addresses.append(len([r for r in reply.rr if r.rtype == 1]))
        now = time.monotonic()
        for qid in [q for q, t in waiting.items() if now - t > 2.0]:
            del waiting[qid]
            rcodes["TIMEOUT"] = rcodes.get("TIMEOUT", 0) + 1
    return {"asked": asked, "answers": rcodes, "addresses": addresses}


# --------------------------------------------------------------------------
# processes of their own for the bench: a watcher and an upstream
# --------------------------------------------------------------------------
def probe(server, seconds, template, interval, out, port=53, timeout=1.0):
    """One query at a time for TEMPLATE % i (i counting up; a template
    without %d asks the same name), INTERVAL apart, for SECONDS or until
    SIGTERM; writes [[monotonic time sent, latency or null, rcode]] as JSON
    to OUT (CLOCK_MONOTONIC: the same clock as the bench's)."""
    import signal
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((server, port))
    results, i = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stopping:
        name = template % i if "%" in template else template
        qid = i & 0xFFFF
        i += 1
        began = time.monotonic()
        sock.send(_query(name, qid))
        rcode, latency = "TIMEOUT", None
        while True:
            left = began + timeout - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                break
            try:
                data = sock.recv(65535)
            except OSError:
                break
            if len(data) >= 4 and struct.unpack("!H", data[:2])[0] == qid:
                latency, rcode = time.monotonic() - began, RCODE.get(data[3] & 0xF)
                break
        results.append([began, latency, rcode])
        rest = interval - (time.monotonic() - began)
        if rest > 0:
            time.sleep(rest)
    with open(out, "w") as handle:
        json.dump(results, handle)
    return {"asked": len(results), "lost": sum(1 for r in results if r[1] is None)}


def synthetic_records(name, qtype=1):
    """(rcode, [(address, ttl)]) of the bench upstream's zone, made up per
    name: c.victim.test and a.example.test one address (TTL an hour),
    u<i>.victim.test one address (TTL a minute), m<i>.many.test 64
    addresses (the first 16 of each name its own), big.big.test 59;
    anything else NXDOMAIN; other types than A an empty answer."""
    name = name.rstrip(".").lower()
    if name in ("c.victim.test", "a.example.test"):
        addresses, ttl = ["203.0.113.10"], 3600
    elif name.startswith("u") and name.endswith(".victim.test"):
        addresses, ttl = ["203.0.113.11"], 60
    elif name.startswith("m") and name.endswith(".many.test") and name[1:-10].isdigit():
        base = int(name[1:-10]) * 16
        addresses, ttl = [socket.inet_ntoa(struct.pack("!I", 0xC6120000 | ((base + j) & 0x1FFFF)))
                          for j in range(64)], 600      # 198.18.0.0/15
    elif name == "big.big.test":
        addresses, ttl = ["203.0.113.%d" % i for i in range(1, 60)], 600
    else:
        return RCODE.NXDOMAIN, []
    return (RCODE.NOERROR, [(a, ttl) for a in addresses]) if qtype == QTYPE.A else (RCODE.NOERROR, [])


def synthetic_answer(request):
    """synthetic_records as a dnslib reply to REQUEST."""
    reply = request.reply(aa=1, ra=0)
    rcode, records = synthetic_records(str(request.q.qname), request.q.qtype)
    reply.header.rcode = rcode
    for address, ttl in records:
        reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=ttl, rdata=A(address)))
    return reply


def synthetic_wire(query):
    """The reply of synthetic_records to QUERY (bytes), packed by hand: the
    header, the question as asked, each record's owner a pointer to it (what
    dnslib packs, at a fraction of the cost, so that the fake internet's
    upstream is never what a measurement of the resolver sees)."""
    qid, flags = struct.unpack_from("!HH", query)
    labels, pos = [], 12
    while query[pos]:
        labels.append(query[pos + 1:pos + 1 + query[pos]])
        pos += query[pos] + 1
    qtype = struct.unpack_from("!H", query, pos + 1)[0]
    qend = pos + 5
    rcode, records = synthetic_records(b".".join(labels).decode("ascii", "replace"), qtype)
    body = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(address) for address, ttl in records)
    return struct.pack("!6H", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(records), 0, 0) + query[12:qend] + body


def upstream(address, seconds, port=53):
    """Serve synthetic_answer on ADDRESS over UDP for SECONDS."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    answered = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not select.select([sock], [], [], 0.5)[0]:
            continue
        data, peer = sock.recvfrom(65535)
        try:
            sock.sendto(synthetic_wire(data), peer)
            answered += 1
        except Exception:       # a malformed query: a real server drops it too
            continue
    return {"answered": answered}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("attack", choices=("flood", "tcp-stuck", "tcp-idle", "padded", "names", "probe", "upstream"))
    parser.add_argument("--server", required=True)
    parser.add_argument("--seconds", type=float, help="how long (default 10; padded: until --count is sent)")
    parser.add_argument("--name", default="a.example.test")
    parser.add_argument("--names", type=int, default=1000, help="flood: distinct names; names: how many")
    parser.add_argument("--template", default="n%d.example.test")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.01, help="probe: between queries")
    parser.add_argument("--out", help="probe: where the results go (JSON)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 10.0
    if args.attack == "flood":
        out = flood(args.server, seconds, [args.template % i for i in range(args.names)])
    elif args.attack == "tcp-stuck":
        out = tcp_stuck(args.server, seconds, args.name, queries=args.count)
    elif args.attack == "tcp-idle":
        out = tcp_idle(args.server, seconds, args.count)
    elif args.attack == "padded":
        out = padded(args.server, args.count, args.name, seconds=args.seconds)
    elif args.attack == "probe":
        out = probe(args.server, seconds, args.template, args.interval, args.out)
    elif args.attack == "upstream":
        out = upstream(args.server, seconds)
    else:
        out = names(args.server, seconds, args.template, args.names)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
