"""The guard's reading in C (native/vmsan_fastpath.c, kernel/fastpath.py)
against its Python definition, on the same bytes: real and hand-built
netlink datagrams, IPv4 packets and ClientHellos, every truncation of them,
and thousands of random mutations. Each C function must give exactly what
its Python twin gives (for the ClientHello: what ``tls.read`` gives is what
the Python reader gives, for every input).

The C module is built by scripts/setup.sh; these tests fail when it is
missing, unless ``VMSAN_FASTPATH=0`` says to run without it."""

import os
import random
import socket
import struct

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.guard import loop, packet, tls
from ansible_collections.vmsan.network.plugins.module_utils.kernel import fastpath
from ansible_collections.vmsan.network.plugins.module_utils.kernel import nfqueue as nq
from ansible_collections.vmsan.network.plugins.module_utils.resolver.pins import PinTable

from .guard_hellos import built_hello, ext, handshake, hello_body, real_hello, records, sni_ext
from .test_guard_loop import X, GUEST, tcp, udp

pytestmark = pytest.mark.skipif(os.environ.get("VMSAN_FASTPATH") == "0", reason="VMSAN_FASTPATH=0")

ROUNDS = 4000


def test_the_c_reader_is_built_and_used():
    assert fastpath.native is not None, "native/vmsan_fastpath.c is not built: run scripts/build-native.sh"
    assert fastpath.describe() == "C"
    assert nq.parse is fastpath.native.parse and packet.read is fastpath.native.read_packet


def mutations(base, rnd, rounds=ROUNDS):
    """BASE itself, every truncation, and ROUNDS random mutations (bytes
    changed, then cut), as bytes."""
    yield bytes(base)
    for cut in range(len(base)):
        yield bytes(base[:cut])
    for _ in range(rounds):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        yield bytes(data[:rnd.randint(0, len(data))] if rnd.random() < 0.3 else data)


# -- netlink datagrams -------------------------------------------------------------

def attr(atype, payload):
    size = 4 + len(payload)
    return struct.pack("=HH", size, atype) + payload + b"\0" * (-size % 4)


def nlmsg(mtype, body, seq=0):
    body = struct.pack("!BBH", socket.AF_INET, 0, 0) + body
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, seq, 0) + body


def queued(pid, pkt, mark=5):
    return nlmsg(nq._QUEUE_PACKET, attr(nq.NFQA_PACKET_HDR, struct.pack("!IHB", pid, 0x800, 3) + b"\0")
                 + attr(4, struct.pack("!I", 2)) + attr(nq.NFQA_MARK, struct.pack("!I", mark))
                 + attr(nq.NFQA_PAYLOAD, pkt))


def logged(pkt, mark=0):
    return nlmsg(nq._LOG_PACKET, attr(1, b"\x08\x00\x03\x00") + attr(nq.NFULA_MARK, struct.pack("!I", mark))
                 + attr(nq.NFULA_PAYLOAD, pkt))


def ack(err, seq):
    return struct.pack("=IHHIIi", 36, nq.NLMSG_ERROR, 0, seq, 0, -err) + b"\0" * 16


def datagram():
    hello = built_hello("a.test")
    return (logged(tcp(9, sport=443, dport=40000, src="203.0.113.10", dst="172.16.0.2", ack=101, flags=0x12))
            + queued(7, tcp(101, hello), mark=0x30000007) + queued(8, udp(443)) + ack(0, 3) + ack(16, 4)
            + queued(9, b""))


def same_parse(data, length=None):
    py = nq._parse(data, length)
    c = fastpath.native.parse(data) if length is None else fastpath.native.parse(data, length)
    assert c == py, data.hex()
    assert all(type(m) is nq.Message for m in c[0])


def test_parse_gives_the_same_messages():
    data = datagram()
    messages, acks = nq.parse(data)
    assert [(m.kind, m.packet_id, m.mark) for m in messages] == \
        [(nq.LOGGED, None, 0), (nq.QUEUED, 7, 0x30000007), (nq.QUEUED, 8, 5), (nq.QUEUED, 9, 5)]
    assert acks == [(0, 3), (16, 4)]
    same_parse(data)
    buf = bytearray(len(data) + 100)            # read into a larger buffer, as the sockets do
    buf[:len(data)] = data
    same_parse(memoryview(buf), len(data))
    same_parse(memoryview(buf), len(data) - 7)


