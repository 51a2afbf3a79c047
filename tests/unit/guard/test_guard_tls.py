"""The guard's ClientHello reader (guard/tls.py): real hellos from OpenSSL,
every truncation of them, hellos cut into records and hand-built shapes that
must be refused."""

import random
import struct

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.guard import decide, tls
from ansible_collections.vmsan.network.plugins.module_utils.guard.reading import NAME, NEED_MORE, REFUSED

from .guard_hellos import built_hello, ext, handshake, hello_body, real_hello, records, sni_ext


def test_real_hello_gives_its_sni():
    reading = tls.read(real_hello("a.test"))
    assert (reading.state, reading.kind, reading.name, reading.ech) == (NAME, "tls", "a.test", False)


def test_sni_case_and_trailing_dot_are_normalised():
    assert tls.read(built_hello("API.Example.COM.")).name == "api.example.com"


def test_every_truncation_needs_more_never_a_name():
    hello = real_hello("b.test", alpn=["h2", "http/1.1"])
    for cut in range(len(hello)):
        assert tls.read(hello[:cut]).state == NEED_MORE, cut
    assert tls.read(hello).name == "b.test"


def test_large_hello_in_several_records():
    """A ~2 KB hello (a post-quantum key share makes them that big) cut into
    three records, as RFC 8446 5.1 allows."""
    message = handshake(hello_body([sni_ext(b"a.test"), ext(21, b"\x00" * 2000)]))
    data = records(message, [700, 700, len(message) - 1400])
    assert len(data) > 2000
    for cut in range(len(data)):
        assert tls.read(data[:cut]).state == NEED_MORE
    assert tls.read(data).name == "a.test"


def test_trailing_bytes_after_the_hello_records_are_not_read():
    """Early data (or anything) after the hello's last record does not change
    the reading."""
    assert tls.read(built_hello("a.test") + b"\x17\x03\x03\x00\x05hello").name == "a.test"


@pytest.mark.parametrize("data,why", [
    (real_hello(None), "no SNI"),
    (built_hello(), "no SNI"),
    (built_hello("203.0.113.10"), "not a host name"),
    (built_hello("0x7f000001"), "not a host name"),
    (built_hello("[2001:db8::1]"), "not a host name"),
    (built_hello("a.test", "b.test"), "two host names"),
    (built_hello("a_.test\x00evil"), "not a host name"),
    (built_hello("caf\xc3\xa9.test".encode("latin-1")), "not a host name"),
    (built_hello("a.test", extra=[sni_ext(b"b.test")]), "given twice"),
    (built_hello("a.test", extra=[ext(16, b"\x00\x03h2")] * 2), "given twice"),
    (records(handshake(hello_body(None))), "no extensions"),
    (records(handshake(hello_body([sni_ext(b"a.test")]) + b"\x00")), "do not fill"),
    (records(handshake(hello_body(raw_extensions=b"\x00\x10" + sni_ext(b"a.test")))), "do not fill"),
    (records(handshake(hello_body([sni_ext(b"a.test")], version=b"\x02\x00"))), "version"),
    (records(handshake(hello_body([sni_ext(b"a.test")], session_id=b"\x00" * 33))), "session id"),
    (records(handshake(hello_body([sni_ext(b"a.test")], suites=b"\x13"))), "cipher suites"),
    (records(handshake(hello_body([sni_ext(b"a.test")], methods=b""))), "compression"),
    (records(handshake(hello_body([ext(0, b"\x00\x06\x00\x00\x02ab")]))), "malformed server_name"),
    (records(handshake(hello_body([ext(0, b"\x00\x03\x00\x00\x09")]))), "truncated server_name"),
    (records(handshake(hello_body([ext(0, b"\x00\x03\x01\x00\x00")]))), "no host_name"),
    (records(handshake(hello_body([sni_ext(b"a.test")]), htype=2)), "instead of a ClientHello"),
    (records(handshake(hello_body([sni_ext(b"a.test")])) + b"\x01\x00\x00\x00"), "bytes after"),
    (records(handshake(hello_body([sni_ext(b"a.test")])), ctype=23), None),
    (records(handshake(hello_body([sni_ext(b"a.test")])), version=b"\x02\x00"), "record version"),
    (b"\x16\x03\x01\x00\x00", "record length 0"),
    (b"\x16\x03\x01\x40\x01", "record length 16385"),
    (b"\x16\x03\x01\x00\x10\x01\x00\x40\x00", "more than"),       # declares a 16 KiB + 4 byte hello
    (records(handshake(hello_body([sni_ext(b"a.test")])), sizes=[20] * 8), "more than 4 records"),
    (records(handshake(hello_body([sni_ext(b"a.test")]))[:30], sizes=[30]) + b"\x17\x03\x03\x00\x01x",
     "record type 23"),
])
def test_refused(data, why):
    reading = tls.read(data)
    assert reading.state == REFUSED, reading
    if why:
        assert why in reading.reason


def test_wrong_handshake_type_is_refused_before_the_record_is_complete():
    partial = b"\x16\x03\x01\x01\x00" + b"\x02\x00\x00\xfc" + b"\x00" * 10
    assert tls.read(partial).state == REFUSED


def test_ech_outer_sni_is_read():
    """With encrypted_client_hello the outer hello's SNI (the public name) is
    what the guard reads and checks; the reading says ECH was there."""
    reading = tls.read(built_hello("public.example.com", extra=[ext(0xFE0D, b"\x00" * 40)]))
    assert (reading.name, reading.ech) == ("public.example.com", True)


def test_other_name_types_are_skipped():
    entries = struct.pack("!BH", 7, 3) + b"xyz" + struct.pack("!BH", 0, 6) + b"a.test"
    data = records(handshake(hello_body([ext(0, struct.pack("!H", len(entries)) + entries)])))
    assert tls.read(data).name == "a.test"


def test_sslv2_style_and_other_protocols_are_not_tls():
    assert not tls.looks_like(b"\x80\x2e\x01\x00\x02")
    assert decide.read_name(b"\x80\x2e\x01\x00\x02").state == REFUSED


def test_garbage_never_raises():
    rnd = random.Random(13)
    base = real_hello("a.test", alpn=["h2"])
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        data = bytes(data[:rnd.randint(0, len(data))])
        reading = tls.read(data)
        assert reading.state in (NAME, NEED_MORE, REFUSED)
        if reading.state == NAME:
            assert reading.name and reading.name == reading.name.lower()
