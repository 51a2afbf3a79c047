"""Pure decisions of the host DNS resolver (DESIGN.md sections 3 and 7).

Nothing here opens a socket or touches the kernel: the daemon
(``resolver_daemon``) feeds wire bytes, state records and upstream replies in
and sends what comes out. Everything a test wants to pin down lives here:

* reading a guest's query from the wire (``parse_query``) and the short
  replies that need no upstream (``short_reply``: REFUSED, NXDOMAIN, ...);
* what a VM's policy says about a name (``VmPolicy.decide``);
* reading an upstream reply (``parse_reply``: names decompressed, so records
  can be copied into the guest's reply as they are);
* which parts of an upstream answer a guest may see, and which addresses are
  learned into the VM's address set (``guest_view``), with the rebinding
  filter (``Rebinding``);
* how long an answer is cached and how long a learned address stays
  (``cache_ttl``, ``learn_timeout``);
* the wire form of the guest's answer, with the offsets of its TTL fields so
  a cached answer can be re-aged without re-encoding it (``render``,
  ``Rendered``).
"""

import ipaddress
import socket
import struct
from collections import namedtuple

from . import addressing as A
from . import domains
from .errors import InputError

# --------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------
DEFAULT_TTL_FLOOR = 30      # a learned address lives at least this long ...
DEFAULT_GRACE = 30          # ... plus this, past the answer's TTL
MAX_CACHE_TTL = 86400       # no answer is cached (or given out) for longer
MAX_NEGATIVE_TTL = 300      # NXDOMAIN/NODATA with an SOA: at most 5 minutes
IPSET_MAX_TIMEOUT = 2147483  # the kernel's limit for an ipset timeout
EDNS_PAYLOAD = 1232         # what we offer and ask for (DNS flag day 2020)

Settings = namedtuple("Settings", "ttl_floor grace")


def settings(ttl_floor=None, grace=None):
    """Validated settings; None means the default."""
    return Settings(_seconds("ttl_floor", ttl_floor, DEFAULT_TTL_FLOOR),
                    _seconds("grace", grace, DEFAULT_GRACE))


def _seconds(param, value, default):
    if value is None:
        return default
    try:
        number = int(str(value).strip())
        if isinstance(value, bool) or str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(param, "%r is not a whole number of seconds" % (value,), "0-86400")
    if not 0 <= number <= 86400:
        raise InputError(param, "%d is out of range" % number, "0-86400")
    return number


def parse_listen(value):
    """``IP`` or ``IP:PORT`` -> (ip, port); the port defaults to 53."""
    accepted = "an IPv4 address, optionally with :port, e.g. 169.254.64.1 or 127.0.0.1:5353"
    text = str(value).strip()
    host, sep, port = text.partition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise InputError("listen", "invalid listen address %r" % text, accepted)
    if not sep:
        return host, A.RESOLVER_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError("listen", "invalid port in %r" % text, accepted)
    return host, int(port)


def learn_timeout(ttl, cfg):
    """Seconds an address learned from an answer with TTL stays in the set."""
    return min(max(int(ttl), cfg.ttl_floor) + cfg.grace, IPSET_MAX_TIMEOUT)