def test_parse_agrees_on_every_cut_and_mutation():
    rnd = random.Random(1301)
    for data in mutations(datagram(), rnd):
        same_parse(data)


def test_parse_stops_at_an_attribute_longer_than_its_message():
    body = attr(nq.NFQA_PACKET_HDR, struct.pack("!IHB", 1, 0x800, 3) + b"\0")
    bad = struct.pack("=HH", 200, nq.NFQA_PAYLOAD) + b"x" * 8
    data = nlmsg(nq._QUEUE_PACKET, body + bad) + queued(2, b"ok")
    messages, _ = nq.parse(data)
    assert [(m.packet_id, m.payload) for m in messages] == [(1, b""), (2, b"ok")]
    same_parse(data)


# -- IPv4 packets ---------------------------------------------------------------------

def test_read_packet_agrees_on_every_cut_and_mutation():
    rnd = random.Random(1302)
    bases = [tcp(7, b"data" * 20, options=b"\x01" * 8), tcp(1, flags=0x12, ack=99), udp(53, b"q" * 30),
             b"\x60" + b"\x00" * 39, tcp(5, b"x")[:9] + b"\x2f" + tcp(5, b"x")[10:]]
    for base in bases:
        for data in mutations(base, rnd, ROUNDS // len(bases)):
            assert packet.read(data) == packet._read(data), data.hex()
    assert packet.read(bytearray(tcp(7, b"abc"))) == packet._read(tcp(7, b"abc"))


# -- ClientHellos -------------------------------------------------------------------------

HELLOS = [
    real_hello("a.test"),
    real_hello("B.Example.COM.", alpn=["h2", "http/1.1"]),
    real_hello(None),
    built_hello("a.test"),
    built_hello("a.test", "b.test"),
    built_hello("public.example.com", extra=[ext(0xFE0D, b"\x00" * 40)]),
    built_hello("203.0.113.10"),
    built_hello("a.test", extra=[sni_ext(b"b.test")]),
    records(handshake(hello_body([ext(0, struct.pack("!H", 14) + struct.pack("!BH", 7, 3) + b"xyz"
                                      + struct.pack("!BH", 0, 5) + b"c.tst")]))),
    records(handshake(hello_body([sni_ext(b"a.test"), ext(21, b"\x00" * 1200)])), [700, 600]),
]


def test_read_is_the_python_reader_for_every_input():
    """``tls.read`` (C for the common case) gives what ``tls._read`` (the
    definition) gives, for real hellos, refusals, every cut and mutations."""
    rnd = random.Random(1303)
    for base in HELLOS:
        for data in mutations(base, rnd, ROUNDS // 4):
            assert tls.read(data) == tls._read(data), data.hex()


def test_the_c_reader_reads_the_common_case():
    """The one-record hellos real clients send are read in C (a name, and
    whether ECH is there); the rest is left to the Python reader (None)."""
    hello_name = fastpath.native.hello_name
    assert hello_name(real_hello("a.test")) == (b"a.test", False)
    assert hello_name(built_hello("public.example.com", extra=[ext(0xFE0D, b"\x00" * 40)])) == \
        (b"public.example.com", True)
    assert hello_name(built_hello("a.test") + b"\x17\x03\x03\x00\x05hello") == (b"a.test", False)
    for refused in (built_hello("a.test", "b.test"), built_hello(), real_hello(None),
                    built_hello("a.test", extra=[sni_ext(b"b.test")]), HELLOS[-1], b"", b"\x16\x03\x01"):
        assert hello_name(refused) is None


# -- the receive loop -----------------------------------------------------------------

def test_receive_reads_what_read_datagrams_reads():
    """The C receive loop on a datagram socket (a socketpair stands in for
    the netfilter socket: recv is the same call) gives the messages the
    Python loop gives with the Python parser, then 0 when nothing waits."""
    rnd = random.Random(1304)
    sent = [datagram()] + [bytes(d) for d in list(mutations(datagram(), rnd, 200))[::7]]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        b.setblocking(False)
        buf = bytearray(nq.RECV_SIZE)
        for data in sent:
            a.send(data)
        got, err, overflows = fastpath.native.receive(b.fileno(), buf, 1000)
        assert err == 0 and overflows == 0
        for data in sent:
            a.send(data)
        want = nq.read_datagrams(b, buf, memoryview(buf), lambda view, n: nq._parse(view, n)[0], 1000, "test")
        assert got == want and len(got) > len(sent)
        assert fastpath.native.receive(b.fileno(), buf, 1000) == ([], 0, 0)
        for data in sent[:5]:
            a.send(data)
        first, err, _overflows = fastpath.native.receive(b.fileno(), buf, 2)     # LIMIT datagrams at most
        assert err == 0 and first == nq._parse(sent[0])[0] + nq._parse(sent[1])[0]
    assert fastpath.native.receive(b.fileno(), buf, 1)[1] != 0          # a closed socket: its errno


# -- the common case of a connection: NamespaceGuard.handle in C -----------------------

def test_verdict_bytes_are_the_python_ones():
    items = [(1, nq.NF_REPEAT, 0x10000005), (0xFFFFFFFF, nq.NF_DROP, None), (7, nq.NF_ACCEPT, 0), (2, 4, 0xFFFFFFFF)]
    assert nq.verdicts_bytes is fastpath.native.verdict_bytes
    for queue in (0, 3013, 65535):
        for cut in range(len(items) + 1):
            assert fastpath.native.verdict_bytes(queue, items[:cut]) == nq._verdicts_bytes(queue, items[:cut])
    with pytest.raises(OverflowError):
        fastpath.native.verdict_bytes(1, [(1 << 32, 1, None)])


GUEST2, Y, Z = "172.16.0.3", "203.0.113.20", "203.0.113.30"


def copy(pkt):
    """A SYN-ACK copy (or another logged packet) as the socket gives it."""
    return nq.Message(nq.LOGGED, None, 0, pkt)


class Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def guard_twins():
    """Two guards of the same VMs, pins and clock: one with the common case
    in C (the default here), one all in Python (``_fast`` None); and what
    each told on_refusal."""
    clock, made = Clock(), []
    for fast in (True, False):
        pins = PinTable()
        pins.pin("web", X, ["a.test", "b.test", "git.test"], 1e12)
        pins.pin("web", Y, ["d.test"], 1e12)
        pins.pin("web", Z, ["x.w.test"], 130.0)          # expires during the run
        pins.pin("aud", X, ["a.test"], 1e12)
        told = []
        vms = [loop.VmView("web", GUEST, ("a.test", "d.test", "*.w.test", "git.test:22")),
               loop.VmView("aud", GUEST2, ("a.test",), audit=True)]
        ng = loop.NamespaceGuard("ns", None, vms, pins, clock=clock, on_refusal=told.append)
        if not fast:
            ng._fast = None
        ng.flows.max_flows = 12         # so that room is made, and kept verdicts trimmed
        ng.accepted_per_vm = 3
        made.append((ng, told))
    assert made[0][0]._fast is not None
    return clock, made[0], made[1]


def guard_state(ng, told):
    flows = [(key, f.isn, dict(f.chunks), list(f.held), f.held_since, f.seen) for key, f in ng.flows.flows.items()]
    return (ng.counters.as_dict(), ng.decisions, list(ng.accepted.items()), flows, list(ng.flows.decided.items()),
            dict(ng.marks), list(ng.cut), list(told))


NAMES = ["a.test"] * 4 + ["A.Test.", "b.test", "d.test", "c.test", "x.w.test", "1.2.3.4", "git.test", None]


def random_message(rnd, pid, started):
    """One message of a guarded namespace's traffic, mostly connections of
    the common case: a SYN-ACK copy (its flow put in STARTED), then a segment
    of one of the STARTED flows."""
    if started and rnd.random() < 0.6:
        guest, sport, dst, dport, start = rnd.choice(started[-4:])
    else:
        guest = rnd.choice([GUEST, GUEST, GUEST, GUEST2, "172.16.9.9"])
        dst = rnd.choice([X, X, X, Y, Z])
        sport, dport = rnd.choice([40000, 40001, 40002, 40003, 40004]), rnd.choice([443] * 5 + [22, 8444])
        start = rnd.choice([101, 101, 5000, 0xFFFFFFF0])
        if rnd.random() < 0.6:
            flags = 0x12 if rnd.random() < 0.95 else rnd.choice([0x10, 0x02, 0x11])
            started.append((guest, sport, dst, dport, start))
            return copy(tcp(7, sport=dport, dport=sport, src=dst, dst=guest, ack=start, flags=flags))
        if rnd.random() < 0.05:
            return copy(rnd.choice([b"", b"\x45" + b"\x00" * 10, udp(53, src=dst, dst=guest)]))
    name = rnd.choice(NAMES)
    hello = built_hello(name) if name else built_hello()
    if rnd.random() < 0.15:
        hello = real_hello(name or "a.test")
    roll = rnd.random()
    seq = start + rnd.choice([0] * 12 + [1, 40, -1 & 0xFFFFFFFF])
    if roll < 0.7:
        payload = hello
    elif roll < 0.78:
        cut = rnd.randrange(1, len(hello))
        payload, seq = (hello[:cut], seq) if rnd.random() < 0.5 else (hello[cut:], seq + cut)
    elif roll < 0.83:
        payload = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % (name or "a.test").encode()
    elif roll < 0.86:
        payload = b""
    elif roll < 0.88:
        payload = b"SSH-2.0-x\r\n"
    elif roll < 0.91:
        return nq.Message(nq.QUEUED, pid, rnd.choice([0, 5]), udp(rnd.choice([53, 443]), src=guest, dst=dst))
    else:
        payload = bytearray(hello)
        payload[rnd.randrange(len(payload))] = rnd.randrange(256)
        payload = bytes(payload)
    flags = 0x18 if rnd.random() < 0.97 else 0x02
    return nq.Message(nq.QUEUED, pid, rnd.choice([0, 0x5, 0x30000007, 0xFFFFFFFF]),
                      tcp(seq & 0xFFFFFFFF, payload, sport=sport, dport=dport, src=guest, dst=dst, flags=flags))


def test_handle_in_c_is_handle_in_python():
    """The same message sequences (mostly connections of the common case,
    with retransmits, new starts, other offsets, refusals, audit mode, UDP,
    HTTP, garbage), the same clock, expiries, cuts and policy changes: the
    guard with the common case in C gives the same verdicts as the one in
    Python, and leaves every table, counter and refusal the same."""
    rnd = random.Random(1305)
    clock, (fast, fast_told), (slow, slow_told) = guard_twins()
    calls = []
    one = fast._handle_one
    fast._handle_one = lambda msg, now: calls.append(msg) or one(msg, now)
    pid = total = 0
    started = []
    for step in range(3000):
        roll = rnd.random()
        if roll < 0.05:
            clock.now += rnd.choice([0.5, 2.0, 4.0, 11.0])
            assert fast.expire() == slow.expire()
        elif roll < 0.06:
            domains = rnd.choice([("a.test", "d.test", "*.w.test", "git.test:22"), ("d.test",), ("a.test", "a.test:443")])
            vms = lambda: [loop.VmView("web", GUEST, domains), loop.VmView("aud", GUEST2, ("a.test",),
                                                                          audit=rnd.random() < 0.5)]
            state = rnd.getstate()
            fast.set_vms(vms())
            rnd.setstate(state)
            slow.set_vms(vms())
        elif roll < 0.07 and slow.accepted:
            key = rnd.choice(list(slow.accepted))[1:]
            fast.flows.cut(key)
            slow.flows.cut(key)
        else:
            batch = []
            for _ in range(rnd.randint(1, 6)):
                pid += 1
                batch.append(random_message(rnd, pid, started))
            total += len(batch)
            assert fast.handle(batch) == slow.handle(batch), step
        assert guard_state(fast, fast_told) == guard_state(slow, slow_told), step
    queued_in_python = sum(1 for msg in calls if msg.kind == nq.QUEUED)
    taken = (total - len(calls), fast.counters.messages - fast.counters.logged - queued_in_python)
    assert taken[0] > 1500 and taken[1] > 100, (taken, total, slow.counters.as_dict())
    assert slow.counters.accepted > 200
    assert slow.counters.refused > 100 and slow.counters.would_refuse > 20 and slow.counters.cut > 0


def test_handle_in_c_takes_the_common_case():
    """A connection of the common case (its SYN-ACK copy, then its whole
    one-record hello at offset 0 to an allowed, pinned name) is handled in
    C, without _handle_one; a refusal goes to Python."""
    _clock, (ng, told), _slow = guard_twins()
    calls = []
    one = ng._handle_one
    ng._handle_one = lambda msg, now: calls.append(msg) or one(msg, now)
    hello = real_hello("a.test")
    out = ng.handle([copy(tcp(7, sport=443, dport=40000, src=X, dst=GUEST, ack=101, flags=0x12)),
                     nq.Message(nq.QUEUED, 9, 0x30000005, tcp(101, hello))])
    assert out == [(9, nq.NF_REPEAT, 0x10000005)] and calls == []
    assert ng.counters.accepted == 1 and ng.counters.messages == 2 and ng.counters.logged == 1
    assert ng.accepted[(6, GUEST, 40000, X, 443)] == ("web", "name", "a.test", False)
    assert ng.decisions == {"web": {("accept", "name"): 1}}
    out = ng.handle([copy(tcp(7, sport=443, dport=40001, src=X, dst=GUEST, ack=101, flags=0x12)),
                     nq.Message(nq.QUEUED, 10, 0, tcp(101, real_hello("c.test"), sport=40001))])
    assert out == [(10, nq.NF_REPEAT, 0x20000000)] and len(calls) == 1 and told[0].name == "c.test"


def socket_queue(queue_num=3013):
    """A QueueSocket on two datagram socketpairs (recv and send are the calls
    of a netfilter socket), and the kernel's ends of them."""
    (kq, q), (kl, lg) = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM), \
        socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for end in (q, lg, kq):
        end.setblocking(False)
    qs = object.__new__(nq.QueueSocket)
    qs.sock, qs.log_sock, qs.queue_num, qs.log_group, qs.timeout, qs.log_overflows = q, lg, queue_num, 3013, 1.0, 0
    qs._buf = bytearray(nq.RECV_SIZE)
    qs._view = memoryview(qs._buf)
    qs._what, qs._log_what = "queue %d" % queue_num, "log group 3013"
    return qs, kq, kl


def sent_back(kernel_end):
    out = b""
    while True:
        try:
            out += kernel_end.recv(1 << 20) + b"|"
        except BlockingIOError:
            return out


def test_the_pump_in_c_is_the_pump_in_python():
    """NamespaceGuard.pump on a queue socket, in C (guard_pump: the receive,
    handle, the verdicts and the cuts sent) and in Python (QueueSocket's
    receive and verdicts, _handle_one for every message): the same bytes go
    back to the kernel, in the same send() calls, and every table ends the
    same, over random batches of datagrams on both sockets."""
    rnd = random.Random(1306)
    clock, (fast, fast_told), (slow, slow_told) = guard_twins()
    ends = []
    for ng in (fast, slow):
        qs, kq, kl = socket_queue()
        ng.sock = qs
        ng._pump_args = qs.native_handles() if ng is fast else None
        ends.append((kq, kl))
    assert fast._pump_args is not None and slow._pump_args is None and slow._fast is None
    pid = pumped = 0
    started = []
    for step in range(1500):
        if rnd.random() < 0.03:
            domains = rnd.choice([("a.test", "d.test"), ("d.test",), ("a.test", "*.w.test", "git.test:22")])
            for ng in (fast, slow):
                ng.set_vms([loop.VmView("web", GUEST, domains), loop.VmView("aud", GUEST2, ("a.test",), audit=True)])
        queue_grams, log_grams = [], []
        for _ in range(rnd.randint(0, 5)):
            pid += 1
            msg = random_message(rnd, pid, started)
            if msg.kind == nq.LOGGED:
                log_grams.append(logged(msg.payload, msg.mark))
            else:
                queue_grams.append(queued(msg.packet_id, msg.payload, msg.mark))
        if rnd.random() < 0.2 and len(queue_grams) > 1:
            queue_grams = [b"".join(queue_grams)]           # several messages in one datagram
        for kq, kl in ends:
            for gram in queue_grams:
                kq.send(gram)
            for gram in log_grams:
                kl.send(gram)
        counts = [ng.pump() for ng in (fast, slow)]
        assert counts[0] == counts[1], step
        pumped += counts[0]
        assert sent_back(ends[0][0]) == sent_back(ends[1][0]), step
        assert guard_state(fast, fast_told) == guard_state(slow, slow_told), step
        if rnd.random() < 0.05:
            clock.now += rnd.choice([1.0, 4.0])
            for ng in (fast, slow):
                ng.pump(ng.expire())
            assert sent_back(ends[0][0]) == sent_back(ends[1][0]), step
            assert guard_state(fast, fast_told) == guard_state(slow, slow_told), step
    assert pumped > 1000 and fast.counters.accepted > 50 and fast.counters.cut + fast.counters.refused > 100
    for ng, (kq, kl) in zip((fast, slow), ends):
        ng.close()
        kq.close()
        kl.close()
