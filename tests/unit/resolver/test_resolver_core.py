"""The resolver's pure decisions: reading queries, policy, rebinding,
learning, caching and the wire form of answers (read and written with
dnslib; test packets are built with dnslib or, where dnslib would refuse to
build them, by hand)."""

import struct

import pytest
from dnslib import (AAAA, CNAME, MX, QTYPE, RCODE, RD, RR, SOA, TXT, A, DNSHeader, DNSLabel, DNSQuestion,
                    DNSRecord, EDNS0)

from ansible_collections.vmsan.network.plugins.module_utils.resolver import core
from ansible_collections.vmsan.network.plugins.module_utils.resolver import wire as wire_module
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import decode
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError


def record(policy, slot=3, vm_id="vm1", netns="vmsan-vm1"):
    base = {"mode": "allow-all", "allowed_domains": [], "allowed_cidrs": [], "denied_cidrs": []}
    base.update(policy)
    return decode({"schema": 1, "id": vm_id, "slot": slot, "netns": netns, "policy": base, "created": "t0"})


def custom(domains=(), allowed=(), denied=()):
    return core.VmPolicy(record({"mode": "custom", "allowed_domains": list(domains),
                                 "allowed_cidrs": list(allowed), "denied_cidrs": list(denied)}))


def query(name, qtype="A", edns=False, qid=0x1234):
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns:
        q.add_ar(EDNS0(udp_len=4096))
    return q.pack()


def parsed(name, qtype="A", edns=False):
    data = query(name, qtype, edns)
    return data, core.parse_query(data)


# -- reading queries ----------------------------------------------------------

def test_parse_query_reads_name_type_and_keeps_the_spelling():
    _data, q = parsed("A.Example.TEST.")
    assert (q.id, q.qtype, q.qclass, q.name) == (0x1234, QTYPE.A, 1, "a.example.test")
    assert q.labels == (b"A", b"Example", b"TEST")      # echoed as sent
    assert core.question_of(q).qname.label == q.labels
    assert q.key == (b"a", b"example", b"test")
    assert q.rd == 1
    assert not q.edns and core.udp_limit(q) == 512


def test_spelling_and_trailing_dot_share_one_cache_key():
    assert parsed("A.EXAMPLE.TEST.")[1].cache_key() == parsed("a.example.test")[1].cache_key()


def test_parse_query_sees_edns_and_its_payload():
    q = parsed("a.example.test", edns=True)[1]
    assert q.edns and q.payload == 4096
    assert core.udp_limit(q) == core.EDNS_PAYLOAD      # never more than we offer


def test_edns_payload_below_512_counts_as_512():
    record = DNSRecord.question("a.example.test")
    record.add_ar(EDNS0(udp_len=100))
    q = core.parse_query(bytes(record.pack()))
    assert q.edns and q.payload == 512 and core.udp_limit(q) == 512


def test_responses_and_runts_get_no_answer():
    reply = DNSRecord.question("a.example.test").reply().pack()
    assert core.parse_query(reply) is None
    assert core.parse_query(b"\x00\x01") is None


@pytest.mark.parametrize("mangle,rcode", [
    (lambda d: d[:4] + b"\x00\x02" + d[6:], core.FORMERR),             # two questions
    (lambda d: d[:4] + b"\x00\x00" + d[6:], core.FORMERR),             # none
    (lambda d: d[:14], core.FORMERR),                                    # cut name
    (lambda d: d[:12] + b"\xc0\x0c" + d[-4:], core.FORMERR),           # compression in a question (a loop)
    (lambda d: d[:12] + b"\x01x\xc0\x02" + d[-4:], core.FORMERR),     # compression into the header
    (lambda d: d[:12] + b"\x40" + b"x" * 64 + b"\x00" + d[-4:], core.FORMERR),      # label over 63 bytes
    (lambda d: d[:12] + b"\x3fxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" * 4 + b"\x00" + d[-4:],
     core.FORMERR),                                                      # name over 255 bytes
    (lambda d: d[:10] + b"\x00\x01" + d[12:] + b"\x00\x00", core.FORMERR),       # additional record cut short
    (lambda d: d[:2] + b"\x28\x00" + d[4:], core.NOTIMP),              # opcode UPDATE
])
def test_malformed_queries_get_an_error(mangle, rcode):
    data = mangle(query("a.example.test"))
    with pytest.raises(core.BadQuery) as err:
        core.parse_query(data)
    assert err.value.rcode == rcode and err.value.id == 0x1234 and err.value.why
    reply = DNSRecord.parse(core.error_reply(err.value))
    assert reply.header.rcode == rcode and reply.header.qr == 1 and reply.header.rd == data[2] & 1
    assert not reply.questions and not reply.rr


