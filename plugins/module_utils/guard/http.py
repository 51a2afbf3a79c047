"""The host an HTTP/1.x client asks for, read from its first request head.

Our own strict reader of the request line and the header fields (RFC 9110
7.2, RFC 9112 sections 2-3 and 5): the head must end with an empty line
within ``MAX_HEAD`` bytes, lines end with CRLF (a bare CR or LF is refused:
servers differ on them, and a guard that reads a head differently from the
server can be fooled), no line folding, no space before a field's colon,
exactly one ``Host`` field holding a host name with an optional port.

The request target may be origin-form (``/path``), asterisk-form (``*``) or
absolute-form (``http://host/path``), whose host must then be the Host
field's (a server takes the target's over the field). CONNECT (authority
form) is refused: a tunnel would carry anything.

Only the first request of a connection is read: later requests on a
keep-alive connection reuse the first one's verdict.
"""

import re

from . import hostname
from . import reasons
from .reading import MORE, named, refused

KIND = "http"
MAX_HEAD = 16384
MAX_METHOD = 32

_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_VERSION = re.compile(rb"^HTTP/1\.[0-9]$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_METHOD_START = re.compile(rb"^[A-Za-z]")


def looks_like(data):
    """Whether a flow starting with DATA may be an HTTP/1.x request."""
    return bool(_METHOD_START.match(data[:1]))


def _bare_line_end(data):
    """Whether DATA holds a CR not followed by LF or an LF not after a CR
    (a CR as the last byte may still get its LF)."""
    if data.count(b"\r") != data.count(b"\r\n") + (1 if data.endswith(b"\r") else 0):
        return True
    return data.count(b"\n") != data.count(b"\r\n")


def read(data):
    """A Reading of the request head at the start of DATA (bytes)."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end + 2]
    if _bare_line_end(head):
        return refused(KIND, "a bare CR or LF in the request head")
    first_space = head.find(b" ")
    method = head if first_space < 0 else head[:first_space]
    if len(method) > MAX_METHOD or (method and not _TOKEN.match(method)):
        return refused(KIND, "not an HTTP request line")
    if end < 0:
        if len(data) >= MAX_HEAD:
            return refused(KIND, "request head longer than %d bytes" % MAX_HEAD)
        line_end = data.find(b"\r\n")
        if line_end >= 0:
            bad = _request_line(data[:line_end])
            if bad:
                return bad
        return MORE
    if end + 4 > MAX_HEAD:
        return refused(KIND, "request head longer than %d bytes" % MAX_HEAD)
    lines = data[:end].split(b"\r\n")
    bad = _request_line(lines[0])
    if bad:
        return bad
    target = lines[0].split(b" ")[1]
    hosts = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return refused(KIND, "folded header line")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            return refused(KIND, "malformed header line")
        if name.lower() == b"host":
            hosts.append(value.strip(b" \t"))
    if len(hosts) != 1:
        if not hosts:
            return refused(KIND, "no Host field", reasons.NO_NAME)
        return refused(KIND, "%d Host fields" % len(hosts))
    host = _host(hosts[0])
    if host is None:
        return refused(KIND, "Host %r is not a host name" % hosts[0][:64], reasons.NO_NAME)
    if target[:1] not in (b"/", b"*"):
        # absolute-form: a server uses the target's host, so it must be the same
        match = _ABSOLUTE.match(target.decode("ascii", "replace"))
        authority = match.group(1) if match else ""
        if _host(authority.rpartition("@")[2].encode("ascii", "replace")) != host:
            return refused(KIND, "request target names another host than Host")
    return named(KIND, host)


def _request_line(line):
    """None if LINE is a request line we read, else a refusal."""
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        return refused(KIND, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method) or not _VERSION.match(version):
        return refused(KIND, "not an HTTP/1.x request line")
    if method == b"CONNECT":
        return refused(KIND, "CONNECT", reasons.PROTOCOL)
    if target == b"*" and method != b"OPTIONS":
        return refused(KIND, "asterisk target outside OPTIONS")
    if target[:1] not in (b"/", b"*") and not _ABSOLUTE.match(target.decode("ascii", "replace")):
        return refused(KIND, "request target in authority form")
    return None


def _host(value):
    """The host name of a Host value ``name[:port]`` (bytes), or None."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    name, colon, port = text.rpartition(":") if ":" in text else (text, "", "")
    if colon and not (_PORT.match(port) and int(port) <= 65535):
        return None
    return hostname.normal(name)
