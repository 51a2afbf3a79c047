"""Reading a guest's query at a bounded cost, before anything else is done
with it (pure: bytes in, a ``Query`` or a verdict out).

A query needs its header, its one question and at most one OPT record;
that is all this reader looks at, in one pass over at most ``MAX_QUERY``
bytes, without following a compression pointer or reading a record other
than OPT. Everything else a message could carry gets FORMERR here, before
any other work (no dnslib, no cache, no policy, no upstream, no learning):

* shorter than a header: no answer (nothing to answer to);
* a response (QR set): no answer (it could be a reflection);
* longer than ``MAX_QUERY``: FORMERR;
* an opcode other than QUERY: NOTIMP;
* qdcount other than 1, any answer or authority record, more than one
  additional record, an additional record that is not OPT with the root
  name, an OPT of an EDNS version other than 0, bytes after the last record
  (FORMERR);
* a name with a compression pointer or a reserved label type, a label over
  63 bytes, a name over 255 bytes, a name or record cut short (FORMERR).

Reading is linear in the size of the message with no loop that a message
can make longer (at most 128 labels), so a query costs a few microseconds
whatever it holds. Replies are packed by dnslib (``core``); this module only
reads.

The cache key of a query (``Query.hot_key``) is the message as it would be
without EDNS options and without its id: header flags and counts, the
question as sent, and the OPT record's fixed fields with an empty option
list. Options (a padding option, a cookie) never change what the guest is
answered, so they never change the key either: padded queries share one
cache entry, and a query without options is its own key (its bytes after
the id), which lets the daemon look a repeated query up before reading it.
"""

import struct

MAX_QUERY = 512             # bytes; a query with a 255-byte name, OPT and padding fits
MAX_NAME = 255              # wire bytes of a name, the root label included (RFC 1035 2.3.4)
MAX_LABEL = 63

# protocol numbers (RFC 1035, 6891)
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
T_OPT = 41
FLAG_QR, FLAG_RD, FLAG_CD = 0x8000, 0x0100, 0x0010

_HEADER = struct.Struct("!6H")
_U16 = struct.Struct("!H")
_TYPE_CLASS = struct.Struct("!HH")
_OPT_FIXED = struct.Struct("!HHIH")     # type, class (the UDP payload size), ttl (ext. rcode, version, flags), rdlength
_NO_OPTIONS = b"\x00\x00"


class _Flags(object):
    """The RD and CD bits of a query's flag word (``flags``), which a reply
    echoes."""

    __slots__ = ()

    @property
    def rd(self):
        return 1 if self.flags & FLAG_RD else 0

    @property
    def cd(self):
        return 1 if self.flags & FLAG_CD else 0


class BadQuery(_Flags, Exception):
    """A query answered with an error and nothing else: ``rcode``, and the
    ``id`` and ``flags`` (the header's second word) to answer with."""

    def __init__(self, rcode, qid, flags, why):
        Exception.__init__(self, why)
        self.rcode, self.id, self.flags, self.why = rcode, qid, flags, why


class Query(_Flags):
    """What the reader found. ``labels``: the name's labels as sent (the
    reply echoes them); ``key``: the same lower-cased (one cache entry for
    every spelling); ``question_wire``: the question section's bytes as
    sent; ``name``: left for ``core`` (the text policies match);
    ``edns``/``payload``: whether an OPT record came and the UDP size it
    offers (at least 512); ``hot_key``: see the module's docstring."""

    __slots__ = ("id", "flags", "labels", "key", "qtype", "qclass", "question_wire", "edns", "payload",
                 "hot_key", "name", "dnslib_question")

    def cache_key(self):
        """The key of the shared cache of upstream answers."""
        return (self.key, self.qtype, self.qclass)