def test_a_label_holding_a_dot_matches_no_pattern():
    # wire labels "a.example" + "test" must not pass for a.example.test
    data = struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0) + b"\x09a.example\x04test\x00" + struct.pack("!HH", 1, 1)
    q = core.parse_query(data)
    assert q.name is None
    assert custom(["a.example.test", "*.test"]).decide(q) == (core.DENY_NAME, None)


def test_a_label_outside_printable_ascii_matches_no_pattern():
    data = bytes(DNSRecord(DNSHeader(id=1), q=DNSQuestion(DNSLabel([b"caf\xc3\xa9", b"test"]))).pack())
    q = core.parse_query(data)
    assert q.name is None and q.key == (b"caf\xc3\xa9", b"test")
    assert custom(["*.test"]).decide(q) == (core.DENY_NAME, None)


@pytest.mark.parametrize("edns", [False, True])
def test_short_reply_echoes_question_and_id(edns):
    data, q = parsed("Bad.Example.Test", edns=edns)
    wire = core.short_reply(q, core.NXDOMAIN)
    reply = DNSRecord.parse(wire)
    assert reply.header.id == 0x1234 and reply.header.rcode == RCODE.NXDOMAIN
    assert reply.header.qr == 1 and reply.header.rd == 1 and reply.header.ra == 1
    assert reply.header.aa == 0 and reply.header.tc == 0
    assert str(reply.q.qname) == "Bad.Example.Test."
    assert wire[12:12 + len(data) - 12 - (11 if edns else 0)] == data[12:len(data) - (11 if edns else 0)]
    assert not reply.rr
    assert bool(reply.ar) == edns
    if edns:
        assert reply.ar[0].rtype == QTYPE.OPT and reply.ar[0].edns_len == core.EDNS_PAYLOAD


def test_short_reply_keeps_cd_and_a_missing_rd():
    record = DNSRecord(DNSHeader(id=5, bitmap=0, cd=1), q=DNSQuestion("a.example.test"))
    reply = DNSRecord.parse(core.short_reply(core.parse_query(bytes(record.pack())), core.REFUSED))
    assert reply.header.cd == 1 and reply.header.rd == 0 and reply.header.rcode == RCODE.REFUSED


def test_upstream_query_is_lower_case_with_edns():
    q = parsed("A.Example.Test")[1]
    up = DNSRecord.parse(core.upstream_query(99, q))
    assert up.header.id == 99 and up.header.rd == 1
    assert str(up.q.qname) == "a.example.test." and up.ar[0].edns_len == core.EDNS_PAYLOAD


@pytest.mark.parametrize("name,qtype", [("A.Example.Test", "A"), (".", "NS"), ("x-1.y_2.example", "TXT")])
def test_upstream_query_is_what_dnslib_packs(name, qtype):
    q = parsed(name, qtype, edns=True)[1]
    expected = DNSRecord(DNSHeader(id=4321, bitmap=0, rd=1), q=DNSQuestion(DNSLabel(q.key), q.qtype, q.qclass),
                         ar=[EDNS0(udp_len=core.EDNS_PAYLOAD)])
    assert core.upstream_query(4321, q) == bytes(expected.pack())


