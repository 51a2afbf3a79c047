"""ClientHellos for the guard's tests: real ones made by Python's ssl
(OpenSSL) into a memory BIO, and hand-built ones (our own packing) for the
shapes a real client never sends."""

import struct

from sandbox.tls import client_hello


def real_hello(server_hostname="a.test", alpn=None):
    """The bytes OpenSSL sends first as a client (records included)."""
    return client_hello(server_hostname, alpn)


def ext(etype, body):
    return struct.pack("!HH", etype, len(body)) + body


def sni_ext(*names, name_type=0):
    entries = b"".join(struct.pack("!BH", name_type, len(n)) + n for n in names)
    return ext(0, struct.pack("!H", len(entries)) + entries)


def hello_body(extensions=(), version=b"\x03\x03", session_id=b"\x00" * 32,
               suites=b"\x13\x01\x13\x02", methods=b"\x00", raw_extensions=None):
    body = version + b"\x11" * 32
    body += bytes([len(session_id)]) + session_id
    body += struct.pack("!H", len(suites)) + suites
    body += bytes([len(methods)]) + methods
    if raw_extensions is not None:
        body += raw_extensions
    elif extensions is not None:
        blob = b"".join(extensions)
        body += struct.pack("!H", len(blob)) + blob
    return body


def handshake(body, htype=1):
    return bytes([htype]) + struct.pack("!I", len(body))[1:] + body


def records(message, sizes=None, ctype=22, version=b"\x03\x01"):
    """MESSAGE cut into records of SIZES bytes (one record by default)."""
    sizes = list(sizes or [len(message)])
    out, pos = b"", 0
    for size in sizes:
        part = message[pos:pos + size]
        out += bytes([ctype]) + version + struct.pack("!H", len(part)) + part
        pos += size
    assert pos >= len(message)
    return out


def built_hello(*names, extra=(), **kw):
    exts = [sni_ext(*[n.encode() if isinstance(n, str) else n for n in names])] if names else []
    return records(handshake(hello_body(exts + list(extra), **kw)))
