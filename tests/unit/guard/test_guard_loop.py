"""The guard's packet reading and the verdicts it gives the kernel
(guard/packet.py, guard/loop.NamespaceGuard.handle), on packets built here."""

import socket
import struct

from ansible_collections.vmsan.network.plugins.module_utils.guard import loop, packet
from ansible_collections.vmsan.network.plugins.module_utils.kernel import nfqueue as nq
from ansible_collections.vmsan.network.plugins.module_utils.plan import name_guard as layout
from ansible_collections.vmsan.network.plugins.module_utils.resolver.pins import PinTable

from .guard_hellos import built_hello

GUEST, X = "172.16.0.2", "203.0.113.10"


def tcp(seq, payload=b"", syn=False, sport=40000, dport=443, src=GUEST, dst=X, options=b"", ack=0, flags=None):
    doff = (20 + len(options)) // 4
    flags = flags if flags is not None else (0x02 if syn else 0x18)
    tcph = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 65535, 0, 0) + options
    total = 20 + len(tcph) + len(payload)
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return iph + tcph + payload


def udp(dport, payload=b"q", src=GUEST, dst=X):
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0, socket.inet_aton(src),
                      socket.inet_aton(dst))
    return iph + struct.pack("!HHHH", 5000, dport, 8 + len(payload), 0) + payload


def test_packet_read():
    p = packet.read(tcp(7, b"data", options=b"\x01" * 8))
    assert (p.proto, p.src, p.sport, p.dst, p.dport, p.seq, p.flags, p.payload) == \
        (6, GUEST, 40000, X, 443, 7, 0x18, b"data")
    assert packet.read(udp(123, b"ntp")).payload == b"ntp"
    assert packet.read(b"\x60" + b"\x00" * 39) is None          # IPv6
    assert packet.read(tcp(1)[:30]) is None                      # header cut short


def guard(domains=("a.test",)):
    pins = PinTable()
    pins.pin("web", X, ["a.test"], 1e12)
    ng = loop.NamespaceGuard("ns", None, [loop.VmView("web", GUEST, domains)], pins)
    return ng


def queued(pid, data, mark=0):
    return nq.Message(nq.QUEUED, pid, mark, data)


def logged(data):
    return nq.Message(nq.LOGGED, None, 0, data)


def syn_ack(first, sport=40000, guest=GUEST):
    """The server's SYN-ACK to the guest, acknowledging FIRST."""
    return logged(tcp(555, sport=443, dport=sport, src=X, dst=guest, ack=first, flags=0x12))


def test_an_accepted_flow_comes_back_with_our_bit_in_its_mark():
    ng = guard()
    hello = built_hello("a.test")
    out = ng.handle([syn_ack(101), queued(1, tcp(101, hello), mark=0x5)])
    assert out == [(1, nq.NF_REPEAT, 0x5 | layout.MARK_ACCEPTED)]
    assert ng.cut == []


def test_a_refused_flow_is_reset_and_its_conntrack_entry_cut():
    ng = guard()
    out = ng.handle([syn_ack(101), queued(1, tcp(101, built_hello("c.test")), mark=0x30000007)])
    assert out == [(1, nq.NF_REPEAT, 0x7 | layout.MARK_REFUSED)]
    assert len(ng.cut) == 1 and ng.counters.refused == 1


def test_empty_packets_pass_and_unknown_sources_are_dropped():
    ng = guard()
    assert ng.handle([queued(1, tcp(5))]) == [(1, nq.NF_ACCEPT, None)]
    assert ng.handle([queued(2, b"\x60" + b"\x00" * 39)]) == [(2, nq.NF_DROP, None)]
    out = ng.handle([syn_ack(101, guest="172.16.9.2"), queued(3, tcp(101, built_hello("a.test"), src="172.16.9.2"))])
    assert out == [(3, nq.NF_REPEAT, layout.MARK_REFUSED)]


def test_udp_needs_an_entry_for_its_port():
    ng = guard(("a.test:123/udp",))
    assert ng.handle([queued(1, udp(123))]) == [(1, nq.NF_REPEAT, layout.MARK_ACCEPTED)]
    assert ng.handle([queued(2, udp(443))]) == [(2, nq.NF_REPEAT, layout.MARK_REFUSED)]
    assert ng.cut == []             # a refused UDP flow keeps its entry: its mark drops the rest


def audit_guard(domains=("a.test",)):
    pins = PinTable()
    pins.pin("web", X, ["a.test"], 1e12)
    told = []
    ng = loop.NamespaceGuard("ns", None, [loop.VmView("web", GUEST, domains, audit=True)], pins,
                             on_refusal=told.append)
    return ng, told


def test_in_audit_mode_what_would_be_refused_is_accepted_and_told_as_would_refuse():
    ng, told = audit_guard()
    out = ng.handle([syn_ack(101), queued(1, tcp(101, built_hello("c.test")), mark=0x5)])
    assert out == [(1, nq.NF_REPEAT, 0x5 | layout.MARK_ACCEPTED)]
    assert ng.cut == [] and ng.counters.refused == 0 and ng.counters.would_refuse == 1
    assert [(r.vm_id, r.name, r.dst, r.code, r.verdict) for r in told] == [("web", "c.test", X, "not_allowed",
                                                                           "would refuse")]
    assert ng.decisions["web"] == {("would_refuse", "not_allowed"): 1}
    # what the flow table refuses by itself (no SYN-ACK seen) is let through too; UDP as well
    assert ng.handle([queued(2, tcp(7, b"x", sport=40001))]) == [(2, nq.NF_REPEAT, layout.MARK_ACCEPTED)]
    assert ng.handle([queued(3, udp(443))]) == [(3, nq.NF_REPEAT, layout.MARK_ACCEPTED)]
    assert [r.code for r in told[1:]] == ["stream", "udp_port"]
    # an allowed, pinned name is an ordinary accept, told to no one
    ng.handle([syn_ack(101, sport=40002), queued(4, tcp(101, built_hello("a.test"), sport=40002))])
    assert len(told) == 3 and ng.decisions["web"][("accept", "name")] == 1


def test_ending_audit_mode_cuts_the_flows_it_let_through_and_keeps_the_allowed():
    ng, _told = audit_guard()
    ng.handle([syn_ack(101), queued(1, tcp(101, built_hello("c.test")))])
    ng.handle([syn_ack(101, sport=40002), queued(2, tcp(101, built_hello("a.test"), sport=40002))])
    assert ng.set_vms([loop.VmView("web", GUEST, ("a.test",), audit=True)]) == 0       # still auditing: kept
    assert ng.set_vms([loop.VmView("web", GUEST, ("a.test",))]) == 1                   # enforcing now
    assert ng.counters.cut == 1 and len(ng.cut) == 1      # the conntrack delete of the c.test flow, to be sent
