"""The resolver against a hostile guest (docs/domain-policies.md, "Hostile
guests"): one guest attacks, another VM is watched. Short forms of the
attacks that bench/resolver_hostile_bench.py runs at full length with
timings; these assert outcomes only (answered, not learned, bounded).

Guests are real sandbox guests behind their TAPs; attacks that need speed
run as processes inside the attacking guest (sandbox/dns_attacks.py)."""

import json
import os
import random
import socket
import struct
import sys
import time

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.resolver import health
from sandbox import dns_attacks, guard
from sandbox.netns import Namespace

from .test_domains import AUTH_DNS, WEB_A, Resolver, learned, make_vm

pytestmark = pytest.mark.integration

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESOLVER = ("169.254.64.1", 53)


@pytest.fixture
def resolver(sandbox):
    """Start with ``resolver(*flags, upstream=...)``; learned addresses stay a
    minute (nothing here waits for them to expire)."""
    started = []

    def start(*flags, upstream=AUTH_DNS):
        started.append(Resolver(sandbox, "--ttl-floor", "60", "--grace", "60", *flags, upstream=upstream).start())
        return started[-1]
    yield start
    for r in started:
        r.stop()


def counters(sandbox):
    """The resolver's health answer, asked from the host namespace."""
    with guard.entered(sandbox.host.name):
        answer = health.probe(RESOLVER, timeout=2.0)
    assert answer.ok, answer.detail
    return answer.stats


