"""Pure decisions of the host DNS resolver (docs/contract.md, "Policies" and "The resolver").

Nothing here opens a socket or touches the kernel: the daemon
(``resolver_daemon``) feeds wire bytes, state records and upstream replies in
and sends what comes out. Everything a test wants to pin down lives here:

* reading a guest's query (``parse_query``) and the short replies that need
  no upstream (``short_reply``: REFUSED, NXDOMAIN, ...);
* what a VM's policy says about a name (``VmPolicy.decide``);
* reading an upstream reply (``parse_reply``; names in record data come
  back decompressed, so records can be packed into the guest's reply);
* which parts of an upstream answer a guest may see, and which addresses are
  learned into the VM's address set (``guest_view``), with the rebinding
  filter (``Rebinding``);
* how long an answer is cached and how long a learned address stays
  (``cache_ttl``, ``learn_timeout``);
* the guest's answer, with the offsets of its TTL fields so a cached answer
  can be re-aged without packing it again (``render``, ``Rendered``).

Every DNS message is read and written with dnslib (DNSRecord, DNSHeader,
DNSQuestion, RR, EDNS0, dnslib's DNSBuffer); the only bytes this module
touches itself are the TTL fields of a reply dnslib packed (``Rendered.at``)
and, in the daemon, the two id bytes of a cached reply.
"""
import ipaddress
import re
import struct
from collections import namedtuple

try:
    from dnslib import A as ARecord
    from dnslib import CNAME, RR, SOA, TXT, DNSHeader, DNSQuestion, DNSRecord, EDNS0
    from dnslib.label import DNSBuffer, DNSLabel
    HAS_DNSLIB = True
    DNSLIB_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - only the resolver needs it; resolver_daemon says so
    HAS_DNSLIB = False
    DNSLIB_IMPORT_ERROR = exc
    DNSBuffer = object

from ..model import addressing as A
from ..model import domains
from ..model import events
from ..model import inputs
from . import wire

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
    return Settings(inputs.seconds("ttl_floor", ttl_floor, DEFAULT_TTL_FLOOR),
                    inputs.seconds("grace", grace, DEFAULT_GRACE))


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
# the wire: queries are read by ``wire`` (bounded), everything else by dnslib
# --------------------------------------------------------------------------
# protocol numbers (RFC 1035, 3596, 6891), the same as dnslib's RCODE/QTYPE/CLASS
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
# the metrics' rcode label, by the four bits of a reply's header
RCODE_NAMES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED") + tuple(
    "RCODE%d" % n for n in range(6, 16))
T_A, T_CNAME, T_SOA, T_TXT, T_AAAA, T_OPT = 1, 5, 6, 16, 28, 41
CLASS_IN, CLASS_CH = 1, 3
MAX_RECORD_TTL = 0x7FFFFFFF     # RFC 2181 8: a TTL with the top bit set counts as this

_OPT = EDNS0(udp_len=EDNS_PAYLOAD) if HAS_DNSLIB else None     # what every EDNS reply and upstream query carries
_TTL = struct.Struct("!I")             # only to re-age a cached reply in place (Rendered.at)

BadQuery = wire.BadQuery
Query = wire.Query


def _key(label):
    """A DNSLabel's lower-case labels: names compare ASCII case-insensitively."""
    return tuple(part.lower() for part in label.label)


_NOT_IN_A_NAME = re.compile(rb"[^\x21-\x2d\x2f-\x7e]")     # a dot, or outside printable ASCII


def _name_text(labels):
    """Text form for policy matching, or None when a label holds a dot or a
    byte outside printable ASCII (such a name could pass for another)."""
    for label in labels:
        if _NOT_IN_A_NAME.search(label):
            return None
    return b".".join(labels).decode("ascii").lower()


def parse_query(data):
    """A guest's query read by ``wire.read_query`` (header, question, one
    OPT record, nothing else; see there for what gets FORMERR or NOTIMP, a
    BadQuery, and what gets no answer, None), with the text its policy
    matches (``name``; None for a name no pattern may match)."""
    q = wire.read_query(data)
    if q is not None:
        q.name = _name_text(q.labels)
    return q