def test_upstream_query_spells_the_name_by_the_random_bytes():
    q = parsed("A.Example-1.Test")[1]
    name_size = len(q.question_wire) - 4
    wire = core.upstream_query(7, q, b"\x20" * name_size)
    assert str(DNSRecord.parse(wire).q.qname) == "A.EXAMPLE-1.TEST."      # digits, dashes, lengths unchanged
    wire = core.upstream_query(7, q, bytes([0x20 if i % 2 else 0xdf for i in range(name_size)]))
    assert wire[12:12 + name_size].lower() == q.question_wire[:-4].lower()
    assert wire[12:12 + name_size] != wire[12:12 + name_size].lower()
    assert wire[12 + name_size:-11] == q.question_wire[-4:]


# -- policy -------------------------------------------------------------------

def test_deny_all_refuses_allow_all_forwards():
    q = parsed("anything.example")[1]
    assert core.VmPolicy(record({"mode": "deny-all"})).decide(q) == (core.REFUSE, None)
    assert core.VmPolicy(record({"mode": "allow-all"})).decide(q) == (core.FORWARD, None)


@pytest.mark.parametrize("name,action", [
    ("a.b.example.test", core.FORWARD),
    ("A.B.EXAMPLE.TEST.", core.FORWARD),
    ("example.test", core.DENY_NAME),
    ("badexample.test", core.DENY_NAME),
    ("api.example.com", core.FORWARD),
    ("www.example.com", core.DENY_NAME),
])
def test_custom_decides_by_the_list(name, action):
    vm = custom(["*.example.test", "api.example.com"])
    assert vm.decide(parsed(name)[1])[0] == action


def test_custom_without_domains_denies_every_name():
    vm = custom(allowed=["203.0.113.0/24"])
    assert vm.decide(parsed("a.example.test")[1])[0] == core.DENY_NAME
    assert not vm.learns


def test_other_classes_are_refused():
    data = bytearray(query("version.bind", "TXT"))
    data[-2:] = struct.pack("!H", 3)        # CHAOS
    q = core.parse_query(bytes(data))
    assert core.VmPolicy(record({"mode": "allow-all"})).decide(q)[0] == core.REFUSE


def test_vm_table_keys_by_guest_address():
    table = core.vm_table([record({}, slot=0, vm_id="a"), record({}, slot=7, vm_id="b")])
    assert table["172.16.0.2"].vm_id == "a" and table["172.16.7.2"].vm_id == "b"


def test_identity_and_policy_key():
    a = core.VmPolicy(record({"mode": "custom", "allowed_domains": ["a.example.test"]}))
    b = core.VmPolicy(record({"mode": "custom", "allowed_domains": ["b.example.test"]}))
    assert a.identity == b.identity and a.policy_key != b.policy_key


# -- rebinding ----------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "10.0.0.5", "127.0.0.1", "169.254.169.254", "172.16.3.2", "172.31.0.1", "192.168.1.1",
    "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "169.254.64.1",
])
def test_rebinding_blocks_internal_ranges(address):
    assert core.Rebinding().blocked(address, custom(["x.test"]))


@pytest.mark.parametrize("address", ["203.0.113.10", "192.0.2.10", "8.8.8.8", "172.32.0.1"])
def test_rebinding_leaves_public_addresses(address):
    assert not core.Rebinding().blocked(address, custom(["x.test"]))


def test_rebinding_blocks_the_hosts_own_addresses():
    assert core.Rebinding(["198.51.100.2"]).blocked("198.51.100.2", custom(["x.test"]))


def test_an_allowed_cidr_lifts_rebinding_protection():
    vm = custom(["x.test"], allowed=["10.0.0.0/8", "198.51.100.2/32"])
    rebinding = core.Rebinding(["198.51.100.2"])
    assert not rebinding.blocked("10.0.0.5", vm)
    assert not rebinding.blocked("198.51.100.2", vm)
    assert rebinding.blocked("127.0.0.1", vm)


# -- guest view of an upstream answer --------------------------------------------

def upstream(name, records, rcode=0, auth=()):
    reply = DNSRecord.question(name).reply()
    reply.header.rcode = rcode
    for rr in records:
        reply.add_answer(rr)
    for rr in auth:
        reply.add_auth(rr)
    return core.answer_from_reply(bytes(reply.pack()), now=100.0)