def attack(guest, *args, timeout=60):
    """Run ``dns_attacks ARGS`` inside GUEST; its JSON summary."""
    done = guest.run([sys.executable, "-m", "sandbox.dns_attacks", *map(str, args)], timeout=timeout,
                     env=dict(os.environ, PYTHONPATH=TESTS))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def attack_in_background(guest, *args):
    import subprocess
    proc = guest.spawn([sys.executable, "-m", "sandbox.dns_attacks", *map(str, args)],
                       env=dict(os.environ, PYTHONPATH=TESTS), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result(timeout=60):
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        return json.loads(out.decode().strip().splitlines()[-1])
    return result


def two_vms(sandbox, attacker_flags=("--allowed-domain", "a.example.test"),
            victim_flags=("--allowed-domain", "a.example.test,b.example.test,*.victim.test")):
    attacker_vm, attacker = make_vm(sandbox, "bad", *attacker_flags)
    victim_vm, victim = make_vm(sandbox, "good", *victim_flags)
    return attacker_vm, attacker, victim_vm, victim


def vm_lines(resolver, vm_id):
    return [line for line in resolver.log().splitlines() if "VM %s" % vm_id in line or "VM %s:" % vm_id in line]


# -- malformed messages ------------------------------------------------------------------

def test_malformed_messages_are_answered_cheaply_learn_nothing_and_reach_no_one(sandbox, resolver):
    """Every kind of malformed message of dns_attacks over UDP, then the TCP
    abuses (64 KB messages, lying length prefixes) in batches; after each
    batch another VM's query is answered, the resolver still runs, nothing
    was learned and the upstream saw none of it."""
    r = resolver()
    attacker_vm, attacker, victim_vm, victim = two_vms(sandbox)
    sandbox.internet.clear_records()
    rng = random.Random(1035)
    messages = dns_attacks.malformed(rng)
    with attacker.entered():
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect((attacker.dns_server, 53))
    sent = 0
    try:
        for batch in range(6):
            for _message in range(150):
                _kind, message = next(messages)
                try:
                    udp.send(message)
                    sent += 1
                except OSError:
                    pass
            assert victim.dig("a.example.test", victim.dns_server)[0] == "NOERROR", batch
            assert r.proc.poll() is None
    finally:
        udp.close()
    streams = dns_attacks.tcp_abuse(rng)
    held = []
    try:
        for _stream in range(14):
            kind, data, hold = next(streams)
            with attacker.entered():
                conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.settimeout(2)
            conn.connect((attacker.dns_server, 53))
            try:
                conn.sendall(data)
            except OSError:
                pass                    # the resolver closed it: that is an outcome too
            (held.append(conn) if hold else conn.close())
            assert victim.dig("b.example.test", victim.dns_server, tcp=True)[0] == "NOERROR", kind
            assert r.proc.poll() is None, kind
    finally:
        for conn in held:
            conn.close()
    assert sent >= 800
    assert learned(sandbox, attacker_vm) == {}
    assert {q.name.lower() for q in sandbox.internet.dns.queries()} <= {"a.example.test", "b.example.test"}
    assert counters(sandbox)["formerr"] > 0
    assert "Traceback" not in r.log()
    assert len(vm_lines(r, attacker_vm["id"])) <= 21         # its log budget, and at most one summary


def test_a_tcp_message_must_arrive_whole_in_time(sandbox, resolver):
    """A length prefix that promises more than comes: the connection is
    closed after the message deadline, however the bytes trickle in."""
    resolver()
    attacker_vm, attacker, _victim_vm, victim = two_vms(sandbox)
    with attacker.entered():
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(6)
    conn.connect((attacker.dns_server, 53))
    began = time.monotonic()
    closed = None
    try:
        conn.send(struct.pack("!H", 300))
        while time.monotonic() - began < 8:
            try:
                conn.send(b"x")             # a byte every 0.2 s: a per-byte timer would never fire
                time.sleep(0.2)
            except OSError:
                closed = time.monotonic() - began
                break
            conn.setblocking(False)
            try:
                if conn.recv(100) == b"":
                    closed = time.monotonic() - began
                    break
            except BlockingIOError:
                pass
            conn.setblocking(True)
    finally:
        conn.close()
    assert closed is not None and closed < 6
    assert victim.dig("a.example.test", victim.dns_server, tcp=True)[0] == "NOERROR"


# -- budgets ---------------------------------------------------------------------------

def test_a_flooding_guest_gets_refused_beyond_its_budget_and_the_other_vm_is_answered(sandbox, resolver):
    r = resolver("--vm-queries-per-second", "200")
    attacker_vm, attacker, victim_vm, victim = two_vms(sandbox, attacker_flags=("--allowed-domain", "*.example.test"))
    prober = dns_attacks.Prober(victim, victim.dns_server, ["a.example.test", "b.example.test"], interval=0.02).start()
    try:
        flood = attack(attacker, "flood", "--server", attacker.dns_server, "--seconds", "3", "--names", "3000",
                       "--template", "flood%d.example.test")
    finally:
        results = prober.stop()
    within = sum(n for rcode, n in flood["replies"].items() if rcode != "REFUSED")
    refused = flood["replies"].get("REFUSED", 0)
    # answered: its rate while it sends and reads (3 s + 1 s) plus one burst, and slack for the queue;
    # REFUSED: as many again; the rest of the flood: nothing
    bound = 200 * 5 + 200
    assert 0 < within <= bound and 0 < refused <= bound, flood
    assert flood["sent"] > 10 * (within + refused), flood
    answered = [r for r in results if r[2] == "NOERROR"]
    assert len(answered) == len(results) > 20, [r for r in results if r[2] != "NOERROR"][:5]
    assert len(vm_lines(r, attacker_vm["id"])) <= 21


def test_tcp_connections_are_counted_per_vm(sandbox, resolver):
    resolver("--vm-tcp-connections", "4")
    attacker_vm, attacker, victim_vm, victim = two_vms(sandbox)
    held = attack_in_background(attacker, "tcp-idle", "--server", attacker.dns_server, "--seconds", "3",
                                "--count", "40")
    time.sleep(1.5)
    assert victim.dig("a.example.test", victim.dns_server, tcp=True)[0] == "NOERROR"
    assert counters(sandbox).get("tcp_refused", 0) >= 30
    idle = held()
    assert idle["open_after"] <= 4, idle


def test_a_tcp_client_that_never_reads_is_cut_off_and_stalls_no_one(sandbox, resolver):
    resolver("--vm-queries-per-second", "100000")       # every one of its queries is answered (and not read)
    sandbox.internet.dns.set("big.victim.test", "A", ["203.0.113.%d" % i for i in range(1, 60)])
    attacker_vm, attacker, victim_vm, victim = two_vms(sandbox, attacker_flags=())      # allow-all: all 59 shown
    # closed when its unread answers pass servers.TCP_OUT_MAX, or TCP_WRITE_TIMEOUT (5 s) after it last read
    stuck = attack_in_background(attacker, "tcp-stuck", "--server", attacker.dns_server, "--seconds", "9",
                                 "--name", "big.victim.test", "--count", "1000")
    time.sleep(1.0)
    for i in range(10):
        sandbox.internet.dns.set("u%d.victim.test" % i, "A", [WEB_A])
        assert victim.dig("u%d.victim.test" % i, victim.dns_server)[0] == "NOERROR"        # uncached
        assert victim.dig("u%d.victim.test" % i, victim.dns_server, tcp=True)[0] == "NOERROR"
    deadline = time.monotonic() + 7.0
    while counters(sandbox)["tcp"] and time.monotonic() < deadline:
        time.sleep(0.25)
    seen = counters(sandbox)
    result = stuck()                # the attacker still held its end until now
    assert result["opened"] == 4 and seen["tcp"] == 0 and seen["tcp_unread"] >= 4, (result, seen)


def test_padded_queries_share_one_cache_entry(sandbox, resolver):
    resolver()
    attacker_vm, attacker, _victim_vm, _victim = two_vms(sandbox)
    before = counters(sandbox)["hot_bytes"]
    result = attack(attacker, "padded", "--server", attacker.dns_server, "--count", "400",
                    "--name", "a.example.test")
    assert result["rcodes"] == {"NOERROR": 400}, result
    grown = counters(sandbox)["hot_bytes"] - before
    assert 0 < grown < 4096, grown          # one reply, whatever the padding


def test_an_answer_learns_at_most_the_cap_and_shows_only_what_was_learned(sandbox, resolver):
    from ansible_collections.vmsan.network.plugins.module_utils.resolver.core import MAX_LEARN_PER_ANSWER
    resolver()
    for i in range(12):
        sandbox.internet.dns.set("m%d.many.test" % i, "A", ["198.18.%d.%d" % (i, j) for j in range(64)])
    attacker_vm, attacker, victim_vm, victim = two_vms(sandbox, attacker_flags=("--allowed-domain", "*.many.test"))
    result = attack(attacker, "names", "--server", attacker.dns_server, "--template", "m%d.many.test",
                    "--names", "12", "--seconds", "20")
    assert result["answers"] == {"NOERROR": 12}, result
    assert result["addresses"] == [MAX_LEARN_PER_ANSWER] * 12
    assert len(learned(sandbox, attacker_vm)) == 12 * MAX_LEARN_PER_ANSWER
    assert victim.dig("a.example.test", victim.dns_server)[0] == "NOERROR"


def test_a_full_set_is_logged_once_and_its_answers_leave_out_what_it_would_not_take(sandbox, resolver):
    r = resolver()
    for i in range(6):
        sandbox.internet.dns.set("f%d.full.test" % i, "A", ["198.18.%d.1" % i, "198.18.%d.2" % i])
    attacker_vm, attacker, _victim_vm, _victim = two_vms(sandbox, attacker_flags=("--allowed-domain", "*.full.test"))
    set_name = "vmsan-%s-dns" % attacker_vm["id"]
    small = set_name[:24] + "~s"
    vm_ns = Namespace(attacker_vm["netns"])           # where the VM's sets are: make its dns set hold 4
    vm_ns.run(["ipset", "create", small, "hash:ip", "timeout", "0", "comment", "maxelem", "4"], check=True)
    vm_ns.run(["ipset", "swap", small, set_name], check=True)
    vm_ns.run(["ipset", "destroy", small], check=True)
    answers = [attacker.dig("f%d.full.test" % i, attacker.dns_server) for i in range(6)]
    shown = [address for _rcode, values, _t in answers for address in values]
    assert all(a[0] == "NOERROR" for a in answers), answers
    assert len(set(learned(sandbox, attacker_vm))) == 4
    assert set(shown) == set(learned(sandbox, attacker_vm))          # nothing shown that the set would not take
    assert r.log().count("is full") == 1


# -- upstream hygiene ---------------------------------------------------------------------

def test_upstream_queries_leave_from_fresh_random_ports_with_random_ids_and_case(sandbox, resolver):
    resolver()
    _attacker_vm, _attacker, victim_vm, victim = two_vms(sandbox)
    names = ["p%d.victim.test" % i for i in range(200)]
    for name in names:
        sandbox.internet.dns.set(name, "A", [WEB_A])
    sandbox.internet.clear_records()
    result = attack(victim, "names", "--server", victim.dns_server, "--template", "p%d.victim.test",
                    "--names", "200", "--seconds", "30")
    assert result["answers"] == {"NOERROR": 200}, result
    seen = [q for q in sandbox.internet.dns.queries() if q.name.lower() in set(names)]
    assert len(seen) == 200
    assert len({q.src_port for q in seen}) >= 190
    assert sum(q.name != q.name.lower() for q in seen) >= 190          # 0x20: the case is random too


def test_a_forged_answer_with_a_wrong_id_port_or_case_is_ignored(sandbox, resolver):
    forger = dns_attacks.ForgingUpstream(sandbox)
    resolver(upstream=forger.ADDRESS)
    victim_vm, victim = make_vm(sandbox, "good", "--allowed-domain", "*.example.test")
    for i in range(5):
        assert victim.dig("f%d.example.test" % i, victim.dns_server, timeout=2)[:2] == ("NOERROR", [forger.REAL])
    assert len(forger.asked) == 5
    assert set(learned(sandbox, victim_vm)) == {forger.REAL}
    assert counters(sandbox)["ignored"] >= 10      # the wrong id and the wrong case (the wrong port never arrives)


# -- the health query ------------------------------------------------------------------------

def test_the_health_probe_says_whether_a_resolver_answers(sandbox, resolver):
    with guard.entered(sandbox.host.name):
        nothing = health.probe(RESOLVER, timeout=0.3)
    assert not nothing.ok and "not an address of this host" in nothing.detail      # no VM yet: nothing sent
    make_vm(sandbox, "hp", "--allowed-domain", "a.example.test")
    with guard.entered(sandbox.host.name):
        down = health.probe(RESOLVER, timeout=0.3)
    assert not down.ok and "vmsan-resolver" in down.detail
    r = resolver()
    with guard.entered(sandbox.host.name):
        up = health.probe(RESOLVER)
    assert up.ok and up.stats["vms"] == 1
    r.stop()
    with guard.entered(sandbox.host.name):
        assert not health.probe(RESOLVER, timeout=0.3).ok


def test_doctor_fails_when_a_vm_with_domains_has_no_resolver(sandbox, resolver):
    def doctor():
        result = sandbox.vmsan("doctor", check=False)
        return result.rc, {c["name"]: c for c in result.out["checks"]}["resolver"]
    rc, check = doctor()
    assert check["status"] == "warn" and "no resolver to ask" in check["detail"]        # no VM: nothing sent
    vm, _guest = make_vm(sandbox, "dr", "--allowed-domain", "a.example.test")
    rc, check = doctor()
    assert rc == 1 and check["status"] == "FAIL" and vm["id"] in check["detail"]
    resolver()
    rc, check = doctor()
    assert check["status"] == "ok" and "answers" in check["detail"]