def question_of(q):
    """The guest's question as dnslib packs it (as sent, case included)."""
    question = q.dnslib_question
    if question is None:
        question = q.dnslib_question = DNSQuestion(DNSLabel(q.labels), q.qtype, q.qclass)
    return question


_REPLY_FLAGS = {}


def _reply_flags(rd, cd, rcode, truncated=False):
    """The flag word of a reply: QR and RA set, RD and CD as the guest sent
    them, no AA, RCODE. (Made by a dnslib DNSHeader once per combination
    and kept: a header built with keyword flags costs three times as much.)"""
    key = (rd, cd, rcode, truncated)
    flags = _REPLY_FLAGS.get(key)
    if flags is None:
        flags = _REPLY_FLAGS[key] = DNSHeader(id=0, bitmap=0, qr=1, ra=1, rd=rd, cd=cd, rcode=rcode,
                                              tc=1 if truncated else 0).bitmap
    return flags


def _reply_header(q, rcode, truncated=False, answers=0, authority=0, additional=0):
    return DNSHeader(id=q.id, bitmap=_reply_flags(q.rd, q.cd, rcode, truncated),
                     q=1, a=answers, auth=authority, ar=additional)


def short_reply(q, rcode, truncated=False):
    """A reply with no records: the guest's question, OPT if it sent one."""
    return bytes(DNSRecord(_reply_header(q, rcode, truncated), [question_of(q)],
                           ar=[_OPT] if q.edns else None).pack())


_BARE_REPLIES = {}


def error_reply(bad):
    """Reply to a query that could not be read (a wire.BadQuery): the header
    alone. (Packed by dnslib once per flag word; the id is put in front.)"""
    key = (bad.rd, bad.cd, bad.rcode)
    tail = _BARE_REPLIES.get(key)
    if tail is None:
        tail = _BARE_REPLIES[key] = bytes(DNSRecord(DNSHeader(id=0, bitmap=_reply_flags(*key))).pack())[2:]
    return struct.pack("!H", bad.id) + tail


def bare_reply(qid, flags, rcode):
    """The header-only reply with rcode RCODE to a query whose header had
    QID and FLAGS (REFUSED to a guest over its budget, before its question
    is read)."""
    return error_reply(wire.BadQuery(rcode, qid, flags, None))


_UPSTREAM_HEAD = struct.Struct("!6H")
_QUERY_FLAGS = DNSHeader(id=0, bitmap=0, rd=1).bitmap if HAS_DNSLIB else 0     # a plain query, recursion desired
_OPT_WIRE = bytes(DNSRecord(DNSHeader(), ar=[_OPT]).pack())[12:] if HAS_DNSLIB else b""     # packed by dnslib
_LETTER_BITS = bytes(0x20 if 0x61 <= c <= 0x7a else 0 for c in range(256))     # bytes.translate table


