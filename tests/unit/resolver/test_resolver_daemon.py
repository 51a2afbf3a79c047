"""The resolver daemon's query flow without sockets or kernel: state files in
a temporary VMSAN_HOME, a fake upstream socket, a fake learner."""

import os
import time

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from ansible_collections.vmsan.network.plugins.module_utils.resolver import core
from ansible_collections.vmsan.network.plugins.module_utils.resolver import daemon
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import StateStore, decode


class FakeUpstream(object):
    def __init__(self):
        self.sent = []

    def send(self, wire):
        self.sent.append(DNSRecord.parse(wire))


class Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def env(tmp_path, monkeypatch):
    learned = []
    monkeypatch.setattr(daemon.Learner, "add",
                        lambda self, address, timeout, comment: learned.append((self.vm_id, address, timeout, comment)) or True)
    pruned = []
    monkeypatch.setattr(daemon.Resolver, "_prune", lambda self, state: pruned.append(state.policy.vm_id))
    store = StateStore(str(tmp_path))
    clock = Clock()
    resolver = daemon.Resolver(core.settings(30, 10), ("192.0.2.53", 53), store, clock=clock)
    resolver.up = FakeUpstream()

    class Env(object):
        pass
    e = Env()
    e.store, e.resolver, e.clock, e.learned, e.pruned = store, resolver, clock, learned, pruned
    e.vm = lambda vm_id, slot, **policy: save_vm(store, resolver, vm_id, slot, policy)
    return e


def save_vm(store, resolver, vm_id, slot, policy):
    base = {"mode": "allow-all", "allowed_domains": [], "allowed_cidrs": [], "denied_cidrs": []}
    base.update(policy)
    store.save(decode({"schema": 1, "id": vm_id, "slot": slot, "netns": "vmsan-" + vm_id, "policy": base,
                       "created": "t"}))
    resolver.check_state(force=True)
    return "172.16.%d.2" % slot


def ask(resolver, ip, name, qtype="A", tcp=False, qid=7):
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    got = []
    resolver.handle(bytes(q.pack()), ip, lambda wire: got.append(DNSRecord.parse(wire)), tcp)
    return got


def answer_upstream(resolver, records, index=-1, rcode=0):
    query = resolver.up.sent[index]
    reply = query.reply()
    reply.header.rcode = rcode
    for name, ip, ttl in records:
        reply.add_answer(RR(name, QTYPE.A, ttl=ttl, rdata=A(ip)))
    resolver.upstream_datagram(reply.pack())


def test_unknown_source_is_refused(env):
    got = ask(env.resolver, "172.16.9.2", "a.example.test")
    assert got[0].header.rcode == RCODE.REFUSED and not env.resolver.up.sent


def test_deny_all_is_refused_without_asking_upstream(env):
    ip = env.vm("d", 1, mode="deny-all")
    assert ask(env.resolver, ip, "a.example.test")[0].header.rcode == RCODE.REFUSED
    assert not env.resolver.up.sent


def test_custom_unlisted_name_is_nxdomain_without_asking_upstream(env, caplog):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    with caplog.at_level("INFO", logger="vmsan.resolver"):
        assert ask(env.resolver, ip, "b.example.test")[0].header.rcode == RCODE.NXDOMAIN
    assert not env.resolver.up.sent
    assert "refused b.example.test for VM c" in caplog.text


def test_allowed_answer_is_learned_before_it_is_given(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["*.example.test"])
    got = ask(env.resolver, ip, "A.Example.Test.")
    assert got == [] and len(env.resolver.up.sent) == 1
    assert str(env.resolver.up.sent[0].q.qname) == "a.example.test."
    answer_upstream(env.resolver, [("a.example.test", "203.0.113.10", 60)])
    assert env.learned == [("c", "203.0.113.10", 70, "a.example.test")]


def test_same_name_from_many_vms_goes_upstream_once_and_each_gets_its_own_policy(env):
    allowed = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    other = env.vm("o", 3, mode="custom", allowed_domains=["b.example.test"])
    open_vm = env.vm("w", 4)
    replies = {}
    for ip in (allowed, other, open_vm):
        q = DNSRecord.question("a.example.test")
        env.resolver.handle(bytes(q.pack()), ip, lambda wire, ip=ip: replies.setdefault(ip, DNSRecord.parse(wire)), False)
    assert len(env.resolver.up.sent) == 1
    assert replies[other].header.rcode == RCODE.NXDOMAIN        # decided before forwarding
    answer_upstream(env.resolver, [("a.example.test", "203.0.113.10", 60)])
    assert [str(r.rdata) for r in replies[allowed].rr] == ["203.0.113.10"]
    assert [str(r.rdata) for r in replies[open_vm].rr] == ["203.0.113.10"]
    assert [entry[0] for entry in env.learned] == ["c"]               # allow-all learns nothing


