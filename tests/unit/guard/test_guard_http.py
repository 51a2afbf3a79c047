"""The guard's HTTP/1.x request-head reader (guard/http.py)."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.guard import decide, http
from ansible_collections.vmsan.network.plugins.module_utils.guard.reading import NAME, NEED_MORE, REFUSED


def head(*lines, line_end=b"\r\n"):
    return b"".join(l + line_end for l in lines) + line_end


@pytest.mark.parametrize("data,name", [
    (head(b"GET / HTTP/1.1", b"Host: a.test"), "a.test"),
    (head(b"GET /x?y=1 HTTP/1.0", b"User-Agent: curl", b"host: A.Test:8080"), "a.test"),
    (head(b"POST /api HTTP/1.1", b"HOST:\tapi.example.com.  ", b"Content-Length: 3"), "api.example.com"),
    (head(b"OPTIONS * HTTP/1.1", b"Host: a.test"), "a.test"),
    (head(b"GET http://a.test/path HTTP/1.1", b"Host: a.test"), "a.test"),
    (head(b"GET http://user@A.TEST:80/ HTTP/1.1", b"Host: a.test:80"), "a.test"),
])
def test_host_is_read(data, name):
    reading = http.read(data + b"body")
    assert (reading.state, reading.kind, reading.name) == (NAME, "http", name)


@pytest.mark.parametrize("data,why", [
    (head(b"GET / HTTP/1.1"), "no Host"),
    (head(b"GET / HTTP/1.0", b"User-Agent: x"), "no Host"),
    (head(b"GET / HTTP/1.1", b"Host: a.test", b"Host: c.test"), "2 Host"),
    (head(b"GET / HTTP/1.1", b"Host: a.test", b"host: a.test"), "2 Host"),
    (head(b"GET / HTTP/1.1", b"Host:"), "not a host name"),
    (head(b"GET / HTTP/1.1", b"Host: 203.0.113.10"), "not a host name"),
    (head(b"GET / HTTP/1.1", b"Host: [2001:db8::1]:80"), "not a host name"),
    (head(b"GET / HTTP/1.1", b"Host: a.test:99999"), "not a host name"),
    (head(b"GET / HTTP/1.1", b"Host: a.test:"), "not a host name"),
    (head(b"GET / HTTP/1.1", b"Host: a.test c.test"), "not a host name"),
    (head(b"GET / HTTP/1.1", b"Host : a.test"), "malformed header"),
    (head(b"GET / HTTP/1.1", b"X: 1", b" Host: c.test", b"Host: a.test"), "folded"),
    (head(b"GET / HTTP/1.1", b"Host: a.test", line_end=b"\n"), "bare CR or LF"),
    (b"GET / HTTP/1.1\r\nHost: a.test\rHost: c.test\r\n\r\n", "bare CR or LF"),
    (head(b"GET http://c.test/ HTTP/1.1", b"Host: a.test"), "another host"),
    (head(b"GET https://c.test@a.test.evil/ HTTP/1.1", b"Host: a.test"), "another host"),
    (head(b"CONNECT c.test:443 HTTP/1.1", b"Host: a.test"), "CONNECT"),
    (head(b"GET c.test:80 HTTP/1.1", b"Host: a.test"), "authority form"),
    (head(b"GET * HTTP/1.1", b"Host: a.test"), "asterisk"),
    (head(b"PRI * HTTP/2.0", b""), "HTTP/1.x"),
    (head(b"GET / HTTP/1.1 extra", b"Host: a.test"), "malformed request line"),
    (head(b"GET  / HTTP/1.1", b"Host: a.test"), "malformed request line"),
    (head(b"GET /", b"Host: a.test"), "malformed request line"),
    (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "malformed request line"),
    (b"G\x00T / HTTP/1.1\r\n", "not an HTTP request line"),
    (b"GET / HTTP/1.1\r\nHost: a.test\r\n" + b"X-Pad: " + b"x" * 17000, "longer than"),
])
def test_refused(data, why):
    reading = http.read(data)
    assert reading.state == REFUSED, reading
    assert why in reading.reason


@pytest.mark.parametrize("data", [
    b"G", b"GET", b"GET / HT", b"GET / HTTP/1.1\r", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: a.te",
    b"GET / HTTP/1.1\r\nHost: a.test\r\n", b"GET / HTTP/1.1\r\nHost: a.test\r\n\r",
])
def test_incomplete_heads_need_more(data):
    assert http.read(data).state == NEED_MORE


def test_every_prefix_of_a_head_needs_more_until_it_ends():
    data = head(b"GET /index.html HTTP/1.1", b"Host: b.test", b"Accept: */*")
    for cut in range(1, len(data)):
        assert http.read(data[:cut]).state == NEED_MORE, data[:cut]
    assert http.read(data).name == "b.test"


@pytest.mark.parametrize("first", [b"SSH-2.0-OpenSSH_9.2\r\n", b"\x00\x01binary", b"hello\n", b"ping"])
def test_other_protocols_are_refused_by_the_dispatcher(first):
    reading = decide.read_name(first + b"\r\n\r\n")
    assert reading.state == REFUSED
