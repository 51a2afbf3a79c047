"""Held flows (guard/flows.py): the stream is read from the byte the
server's SYN-ACK acknowledged, in order, whatever order the segments come
in; verdicts for every held packet; late packets get the flow's verdict."""

from ansible_collections.vmsan.network.plugins.module_utils.guard import decide, flows, rule
from ansible_collections.vmsan.network.plugins.module_utils.guard.flows import ACCEPT, DROP, PASS, REFUSE

from .guard_hellos import built_hello, ext

POLICY = rule.GuardPolicy(("a.test",))
KEY = ("172.16.0.2", 40000, "203.0.113.10", 443)
ISN = 1000


def table(**kw):
    seen = []

    def decide_(key, prefix):
        return decide.tcp(POLICY, frozenset({"a.test"}), key[3], prefix)
    t = flows.FlowTable(decide_, on_verdict=lambda k, v: seen.append(v), **kw)
    t.seen = seen
    return t


def hello(name="a.test", pad=1800):
    return built_hello(name, extra=[ext(21, b"\x00" * pad)])


def test_hello_in_three_segments_is_decided_on_the_last():
    t = table()
    t.start(KEY, ISN + 1, 0.0)
    data = hello()
    a, b = 700, 1400
    assert t.packet(KEY, ISN + 1, False, b"", 1, 0.0) == [(1, PASS)]      # an ACK that reached the queue
    assert t.packet(KEY, ISN + 1, False, data[:a], 2, 0.0) == []
    assert t.packet(KEY, ISN + 1 + a, False, data[a:b], 3, 0.0) == []
    assert t.packet(KEY, ISN + 1 + b, False, data[b:], 4, 0.0) == [(2, ACCEPT), (3, ACCEPT), (4, ACCEPT)]
    assert t.seen[-1].action == rule.ACCEPT
    # a packet the kernel had queued before it knew: the same verdict
    assert t.packet(KEY, ISN + 1 + len(data), False, b"more", 5, 0.1) == [(5, ACCEPT)]


def test_out_of_order_segments_are_read_from_offset_zero():
    """A harmless hello at a later offset first must not decide: the server
    reads offset 0 first."""
    t = table()
    t.start(KEY, ISN + 1, 0.0)
    good, evil = hello("a.test", 10), hello("c.test", 10)
    assert t.packet(KEY, ISN + 1 + len(evil), False, good, 1, 0.0) == []
    assert t.packet(KEY, ISN + 1, False, evil, 2, 0.0) == [(1, REFUSE), (2, DROP)]
    assert t.seen[-1].name == "c.test"


def test_retransmissions_must_carry_the_same_bytes():
    t = table()
    t.start(KEY, ISN + 1, 0.0)
    data = hello()
    assert t.packet(KEY, ISN + 1, False, data[:100], 1, 0.0) == []
    assert t.packet(KEY, ISN + 1, False, data[:100], 2, 0.2) == []       # same bytes: fine
    assert t.packet(KEY, ISN + 51, False, b"X" * 100, 3, 0.3) == [(1, REFUSE), (2, DROP), (3, DROP)]


def test_unknown_flow_with_payload_is_refused():
    t = table()
    assert t.packet(KEY, 5, False, hello(), 1, 0.0) == [(1, REFUSE)]
    assert "SYN-ACK was not seen" in t.seen[-1].reason
    assert t.packet(KEY, 5, False, b"", 2, 0.0) == [(2, DROP)]           # decided: refused


def test_payload_in_a_syn_is_refused():
    """TCP Fast Open data comes before the server said where the stream starts."""
    t = table()
    assert t.packet(KEY, ISN, True, hello(), 1, 0.0) == [(1, REFUSE)]
    assert "SYN" in t.seen[-1].reason


