"""policy suggest (plan/suggest.py), the drop chains (plan/drops.py), the
packet and counter readers (telemetry/packets.py, kernel/link_counters.py,
kernel/nflog.py) and the metrics' exposition (telemetry/metrics.py). Pure."""

import socket
import struct

from ansible_collections.vmsan.network.plugins.module_utils.kernel import link_counters, nflog
from ansible_collections.vmsan.network.plugins.module_utils.model import events as E
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.plan import drops, suggest
from ansible_collections.vmsan.network.plugins.module_utils.telemetry import counters, metrics, packets


def name(n, verdict=E.WOULD_REFUSE):
    return E.Event(0.0, "web", "name", verdict, name=n)


def test_suggest_gives_exact_names_and_a_wildcard_only_for_several_under_one_parent():
    evs = [name("alpha.test"), name("bravo.test"), name("a.cdn.example"), name("b.cdn.example"),
           name("c.cdn.example"), name("alpha.test"),
           E.Event(0.0, "web", "policy", E.WOULD_REFUSE, destination="203.0.113.11", port=9000)]
    found = suggest.suggest(inputs.policy("custom", audit=True), evs)
    assert found.allowed_domains == ("*.cdn.example", "alpha.test", "bravo.test")
    assert found.allowed_cidrs == ("203.0.113.11/32",)
    assert any("*.cdn.example stands for the 3 names" in n for n in found.notes)
    assert suggest.flags(found) == ["--allowed-domain", "*.cdn.example,alpha.test,bravo.test",
                                    "--allowed-cidr", "203.0.113.11/32"]


def test_suggest_keeps_what_the_policy_allows_and_leaves_denied_destinations_out():
    pol = inputs.policy(None, "keep.test", None, "192.0.2.0/24")
    evs = [name("keep.test", E.REFUSED), name("new.test", E.REFUSED),
           E.Event(0.0, "web", "policy", E.REFUSED, destination="192.0.2.10")]
    found = suggest.suggest(pol, evs)
    assert found.allowed_domains == ("keep.test", "new.test") and found.allowed_cidrs == ()
    assert found.denied_cidrs == ("192.0.2.0/24",) and "192.0.2.10 is inside a denied CIDR" in found.notes[0]


def test_suggest_reads_the_guards_names_and_notes_the_fronted_ones():
    pol = inputs.policy(None, "a.test,d.test", audit=True)
    evs = [E.Event(0.0, "web", "guard", E.WOULD_REFUSE, destination="203.0.113.10", port=443, name="c.test",
                   detail="not_allowed"),
           E.Event(0.0, "web", "guard", E.WOULD_REFUSE, destination="203.0.113.10", port=443, name="d.test",
                   detail="not_pinned"),
           E.Event(0.0, "web", "guard", E.WOULD_REFUSE, destination="203.0.113.10", port=22, detail="protocol")]
    found = suggest.suggest(pol, evs)
    assert found.allowed_domains == ("a.test", "d.test", "c.test") and found.allowed_cidrs == ()
    assert found.notes == ("d.test was asked for at 203.0.113.10, an address not learned for it (domain fronting, "
                           "or the name was not resolved first): no list entry lets that through",)
    assert drops.reason_of("VMSAN-AUDIT-GUARD") == ("guard", E.WOULD_REFUSE)
    assert drops.of_group(drops.GROUPS[("guard", E.WOULD_REFUSE)]) == ("guard", E.WOULD_REFUSE)


def test_each_drop_reason_has_a_counted_chain_with_a_limited_copy():
    owned = drops.with_chains({("filter", "vmsan-web-out"): [("-d", "10.0.0.0/8") + drops.drop("policy")]})
    chain = owned[("filter", "VMSAN-DROP-POLICY")]
    assert chain[-1] == ("-j", "DROP") and "--limit" in chain[0] and "NFLOG" in chain[0]
    assert drops.of_group(drops.GROUPS[("policy", E.REFUSED)]) == ("policy", E.REFUSED)
    assert drops.reason_of("VMSAN-AUDIT-POLICY") == ("policy", E.WOULD_REFUSE)


class Rule(object):
    def __init__(self, label, packets):
        self.label, self.counters = label, (packets, packets * 60)