def a(name, ip, ttl=60):
    return RR(name, QTYPE.A, ttl=ttl, rdata=A(ip))


def cname(name, target, ttl=60):
    return RR(name, QTYPE.CNAME, ttl=ttl, rdata=CNAME(target))


def test_view_strips_aaaa_and_learns_a():
    answer = upstream("dual.example.test", [a("dual.example.test", "203.0.113.11"),
                                            RR("dual.example.test", QTYPE.AAAA, ttl=60, rdata=AAAA("2001:db8::1"))])
    view = core.guest_view(answer, parsed("dual.example.test")[1], custom(["dual.example.test"]), core.Rebinding())
    assert [r.rtype for r in view.answers] == [QTYPE.A]
    assert view.learn == [("203.0.113.11", 60)]


def test_view_follows_a_cname_out_of_the_list():
    answer = upstream("alias.example.test", [cname("alias.example.test", "cdn.elsewhere.example"),
                                             a("cdn.elsewhere.example", "203.0.113.10", ttl=20)])
    view = core.guest_view(answer, parsed("alias.example.test")[1], custom(["alias.example.test"]), core.Rebinding())
    assert len(view.answers) == 2 and view.learn == [("203.0.113.10", 20)]


def test_view_drops_records_off_the_chain():
    answer = upstream("a.example.test", [a("a.example.test", "203.0.113.10"), a("evil.example", "203.0.113.66")])
    view = core.guest_view(answer, parsed("a.example.test")[1], custom(["a.example.test"]), core.Rebinding())
    assert view.learn == [("203.0.113.10", 60)] and len(view.answers) == 1


def test_view_removes_rebinding_addresses_and_does_not_learn_them():
    answer = upstream("rebind.example.test", [a("rebind.example.test", "127.0.0.1"),
                                              a("rebind.example.test", "203.0.113.10")])
    vm = custom(["rebind.example.test"])
    view = core.guest_view(answer, parsed("rebind.example.test")[1], vm, core.Rebinding())
    assert view.removed == ["127.0.0.1"] and view.learn == [("203.0.113.10", 60)]
    assert [str(r.rdata) for r in view.answers] == ["203.0.113.10"]


def test_view_keeps_what_an_allowed_cidr_covers():
    answer = upstream("int.example.test", [a("int.example.test", "10.0.0.5")])
    vm = custom(["int.example.test"], allowed=["10.0.0.0/24"])
    view = core.guest_view(answer, parsed("int.example.test")[1], vm, core.Rebinding())
    assert view.removed == [] and view.learn == [("10.0.0.5", 60)]


def test_view_does_not_learn_denied_addresses():
    answer = upstream("a.example.test", [a("a.example.test", "203.0.113.10")])
    vm = custom(["a.example.test"], denied=["203.0.113.0/24"])
    view = core.guest_view(answer, parsed("a.example.test")[1], vm, core.Rebinding())
    assert view.learn == [] and len(view.answers) == 1


def test_view_ages_ttls():
    answer = upstream("a.example.test", [a("a.example.test", "203.0.113.10", ttl=60)])
    view = core.guest_view(answer, parsed("a.example.test")[1], custom(["a.example.test"]), core.Rebinding(), age=45)
    assert view.answers[0].ttl == 15 and view.learn == [("203.0.113.10", 15)]


def test_allow_all_view_learns_nothing_and_filters_no_rebinding():
    answer = upstream("x.example", [a("x.example", "10.0.0.5")])
    vm = core.VmPolicy(record({"mode": "allow-all"}))
    view = core.guest_view(answer, parsed("x.example")[1], vm, core.Rebinding())
    assert view.learn == [] and len(view.answers) == 1


def test_upstream_failure_becomes_servfail():
    answer = upstream("a.example.test", [], rcode=RCODE.SERVFAIL)
    assert core.guest_view(answer, parsed("a.example.test")[1], custom(["a.example.test"]),
                           core.Rebinding()).rcode == core.SERVFAIL