def upstream_query(qid, q, random_bytes=None):
    """The query sent upstream for the guest's query Q: id QID, recursion
    desired, the guest's question with the name lower-cased (one cache entry
    for every spelling), EDNS with our payload size; with RANDOM_BYTES (as
    many as the name has bytes), each letter of the name is upper-cased
    where its byte of RANDOM_BYTES has the 0x20 bit set: the "0x20" spelling
    (draft-vixie-dnsext-dns0x20), which an answer must echo byte for byte.

    The bytes are the header, Q's question as ``wire`` read it (lower-cased:
    a label's length byte is never a letter) and the OPT record dnslib
    packed once; what DNSRecord.pack() gives for the same query (a unit
    test compares them). Its question section is ``[12:-11]``."""
    question = q.question_wire
    name = question[:-4].lower()
    if random_bytes:
        mask = int.from_bytes(name.translate(_LETTER_BITS), "big") & int.from_bytes(random_bytes, "big")
        name = (int.from_bytes(name, "big") ^ mask).to_bytes(len(name), "big")
    return _UPSTREAM_HEAD.pack(qid, _QUERY_FLAGS, 1, 0, 0, 1) + name + question[-4:] + _OPT_WIRE


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
                 "identity", "policy_key", "allowed_domains", "audit", "version", "_decisions")

    def __init__(self, record):
        policy = record.policy
        self.vm_id = record.id
        self.slot = record.slot
        self.guest_ip = A.guest_ip(self.slot)
        self.netns = record.netns
        self.mode = policy.mode
        self.allowed_domains = policy.allowed_domains
        self.matcher = domains.Matcher(policy.allowed_domains)
        self.allowed_spans = _spans(policy.allowed_cidrs)
        self.denied_spans = _spans(policy.denied_cidrs)
        self.identity = (self.vm_id, self.slot, self.netns, record.created)
        self.policy_key = (policy.mode, policy.allowed_domains, policy.allowed_cidrs, policy.denied_cidrs,
                           policy.audit)
        self.audit = policy.audit
        self.version = events.policy_version(policy)
        self._decisions = {}

    @property
    def learns(self):
        """Whether allowed answers are learned into the VM's ``dns`` set
        (records.Policy.learns_names: in audit mode every name's are)."""
        return self.mode == "custom" and (bool(self.matcher) or self.audit)

    def decide(self, q):
        """(action, pattern): REFUSE (deny-all, or a class other than IN),
        DENY_NAME (custom, name not on the list: NXDOMAIN) or FORWARD. In
        audit mode a name off the list is FORWARD with pattern None: it
        would be refused, and is answered (the caller logs it)."""
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
        if pattern:
            return FORWARD, pattern
        return (FORWARD, None) if self.audit else (DENY_NAME, None)

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
# upstream replies
# --------------------------------------------------------------------------
class BadReply(Exception):
    """An upstream reply dnslib cannot read."""


def parse_reply(msg, question_size=None):
    """An upstream reply read with dnslib: a DNSRecord with its header,
    questions, answer and authority records (the additional section is not
    read: nothing in it is used). Names in record data come back
    decompressed (dnslib's CNAME, SOA, MX, ... hold DNSLabels), so the
    records can be packed into another message. Raises BadReply.

    Only a reply that ``wire.reply_matches`` a query in flight gets here:
    from the upstream's address and port, with the id and the question we
    sent; given its QUESTION_SIZE, the question (byte for byte ours) is
    skipped, not read again."""
    buffer = DNSBuffer(msg)
    try:
        header = DNSHeader.parse(buffer)
        if question_size is not None and header.q == 1:
            buffer.offset += question_size
            questions = []
        else:
            questions = [DNSQuestion.parse(buffer) for _question in range(header.q)]
        answers = _read_records(msg, buffer, header.a)
        authority = [RR.parse(buffer) for _record in range(header.auth)]
    except Exception as exc:      # DNSError, and whatever else garbage makes dnslib raise
        raise BadReply(str(exc) or type(exc).__name__)
    return DNSRecord(header, questions, answers, auth=authority)


_RR_FIXED = struct.Struct("!HHIH")     # type, class, TTL, rdata length: after a record's owner name


def _a_record_checked(owner, rclass, ttl, data):
    return RR(owner, T_A, rclass, ttl, ARecord(data))


def _a_record_direct(owner, rclass, ttl, data):
    """RR(OWNER, A, RCLASS, TTL, A(DATA)) without the range checks of
    dnslib's setters (3 us a record, most of what reading an answer of 64
    addresses cost): the values come from fixed-size fields, always in
    range. Used only if it builds what RR() builds (``_A_RECORD``)."""
    rdata = object.__new__(ARecord)
    rdata.__dict__["_data"] = data
    record = object.__new__(RR)
    record.__dict__.update(_rname=owner, _rtype=T_A, _rclass=rclass, _ttl=ttl, rdata=rdata)
    return record