def upstream_from_resolv_conf(text):
    """The first IPv4 nameserver of a resolv.conf, or None."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                return str(ipaddress.IPv4Address(fields[1]))
            except ValueError:
                continue        # IPv6 or a scoped address: not ours to use
    return None


# --------------------------------------------------------------------------
# wire constants
# --------------------------------------------------------------------------
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODE_NAMES = {NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL", NXDOMAIN: "NXDOMAIN",
               NOTIMP: "NOTIMP", REFUSED: "REFUSED"}
T_A, T_NS, T_CNAME, T_SOA, T_AAAA, T_OPT = 1, 2, 5, 6, 28, 41
CLASS_IN = 1

F_QR = 0x8000
F_AA = 0x0400
F_TC = 0x0200
F_RD = 0x0100
F_RA = 0x0080
F_CD = 0x0010
_OPCODE_MASK = 0x7800

_HEADER = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")
_TTL = struct.Struct("!I")
_OPT_RR = b"\x00" + struct.pack("!HHIH", T_OPT, EDNS_PAYLOAD, 0, 0)


class Question(object):
    """A guest's query as read from the wire.

    ``wire`` is the question section exactly as sent (name, type and class;
    the guest's spelling, echoed back in the reply), ``key`` the same lower-cased (DNS names compare
    ASCII case-insensitively) and ``name`` the text form for policy matching,
    or None when a label holds a dot or an unprintable byte (such a name can
    match no pattern)."""

    __slots__ = ("id", "flags", "wire", "key", "name", "qtype", "qclass", "end", "edns", "payload")

    def cache_key(self):
        return (self.key, self.qtype, self.qclass)


class BadQuery(Exception):
    """A query that gets FORMERR (or NOTIMP) back. ``question`` may be None."""

    def __init__(self, rcode, qid, flags):
        Exception.__init__(self, RCODE_NAMES.get(rcode, rcode))
        self.rcode, self.id, self.flags = rcode, qid, flags


def _name_text(labels):
    parts = []
    for label in labels:
        if b"." in label or any(c < 33 or c > 126 for c in label):
            return None
        parts.append(label.decode("ascii").lower())
    return ".".join(parts)


def parse_query(data):
    """A query's question, or None for what deserves no answer at all (a
    response, a runt). Raises BadQuery for what gets an error reply."""
    if len(data) < 12:
        return None
    if not isinstance(data, bytes):
        data = bytes(data)
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & F_QR:
        return None
    if flags & _OPCODE_MASK:
        raise BadQuery(NOTIMP, qid, flags)
    if qdcount != 1:
        raise BadQuery(FORMERR, qid, flags)
    pos, labels, size = 12, [], 0
    while True:
        if pos >= len(data):
            raise BadQuery(FORMERR, qid, flags)
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:                     # no compression in a question
            raise BadQuery(FORMERR, qid, flags)
        size += length + 1
        if size > 254:
            raise BadQuery(FORMERR, qid, flags)
        labels.append(data[pos + 1:pos + 1 + length])
        pos += 1 + length
    if pos + 4 > len(data):
        raise BadQuery(FORMERR, qid, flags)
    q = Question()
    q.id, q.flags = qid, flags
    q.qtype, q.qclass = _QTAIL.unpack_from(data, pos)
    q.end = pos + 4
    q.wire = data[12:q.end]
    q.key = q.wire.lower()
    q.name = _name_text(labels)
    q.edns, q.payload = False, 512
    if arcount and not ancount and not nscount:
        q.edns, q.payload = _read_opt(data, q.end)
    return q


def _read_opt(data, pos):
    """(has OPT, UDP payload size the client accepts) from the additional
    section that follows the question."""
    if pos + 11 <= len(data) and data[pos] == 0:
        rtype, payload = struct.unpack_from("!HH", data, pos + 1)
        if rtype == T_OPT:
            return True, max(512, payload)
    return False, 512


def reply_flags(query_flags, rcode, truncated=False):
    flags = F_QR | F_RA | (query_flags & (F_RD | F_CD)) | rcode
    return flags | F_TC if truncated else flags


def short_reply(data, q, rcode, truncated=False):
    """A reply with no records: the question echoed, OPT if the guest sent one."""
    header = _HEADER.pack(q.id, reply_flags(q.flags, rcode, truncated), 1, 0, 0, 1 if q.edns else 0)
    return header + data[12:q.end] + (_OPT_RR if q.edns else b"")


def error_reply(bad):
    """Reply to a query that could not be read: header only."""
    return _HEADER.pack(bad.id, reply_flags(bad.flags, bad.rcode), 0, 0, 0, 0)


def upstream_query(qid, q):
    """The query sent upstream: the question lower-cased (one cache entry for
    every spelling), recursion desired, EDNS with our payload size."""
    return _HEADER.pack(qid, F_RD, 1, 0, 0, 1) + q.key + _OPT_RR


def udp_limit(q):
    """Largest UDP reply the guest accepts."""
    return min(q.payload, EDNS_PAYLOAD) if q.edns else 512


# --------------------------------------------------------------------------
# policy
# --------------------------------------------------------------------------
REFUSE, DENY_NAME, FORWARD = "refuse", "nxdomain", "forward"


def _spans(cidrs):
    """CIDR strings -> ((first, last) as integers), for quick containment."""
    out = []
    for cidr in cidrs:
        net = ipaddress.IPv4Network(cidr)
        out.append((int(net.network_address), int(net.broadcast_address)))
    return tuple(out)


def _inside(value, spans):
    for low, high in spans:
        if low <= value <= high:
            return True
    return False


class VmPolicy(object):
    """One VM as the resolver sees it: who it is and what its policy allows.

    ``identity`` changes when the VM is recreated (new namespace, new sets);
    ``policy_key`` when its policy changes."""

    __slots__ = ("vm_id", "slot", "guest_ip", "netns", "mode", "matcher", "allowed_spans", "denied_spans",
                 "identity", "policy_key", "_decisions")

    def __init__(self, record):
        from .inputs import policy_from_dict
        policy = policy_from_dict(record.get("policy"))
        self.vm_id = record["id"]
        self.slot = record["slot"]
        self.guest_ip = A.guest_ip(self.slot)
        self.netns = record.get("netns")
        self.mode = policy.mode
        self.matcher = domains.Matcher(policy.allowed_domains)
        self.allowed_spans = _spans(policy.allowed_cidrs)
        self.denied_spans = _spans(policy.denied_cidrs)
        self.identity = (self.vm_id, self.slot, self.netns, record.get("created"))
        self.policy_key = (policy.mode, policy.allowed_domains, policy.allowed_cidrs, policy.denied_cidrs)
        self._decisions = {}

    @property
    def learns(self):
        """Whether allowed answers are learned into the VM's ``dns`` set."""
        return self.mode == "custom" and bool(self.matcher)

    def decide(self, q):
        """(action, pattern): REFUSE (deny-all, or a class other than IN),
        DENY_NAME (custom, name not on the list: NXDOMAIN) or FORWARD."""
        if self.mode == "deny-all" or q.qclass != CLASS_IN:
            return REFUSE, None
        if self.mode == "allow-all":
            return FORWARD, None
        if q.name is None:
            return DENY_NAME, None
        pattern = self._decisions.get(q.name, False)
        if pattern is False:
            pattern = self.matcher.allowed(q.name)
            if len(self._decisions) > 4096:
                self._decisions.clear()
            self._decisions[q.name] = pattern
        return (FORWARD, pattern) if pattern else (DENY_NAME, None)

    def may_learn(self, value):
        """Learning an address (an integer) the firewall drops anyway opens
        nothing: denied CIDRs are not learned."""
        return not _inside(value, self.denied_spans)