# -- reading upstream replies ---------------------------------------------------

def test_parse_reply_decompresses_names_so_records_can_be_copied():
    reply = DNSRecord.question("mail.example.test", "MX").reply()
    reply.add_answer(RR("mail.example.test", QTYPE.CNAME, ttl=5, rdata=CNAME("mx.example.test")))
    reply.add_answer(RR("mx.example.test", QTYPE.MX, ttl=5, rdata=MX("smtp.example.test", 10)))
    reply.add_answer(RR("mx.example.test", QTYPE.TXT, ttl=5, rdata=TXT("hello")))
    reply.add_auth(RR("example.test", QTYPE.SOA, ttl=5, rdata=SOA("ns.example.test", "h.example.test", (1, 2, 3, 4, 5))))
    reply.add_ar(EDNS0(udp_len=1232))
    wire = bytes(reply.pack())
    assert b"\xc0" in wire                      # dnslib compressed the names
    parsed_reply = core.parse_reply(wire)
    answers, authority = parsed_reply.rr, parsed_reply.auth
    assert [r.rtype for r in answers] == [QTYPE.CNAME, QTYPE.MX, QTYPE.TXT]
    assert answers[0].rdata.label == DNSLabel("mx.example.test")
    assert answers[1].rdata.preference == 10 and answers[1].rdata.label == DNSLabel("smtp.example.test")
    assert not parsed_reply.ar                  # the additional section is not read
    # packed into a new message, every record still reads the same
    _data, q = parsed("Mail.Example.Test", "MX")
    view = core.GuestView(0, answers, authority, [], [])
    copy = DNSRecord.parse(b"\x12\x34" + core.render(q, view, 65535, 0.0, 5.0).tail)
    assert [str(r.rdata).lower() for r in copy.rr] == [str(r.rdata).lower() for r in reply.rr]
    assert str(copy.auth[0].rdata) == str(reply.auth[0].rdata)


def test_records_of_types_dnslib_does_not_know_are_copied_as_they_are():
    reply = DNSRecord(q=DNSQuestion("odd.example.test", 65280)).reply()
    reply.add_answer(RR("odd.example.test", 65280, ttl=5, rdata=RD(b"\xc0\x0c raw")))
    parsed_reply = core.parse_reply(bytes(reply.pack()))
    assert parsed_reply.rr[0].rdata.data == b"\xc0\x0c raw"


@pytest.mark.parametrize("wire", [
    b"\x00\x01\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00\xc0\x0c",               # pointer to itself
    b"\x00\x01\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00\x01a\x00\x00\x01",   # record cut short
    b"\x00\x01\x81\x80",                                                       # header cut short
    b"\x00\x01\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x00\x00\x01\x00\x09ab",
])
def test_malformed_upstream_replies_are_rejected(wire):
    with pytest.raises(core.BadReply):
        core.answer_from_reply(wire, 0.0)


def test_a_bad_record_still_tells_which_query_the_reply_was_for():
    q = parsed("a.example.test")[1]
    sent = core.upstream_query(4242, q)
    good = DNSRecord.parse(sent).reply()
    good.add_answer(RR("a.example.test", QTYPE.A, ttl=5, rdata=A("203.0.113.10")))
    whole = bytes(good.pack())
    assert wire_module.reply_matches(whole[:-2], 4242, sent[12:12 + len(q.question_wire)])
    assert [str(r.rdata) for r in core.parse_reply(whole, len(q.question_wire)).rr] == ["203.0.113.10"]
    with pytest.raises(core.BadReply):
        core.parse_reply(whole[:-2], len(q.question_wire))                # the A record's data cut short


# -- caching and learning times -------------------------------------------------

def test_cache_ttl_is_the_smallest_answer_ttl():
    answer = upstream("m.example.test", [a("m.example.test", "203.0.113.10", 30), a("m.example.test", "203.0.113.11", 10)])
    assert answer.expires == 110.0