def _pick_a_record():
    if not HAS_DNSLIB:
        return _a_record_checked
    try:
        owner = DNSLabel((b"a", b"test"))
        direct, checked = _a_record_direct(owner, 1, 60, (192, 0, 2, 1)), _a_record_checked(owner, 1, 60, (192, 0, 2, 1))
        packed = []
        for record in (direct, checked):
            buffer = DNSBuffer()
            record.pack(buffer)
            packed.append(bytes(buffer.data))
        if direct.__dict__.keys() == checked.__dict__.keys() and direct.rdata.__dict__ == checked.rdata.__dict__ \
                and packed[0] == packed[1]:
            return _a_record_direct
    except Exception:       # another dnslib: its own constructor, checks and all
        pass
    return _a_record_checked


_a_record = _pick_a_record()


def _read_records(msg, buffer, count):
    """COUNT records of MSG from BUFFER's offset on, as dnslib's RR.parse
    reads them (the same RRs): an A record is read here (its owner name by
    ``wire.read_name``, each name read once per reply: an answer of 64
    addresses names its owner 64 times), at a sixth of dnslib's cost; any
    other record by dnslib, from where it starts."""
    records, owners = [], {}       # owner names by their pointer (two bytes), or by their labels
    for _record in range(count):
        start = buffer.offset
        pointer = msg[start:start + 2]
        owner = owners.get(pointer) if pointer and pointer[0] >= 0xC0 else None
        if owner is None:
            labels, pos = wire.read_name(msg, start)
        else:
            pos = start + 2
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(msg, pos)
        if rtype == T_A and rdlength == 4 and pos + 14 <= len(msg):
            if owner is None:
                owner = owners.get(labels)
                if owner is None:
                    owner = owners[labels] = DNSLabel(labels)
                if pos == start + 2:
                    owners[pointer] = owner
            records.append(_a_record(owner, rclass, ttl, tuple(msg[pos + 10:pos + 14])))
            buffer.offset = pos + 14
        else:
            buffer.offset = start
            records.append(RR.parse(buffer))
    return records


class Answer(object):
    """An upstream reply, kept in the shared cache: rcode, answer records
    (dnslib RRs) with their owners' lower-case keys, SOA records of the
    authority section, when it was fetched and until when it may be used."""

    __slots__ = ("rcode", "answers", "owners", "authority", "fetched", "expires")

    def __init__(self, rcode, answers, authority, fetched, ttl):
        self.rcode, self.answers, self.authority = rcode, answers, authority
        keys = {}       # by the owner's DNSLabel: the records of one owner share it (_read_records)
        self.owners = [keys.get(id(r.rname)) or keys.setdefault(id(r.rname), _key(r.rname)) for r in answers]
        self.fetched, self.expires = fetched, fetched + ttl


def _soa_minimum(record):
    return record.rdata.times[4] if isinstance(record.rdata, SOA) else 0


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


def answer_from_reply(reply, now):
    """An Answer from an upstream reply: a DNSRecord from parse_reply, or
    the wire bytes (then parsed here; raises BadReply)."""
    if not isinstance(reply, DNSRecord):
        reply = parse_reply(reply)
    answers = [r for r in reply.rr if r.rtype != T_OPT]
    authority = [r for r in reply.auth if r.rtype == T_SOA]
    for r in answers + authority:
        if r.ttl > MAX_RECORD_TTL:
            r.ttl = MAX_RECORD_TTL
    rcode = reply.header.rcode
    return Answer(rcode, answers, authority, now, cache_ttl(rcode, answers, authority))


def chain_owners(qkey, answer):
    """Owner keys of ANSWER's CNAME chain that starts at the name QKEY (lower
    case labels), QKEY first; bounded against loops."""
    cname_of = {}
    for r, owner in zip(answer.answers, answer.owners):
        if r.rtype == T_CNAME and isinstance(r.rdata, CNAME):
            cname_of.setdefault(owner, _key(r.rdata.label))
    owners = [qkey]
    while owners[-1] in cname_of and len(owners) < 16:
        nxt = cname_of[owners[-1]]
        if nxt in owners:
            break
        owners.append(nxt)
    return owners


