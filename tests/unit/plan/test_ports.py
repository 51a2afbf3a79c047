"""Published ports: conflict decisions, add/remove semantics, the DNAT plan
and which tracked connections a removed port cuts. The kernel side is proved
in tests/integration/test_ports.py."""

import socket
from types import SimpleNamespace

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as fp
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord
from ansible_collections.vmsan.network.plugins.module_utils.kernel import host_sockets
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import ports as lifecycle_ports
from ansible_collections.vmsan.network.plugins.module_utils.plan import ports
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import ConflictError, InputError

VM = VmRecord("web1", 3, "vmsan-web1")


def specs(text):
    return list(inputs.port_list("published_ports", text))


# -- who holds a host port ---------------------------------------------------
@pytest.mark.parametrize("addr,host_ip,covers", [
    ("0.0.0.0", "0.0.0.0", True),
    ("0.0.0.0", "127.0.0.1", True),
    ("::", "0.0.0.0", True),                    # dual-stack
    ("127.0.0.1", "0.0.0.0", True),             # DNAT on every address shadows it
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "198.51.100.2", False),
    ("::ffff:198.51.100.2", "198.51.100.2", True),
    ("::1", "0.0.0.0", False),                  # IPv6 only: IPv4 DNAT never takes it
    ("2001:db8::5", "0.0.0.0", False),
])
def test_socket_covers(addr, host_ip, covers):
    assert ports.socket_covers(addr, host_ip) is covers


def test_host_holder_names_address_and_port():
    sockets = [("127.0.0.1", 8080, "1"), ("0.0.0.0", 9000, "2")]
    spec = specs("8080")[0]
    assert ports.host_holder(spec, sockets, None) == "a process on the host listening on 127.0.0.1:8080/tcp"
    assert ports.host_holder(spec, sockets, lambda inode: "web (pid %s)" % inode) == \
        "web (pid 1) listening on 127.0.0.1:8080/tcp"
    assert ports.host_holder(specs("198.51.100.2:8080")[0], sockets, None) is None
    assert ports.host_holder(specs("9001")[0], sockets, None) is None


def test_host_sockets_reads_listeners_of_this_namespace(tmp_path):
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (tmp_path / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n"
        + "   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n")
    (tmp_path / "tcp6").write_text(
        header
        + "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A "
          "00000000:00000000 00:00000000 00000000     0        0 77 1\n")
    found = host_sockets.host_sockets("tcp", proc_net=str(tmp_path))
    # the established connection on 8081 is not a listener
    assert found == [("127.0.0.1", 8080, "4242"), ("::", 80, "77")]


class FakeStore(object):
    def __init__(self, records):
        self.records = [VmRecord(r["id"], 1, None, ports=specs(",".join(r["published_ports"]))) for r in records]

    def scan(self):
        return list(self.records)


def test_another_vms_port_is_refused_naming_port_and_holder(monkeypatch):
    monkeypatch.setattr(lifecycle_ports, "host_sockets", lambda protocol: [])
    store = FakeStore([{"id": "other", "published_ports": ["8080:80/tcp"]}])
    with pytest.raises(ConflictError) as info:
        lifecycle_ports.check_conflicts(store, "web1", specs("127.0.0.1:8080"))
    assert "8080/tcp" in str(info.value) and "'other'" in str(info.value) and "8080:80/tcp" in str(info.value)
    # another protocol or another host port is fine
    lifecycle_ports.check_conflicts(store, "web1", specs("8080/udp,8081"))


def test_a_host_listener_is_refused_but_not_our_own_port(monkeypatch):
    monkeypatch.setattr(lifecycle_ports, "host_sockets", lambda protocol: [("0.0.0.0", 5353, "9")] if protocol == "udp" else [])
    monkeypatch.setattr(lifecycle_ports, "process_of", lambda inode: "dnsd (pid 42)")
    store = FakeStore([{"id": "web1", "published_ports": ["5353:53/udp"]}])
    lifecycle_ports.check_conflicts(store, "web1", specs("5353:53/udp"))      # ours already: re-converging is fine
    with pytest.raises(ConflictError) as info:
        lifecycle_ports.check_conflicts(FakeStore([]), "web1", specs("5353:53/udp"))
    assert "5353/udp" in str(info.value) and "dnsd (pid 42)" in str(info.value)


# -- add / remove --------------------------------------------------------------
def test_add_keeps_identical_and_refuses_a_remapping():
    current = specs("8080:80")
    assert ports.with_added("web1", current, specs("8080:80,9000")) == specs("8080:80,9000")
    with pytest.raises(ConflictError) as info:
        ports.with_added("web1", current, specs("8080"))
    assert "8080:80/tcp" in str(info.value) and "remove" in str(info.value)