def test_negative_answers_cache_by_soa_only():
    soa = RR("example.test", QTYPE.SOA, ttl=600,
             rdata=SOA("ns.example.test", "h.example.test", (1, 2, 3, 4, 120)))
    assert upstream("no.example.test", [], rcode=RCODE.NXDOMAIN, auth=[soa]).expires == 220.0
    assert upstream("no.example.test", [], rcode=RCODE.NXDOMAIN).expires == 100.0
    assert upstream("no.example.test", [], rcode=RCODE.SERVFAIL).expires == 100.0


def test_learn_timeout_floor_grace_and_cap():
    cfg = core.settings(30, 10)
    assert core.learn_timeout(2, cfg) == 40
    assert core.learn_timeout(300, cfg) == 310
    assert core.learn_timeout(10 ** 9, cfg) == core.IPSET_MAX_TIMEOUT


@pytest.mark.parametrize("param,value", [("ttl_floor", "x"), ("grace", "-1"), ("grace", "86401"), ("ttl_floor", "1.5")])
def test_bad_settings_name_the_parameter(param, value):
    with pytest.raises(InputError) as err:
        core.settings(**{param: value})
    assert err.value.param == param and "0-86400" in str(err.value)


def test_parse_listen():
    assert inputs.listen("127.0.0.1") == ("127.0.0.1", 53)
    assert inputs.listen("127.0.0.1:5353") == ("127.0.0.1", 5353)
    for bad in ("localhost", "1.2.3.4:0", "1.2.3.4:x", "::1"):
        with pytest.raises(InputError) as err:
            inputs.listen(bad)
        assert err.value.param == "listen"


def test_upstream_from_resolv_conf():
    text = "# comment\nsearch example\nnameserver fe80::1%eth0\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"
    assert core.upstream_from_resolv_conf(text) == "192.0.2.53"
    assert core.upstream_from_resolv_conf("nameserver ::1\n") is None


# -- rendering ----------------------------------------------------------------

def render(name, records, edns=False, limit=None, made=0.0, auth=(), vm=None):
    data, q = parsed(name, edns=edns)
    answer = upstream(name.lower().rstrip("."), records, auth=auth)
    view = core.guest_view(answer, q, vm or custom([name.lower().rstrip(".")]), core.Rebinding())
    out = core.render(q, view, limit or core.udp_limit(q), made, answer.expires)
    return data, out


def test_render_is_a_valid_reply_with_the_guests_spelling():
    data, out = render("Alias.Example.Test", [cname("alias.example.test", "a.example.test"),
                                              a("a.example.test", "203.0.113.10")])
    reply = DNSRecord.parse(data[:2] + out.tail)
    assert reply.header.id == 0x1234 and reply.header.rcode == 0 and reply.header.ra == 1
    assert str(reply.q.qname) == "Alias.Example.Test."
    # names compress against the question, so they may take the guest's case
    assert [str(rr.rdata).lower() for rr in reply.rr] == ["a.example.test.", "203.0.113.10"]
    assert not reply.ar


def test_render_ages_ttls_in_place():
    data, out = render("a.example.test", [a("a.example.test", "203.0.113.10", ttl=60)], made=10.0)
    assert DNSRecord.parse(data[:2] + out.at(10.5)).rr[0].ttl == 60
    assert DNSRecord.parse(data[:2] + out.at(17.2)).rr[0].ttl == 53
    assert DNSRecord.parse(data[:2] + out.at(500.0)).rr[0].ttl == 0


def test_render_finds_every_ttl_behind_compressed_and_plain_names():
    """Owners equal to the question become pointers, others are packed in
    full: the TTL offsets must be right for both, and for the authority."""
    data, out = render("Chain.Example.Test", [cname("chain.example.test", "alias.example.test", ttl=50),
                                              cname("alias.example.test", "a.example.test", ttl=40),
                                              a("a.example.test", "203.0.113.10", ttl=30)], made=0.0)
    aged = DNSRecord.parse(data[:2] + out.at(7.0))
    assert [rr.ttl for rr in aged.rr] == [43, 33, 23]
    assert [str(rr.rdata) for rr in aged.rr] == ["alias.example.test.", "a.example.test.", "203.0.113.10"]
    assert str(aged.rr[0].rname) == "Chain.Example.Test."     # the guest's spelling
    soa = RR("example.test", QTYPE.SOA, ttl=20, rdata=SOA("ns.example.test", "h.example.test", (1, 2, 3, 4, 20)))
    data, out = render("none.example.test", [], auth=[soa], edns=True)
    aged = DNSRecord.parse(data[:2] + out.at(5.0))
    assert aged.auth[0].ttl == 15 and aged.ar[0].rtype == QTYPE.OPT


