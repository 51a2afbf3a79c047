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

from ansible_collections.vmsan.network.plugins.module_utils.guard import packet, tls
from ansible_collections.vmsan.network.plugins.module_utils.kernel import fastpath
from ansible_collections.vmsan.network.plugins.module_utils.kernel import nfqueue as nq

from .guard_hellos import built_hello, ext, handshake, hello_body, real_hello, records, sni_ext
from .test_guard_loop import tcp, udp

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
        got, err = fastpath.native.receive(b.fileno(), buf, 1000)
        assert err == 0
        for data in sent:
            a.send(data)
        want = nq.read_datagrams(b, buf, memoryview(buf), lambda view, n: nq._parse(view, n)[0], 1000, "test")
        assert got == want and len(got) > len(sent)
        assert fastpath.native.receive(b.fileno(), buf, 1000) == ([], 0)
        for data in sent[:5]:
            a.send(data)
        first, err = fastpath.native.receive(b.fileno(), buf, 2)        # LIMIT datagrams at most
        assert err == 0 and first == nq._parse(sent[0])[0] + nq._parse(sent[1])[0]
    assert fastpath.native.receive(b.fileno(), buf, 1)[1] != 0          # a closed socket: its errno