def test_drops_are_read_from_the_jump_rules_counters_and_the_guards_verdicts():
    chains = {"vmsan-web-out": [Rule("ACCEPT", 50), Rule("VMSAN-DROP-POLICY", 3), Rule("VMSAN-DROP-POLICY", 2),
                                Rule("VMSAN-AUDIT-POLICY", 7)],
              "vmsan-web-spoof": [Rule("VMSAN-DROP-SPOOFED", 1)],
              "vmsan-web-guard": [Rule("REJECT", 4), Rule("DROP", 1), Rule("NFQUEUE", 9)]}
    dropped, would = counters.drops_of("web", chains)
    assert dropped["policy"] == 5 and dropped["spoofed"] == 1 and dropped["guard"] == 5
    assert would == {"policy": 7}


def test_totals_keep_growing_across_a_rewritten_chain():
    acc = counters.Accumulator()
    assert [acc.add(("web", "p"), v) for v in (5, 9, 2, 4)] == [5, 9, 11, 13]
    acc.forget({"other"})
    assert acc.add(("web", "p"), 1) == 1


def test_packets_read_the_destination_and_port_of_ipv4_and_ipv6():
    ip4 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, socket.inet_aton("172.16.3.2"),
                      socket.inet_aton("192.0.2.10")) + struct.pack("!HHHH", 40000, 9000, 8, 0)
    assert packets.ipv4(ip4) == packets.Seen("172.16.3.2", "192.0.2.10", "udp", 9000)
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64, socket.inet_pton(socket.AF_INET6, "2001:db8:ffff::2"),
                      socket.inet_pton(socket.AF_INET6, "2001:db8::1")) + struct.pack("!HHHH", 1, 9000, 8, 0)
    assert packets.ipv6(ip6) == packets.Seen("2001:db8:ffff::2", "2001:db8::1", "udp", 9000)
    assert packets.ipv4(b"\x60" + bytes(30)) is None


def test_device_and_ipv6_counters_are_read_by_name():
    dev = ("Inter-|   Receive                                                |  Transmit\n"
           " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
           "carrier compressed\n"
           " fhvm3:    1000      10    0    0    0     0          0         0     2000      20    0    0    0     0"
           "       0          0\n")
    assert link_counters.parse_dev(dev)["fhvm3"] == link_counters.DeviceCounters(1000, 10, 2000, 20)
    assert link_counters.parse_snmp6("Ip6InReceives 4\nIp6InDiscards 7\n") == 7


def test_nflog_messages_give_their_group_device_and_payload():
    payload = b"\x45" + bytes(19)
    attrs = nflog._attr(nflog.NFULA_IFINDEX_INDEV, struct.pack("!I", 5)) + nflog._attr(nflog.NFULA_PAYLOAD, payload)
    body = struct.pack("!BBH", socket.AF_INET, 0, 3017) + attrs
    msg = struct.pack("=IHHII", 16 + len(body), nflog._TYPE, 0, 0, 0) + body
    assert nflog.parse(msg) == [nflog.LogCopy(3017, 5, payload)]


class Store(object):
    def scan(self):
        return []


def test_the_exposition_has_bounded_labels_and_the_sources_counts():
    hist = metrics.Histogram()
    for v in (0.002, 0.02, 3.0):
        hist.observe(v)
    collector = metrics.VmsanCollector(
        Store(), dns=lambda: {"rcodes": {"web": {"NXDOMAIN": 2}}, "dropped": {"web": 0}, "latency": hist,
                              "learned": {"web": 4}},
        guard=lambda: {("web", "refused", "name_not_allowed"): 3})
    text = metrics.exposition(metrics.registry_with(collector)).decode()
    assert 'vmsan_dns_queries_total{rcode="NXDOMAIN",vm="web"} 2.0' in text
    assert 'vmsan_guard_decisions_total{decision="refused",reason="name_not_allowed",vm="web"} 3.0' in text
    assert 'vmsan_dns_upstream_latency_seconds_bucket{le="0.005"} 1.0' in text
    assert "vmsan_dns_upstream_latency_seconds_count 3.0" in text
    assert 'vmsan_learned_addresses{vm="web"} 4.0' in text and "vmsan_vms 0.0" in text
    for family, (_kind, _help, labels) in metrics.FAMILIES.items():
        assert set(labels) <= {"vm", "rcode", "reason", "direction", "kind", "verdict", "decision"}, family


def test_the_grafana_dashboard_queries_only_metrics_the_daemon_exports():
    import json
    import os
    import re
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "grafana-dashboard.json")
    with open(path) as handle:
        dashboard = json.load(handle)
    exported = set(metrics.FAMILIES) | {"vmsan_dns_upstream_latency_seconds_bucket"}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\bvmsan_[a-z_]+", target["expr"]))
    assert used and used <= exported, used - exported