def test_render_is_what_dnslib_packs():
    _data, q = parsed("Alias.Example.Test", edns=True)
    answer = upstream("alias.example.test", [cname("alias.example.test", "a.example.test"),
                                             a("a.example.test", "203.0.113.10")])
    view = core.guest_view(answer, q, custom(["alias.example.test"]), core.Rebinding())
    expected = DNSRecord(DNSHeader(id=q.id, bitmap=0, qr=1, rd=1, ra=1), [core.question_of(q)], list(view.answers),
                         ar=[EDNS0(udp_len=core.EDNS_PAYLOAD)])
    assert core.render(q, view, 65535, 0.0, 60.0).tail == bytes(expected.pack())[2:]
    assert b"\xc0\x0c" in bytes(expected.pack())           # the owner points at the question


def test_render_keeps_ttls_of_a_day_at_most():
    data, out = render("a.example.test", [a("a.example.test", "203.0.113.10", ttl=10 ** 6)])
    assert DNSRecord.parse(data[:2] + out.tail).rr[0].ttl == core.MAX_CACHE_TTL


def test_render_with_edns_adds_opt():
    data, out = render("a.example.test", [a("a.example.test", "203.0.113.10")], edns=True)
    assert DNSRecord.parse(data[:2] + out.tail).ar[0].rtype == QTYPE.OPT


def test_render_truncates_what_does_not_fit():
    many = [a("big.example.test", "203.0.113.%d" % i) for i in range(1, 60)]
    open_vm = core.VmPolicy(record({"mode": "allow-all"}))
    data, out = render("big.example.test", many, vm=open_vm)
    reply = DNSRecord.parse(data[:2] + out.tail)
    assert reply.header.tc == 1 and not reply.rr
    whole = render("big.example.test", many, limit=65535, vm=open_vm)[1]
    assert len(DNSRecord.parse(data[:2] + whole.tail).rr) == 59


def test_a_custom_vm_learns_and_sees_at_most_the_cap_of_addresses_per_answer():
    many = [a("big.example.test", "203.0.113.%d" % i) for i in range(1, 65)]
    view = core.guest_view(upstream("big.example.test", many), parsed("big.example.test")[1],
                           custom(["big.example.test"]), core.Rebinding())
    assert len(view.learn) == core.MAX_LEARN_PER_ANSWER == len(view.answers)
    assert [str(r.rdata) for r in view.answers] == [address for address, _ttl in view.learn]
    assert view.capped == 64 - core.MAX_LEARN_PER_ANSWER


def test_without_leaves_out_what_the_set_would_not_take():
    answer = upstream("m.example.test", [cname("m.example.test", "n.example.test"), a("n.example.test", "203.0.113.10"),
                                         a("n.example.test", "203.0.113.11")])
    view = core.guest_view(answer, parsed("m.example.test")[1], custom(["m.example.test"]), core.Rebinding())
    left = core.without(view, {"203.0.113.10"})
    assert [str(r.rdata) for r in left.answers] == ["n.example.test.", "203.0.113.11"]
    assert left.learn == [("203.0.113.11", 60)]
    assert core.without(view, set()) is view


# -- refusal log --------------------------------------------------------------

def test_refusal_log_holds_back_repeats():
    log = core.RefusalLog(interval=10)
    assert log.note("vm1", "x.test", 0.0) == 0
    assert log.note("vm1", "x.test", 1.0) is None
    assert log.note("vm1", "x.test", 2.0) is None
    assert log.note("vm2", "x.test", 2.0) == 0
    assert log.note("vm1", "x.test", 11.0) == 2