def test_remove_by_host_side():
    current = specs("8080:80,127.0.0.1:9000/udp,7000")
    def without(text):
        return ports.without("web1", current, inputs.port_selectors("published_ports", text))
    assert without("8080") == specs("127.0.0.1:9000/udp,7000")
    assert without("8080:80/tcp") == specs("127.0.0.1:9000/udp,7000")
    assert without("127.0.0.1:9000/udp,7000") == specs("8080:80")


@pytest.mark.parametrize("text", ["8080:81", "8080/udp", "9000/udp", "127.0.0.1:7000", "1234"])
def test_remove_of_something_not_published_names_what_is(text):
    with pytest.raises(InputError) as info:
        ports.without("web1", specs("8080:80,127.0.0.1:9000/udp,7000"), inputs.port_selectors("published_ports", text))
    assert info.value.param == "published_ports" and "8080:80/tcp" in info.value.accepted


# -- host side ---------------------------------------------------------------------
def test_loopback_reachability_decides_route_localnet():
    assert ports.reachable_on_loopback(specs("8080"))
    assert ports.reachable_on_loopback(specs("127.0.0.5:8080"))
    assert not ports.reachable_on_loopback(specs("198.51.100.2:8080"))
    assert not ports.reachable_on_loopback([])


def test_host_side_interface():
    assert ports.host_side_interface(VM) == "vmsan-h3"
    assert ports.host_side_interface(VM.but(netns=None)) == "fhvm3"


def entry(proto, dport, reply_src, reply_sport, daddr="198.51.100.2"):
    return SimpleNamespace(tuple_orig=SimpleNamespace(proto=proto, dport=dport, daddr=daddr),
                           tuple_reply=SimpleNamespace(saddr=reply_src, sport=reply_sport))


def test_tracked_through_matches_only_that_mapping():
    tcp, udp = socket.IPPROTO_TCP, socket.IPPROTO_UDP
    entries = [entry(tcp, 8080, "172.16.3.2", 80), entry(udp, 8080, "172.16.3.2", 80),
               entry(tcp, 8081, "172.16.3.2", 80), entry(tcp, 8080, "172.16.4.2", 80),
               entry(tcp, 8080, "172.16.3.2", 80, daddr="127.0.0.1")]
    assert ports.tracked_through("172.16.3.2", specs("8080:80")[0], entries) == [entries[0], entries[4]]
    assert ports.tracked_through("172.16.3.2", specs("127.0.0.1:8080:80")[0], entries) == [entries[4]]


# -- the DNAT plan -------------------------------------------------------------------
def test_published_plan_jumps_only_for_local_destinations_and_never_for_guests():
    plan = fp.published_plan(VM, specs("8080,127.0.0.1:9000:90/udp"))
    pre = plan.members[("nat", "VMSAN-PREROUTING")]
    out = plan.members[("nat", "VMSAN-OUTPUT")]
    assert len(pre) == 1 and pre[0][:3] == ("!", "-s", "172.16.0.0/16")
    for rule in pre + out:
        at = rule.index("addrtype")
        assert rule[at - 1:at + 3] == ("-m", "addrtype", "--dst-type", "LOCAL")
        assert rule[-2:] == ("-j", "vmsan-web1-pub") and "vmsan:web1" in rule
    rules = plan.owned[("nat", "vmsan-web1-pub")]
    assert rules[0] == ("-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", "DNAT",
                        "--to-destination", "172.16.3.2:8080")
    assert rules[1] == ("-d", "127.0.0.1/32", "-p", "udp", "-m", "udp", "--dport", "9000", "-j", "DNAT",
                        "--to-destination", "172.16.3.2:90")


def test_published_plan_without_ports_empties_the_vms_jumps():
    plan = fp.published_plan(VM, [])
    assert plan.owned == {}
    assert plan.members == {("nat", "VMSAN-PREROUTING"): [], ("nat", "VMSAN-OUTPUT"): []}


def test_no_netns_in_chain_accepts_only_replies_of_the_hosts_connections():
    ins = fp.vm_plan(VM, inputs.policy("deny-all"), specs("8080"), in_host_namespace=True).owned[
        ("filter", "vmsan-web1-in")]
    assert ins[-1] == ("-j", "VMSAN-DROP-ISOLATION")
    assert ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "--ctdir", "REPLY", "-j", "ACCEPT") in ins
    own_ns = fp.vm_plan(VM, inputs.policy("deny-all"), specs("8080")).owned[("filter", "vmsan-web1-in")]
    assert not any("REPLY" in r for r in own_ns)


def test_published_rules_encode():
    pytest.importorskip("iptc")     # the adapter imports without it (and then cannot encode)
    from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables as iptables_apply
    plan = fp.published_plan(VM, specs("8080,127.0.0.1:9000:90/udp"))
    for group in (plan.owned, plan.members):
        for rules in group.values():
            for rule in rules:
                iptables_apply.encode(rule)