def test_another_start_replaces_the_record_until_payload_is_held():
    t = table()
    t.start(KEY, ISN + 1, 0.0)
    t.start(KEY, ISN + 1, 0.5)              # a retransmitted SYN-ACK
    t.start(KEY, 9001, 0.6)                 # the old attempt died: a new one on the same ports
    assert t.packet(KEY, 9001, False, hello(), 1, 0.7) == [(1, ACCEPT)]
    t.start(KEY, 20001, 1.0)
    assert t.packet(KEY, 20001, False, hello()[:50], 2, 1.0) == []
    assert t.start(KEY, 30001, 1.1) == [(2, REFUSE)]
    assert "another start" in t.seen[-1].reason


def test_payload_before_the_stream_start_is_refused():
    t = table()
    t.start(KEY, ISN + 1, 0.0)
    assert t.packet(KEY, ISN - 10, False, b"x" * 20, 1, 0.0) == [(1, REFUSE)]
    assert "before the start" in t.seen[-1].reason


def test_sequence_numbers_wrap():
    t = table()
    isn = (1 << 32) - 5
    t.start(KEY, isn + 1, 0.0)
    data = hello()
    assert t.packet(KEY, isn + 1, False, data[:10], 1, 0.0) == []
    assert t.packet(KEY, (isn + 11) % (1 << 32), False, data[10:], 2, 0.0) == [(1, ACCEPT), (2, ACCEPT)]


def test_a_flow_held_too_long_is_refused():
    t = table(hold=3.0)
    t.start(KEY, ISN + 1, 0.0)
    assert t.packet(KEY, ISN + 1, False, hello()[:100], 1, 1.0) == []
    assert t.expire(3.9) == []
    assert t.expire(4.0) == [(1, REFUSE)]
    assert "held" in t.seen[-1].reason


def test_nothing_to_decide_on_within_the_cap_is_refused():
    t = table()
    t.start(KEY, ISN + 1, 0.0)
    out, seq = [], ISN + 1
    chunk = b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 1400 + b"\r\n"
    for pid in range(1, 20):
        out = t.packet(KEY, seq, False, chunk, pid, 0.0)
        seq += len(chunk)
        if out:
            break
    assert out and out[0][1] == REFUSE


def test_records_are_forgotten():
    t = table(syn_ttl=120.0, linger=10.0)
    t.start(KEY, ISN + 1, 0.0)
    t.packet(("x", 1, "y", 443), 1, False, hello(), 1, 0.0)
    t.expire(119.0)
    assert KEY in t.flows and ("x", 1, "y", 443) not in t.decided
    t.expire(121.0)
    assert not t.flows and not t.decided


def test_too_many_flows_forget_the_oldest_idle_record_first():
    t = table(max_flows=3)
    keys = [("172.16.0.2", p, "203.0.113.10", 443) for p in range(5)]
    t.start(keys[0], ISN + 1, 0.0)
    t.packet(keys[0], ISN + 1, False, b"GET", 1, 0.0)        # held
    t.start(keys[1], ISN + 1, 0.0)
    t.start(keys[2], ISN + 1, 0.0)
    assert t.start(keys[3], ISN + 1, 0.0) == []                    # keys[1] forgotten
    assert keys[1] not in t.flows and keys[0] in t.flows
    t.packet(keys[2], ISN + 1, False, b"GET", 2, 0.0)
    t.packet(keys[3], ISN + 1, False, b"GET", 3, 0.0)
    assert t.start(keys[4], ISN + 1, 0.0) == [(1, REFUSE)]         # all held: the oldest is refused
    assert t.forget() == [(2, DROP), (3, DROP)]


def test_a_new_connection_on_the_same_ports_is_decided_again():
    """The guest reuses the 4-tuple of an accepted flow for a new connection
    (a new SYN-ACK): its hello is read, not given the old verdict."""
    t = table()
    t.start(KEY, ISN + 1, 0.0)
    assert t.packet(KEY, ISN + 1, False, hello("a.test", 10), 1, 0.0) == [(1, ACCEPT)]
    t.start(KEY, 5001, 1.0)
    assert t.packet(KEY, 5001, False, hello("c.test", 10), 2, 1.0) == [(2, REFUSE)]