def chain_names(q, answer):
    """The names an address of ANSWER to Q is pinned to: the asked name and
    every name of its CNAME chain, as text (a name that is not plain ASCII
    is left out: no SNI or Host can spell it)."""
    names = [q.name] if q.name else []
    for key in chain_owners(q.key, answer)[1:]:
        text = _name_text(key)
        if text and text not in names:
            names.append(text)
    return names


GuestView = namedtuple("GuestView", "rcode answers authority learn removed capped", defaults=(0,))
# answers, authority: dnslib RRs as the guest gets them; learn: [(address, ttl)];
# removed: [address] (rebinding); capped: A records left out beyond MAX_LEARN_PER_ANSWER

MAX_LEARN_PER_ANSWER = 16   # addresses a custom VM learns (and is shown) per answer


def _address(rdata):
    """(text, integer) of an A record's dnslib rdata."""
    a, b, c, d = rdata.data
    return "%d.%d.%d.%d" % (a, b, c, d), (a << 24) | (b << 16) | (c << 8) | d


def _shown(r, rname, ttl):
    """The cached record R as the guest gets it: aged TTL (at most a day),
    owner RNAME; R itself when that changes nothing (cached records are
    never modified)."""
    ttl = min(ttl, MAX_CACHE_TTL)
    if ttl == r.ttl and rname.label == r.rname.label:
        return r
    return RR(rname, r.rtype, r.rclass, ttl, r.rdata)


def guest_view(answer, q, vm, rebinding, age=0):
    """What the guest VM sees of ANSWER to its question Q, AGE seconds after
    it was fetched: AAAA records go; under ``custom``, records off the CNAME
    chain go, and so do A records that point into the rebinding ranges, and
    A records once MAX_LEARN_PER_ANSWER were kept (a VM learns at most
    that many addresses per answer, and is never shown one it did not
    learn; the ones beyond are left out unread: ``capped``); the remaining
    A addresses are to be learned. TTLs are aged;
    records owned by the asked name carry the guest's spelling of it (so
    they compress against the question)."""
    if answer.rcode not in (NOERROR, NXDOMAIN):
        return GuestView(SERVFAIL, [], [], [], [])
    answers, learn, removed, capped = [], [], [], 0
    custom = vm.mode == "custom"
    qkey, qname = q.key, question_of(q).qname
    chain = set(chain_owners(qkey, answer)) if custom else None
    for r, owner in zip(answer.answers, answer.owners):
        if r.rtype == T_AAAA:
            continue
        if custom and owner not in chain:
            continue            # not part of what was asked: never learned, never shown
        if custom and r.rtype == T_A and r.rclass == CLASS_IN and isinstance(r.rdata, ARecord):
            if len(learn) >= MAX_LEARN_PER_ANSWER:
                capped += 1         # left out unread (an answer of 64 addresses: 48 of them)
                continue
            ttl = max(r.ttl - age, 0)
            text, value = _address(r.rdata)
            if rebinding.blocked(value, vm):
                removed.append(text)
                continue
            if vm.may_learn(value):
                learn.append((text, ttl))
        else:
            ttl = max(r.ttl - age, 0)
        answers.append(_shown(r, qname if owner == qkey else r.rname, ttl))
    authority = [_shown(r, r.rname, max(r.ttl - age, 0)) for r in answer.authority]
    return GuestView(answer.rcode, answers, authority, learn, removed, capped)


def without(view, addresses):
    """VIEW without the A records of ADDRESSES (a set of address texts: the
    set would not take them), and without learning them."""
    if not addresses:
        return view
    answers = [r for r in view.answers
               if not (r.rtype == T_A and isinstance(r.rdata, ARecord) and _address(r.rdata)[0] in addresses)]
    learn = [(a, ttl) for a, ttl in view.learn if a not in addresses]
    return view._replace(answers=answers, learn=learn)