def vm_table(records):
    """{guest address: VmPolicy} of the given state records."""
    out = {}
    for record in records:
        vm = VmPolicy(record)
        out[vm.guest_ip] = vm
    return out


# --------------------------------------------------------------------------
# rebinding
# --------------------------------------------------------------------------
REBINDING_RANGES = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8",          # "this network"
    "10.0.0.0/8",         # private
    "100.64.0.0/10",      # shared address space (carrier-grade NAT)
    "127.0.0.0/8",        # loopback
    "169.254.0.0/16",     # link-local: metadata services, the transit links, the resolver
    "172.16.0.0/12",      # private; holds the VM range 172.16.0.0/16
    "192.168.0.0/16",     # private
    "224.0.0.0/4",        # multicast
    "240.0.0.0/4",        # reserved, and the broadcast address
    str(A.VM_RANGE),
    str(A.TRANSIT_RANGE),
))
_REBINDING_SPANS = _spans(REBINDING_RANGES)


class Rebinding(object):
    """Which answer addresses a guest must not be given: addresses in
    REBINDING_RANGES or the host's own, unless one of the VM's
    ``allowed_cidrs`` holds the address."""

    def __init__(self, host_addresses=()):
        self.host = frozenset(int(ipaddress.IPv4Address(a)) for a in host_addresses)

    def host_addresses(self):
        return {str(ipaddress.IPv4Address(v)) for v in self.host}

    def blocked(self, address, vm):
        """ADDRESS: text, or the address as an integer."""
        value = address if isinstance(address, int) else int(ipaddress.IPv4Address(address))
        if value not in self.host and not _inside(value, _REBINDING_SPANS):
            return False
        return not _inside(value, vm.allowed_spans)


# --------------------------------------------------------------------------
# upstream replies: read at the wire level, names decompressed
# --------------------------------------------------------------------------
class BadReply(Exception):
    pass


# Types whose RDATA holds names that may be compressed (RFC 1035, 2782, 6672):
# (bytes before the first name, number of names, whether bytes follow).
_NAMES_IN_RDATA = {T_NS: (0, 1), T_CNAME: (0, 1), 12: (0, 1), 39: (0, 1),   # PTR, DNAME
                   15: (2, 1), 33: (6, 1), T_SOA: (0, 2)}                   # MX, SRV, SOA
_RR_HEAD = struct.Struct("!HHIH")


def _read_name(msg, pos):
    """(uncompressed wire name, position after the name where it started)."""
    out, end, jumps = [], None, 0
    size = len(msg)
    total = 1
    while True:
        if pos >= size:
            raise BadReply("name runs past the message")
        length = msg[pos]
        if length >= 0xC0:
            if pos + 1 >= size or jumps > 64:
                raise BadReply("bad compression pointer")
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            jumps += 1
            continue
        if length > 63:
            raise BadReply("unknown label type")
        if length == 0:
            out.append(b"\0")
            return b"".join(out), (end if end is not None else pos + 1)
        total += length + 1
        if total > 255 or pos + 1 + length > size:
            raise BadReply("name too long")
        out.append(msg[pos:pos + 1 + length])
        pos += 1 + length