# -- the answer records read by the resolver's own reader -------------------------

def _mixed_reply():
    """A reply whose owners are compressed every way dnslib does it (a
    pointer to the question, a label then a pointer, spelled out), with A
    records among others."""
    reply = DNSRecord.question("m5.many.test").reply()
    for i in range(20):
        reply.add_answer(RR("m5.many.test", QTYPE.A, ttl=600 + i, rdata=A("198.18.0.%d" % i)))
    reply.add_answer(RR("m5.many.test", QTYPE.CNAME, ttl=30, rdata=CNAME("cdn.many.test")))
    reply.add_answer(RR("cdn.many.test", QTYPE.A, ttl=0xFFFFFFFF, rdata=A("198.18.1.1")))
    reply.add_answer(RR("other.test", QTYPE.A, rclass=3, ttl=5, rdata=A("192.0.2.1")))
    reply.add_answer(RR("cdn.many.test", QTYPE.AAAA, ttl=5, rdata=AAAA("2001:db8::1")))
    reply.add_answer(RR("cdn.many.test", QTYPE.TXT, ttl=5, rdata=TXT("x")))
    reply.add_auth(RR("many.test", QTYPE.SOA, ttl=5, rdata=SOA("ns.many.test", "h.many.test", (1, 2, 3, 4, 5))))
    return bytes(reply.pack())


def _facts(records):
    return [(r.rname.label, r.rtype, r.rclass, r.ttl, str(r.rdata), type(r.rdata)) for r in records]


def test_answer_records_are_the_ones_dnslib_reads():
    wire = _mixed_reply()
    assert wire.count(b"\xc0\x0c") >= 20        # owners compressed against the question
    ours, theirs = core.parse_reply(wire), DNSRecord.parse(wire)
    assert _facts(ours.rr) == _facts(theirs.rr)
    assert _facts(ours.auth) == _facts(theirs.auth)
    assert ours.rr[0].rname is ours.rr[19].rname      # one owner read once, shared
    _data, q = parsed("M5.Many.Test")
    view = core.GuestView(0, ours.rr, ours.auth, [], [])
    same = core.GuestView(0, theirs.rr, theirs.auth, [], [])
    assert core.render(q, view, 65535, 0.0, 5.0).tail == core.render(q, same, 65535, 0.0, 5.0).tail


def test_the_a_records_are_built_without_dnslibs_checks_with_this_dnslib():
    """The pinned dnslib: RR() is not called for each A record (its range
    checks were most of what an answer of 64 addresses cost)."""
    assert core._a_record is core._a_record_direct


@pytest.mark.parametrize("name,why", [
    (b"\xc0\x0c", "a pointer to itself"),
    (b"\x01a\xc0\x0e", "a pointer to the name being read"),
    (b"\xc0\x20", "a pointer forwards"),
    (b"\x01a", "cut short"),
    (b"\x40" + b"x" * 64 + b"\x00", "a reserved label type"),
    ((b"\x3f" + b"y" * 63) * 4 + b"\x00", "a name over 255 bytes"),
])
def test_read_name_refuses_what_no_upstream_should_send(name, why):
    data = bytes(12) + name
    with pytest.raises(ValueError):
        wire_module.read_name(data, 12)
    with pytest.raises(core.BadReply):
        core.parse_reply(struct.pack("!6H", 1, 0x8180, 0, 1, 0, 0) + name + struct.pack("!HHIH", 1, 1, 5, 4)
                         + b"\xc0\x00\x02\x01")


def test_read_name_follows_pointers_backwards_to_the_end_of_the_first():
    data = bytes(12) + b"\x04many\x04test\x00" + b"\x02m5\xc0\x0c" + b"\x03cdn\xc0\x17"
    assert wire_module.read_name(data, 12) == ((b"many", b"test"), 23)
    assert wire_module.read_name(data, 23) == ((b"m5", b"many", b"test"), 28)
    assert wire_module.read_name(data, 28) == ((b"cdn", b"m5", b"many", b"test"), 34)