def test_cached_answers_are_served_and_aged(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    ask(env.resolver, ip, "a.example.test")
    answer_upstream(env.resolver, [("a.example.test", "203.0.113.10", 60)])
    env.clock.now += 20
    got = ask(env.resolver, ip, "a.example.test", qid=99)
    assert got[0].header.id == 99 and got[0].rr[0].ttl == 40
    env.clock.now += 1
    got = ask(env.resolver, ip, "a.example.test", qid=100)        # the hot path
    assert got[0].header.id == 100 and got[0].rr[0].ttl == 39
    assert len(env.resolver.up.sent) == 1
    env.clock.now += 40
    assert ask(env.resolver, ip, "a.example.test") == []          # expired: upstream again
    assert len(env.resolver.up.sent) == 2


def test_policy_change_on_disk_applies_to_the_next_query(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    ask(env.resolver, ip, "a.example.test")
    answer_upstream(env.resolver, [("a.example.test", "203.0.113.10", 60)])
    assert ask(env.resolver, ip, "a.example.test")[0].rr
    save_vm(env.store, env.resolver, "c", 2, {"mode": "custom", "allowed_domains": ["b.example.test"]})
    assert ask(env.resolver, ip, "a.example.test")[0].header.rcode == RCODE.NXDOMAIN
    assert env.pruned == ["c", "c"]       # at first sight and after the change


def test_state_change_is_seen_without_a_forced_reload(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    env.store.save(decode({"schema": 1, "id": "c", "slot": 2, "netns": "vmsan-c", "created": "t",
                           "policy": {"mode": "deny-all", "allowed_domains": [], "allowed_cidrs": [],
                                      "denied_cidrs": []}}))
    os.utime(env.store.vms_dir, ns=(0, time.time_ns() + 10 ** 9))    # what a rename does
    env.clock.now += 1
    assert ask(env.resolver, ip, "a.example.test")[0].header.rcode == RCODE.REFUSED


def test_two_changes_within_one_clock_tick_are_both_seen(env):
    """The state directory's mtime has a coarse clock: a second change in
    the same tick leaves it unchanged."""
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    seen = os.stat(env.store.vms_dir)
    env.store.save(decode({"schema": 1, "id": "c", "slot": 2, "netns": "vmsan-c", "created": "t",
                           "policy": {"mode": "deny-all", "allowed_domains": [], "allowed_cidrs": [],
                                      "denied_cidrs": []}}))
    os.utime(env.store.vms_dir, ns=(seen.st_atime_ns, seen.st_mtime_ns))     # same tick
    time.sleep(daemon.FRESH_RECHECK * 2)
    env.clock.now += 1
    assert ask(env.resolver, ip, "a.example.test")[0].header.rcode == RCODE.REFUSED


def test_answer_in_flight_during_a_policy_change_follows_the_new_policy(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    got = ask(env.resolver, ip, "a.example.test")
    save_vm(env.store, env.resolver, "c", 2, {"mode": "custom", "allowed_domains": ["b.example.test"]})
    answer_upstream(env.resolver, [("a.example.test", "203.0.113.10", 60)])
    assert got[0].header.rcode == RCODE.NXDOMAIN and env.learned == []


def test_removed_vm_is_refused(env):
    ip = env.vm("c", 2)
    env.store.delete("c")
    env.resolver.check_state(force=True)
    assert ask(env.resolver, ip, "a.example.test")[0].header.rcode == RCODE.REFUSED


def test_lost_upstream_query_is_retried_then_servfail(env):
    ip = env.vm("c", 2)
    got = ask(env.resolver, ip, "a.example.test")
    env.clock.now += daemon.UPSTREAM_RETRY
    env.resolver._retry_or_fail(env.clock.now)
    assert len(env.resolver.up.sent) == 2 and got == []
    env.clock.now += daemon.UPSTREAM_GIVE_UP
    env.resolver._retry_or_fail(env.clock.now)
    assert got[0].header.rcode == RCODE.SERVFAIL


def test_answer_to_another_question_is_ignored(env):
    ip = env.vm("c", 2)
    got = ask(env.resolver, ip, "a.example.test")
    forged = DNSRecord.question("evil.example.test").reply()
    forged.header.id = env.resolver.up.sent[0].header.id
    forged.add_answer(RR("evil.example.test", QTYPE.A, ttl=60, rdata=A("203.0.113.66")))
    env.resolver.upstream_datagram(forged.pack())
    assert got == []


def test_repeated_learning_is_skipped_while_the_entry_lasts(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["*.example.test"])
    for i, name in enumerate(("x1.example.test", "x2.example.test")):
        ask(env.resolver, ip, name)
        answer_upstream(env.resolver, [(name, "203.0.113.10", 60)])
        env.clock.now += 1
    assert len(env.learned) == 1
    env.clock.now += 60
    ask(env.resolver, ip, "x3.example.test")
    answer_upstream(env.resolver, [("x3.example.test", "203.0.113.10", 60)])
    assert len(env.learned) == 2


def test_tcp_gets_what_udp_cannot_carry(env):
    ip = env.vm("w", 4)
    ask(env.resolver, ip, "big.example.test")
    answer_upstream(env.resolver, [("big.example.test", "203.0.113.%d" % i, 60) for i in range(1, 60)])
    assert ask(env.resolver, ip, "big.example.test")[0].header.tc == 1
    assert len(ask(env.resolver, ip, "big.example.test", tcp=True)[0].rr) == 59


def test_bad_resolver_flags_exit_2_naming_the_flag(capsys):
    from ansible_collections.vmsan.network.plugins.module_utils.faces import cli
    for argv, flag in ((["--ttl-floor", "soon"], "--ttl-floor"), (["--grace", "-5"], "--grace"),
                       (["--listen", "localhost"], "--listen"), (["--upstream", "dns.example"], "--upstream")):
        assert cli.main(["resolver"] + argv) == 2
        err = capsys.readouterr().err
        assert flag + ":" in err and "accepted:" in err, err


def test_a_query_dnslib_cannot_read_gets_formerr(env):
    ip = env.vm("w", 4)
    got = []
    data = bytes(DNSRecord.question("a.example.test").pack())
    env.resolver.handle(data[:12] + b"\x01\xff\x00" + data[-4:], ip, got.append, False)      # not UTF-8
    reply = DNSRecord.parse(got[0])
    assert reply.header.rcode == RCODE.FORMERR and reply.header.id == DNSRecord.parse(data).header.id
    assert not env.resolver.up.sent
    response = bytes(DNSRecord.question("a.example.test").reply().pack())
    assert env.resolver.handle(response, ip, got.append, False) is False      # a response: no answer


def test_an_unreadable_upstream_answer_is_servfail_at_once(env):
    ip = env.vm("w", 4)
    got = ask(env.resolver, ip, "a.example.test")
    reply = env.resolver.up.sent[0].reply()
    reply.add_answer(RR("a.example.test", QTYPE.A, ttl=60, rdata=A("203.0.113.10")))
    env.resolver.upstream_datagram(bytes(reply.pack())[:-2])        # the record cut short
    assert got[0].header.rcode == RCODE.SERVFAIL
    assert not env.resolver.pending and not env.resolver.answers


def test_edns_query_gets_an_edns_answer_and_the_hot_path_serves_the_same_bytes(env):
    from dnslib import EDNS0
    ip = env.vm("w", 4)
    q = DNSRecord.question("A.example.test")
    q.add_ar(EDNS0(udp_len=4096))
    q.header.id = 1
    first, again = [], []
    env.resolver.handle(bytes(q.pack()), ip, first.append, False)
    answer_upstream(env.resolver, [("a.example.test", "203.0.113.10", 60)])
    q.header.id = 2
    env.resolver.handle(bytes(q.pack()), ip, again.append, False)
    assert DNSRecord.parse(first[0]).ar[0].edns_len == core.EDNS_PAYLOAD
    assert str(DNSRecord.parse(first[0]).q.qname) == "A.example.test."
    assert again[0][2:] == first[0][2:] and again[0][:2] == b"\x00\x02"
    assert len(env.resolver.up.sent) == 1