def _rdata(msg, rtype, start, length):
    """RDATA with every name in it decompressed, so it can be copied into
    another message as it is."""
    layout = _NAMES_IN_RDATA.get(rtype)
    if layout is None:
        return msg[start:start + length]
    fixed, names = layout
    parts, pos = [msg[start:start + fixed]], start + fixed
    for _name in range(names):
        name, pos = _read_name(msg, pos)
        parts.append(name)
    parts.append(msg[pos:start + length])          # SOA's five numbers
    return b"".join(parts)


class Record(object):
    """One resource record of an upstream answer. ``owner`` is the owner
    name in uncompressed wire form, ``rdata`` with its names decompressed."""

    __slots__ = ("owner", "rtype", "rclass", "ttl", "rdata")

    def __init__(self, owner, rtype, rclass, ttl, rdata):
        self.owner, self.rtype, self.rclass, self.ttl, self.rdata = owner, rtype, rclass, ttl, rdata

    def aged(self, ttl):
        return self if ttl == self.ttl else Record(self.owner, self.rtype, self.rclass, ttl, self.rdata)

    def address(self):
        """The A record's address as text."""
        return socket.inet_ntoa(self.rdata)


def parse_reply(msg):
    """(id, flags, answer records, authority records) of an upstream reply.
    Raises BadReply."""
    if len(msg) < 12:
        raise BadReply("short message")
    qid, flags, qdcount, ancount, nscount, _arcount = _HEADER.unpack_from(msg)
    pos = 12
    for _question in range(qdcount):
        pos = _read_name(msg, pos)[1] + 4
    sections = ([], [])
    for index, count in ((0, ancount), (1, nscount)):
        for _record in range(count):
            owner, pos = _read_name(msg, pos)
            if pos + 10 > len(msg):
                raise BadReply("record runs past the message")
            rtype, rclass, ttl, length = _RR_HEAD.unpack_from(msg, pos)
            pos += 10
            if pos + length > len(msg):
                raise BadReply("record data runs past the message")
            if rtype != T_OPT:
                sections[index].append(Record(owner, rtype, rclass, min(ttl, 0x7FFFFFFF),
                                              _rdata(msg, rtype, pos, length)))
            pos += length
    return qid, flags, sections[0], sections[1]


class Answer(object):
    """An upstream reply, kept in the shared cache: rcode, answer and
    authority records, when it was fetched and until when it may be used."""

    __slots__ = ("rcode", "answers", "authority", "fetched", "expires")

    def __init__(self, rcode, answers, authority, fetched, ttl):
        self.rcode, self.answers, self.authority = rcode, answers, authority
        self.fetched, self.expires = fetched, fetched + ttl


def _soa_minimum(record):
    return struct.unpack_from("!I", record.rdata, len(record.rdata) - 4)[0] if len(record.rdata) >= 22 else 0


def cache_ttl(rcode, answers, authority):
    """Seconds an upstream reply may be served from the cache: the smallest
    TTL of its answer; for NXDOMAIN or an empty answer the SOA's negative
    TTL (not cached without an SOA); errors are not cached."""
    if rcode == NOERROR and answers:
        return min(min(r.ttl for r in answers), MAX_CACHE_TTL)
    if rcode in (NOERROR, NXDOMAIN):
        for r in authority:
            if r.rtype == T_SOA:
                return min(r.ttl, _soa_minimum(r), MAX_NEGATIVE_TTL)
    return 0


def answer_from_reply(msg, now):
    """An Answer from the wire bytes of an upstream reply. Raises BadReply."""
    _qid, flags, answers, authority = parse_reply(msg)
    rcode = flags & 0xF
    authority = [r for r in authority if r.rtype == T_SOA]
    return Answer(rcode, answers, authority, now, cache_ttl(rcode, answers, authority))


def chain_owners(qname_wire, answers):
    """Owner names (lower-case wire form) of the answer's CNAME chain that
    starts at QNAME_WIRE, QNAME first; bounded against loops."""
    cname_of = {}
    for r in answers:
        if r.rtype == T_CNAME:
            cname_of.setdefault(r.owner.lower(), r.rdata.lower())
    owners = [qname_wire.lower()]
    while owners[-1] in cname_of and len(owners) < 16:
        nxt = cname_of[owners[-1]]
        if nxt in owners:
            break
        owners.append(nxt)
    return owners


GuestView = namedtuple("GuestView", "rcode answers authority learn removed")
# learn: [(address, ttl)], removed: [address] (rebinding)


