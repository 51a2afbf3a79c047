"""The resolver daemon's query flow without a sandbox: state files in a
temporary VMSAN_HOME, the upstream a UDP socket of the test on 127.0.0.1,
the learner a fake (no kernel), the event loop pumped by the test."""

import dataclasses
import os
import select
import socket
import time

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord, EDNSOption

from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import StateStore, decode
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord
from ansible_collections.vmsan.network.plugins.module_utils.resolver import core, daemon, limits
from ansible_collections.vmsan.network.plugins.module_utils.resolver import registry as reg
from ansible_collections.vmsan.network.plugins.module_utils.resolver import upstream as up


class FakeUpstream(object):
    """A UDP socket on 127.0.0.1 that the resolver sends its queries to;
    ``sent`` lists them (dnslib records), ``peers`` where each came from."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.sent, self.peers, self.raw = [], [], []

    def drain(self):
        while select.select([self.sock], [], [], 0.05)[0]:
            data, peer = self.sock.recvfrom(65535)
            self.raw.append(data)
            self.sent.append(DNSRecord.parse(data))
            self.peers.append(peer)
        return self.sent

    def close(self):
        self.sock.close()


class Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def env(tmp_path, monkeypatch):
    learned, batches = [], []

    def add_many(self, entries):
        batches.append((self.vm_id, list(entries)))
        refused = {a: reg.IPSET_ERR_HASH_FULL for a, _t, _c in entries if a in env_obj.full_for.get(self.vm_id, ())}
        learned.extend((self.vm_id, a, t, c) for a, t, c in entries if a not in refused)
        return refused

    monkeypatch.setattr(reg.Learner, "add_many", add_many)
    pruned = []
    monkeypatch.setattr(daemon.Resolver, "_prune_later", lambda self, state: pruned.append(state.policy.vm_id))
    store = LimitsStore(str(tmp_path))
    clock = Clock()
    fake = FakeUpstream()
    resolver = daemon.Resolver(core.settings(30, 10), fake.address, store, clock=clock)
    resolver.learning.start()

    class Env(object):
        pass
    env_obj = Env()
    env_obj.store, env_obj.resolver, env_obj.clock, env_obj.learned, env_obj.pruned = store, resolver, clock, learned, pruned
    env_obj.batches, env_obj.upstream, env_obj.full_for = batches, fake, {}
    env_obj.vm = lambda vm_id, slot, **policy: save_vm(store, resolver, vm_id, slot, policy)
    yield env_obj
    resolver.learning.stop()
    resolver.upstream.close()
    fake.close()


@dataclasses.dataclass(frozen=True)
class LimitedRecord(VmRecord):
    """A record with its own DNS budget: the field limits.budget_from_record
    reads (the data model does not have it yet; see limits.RECORD_FIELD)."""
    dns_limits: object = None


def save_vm(store, resolver, vm_id, slot, policy, dns_limits=None, status="ready"):
    base = {"mode": "allow-all", "allowed_domains": [], "allowed_cidrs": [], "denied_cidrs": []}
    base.update(policy)
    store.save(decode({"schema": 1, "id": vm_id, "slot": slot, "netns": "vmsan-" + vm_id, "policy": base,
                       "created": "t", "status": status}))
    store.limits[vm_id] = dns_limits
    resolver.check_state(force=True)
    return "172.16.%d.2" % slot


class LimitsStore(StateStore):
    """The state directory, its records given the budgets the test set."""

    def __init__(self, path):
        StateStore.__init__(self, path)
        self.limits = {}

    def load(self, vm_id):
        record = StateStore.load(self, vm_id)
        if self.limits.get(vm_id) is None:
            return record
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(VmRecord)}
        return LimitedRecord(dns_limits=self.limits[vm_id], **fields)


def pump(resolver, until, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        resolver.loop.run_once(0.01)
    return until()


def ask(env, ip, name, qtype="A", tcp=False, qid=7, wait=False, data=None):
    if data is None:
        q = DNSRecord.question(name, qtype)
        q.header.id = qid
        data = bytes(q.pack())
    got = []
    env.resolver.handle(data, ip, lambda wire: got.append(DNSRecord.parse(wire)), tcp)
    if wait:
        pump(env.resolver, lambda: got)
    return got


def answer_upstream(env, records, index=-1, rcode=0, got=None):
    """Answer the upstream query INDEX (as the upstream would, from its own
    address, to the port it came from) and run the loop until GOT fills."""
    sent = env.upstream.drain()
    query, peer = sent[index], env.upstream.peers[index]
    reply = query.reply()
    reply.header.rcode = rcode
    for name, ip, ttl in records:
        reply.add_answer(RR(name, QTYPE.A, ttl=ttl, rdata=A(ip)))
    env.upstream.sock.sendto(bytes(reply.pack()), peer)
    if got is not None:
        pump(env.resolver, lambda: got)
    else:
        pump(env.resolver, lambda: False, timeout=0.1)


# -- policy ---------------------------------------------------------------------------

def test_unknown_source_is_refused(env):
    got = ask(env, "172.16.9.2", "a.example.test")
    assert got[0].header.rcode == RCODE.REFUSED and not env.upstream.drain()


def test_deny_all_is_refused_without_asking_upstream(env):
    ip = env.vm("d", 1, mode="deny-all")
    assert ask(env, ip, "a.example.test")[0].header.rcode == RCODE.REFUSED
    assert not env.upstream.drain()


def test_custom_unlisted_name_is_nxdomain_without_asking_upstream(env, caplog):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    with caplog.at_level("INFO", logger="vmsan.resolver"):
        assert ask(env, ip, "b.example.test")[0].header.rcode == RCODE.NXDOMAIN
    assert not env.upstream.drain()
    assert "refused b.example.test for VM c" in caplog.text


def test_allowed_answer_is_learned_before_it_is_given(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["*.example.test"])
    got = ask(env, ip, "A.Example.Test.")
    assert got == [] and len(env.upstream.drain()) == 1
    assert str(env.upstream.sent[0].q.qname).lower() == "a.example.test."
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)], got=got)
    assert env.learned == [("c", "203.0.113.10", 70, "a.example.test")]
    assert [str(r.rdata) for r in got[0].rr] == ["203.0.113.10"]


def test_same_name_from_many_vms_goes_upstream_once_and_each_gets_its_own_policy(env):
    allowed = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    other = env.vm("o", 3, mode="custom", allowed_domains=["b.example.test"])
    open_vm = env.vm("w", 4)
    replies = {}
    for ip in (allowed, other, open_vm):
        q = DNSRecord.question("a.example.test")
        env.resolver.handle(bytes(q.pack()), ip, lambda wire, ip=ip: replies.setdefault(ip, DNSRecord.parse(wire)),
                            False)
    assert len(env.upstream.drain()) == 1
    assert replies[other].header.rcode == RCODE.NXDOMAIN        # decided before forwarding
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)])
    pump(env.resolver, lambda: len(replies) == 3)
    assert [str(r.rdata) for r in replies[allowed].rr] == ["203.0.113.10"]
    assert [str(r.rdata) for r in replies[open_vm].rr] == ["203.0.113.10"]
    assert [entry[0] for entry in env.learned] == ["c"]               # allow-all learns nothing


def test_cached_answers_are_served_and_aged(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    got = ask(env, ip, "a.example.test")
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)], got=got)
    env.clock.now += 20
    got = ask(env, ip, "a.example.test", qid=99)
    assert got[0].header.id == 99 and got[0].rr[0].ttl == 40
    env.clock.now += 1
    got = ask(env, ip, "a.example.test", qid=100)
    assert got[0].header.id == 100 and got[0].rr[0].ttl == 39
    assert len(env.upstream.drain()) == 1
    env.clock.now += 40
    assert ask(env, ip, "a.example.test") == []          # expired: upstream again
    assert len(env.upstream.drain()) == 2


def test_policy_change_on_disk_applies_to_the_next_query(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    got = ask(env, ip, "a.example.test")
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)], got=got)
    assert ask(env, ip, "a.example.test")[0].rr
    save_vm(env.store, env.resolver, "c", 2, {"mode": "custom", "allowed_domains": ["b.example.test"]})
    assert ask(env, ip, "a.example.test")[0].header.rcode == RCODE.NXDOMAIN
    assert env.pruned == ["c", "c"]       # at first sight and after the change


def test_a_vm_being_created_is_not_pruned(env):
    """Its record is written before its kernel steps (its set may not be
    there yet) and nothing was learned under another policy: no prune, not
    when it is seen creating nor when it becomes ready; a later policy
    change prunes."""
    policy = {"mode": "custom", "allowed_domains": ["a.example.test"]}
    save_vm(env.store, env.resolver, "n", 3, policy, status="creating")
    assert env.resolver.registry.get("172.16.3.2") is not None        # served while it is made
    save_vm(env.store, env.resolver, "n", 3, policy)
    assert env.pruned == []
    save_vm(env.store, env.resolver, "n", 3, {"mode": "custom", "allowed_domains": ["b.example.test"]})
    assert env.pruned == ["n"]


def test_state_change_is_seen_without_a_forced_reload(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    env.store.save(decode({"schema": 1, "id": "c", "slot": 2, "netns": "vmsan-c", "created": "t",
                           "policy": {"mode": "deny-all"}}))
    os.utime(env.store.vms_dir, ns=(0, time.time_ns() + 10 ** 9))    # what a rename does
    env.clock.now += 1
    assert ask(env, ip, "a.example.test")[0].header.rcode == RCODE.REFUSED


def test_two_changes_within_one_clock_tick_are_both_seen(env):
    """The state directory's mtime has a coarse clock: a second change in
    the same tick leaves it unchanged."""
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    seen = os.stat(env.store.vms_dir)
    env.store.save(decode({"schema": 1, "id": "c", "slot": 2, "netns": "vmsan-c", "created": "t",
                           "policy": {"mode": "deny-all"}}))
    os.utime(env.store.vms_dir, ns=(seen.st_atime_ns, seen.st_mtime_ns))     # same tick
    time.sleep(daemon.FRESH_RECHECK * 2)
    env.clock.now += 1
    assert ask(env, ip, "a.example.test")[0].header.rcode == RCODE.REFUSED


def test_answer_in_flight_during_a_policy_change_follows_the_new_policy(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    got = ask(env, ip, "a.example.test")
    save_vm(env.store, env.resolver, "c", 2, {"mode": "custom", "allowed_domains": ["b.example.test"]})
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)], got=got)
    assert got[0].header.rcode == RCODE.NXDOMAIN and env.learned == []


def test_removed_vm_is_refused(env):
    ip = env.vm("c", 2)
    env.store.delete("c")
    env.resolver.check_state(force=True)
    assert ask(env, ip, "a.example.test")[0].header.rcode == RCODE.REFUSED


# -- the upstream side ------------------------------------------------------------------

def test_lost_upstream_query_is_retried_then_servfail(env):
    ip = env.vm("c", 2)
    got = ask(env, ip, "a.example.test")
    env.clock.now += daemon.UPSTREAM_RETRY
    env.resolver.upstream.retry_or_fail(env.clock.now)
    assert len(env.upstream.drain()) == 2 and got == []
    assert env.upstream.raw[0] == env.upstream.raw[1] and env.upstream.peers[0] == env.upstream.peers[1]
    env.clock.now += daemon.UPSTREAM_GIVE_UP
    env.resolver.upstream.retry_or_fail(env.clock.now)
    assert got[0].header.rcode == RCODE.SERVFAIL
    assert env.resolver.upstream.in_flight() == 0


def test_every_upstream_query_has_its_own_port_id_and_case(env):
    ip = env.vm("w", 4)
    for i in range(40):
        ask(env, ip, "name-with-letters-%d.example.test" % i)
    sent = env.upstream.drain()
    assert len(sent) == 40
    assert len({port for _ip, port in env.upstream.peers}) >= 38     # drawn from ~28000 ports
    assert len({r.header.id for r in sent}) >= 36                   # 16 random bits each
    names = [str(r.q.qname) for r in sent]
    assert all(n.lower() == "name-with-letters-%d.example.test." % i for i, n in enumerate(names))
    assert sum(n != n.lower() for n in names) >= 38                 # 0x20: random case
    assert env.resolver.upstream.in_flight() == 40


def test_answer_with_a_wrong_id_or_question_or_case_is_ignored(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    got = ask(env, ip, "a.example.test")
    query, peer = env.upstream.drain()[0], env.upstream.peers[0]
    forgeries = []
    wrong_id = query.reply()
    wrong_id.header.id ^= 0x5a5a
    forgeries.append(wrong_id)
    other = DNSRecord.question("evil.example.test").reply()
    other.header.id = query.header.id
    forgeries.append(other)
    lower = DNSRecord.question(str(query.q.qname).lower()).reply()     # the name without the case sent
    lower.header.id = query.header.id
    if str(lower.q.qname) != str(query.q.qname):
        forgeries.append(lower)
    for forged in forgeries:
        forged.add_answer(RR("a.example.test", QTYPE.A, ttl=60, rdata=A("192.0.2.66")))
        env.upstream.sock.sendto(bytes(forged.pack()), peer)
    pump(env.resolver, lambda: False, timeout=0.2)
    assert got == [] and env.learned == []
    assert env.resolver.upstream.stats["ignored"] == len(forgeries) >= 2
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)], got=got)      # the real one still counts
    assert [str(r.rdata) for r in got[0].rr] == ["203.0.113.10"]


def test_a_datagram_from_another_port_never_reaches_the_query(env):
    ip = env.vm("w", 4)
    got = ask(env, ip, "a.example.test")
    query, peer = env.upstream.drain()[0], env.upstream.peers[0]
    forged = query.reply()
    forged.add_answer(RR("a.example.test", QTYPE.A, ttl=60, rdata=A("192.0.2.66")))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:
        elsewhere.bind(("127.0.0.1", 0))
        elsewhere.sendto(bytes(forged.pack()), peer)                 # right id and question, wrong port
    pump(env.resolver, lambda: False, timeout=0.2)
    assert got == []
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)], got=got)
    assert [str(r.rdata) for r in got[0].rr] == ["203.0.113.10"]


def test_an_upstream_that_loses_the_case_gets_lower_case_from_then_on(env, caplog):
    ip = env.vm("w", 4)
    with caplog.at_level("WARNING", logger="vmsan.resolver"):
        for i in range(up.CASE_FAILURES):
            got = ask(env, ip, "n%d.example.test" % i)
            query, peer = env.upstream.drain()[-1], env.upstream.peers[-1]
            reply = DNSRecord.question(str(query.q.qname).lower()).reply()
            reply.header.id = query.header.id
            env.upstream.sock.sendto(bytes(reply.pack()), peer)
            pump(env.resolver, lambda: False, timeout=0.05)
            assert got == []
    assert "does not keep the case" in caplog.text
    ask(env, ip, "Later.Example.Test")
    assert str(env.upstream.drain()[-1].q.qname) == "later.example.test."


def test_an_unreadable_upstream_answer_is_servfail_at_once(env):
    ip = env.vm("w", 4)
    got = ask(env, ip, "a.example.test")
    query, peer = env.upstream.drain()[0], env.upstream.peers[0]
    reply = query.reply()
    reply.add_answer(RR("a.example.test", QTYPE.A, ttl=60, rdata=A("203.0.113.10")))
    env.upstream.sock.sendto(bytes(reply.pack())[:-2], peer)        # the record cut short
    pump(env.resolver, lambda: got)
    assert got[0].header.rcode == RCODE.SERVFAIL
    assert not env.resolver.upstream.in_flight() and not len(env.resolver.answers)


# -- learning ---------------------------------------------------------------------------

def test_repeated_learning_is_skipped_while_the_entry_lasts(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["*.example.test"])
    for name in ("x1.example.test", "x2.example.test"):
        got = ask(env, ip, name)
        answer_upstream(env, [(name, "203.0.113.10", 60)], got=got)
        env.clock.now += 1
    assert len(env.learned) == 1
    env.clock.now += 60
    got = ask(env, ip, "x3.example.test")
    answer_upstream(env, [("x3.example.test", "203.0.113.10", 60)], got=got)
    assert len(env.learned) == 2


def test_an_answer_learns_its_addresses_in_one_batch_and_at_most_the_cap(env):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["*.example.test"])
    got = ask(env, ip, "many.example.test")
    answer_upstream(env, [("many.example.test", "203.0.113.%d" % i, 60) for i in range(1, 65)], got=got)
    assert len(env.batches) == 1 and len(env.batches[0][1]) == core.MAX_LEARN_PER_ANSWER
    assert len(got[0].rr) == core.MAX_LEARN_PER_ANSWER
    assert {str(r.rdata) for r in got[0].rr} == {a for _vm, a, _t, _c in env.learned}


def test_a_full_set_is_logged_once_and_its_refusals_are_left_out_of_the_answer(env, caplog):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["*.example.test"])
    env.full_for["c"] = {"203.0.113.%d" % i for i in range(1, 65)}
    with caplog.at_level("WARNING", logger="vmsan.resolver"):
        for n in range(5):
            got = ask(env, ip, "f%d.example.test" % n)
            answer_upstream(env, [("f%d.example.test" % n, "203.0.113.%d" % (4 * n + i), 60) for i in range(1, 4)]
                            + [("f%d.example.test" % n, "198.51.100.%d" % n, 60)], got=got)
            assert [str(r.rdata) for r in got[0].rr] == ["198.51.100.%d" % n]
    assert caplog.text.count("is full") == 1
    assert len(env.resolver.registry.get(ip).hot) == 0          # a partial answer is not kept


# -- budgets ----------------------------------------------------------------------------

def test_beyond_its_queries_per_second_a_vm_gets_refused_and_others_do_not(env):
    noisy = save_vm(env.store, env.resolver, "n", 5, {}, dns_limits={"queries_per_second": 20})
    quiet = env.vm("q", 6, mode="deny-all")
    answered = []
    for i in range(100):
        got = ask(env, noisy, "deny.example.test", qid=i)
        answered.append(got[0].header.rcode if got else None)
    # 20 within the budget (upstream), 20 REFUSED (as many again), 60 dropped
    assert answered.count(RCODE.REFUSED) == 20 and answered.count(None) == 80
    assert len(env.upstream.drain()) == 1            # those in the budget share one upstream query
    # the first of them went upstream: it cost UPSTREAM_TOKENS of the 20, those that joined it one each
    in_budget = 20 - (daemon.UPSTREAM_TOKENS - 1)
    assert env.resolver.registry.get(noisy).meter.over_budget == 100 - in_budget
    assert ask(env, quiet, "a.example.test")[0].header.rcode == RCODE.REFUSED      # its own, by policy
    assert env.resolver.registry.get(quiet).meter.over_budget == 0
    env.clock.now += 1.0
    assert env.resolver.registry.get(noisy).meter.bucket.take(env.clock.now)       # a second later: again


def test_a_query_sent_upstream_costs_more_of_the_budget_than_one_answered_from_the_cache(env):
    ip = save_vm(env.store, env.resolver, "n", 5, {}, dns_limits={"queries_per_second": 20})
    meter = env.resolver.registry.get(ip).meter
    for i in range(20):                               # only new names: each one goes upstream
        ask(env, ip, "new%d.deny.example.test" % i, qid=i)
    sent = len(env.upstream.drain())
    assert daemon.UPSTREAM_TOKENS > 1 and sent == 20 // daemon.UPSTREAM_TOKENS
    assert meter.over_budget == 20 - sent
    env.clock.now += 1.0                              # the bucket full again
    for i in range(20):                               # the same name over and over: one upstream query
        ask(env, ip, "same.deny.example.test", qid=100 + i)
    asked = [str(m.q.qname).lower() for m in env.upstream.drain()]   # (and retries of the first five)
    assert asked.count("same.deny.example.test.") == 1
    assert meter.over_budget == 20 - sent + (daemon.UPSTREAM_TOKENS - 1)


def test_beyond_its_upstream_queries_in_flight_a_vm_gets_refused(env):
    ip = save_vm(env.store, env.resolver, "n", 5, {}, dns_limits={"upstream_queries": 3})
    replies = [ask(env, ip, "u%d.example.test" % i) for i in range(6)]
    assert [bool(r) for r in replies] == [False] * 3 + [True] * 3
    assert all(r[0].header.rcode == RCODE.REFUSED for r in replies[3:])
    assert len(env.upstream.drain()) == 3
    env.clock.now += daemon.UPSTREAM_GIVE_UP
    env.resolver.upstream.retry_or_fail(env.clock.now)
    assert env.resolver.registry.get(ip).meter.in_flight == 0
    assert ask(env, ip, "again.example.test") == []                 # room again


def test_the_log_of_a_vm_is_bounded_and_summed_up(env, caplog):
    ip = env.vm("c", 2, mode="custom", allowed_domains=["a.example.test"])
    meter = env.resolver.registry.get(ip).meter
    with caplog.at_level("INFO", logger="vmsan.resolver"):
        for i in range(500):
            ask(env, ip, "random-%d.example.test" % i)
            ask(env, ip, "junk", data=b"\x00\x01\x01\x00\x00\x02" + b"\x00" * 30)
        lines = [r for r in caplog.records if "VM c" in r.getMessage() or "for VM c" in r.getMessage()]
        assert len(lines) == meter.log.lines
        env.clock.now += meter.log.window
        env.resolver._sweep(env.clock.now)
    summary = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert len(summary) == 1 and "VM c: 980 more log lines" in summary[0], summary
    assert "refused" in summary[0] and "malformed" in summary[0]


# -- what guests send -------------------------------------------------------------------

def test_a_query_that_should_not_carry_records_gets_formerr_and_goes_nowhere(env):
    ip = env.vm("w", 4)
    data = bytes(DNSRecord.question("a.example.test").pack())
    with_answer = data[:6] + b"\x00\x01" + data[8:] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x42"
    got = ask(env, ip, "x", data=with_answer)
    assert got[0].header.rcode == RCODE.FORMERR and got[0].header.id == DNSRecord.parse(data).header.id
    assert not env.upstream.drain() and not env.learned
    response = bytes(DNSRecord.question("a.example.test").reply().pack())
    assert env.resolver.handle(response, ip, lambda wire: None, False) is False      # a response: no answer


def test_padded_queries_share_one_cached_reply(env):
    ip = env.vm("w", 4)
    first = DNSRecord.question("a.example.test")
    first.add_ar(EDNS0(udp_len=1232))
    got = ask(env, ip, "x", data=bytes(first.pack()))
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)], got=got)
    state = env.resolver.registry.get(ip)
    for i in range(200):
        q = DNSRecord.question("a.example.test")
        q.header.id = i
        q.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(12, b"\x00" * i)]))
        got = ask(env, ip, "x", data=bytes(q.pack()))
        assert got[0].header.id == i and [str(r.rdata) for r in got[0].rr] == ["203.0.113.10"]
    assert len(state.hot) == 1 and len(env.upstream.drain()) == 1


def test_tcp_gets_what_udp_cannot_carry(env):
    ip = env.vm("w", 4)
    got = ask(env, ip, "big.example.test")
    answer_upstream(env, [("big.example.test", "203.0.113.%d" % i, 60) for i in range(1, 60)], got=got)
    assert got[0].header.tc == 1
    assert len(ask(env, ip, "big.example.test", tcp=True)[0].rr) == 59


def test_edns_query_gets_an_edns_answer_and_a_repeat_the_same_bytes(env):
    ip = env.vm("w", 4)
    q = DNSRecord.question("A.example.test")
    q.add_ar(EDNS0(udp_len=4096))
    q.header.id = 1
    first, again = [], []
    env.resolver.handle(bytes(q.pack()), ip, first.append, False)
    answer_upstream(env, [("a.example.test", "203.0.113.10", 60)])
    pump(env.resolver, lambda: first)
    q.header.id = 2
    env.resolver.handle(bytes(q.pack()), ip, again.append, False)
    assert DNSRecord.parse(first[0]).ar[0].edns_len == core.EDNS_PAYLOAD
    assert str(DNSRecord.parse(first[0]).q.qname) == "A.example.test."
    assert again[0][2:] == first[0][2:] and again[0][:2] == b"\x00\x02"
    assert len(env.upstream.drain()) == 1


def test_the_health_query_is_answered_by_the_resolver_itself(env):
    ip = env.vm("w", 4)
    from_host = ask(env, "127.0.0.1", "health.vmsan.", qtype="TXT", data=DNSRecord.question(
        "health.vmsan.", "TXT", "CH").pack())
    from_guest = ask(env, ip, "x", data=DNSRecord.question("health.vmsan.", "TXT", "CH").pack())
    host_text = b" ".join(from_host[0].rr[0].rdata.data).decode()
    assert host_text.startswith("ok ") and "vms=1" in host_text
    assert b"".join(from_guest[0].rr[0].rdata.data) == b"ok"           # the host's counters are not a guest's
    assert not env.upstream.drain()


def test_the_health_answer_holds_any_number_of_counters(env):
    for i in range(40):
        env.resolver.stats["counter_with_a_long_name_%d" % i] = 10 ** 9 + i
    got = ask(env, "127.0.0.1", "x", data=DNSRecord.question("health.vmsan.", "TXT", "CH").pack())
    strings = got[0].rr[0].rdata.data
    assert len(strings) > 4 and all(len(piece) <= 255 for piece in strings)
    from ansible_collections.vmsan.network.plugins.module_utils.resolver import health
    stats = health.parse_stats(b" ".join(strings).decode())
    assert stats["counter_with_a_long_name_39"] == 10 ** 9 + 39 and stats["vms"] == 0


def test_bad_resolver_flags_exit_2_naming_the_flag(capsys):
    from ansible_collections.vmsan.network.plugins.module_utils.faces import cli
    for argv, flag in ((["--ttl-floor", "soon"], "--ttl-floor"), (["--grace", "-5"], "--grace"),
                       (["--listen", "localhost"], "--listen"), (["--upstream", "dns.example"], "--upstream"),
                       (["--vm-queries-per-second", "0"], "--vm-queries-per-second"),
                       (["--vm-upstream-queries", "many"], "--vm-upstream-queries"),
                       (["--vm-tcp-connections", "-1"], "--vm-tcp-connections")):
        assert cli.main(["resolver"] + argv) == 2
        err = capsys.readouterr().err
        assert flag + ":" in err and "accepted:" in err, err


def test_budget_of_the_record_replaces_the_default_and_follows_changes(env):
    ip = save_vm(env.store, env.resolver, "n", 5, {}, dns_limits={"tcp_connections": 2})
    assert env.resolver.registry.get(ip).meter.budget == limits.Budget(1000, 128, 2)
    save_vm(env.store, env.resolver, "n", 5, {})
    assert env.resolver.registry.get(ip).meter.budget == limits.DEFAULT_BUDGET


def test_the_udp_queues_charge_every_source_even_one_that_is_no_vm(env):
    """Through the real sockets (127.0.0.1): a source that is no VM's shares
    one budget; beyond it, header-only REFUSED at the same rate again, then
    nothing (and its queue rests)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env.resolver.unknown.bucket.set_rate(50)
    env.resolver.unknown.refusals.set_rate(50)
    env.resolver.open_sockets(("127.0.0.1", port))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        for i in range(400):
            q = DNSRecord.question("n%d.example.test" % i)
            q.header.id = i
            client.sendto(bytes(q.pack()), ("127.0.0.1", port))
            if i % 50 == 49:
                pump(env.resolver, lambda: False, timeout=0.02)
        pump(env.resolver, lambda: False, timeout=0.2)
        client.setblocking(False)
        replies = []
        while True:
            try:
                replies.append(DNSRecord.parse(client.recv(4096)))
            except BlockingIOError:
                break
    finally:
        client.close()
        for sock in env.resolver.udp + [env.resolver.tcp]:
            sock.close()
    by_policy = [r for r in replies if r.questions]           # REFUSED by policy: no VM has that address
    by_budget = [r for r in replies if not r.questions]       # REFUSED before the query was read
    assert all(r.header.rcode == RCODE.REFUSED for r in replies)
    assert 50 <= len(by_policy) <= 60 and 50 <= len(by_budget) <= 60, (len(by_policy), len(by_budget))
    assert env.resolver.stats["over_budget"] >= 400 - 60 and not env.upstream.drain()
