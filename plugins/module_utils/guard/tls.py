"""The server name a TLS client asks for, read from its ClientHello.

Our own reader of the few structures the guard needs (RFC 8446 sections 4.1.2
and 5.1, RFC 6066 section 3): the record layer, the handshake header, and
the ClientHello's fields up to and through its extensions. Everything is
checked against its declared length, so a hello that is truncated, has bytes
left over, or holds two extensions of one type is refused, not guessed at.

* ``read(data)`` takes the first bytes of a flow (the client's side, from
  its first byte) and returns a ``Reading``: NEED_MORE while the hello is
  incomplete, NAME with the SNI, or REFUSED with the reason.
* The hello may span several records (a handshake message may be cut into
  records, RFC 8446 5.1) and any number of segments; it is read up to
  ``MAX_HELLO`` bytes of handshake data (16 KiB, one maximal record), larger
  is refused. Bytes after the hello's last record (early data) are not read.
* No server_name extension, no host_name in it, two host_names, an IP
  literal or a name outside the allowlist's alphabet: refused.
* ECH (encrypted_client_hello, 0xfe0d): the outer hello is what is read, so
  its SNI (the client-facing server's public name) is the one returned;
  ``Reading.ech`` says the extension was there.
"""

import struct

from ..kernel.fastpath import native as _native
from . import hostname
from . import reasons
from .reading import MORE, named, refused

_EXT = struct.Struct("!HH")

CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ECH = 0xFE0D
NAME_TYPE_HOST = 0
RECORD_HEADER = 5
MAX_RECORD = 16384          # 2^14, the largest plaintext record (RFC 8446 5.1)
MAX_HELLO = 16384           # handshake bytes read at most (header included)
MAX_RECORDS = 4             # a hello cut into more records than this is refused

KIND = "tls"


def looks_like(data):
    """Whether a flow starting with DATA (one byte or more) can only be TLS."""
    return data[:1] == b"\x16"


def _be16(data, pos):
    return (data[pos] << 8) | data[pos + 1]


def read(data):
    """A Reading of the ClientHello at the start of DATA (bytes)."""
    if _native_name is not None:
        # the common case in C (kernel/fastpath.py): a name, or None for
        # anything else, which the reader below reads again and says why
        found = _native_name(data)
        if found is not None:
            name = hostname.from_bytes(found[0])
            if name is not None:
                return named(KIND, name, found[1])
    return _read(data)


_native_name = _native.hello_name if _native is not None else None


def _read(data):
    """``read`` in Python: the definition of what the C reader returns for
    the common case, and the reader of every other case."""
    # the common case first, the whole hello in one record (what every
    # client sends but the largest hellos): the same checks as below, in the
    # order below, without the record loop's bookkeeping
    if len(data) >= 9 and data[0] == CONTENT_HANDSHAKE and data[1] == 3 and data[2] <= 4 and data[5] == 1:
        length = (data[3] << 8) | data[4]
        size = (data[6] << 16) | (data[7] << 8) | data[8]
        if 0 < length <= MAX_RECORD and size + 4 == length and len(data) >= 5 + length:
            return _hello(data[9:5 + length])
    handshake = b""
    pos = 0
    records = 0
    while True:
        if len(data) - pos < RECORD_HEADER:
            return MORE
        ctype, major, minor = data[pos], data[pos + 1], data[pos + 2]
        length = _be16(data, pos + 3)
        if ctype != CONTENT_HANDSHAKE:
            return refused(KIND, "record type %d before the ClientHello was complete" % ctype)
        if major != 3 or minor > 4:
            return refused(KIND, "record version %d.%d" % (major, minor))
        if not 0 < length <= MAX_RECORD:
            return refused(KIND, "record length %d" % length)
        records += 1
        if records > MAX_RECORDS:
            return refused(KIND, "ClientHello cut into more than %d records" % MAX_RECORDS)
        end = pos + RECORD_HEADER + length
        fragment = data[pos + RECORD_HEADER:end]
        so_far = handshake + fragment
        if len(so_far) >= 4:
            if so_far[0] != HANDSHAKE_CLIENT_HELLO:
                return refused(KIND, "handshake message %d instead of a ClientHello" % so_far[0])
            size = (so_far[1] << 16) | (so_far[2] << 8) | so_far[3]
            if size + 4 > MAX_HELLO:
                return refused(KIND, "ClientHello of %d bytes (more than %d)" % (size + 4, MAX_HELLO))
            if len(data) >= end and len(so_far) >= size + 4:
                if len(so_far) > size + 4:
                    return refused(KIND, "bytes after the ClientHello in its record")
                return _hello(so_far[4:])
        if len(data) < end:
            if len(handshake) + length > MAX_HELLO:
                return refused(KIND, "ClientHello longer than %d bytes" % MAX_HELLO)
            return MORE
        handshake = so_far
        pos = end


def _hello(body):
    """The SNI of a complete ClientHello body (after its 4-byte header)."""
    n = len(body)
    # legacy_version (2), random (32)
    if n < 35:
        return refused(KIND, "ClientHello too short")
    if body[0] != 3:
        return refused(KIND, "ClientHello version %d.%d" % (body[0], body[1]))
    p = 34
    sid = body[p]
    p += 1 + sid
    if sid > 32 or p + 2 > n:
        return refused(KIND, "bad session id")
    suites = _be16(body, p)
    p += 2 + suites
    if suites < 2 or suites % 2 or p + 1 > n:
        return refused(KIND, "bad cipher suites")
    methods = body[p]
    p += 1 + methods
    if methods < 1 or p > n:
        return refused(KIND, "bad compression methods")
    if p == n:
        return refused(KIND, "no extensions, so no SNI", reasons.NO_NAME)
    if p + 2 > n or p + 2 + _be16(body, p) != n:
        return refused(KIND, "extensions do not fill the ClientHello")
    p += 2
    seen = set()
    sni = None
    ech = False
    unpack = _EXT.unpack_from
    while p < n:
        if p + 4 > n:
            return refused(KIND, "truncated extension")
        etype, elen = unpack(body, p)
        start, p = p + 4, p + 4 + elen
        if p > n:
            return refused(KIND, "truncated extension %d" % etype)
        if etype in seen:
            return refused(KIND, "extension %d given twice" % etype)
        seen.add(etype)
        if etype == EXT_SERVER_NAME:
            sni = _server_name(body[start:p])
            if isinstance(sni, tuple):      # a refusal
                return sni
        elif etype == EXT_ECH:
            ech = True
    if sni is None:
        return refused(KIND, "no SNI", reasons.NO_NAME)
    return named(KIND, sni, ech)


def _server_name(ext):
    """The host_name of a server_name extension body, or a refusal."""
    if len(ext) < 2 or _be16(ext, 0) != len(ext) - 2:
        return refused(KIND, "malformed server_name extension")
    p, n = 2, len(ext)
    found = None
    while p < n:
        if p + 3 > n:
            return refused(KIND, "truncated server_name entry")
        ntype, nlen = ext[p], _be16(ext, p + 1)
        start, p = p + 3, p + 3 + nlen
        if p > n:
            return refused(KIND, "truncated server_name entry")
        if ntype != NAME_TYPE_HOST:
            continue
        if found is not None:
            return refused(KIND, "two host names in server_name")
        found = ext[start:p]
    if found is None:
        return refused(KIND, "no host_name in server_name", reasons.NO_NAME)
    name = hostname.from_bytes(found)
    if name is None:
        return refused(KIND, "SNI %r is not a host name" % found[:64], reasons.NO_NAME)
    return name