# --------------------------------------------------------------------------
# the health query
# --------------------------------------------------------------------------
HEALTH_NAME = "health.vmsan."       # class CHAOS, type TXT: answered by the resolver itself
HEALTH_KEY = (b"health", b"vmsan")


def is_health_query(q):
    return q.qclass == CLASS_CH and q.key == HEALTH_KEY and q.qtype == T_TXT


def health_reply(q, text):
    """The resolver's own answer to the health query: one CHAOS TXT record
    holding TEXT (its words in strings of at most 255 bytes, as TXT wants
    them), TTL 0 (packed by dnslib)."""
    strings, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > 255:
            strings.append(current)
            current = ""
        current = (current + " " + word) if current else word[:255]
    strings.append(current)
    record = RR(question_of(q).qname, T_TXT, CLASS_CH, 0, TXT(strings))
    return bytes(DNSRecord(_reply_header(q, NOERROR, answers=1, additional=1 if q.edns else 0),
                           [question_of(q)], [record], ar=[_OPT] if q.edns else None).pack())


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
class Rendered(object):
    """A reply packed by dnslib, without its first two bytes (the query id),
    with the offsets of its TTL fields, so that serving it again later only
    rewrites those (no parsing, no packing).

    ``expires`` is when the upstream answer it came from runs out;
    ``tail`` is right until ``fresh_until`` (then ``at`` re-ages it)."""

    __slots__ = ("tail", "offsets", "ttls", "made", "expires", "age", "fresh_until")

    def __init__(self, tail, offsets, ttls, made, expires):
        self.tail, self.offsets, self.ttls = bytes(tail), offsets, ttls
        self.made, self.expires, self.age = made, expires, 0
        self.fresh_until = min(made + 1, expires) if offsets else expires

    def at(self, now):
        """The tail with TTLs aged to NOW (rewritten once per second)."""
        age = int(now - self.made)
        if age != self.age and self.offsets:
            buf = bytearray(self.tail)
            for off, ttl in zip(self.offsets, self.ttls):
                _TTL.pack_into(buf, off, max(ttl - age, 0))
            self.tail, self.age = bytes(buf), age
            self.fresh_until = min(self.made + age + 1, self.expires)
        return self.tail


class _NameEnds(DNSBuffer):
    """dnslib's DNSBuffer, noting where each name it encodes ends."""

    def __init__(self):
        DNSBuffer.__init__(self)
        self.name_ends = []

    def encode_name(self, name):
        DNSBuffer.encode_name(self, name)
        self.name_ends.append(self.offset)


def pack_with_ttl_offsets(header, questions, records, additional=()):
    """What DNSRecord(header, questions, answers + authority, ar).pack()
    gives (HEADER's counts must be right), packed section by section with
    dnslib, noting where the TTL of each of RECORDS landed: (wire bytes,
    [offsets]). RR.pack encodes the owner name first (compressed or not),
    then type, class and TTL."""
    buffer = _NameEnds()
    header.pack(buffer)
    for question in questions:
        question.pack(buffer)
    offsets = []
    for rr in records:
        first = len(buffer.name_ends)
        rr.pack(buffer)
        offsets.append(buffer.name_ends[first] + 4)
    for rr in additional:
        rr.pack(buffer)
    return bytes(buffer.data), offsets


def render(q, view, limit, made, expires):
    """Pack VIEW with dnslib as the reply to the guest's question Q (echoed
    as sent). Answers larger than LIMIT bytes come back truncated (TC, no
    records). Returns a Rendered."""
    records = list(view.answers) + list(view.authority)
    header = _reply_header(q, view.rcode, answers=len(view.answers), authority=len(view.authority),
                           additional=1 if q.edns else 0)
    packed, offsets = pack_with_ttl_offsets(header, (question_of(q),), records, (_OPT,) if q.edns else ())
    if len(packed) > limit:
        return Rendered(short_reply(q, view.rcode, truncated=True)[2:], (), (), made, expires)
    ttls = tuple(rr.ttl for rr in records)
    return Rendered(packed[2:], tuple(off - 2 for off in offsets), ttls, made, expires)


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
