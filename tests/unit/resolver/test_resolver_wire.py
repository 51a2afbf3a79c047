"""The cheap query reader (resolver/wire.py): what it accepts, what it
answers with FORMERR or NOTIMP, what it does not answer at all, and that
padding never changes a cache key. Valid queries are built with dnslib;
packets dnslib would not build are made by hand."""

import random
import struct

import pytest
from dnslib import EDNS0, EDNSOption, DNSRecord

from ansible_collections.vmsan.network.plugins.module_utils.resolver import wire

HEADER = struct.Struct("!6H")


def query(name="a.example.test", qtype="A", qid=0x4242, edns=None):
    record = DNSRecord.question(name, qtype)
    record.header.id = qid
    if edns is not None:
        record.add_ar(edns)
    return bytes(record.pack())


def header(qid=0x4242, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return HEADER.pack(qid, flags, qd, an, ns, ar)


QUESTION = b"\x01a\x07example\x04test\x00\x00\x01\x00\x01"


def test_a_plain_query_is_read_and_is_its_own_hot_key():
    data = query("A.Example.Test")
    q = wire.read_query(data)
    assert (q.id, q.qtype, q.qclass, q.rd, q.cd) == (0x4242, 1, 1, 1, 0)
    assert q.labels == (b"A", b"Example", b"Test") and q.key == (b"a", b"example", b"test")
    assert q.question_wire == data[12:] and not q.edns and q.payload == 512
    assert q.hot_key == data[2:]


def test_edns_is_read_with_its_payload_and_options_leave_the_key_alone():
    plain = query(edns=EDNS0(udp_len=4096))
    padded = query(edns=EDNS0(udp_len=4096, opts=[EDNSOption(12, b"\x00" * 300)]))
    cookie = query(edns=EDNS0(udp_len=4096, opts=[EDNSOption(10, b"12345678")]))
    keys = {wire.read_query(d).hot_key for d in (plain, padded, cookie)}
    assert keys == {plain[2:]}
    q = wire.read_query(padded)
    assert q.edns and q.payload == 4096
    assert wire.read_query(query(edns=EDNS0(udp_len=100))).payload == 512
    assert wire.read_query(query(edns=EDNS0(udp_len=1232))).hot_key != plain[2:]     # the size is part of it


def test_the_same_query_with_other_flags_is_another_key():
    data = bytearray(query())
    data[3] |= 0x10                         # CD
    q = wire.read_query(bytes(data))
    assert q.cd == 1 and q.hot_key != query()[2:]


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00",     # shorter than a header
    header(flags=0x8180) + QUESTION,                                    # a response
    header(flags=0x8000, qd=0),
])
def test_what_gets_no_answer(data):
    assert wire.read_query(data) is None


def bad(data):
    with pytest.raises(wire.BadQuery) as err:
        wire.read_query(data)
    return err.value