def read_query(data):
    """DATA (one UDP datagram or one TCP message) -> a Query, or None for
    what deserves no answer at all. Raises BadQuery (see the module's
    docstring)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    if size < 12:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & FLAG_QR:
        return None
    if size > MAX_QUERY:
        raise BadQuery(FORMERR, qid, flags, "%d bytes, more than %d" % (size, MAX_QUERY))
    if flags & 0x7800:
        raise BadQuery(NOTIMP, qid, flags, "opcode %d" % ((flags >> 11) & 0xF))
    if qdcount != 1 or ancount or nscount or arcount > 1:
        raise BadQuery(FORMERR, qid, flags, "sections %d/%d/%d/%d" % (qdcount, ancount, nscount, arcount))
    labels, pos = [], 12
    while True:
        if pos >= size:
            raise BadQuery(FORMERR, qid, flags, "name cut short")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > MAX_LABEL:          # 0xC0: a compression pointer; 0x40, 0x80: reserved label types
            raise BadQuery(FORMERR, qid, flags, "label type or length 0x%02x" % length)
        end = pos + 1 + length
        if end - 12 + 1 > MAX_NAME:
            raise BadQuery(FORMERR, qid, flags, "name over %d bytes" % MAX_NAME)
        if end > size:
            raise BadQuery(FORMERR, qid, flags, "name cut short")
        labels.append(data[pos + 1:end])
        pos = end
    qend = pos + 4
    if qend > size:
        raise BadQuery(FORMERR, qid, flags, "question cut short")
    qtype, qclass = _TYPE_CLASS.unpack_from(data, pos)
    q = Query()
    q.id, q.flags, q.qtype, q.qclass = qid, flags, qtype, qclass
    q.labels = tuple(labels)
    q.key = tuple(label.lower() for label in labels)
    q.question_wire = data[12:qend]
    q.name = q.dnslib_question = None
    if arcount == 0:
        if qend != size:
            raise BadQuery(FORMERR, qid, flags, "%d bytes after the question" % (size - qend))
        q.edns, q.payload = False, 512
        q.hot_key = data[2:]
        return q
    if qend + 11 > size or data[qend] != 0:
        raise BadQuery(FORMERR, qid, flags, "additional record is not an OPT record")
    rtype, payload, ttl, rdlength = _OPT_FIXED.unpack_from(data, qend + 1)
    if rtype != T_OPT:
        raise BadQuery(FORMERR, qid, flags, "additional record of type %d" % rtype)
    if (ttl >> 16) & 0xFF:
        raise BadQuery(FORMERR, qid, flags, "EDNS version %d" % ((ttl >> 16) & 0xFF))
    if qend + 11 + rdlength != size:
        raise BadQuery(FORMERR, qid, flags, "OPT record of the wrong length")
    q.edns, q.payload = True, max(512, payload)
    q.hot_key = data[2:] if rdlength == 0 else data[2:qend + 9] + _NO_OPTIONS
    return q


MAX_POINTERS = 32           # compression pointers followed in one name of an upstream reply


def read_name(data, pos):
    """(labels as sent, the position after the name) of the name at POS of
    DATA, an upstream reply (which, unlike a query, compresses its names):
    a pointer is followed only backwards (to a name before the one being
    read: no loop), at most MAX_POINTERS of them, the name at most
    MAX_NAME bytes; anything else raises ValueError. Linear in the name."""
    labels, size, end, limit, jumps = [], 1, None, pos, 0
    length_of = len(data)
    while True:
        if pos >= length_of:
            raise ValueError("name cut short")
        length = data[pos]
        if length == 0:
            return tuple(labels), (pos + 1 if end is None else end)
        if length >= 0xC0:
            if pos + 2 > length_of:
                raise ValueError("pointer cut short")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= limit or jumps >= MAX_POINTERS:
                raise ValueError("compression pointer forwards or in a loop")
            if end is None:
                end = pos + 2
            jumps += 1
            pos = limit = target
            continue
        if length > MAX_LABEL:
            raise ValueError("label type 0x%02x" % length)
        size += length + 1
        if size > MAX_NAME or pos + 1 + length > length_of:
            raise ValueError("name too long or cut short")
        labels.append(data[pos + 1:pos + 1 + length])
        pos += 1 + length


def reply_matches(wire, qid, question):
    """Whether WIRE (an upstream reply) is a response with id QID whose one
    question is byte for byte QUESTION (the question section we sent: name
    in the case we sent it, type, class). Reads 12 + len(QUESTION) bytes."""
    if len(wire) < 12 + len(question):
        return False
    rid, flags, qdcount = struct.unpack_from("!3H", wire)
    return rid == qid and flags & FLAG_QR and qdcount == 1 and wire[12:12 + len(question)] == question


def reply_id(wire):
    """The id of a message (None for a runt)."""
    return _U16.unpack_from(wire)[0] if len(wire) >= 2 else None