def guest_view(answer, q, vm, rebinding, age=0):
    """What the guest VM sees of ANSWER to its question Q, AGE seconds after
    it was fetched: AAAA records go; under ``custom``, records off the CNAME
    chain go, and so do A records that point into the rebinding ranges; the
    remaining A addresses are to be learned. TTLs are aged."""
    if answer.rcode not in (NOERROR, NXDOMAIN):
        return GuestView(SERVFAIL, [], [], [], [])
    answers, learn, removed = [], [], []
    custom = vm.mode == "custom"
    chain = set(chain_owners(q.key[:-4], answer.answers)) if custom else None
    for r in answer.answers:
        if r.rtype == T_AAAA:
            continue
        if custom and r.owner.lower() not in chain:
            continue            # not part of what was asked: never learned, never shown
        ttl = max(r.ttl - age, 0)
        if custom and r.rtype == T_A and r.rclass == CLASS_IN and len(r.rdata) == 4:
            value = int.from_bytes(r.rdata, "big")
            if rebinding.blocked(value, vm):
                removed.append(r.address())
                continue
            if vm.may_learn(value):
                learn.append((r.address(), ttl))
        answers.append(r.aged(ttl))
    authority = [r.aged(max(r.ttl - age, 0)) for r in answer.authority]
    return GuestView(answer.rcode, answers, authority, learn, removed)


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
class Rendered(object):
    """A reply without its first two bytes (the query id), with the offsets
    of its TTL fields, so that serving it again later only rewrites those.

    ``expires`` is when the upstream answer it came from runs out;
    ``tail`` is right until ``fresh_until`` (then ``at`` re-ages it)."""

    __slots__ = ("tail", "offsets", "ttls", "made", "expires", "age", "fresh_until")

    def __init__(self, tail, offsets, ttls, made, expires):
        self.tail, self.offsets, self.ttls = bytes(tail), offsets, ttls
        self.made, self.expires, self.age = made, expires, 0
        self.fresh_until = min(made + 1, expires) if offsets else expires

    def at(self, now):
        """The tail with TTLs aged to NOW (re-encoded once per second)."""
        age = int(now - self.made)
        if age != self.age and self.offsets:
            buf = bytearray(self.tail)
            for off, ttl in zip(self.offsets, self.ttls):
                _TTL.pack_into(buf, off, max(ttl - age, 0))
            self.tail, self.age = bytes(buf), age
            self.fresh_until = min(self.made + age + 1, self.expires)
        return self.tail


_POINTER_TO_QUESTION = b"\xc0\x0c"


def render(data, q, view, limit, made, expires):
    """Encode VIEW as the reply to the query DATA (whose question is Q),
    echoing the guest's question as sent. Owner names equal to the question
    point to it; other names go uncompressed. Answers larger than LIMIT bytes
    come back truncated (TC, no records). Returns a Rendered."""
    records = list(view.answers) + list(view.authority)
    tail = bytearray(struct.pack("!HHHHH", reply_flags(q.flags, view.rcode), 1, len(view.answers),
                                 len(view.authority), 1 if q.edns else 0))
    tail += data[12:q.end]
    qname = q.key[:-4]
    offsets, ttls = [], []
    for r in records:
        tail += _POINTER_TO_QUESTION if r.owner.lower() == qname else r.owner
        ttl = min(r.ttl, MAX_CACHE_TTL)
        offsets.append(len(tail) + 4)        # after type and class; relative to the tail
        ttls.append(ttl)
        tail += _RR_HEAD.pack(r.rtype, r.rclass, ttl, len(r.rdata))
        tail += r.rdata
    if q.edns:
        tail += _OPT_RR
    if len(tail) + 2 > limit:
        return Rendered(short_reply(data, q, view.rcode, truncated=True)[2:], (), (), made, expires)
    return Rendered(tail, tuple(offsets), tuple(ttls), made, expires)


# --------------------------------------------------------------------------
# logging of refusals
# --------------------------------------------------------------------------
class RefusalLog(object):
    """Says whether to log a refusal now: each (VM, name) at most once per
    INTERVAL seconds, counting what was held back, so a looping guest cannot
    flood the log."""

    def __init__(self, interval=10.0, max_keys=10000):
        self.interval, self.max_keys = interval, max_keys
        self._last = {}

    def note(self, vm_id, name, now):
        """None to stay quiet, else how many were held back since the last line."""
        key = (vm_id, name)
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        if len(self._last) >= self.max_keys:
            self._last.clear()
        held = entry[1] if entry is not None else 0
        self._last[key] = [now, 0]
        return held