@pytest.mark.parametrize("why,data", [
    ("no question", header(qd=0)),
    ("two questions", header(qd=2) + QUESTION + QUESTION),
    ("65535 questions", header(qd=65535) + QUESTION),
    ("an answer record", header(an=1) + QUESTION + b"\x00\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x01\x02\x03\x04"),
    ("an authority record", header(ns=1) + QUESTION),
    ("two additional records", header(ar=2) + QUESTION + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00" * 2),
    ("an additional record that is not OPT", header(ar=1) + QUESTION + b"\x00\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04abcd"),
    ("OPT with a name", header(ar=1) + QUESTION + b"\x01x\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"),
    ("OPT cut short", header(ar=1) + QUESTION + b"\x00\x00\x29\x10"),
    ("OPT longer than said", header(ar=1) + QUESTION + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x04abcdEXTRA"),
    ("OPT shorter than said", header(ar=1) + QUESTION + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x09abcd"),
    ("EDNS version 1", header(ar=1) + QUESTION + b"\x00\x00\x29\x10\x00\x00\x01\x00\x00\x00\x00"),
    ("trailing bytes", header() + QUESTION + b"\x00" * 40),
    ("a pointer to itself", header() + b"\xc0\x0c\x00\x01\x00\x01"),
    ("a pointer into the header", header() + b"\x01x\xc0\x02\x00\x01\x00\x01"),
    ("a compression bomb", header() + b"\x01x" + b"\xc0\x0c" * 200 + b"\x00\x01\x00\x01"),
    ("a reserved label type 0x40", header() + b"\x41" + b"x" * 65 + b"\x00\x00\x01\x00\x01"),
    ("a reserved label type 0x80", header() + b"\x81" + b"x" * 129 + b"\x00\x00\x01\x00\x01"),
    ("a 64-byte label", header() + b"\x40" + b"x" * 64 + b"\x00\x00\x01\x00\x01"),
    ("a 256-byte name", header() + (b"\x3f" + b"x" * 63) * 4 + b"\x00\x00\x01\x00\x01"),
    ("a name cut short", header() + b"\x05ab"),
    ("no root label", header() + b"\x01a"),
    ("type and class cut short", header() + b"\x01a\x00\x00"),
    ("bigger than the cap", header() + QUESTION + b"\x00" * wire.MAX_QUERY),
    ("huge EDNS", header(ar=1) + QUESTION + b"\x00\x00\x29\xff\xff\x00\x00\x00\x00\x01\xf0" + b"\x00" * 496),
])
def test_what_gets_formerr(why, data):
    err = bad(data)
    assert err.rcode == wire.FORMERR and err.id == 0x4242 and err.rd == 1, why


def test_a_255_byte_name_is_the_longest_there_is():
    name = (b"\x3f" + b"x" * 63) * 3 + b"\x3d" + b"x" * 61 + b"\x00"
    assert len(name) == 255
    q = wire.read_query(header() + name + b"\x00\x01\x00\x01")
    assert len(q.labels) == 4
    assert bad(header() + (b"\x3f" + b"x" * 63) * 3 + b"\x3e" + b"x" * 62 + b"\x00\x00\x01\x00\x01").rcode == wire.FORMERR


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 15])
def test_other_opcodes_get_notimp(opcode):
    err = bad(header(flags=0x0100 | (opcode << 11)) + QUESTION)
    assert err.rcode == wire.NOTIMP


def test_the_root_name_is_a_name():
    q = wire.read_query(header() + b"\x00\x00\x02\x00\x01")
    assert q.labels == () and q.qtype == 2


def test_random_bytes_never_raise_anything_but_badquery():
    rng = random.Random(5452)
    seeds = [query(), query(edns=EDNS0(udp_len=1232)), header(ar=1) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"]
    outcomes = {"query": 0, "none": 0, "bad": 0}
    for i in range(20000):
        if i % 4 == 0:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        else:
            data = bytearray(rng.choice(seeds))
            for _flip in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            if rng.random() < 0.2:
                data = data[:rng.randrange(len(data) + 1)]
            data = bytes(data)
        try:
            q = wire.read_query(data)
        except wire.BadQuery as err:
            assert err.rcode in (wire.FORMERR, wire.NOTIMP)
            outcomes["bad"] += 1
            continue
        if q is None:
            outcomes["none"] += 1
            continue
        outcomes["query"] += 1
        assert len(q.question_wire) <= wire.MAX_NAME + 4 and len(q.hot_key) <= 10 + wire.MAX_NAME + 4 + 11
        assert all(len(label) <= wire.MAX_LABEL for label in q.labels)
    assert all(outcomes.values()), outcomes


def test_reply_matches_wants_the_id_the_response_bit_and_the_question_byte_for_byte():
    sent = query("A.eXample.test", qid=77)
    question = sent[12:]
    reply = DNSRecord.parse(sent).reply()
    good = bytes(reply.pack())
    assert wire.reply_matches(good, 77, question)
    assert not wire.reply_matches(good, 78, question)                              # wrong id
    assert not wire.reply_matches(good, 77, question.lower())                      # wrong case (0x20)
    assert not wire.reply_matches(sent, 77, question)                              # not a response
    assert not wire.reply_matches(good[:20], 77, question)
    two = bytearray(good)
    two[5] = 2
    assert not wire.reply_matches(bytes(two), 77, question)                        # two questions
