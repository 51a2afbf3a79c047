"""The host names the guard accepts from an SNI or a Host field
(guard/hostname.py): the allowlist's alphabet, no IP literals."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.guard import hostname


@pytest.mark.parametrize("text,name", [
    ("a.test", "a.test"), ("API.Example.COM.", "api.example.com"), ("_srv.a-b.test", "_srv.a-b.test"),
    ("x" * 63 + ".test", "x" * 63 + ".test"), ("a.b1", "a.b1"), ("localhost", "localhost"),
])
def test_names(text, name):
    assert hostname.normal(text) == name


@pytest.mark.parametrize("text", [
    "", ".", "a..test", ".a.test", "a.test..", "-a.test", "a-.test", "x" * 64 + ".test", "a" * 254,
    "203.0.113.10", "10.1", "0x7f000001", "a.0x1f", "127.1", "[2001:db8::1]", "2001:db8::1", "a.test:443",
    "a test", "a*.test", "caf\u00e9.test", "a\x00.test",
])
def test_not_names(text):
    assert hostname.normal(text) is None


def test_bytes_must_be_ascii():
    assert hostname.from_bytes(b"a.test") == "a.test"
    assert hostname.from_bytes("caf\u00e9.test".encode()) is None
