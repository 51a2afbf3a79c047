"""A guest attached through the relay to a TAP made by the test (no product)."""

import time

import pytest
from sandbox.fakes import make_fake_vm

from sandbox import packets
from sandbox import topology as t


@pytest.mark.parametrize("in_netns", [False, True], ids=["tap-in-host", "tap-in-vm-netns"])
def test_guest_reaches_its_gateway(sandbox, in_netns):
    vm, gateway_ns = make_fake_vm(sandbox, slot=3, in_netns=in_netns)
    gateway_ns.serve_tcp("172.16.3.1", 7000, label="gw")
    guest = sandbox.add_guest(vm)

    assert guest.name == f"{sandbox.prefix}-g3"
    assert guest.tcp("172.16.3.1", 7000) == "gw 172.16.3.1 172.16.3.2\n"
    assert guest.ping("172.16.3.1")
    link = guest.ip_json("link", "show", "eth0")[0]
    assert link["address"] == vm["mac"] and "UP" in link["flags"]
    assert guest.gateway_mac() == gateway_ns.ip_json("link", "show", "fhvm3")[0]["address"]


def test_guest_reaches_the_internet_through_masquerade(sandbox, routed_guest):
    guest = routed_guest
    assert guest.tcp(t.WEB_A, 9000) == f"hello {t.WEB_A} 198.51.100.2\n"
    assert guest.udp(t.WEB_B, 9000) == f"hello {t.WEB_B} 198.51.100.2\n"
    assert guest.http(t.WEB_APEX) == f"vmsan-ok {t.WEB_APEX}\n"
    assert guest.dig("a.example.test", t.AUTH_DNS)[:2] == ("NOERROR", ["203.0.113.10"])
    assert guest.ping(t.WEB_A)
    assert sandbox.internet.udp_received()[-1].src_ip == "198.51.100.2"


def test_guest_names_resolve_through_its_gateway(sandbox, guest):
    # nothing answers DNS on 172.16.0.1 here (that is the product's resolver)
    assert guest.dns_server == "172.16.0.1"
    assert guest.http("a.example.test", timeout=0.3) is None


def test_guest_cannot_reach_the_internet_without_a_route_out(sandbox, guest):
    assert guest.tcp(t.WEB_A, 9000, timeout=0.5) is None
    assert sandbox.internet.tcp_connections() == []


def test_stream_is_seen_to_stop_when_the_path_is_cut(sandbox, routed_guest):
    stream = routed_guest.stream(t.WEB_A, 9001)
    assert stream.is_flowing()
    sandbox.host.run(["iptables", "-w", "-I", "FORWARD", "-j", "DROP"], check=True)
    assert stream.wait_stopped(timeout=1.0)
    assert not stream.is_flowing()


def test_sniffer_sees_what_leaves_and_what_does_not(sandbox, routed_guest):
    to_web = packets.ipv4_to(t.WEB_A, 9000, packets.IPPROTO_UDP)
    with sandbox.host.sniff("uplink0", to_web) as uplink:
        routed_guest.udp(t.WEB_A, 9000)
        assert uplink.wait_for(1)
    assert uplink.frames[0].src_ip == "198.51.100.2"  # masqueraded

    # The host's own IPv6 housekeeping (DAD, MLD) crosses the uplink too:
    # count only the guest's packet.
    guest_v6 = packets.all_of(packets.ipv6, packets.payload_contains(b"v6-marker"))
    with sandbox.host.sniff("uplink0", guest_v6) as uplink_v6:
        with sandbox.host.sniff("fhvm0", guest_v6) as tap_v6:
            routed_guest.send_ipv6(payload=b"v6-marker")
            assert tap_v6.wait_for(1)
        time.sleep(0.2)
    assert uplink_v6.count == 0  # the sandbox host does not forward IPv6
    assert tap_v6.frames[0].dst_ip == t.INET_IP6


def test_forged_source_address_and_mac_reach_the_tap(sandbox, guest):
    spoofed = packets.ipv4_from("172.16.0.99")
    forged_mac = lambda f: f.src_mac == "02:00:00:00:be:ef"  # noqa: E731
    with sandbox.host.sniff("fhvm0", spoofed) as by_ip, sandbox.host.sniff(
        "fhvm0", forged_mac
    ) as by_mac:
        guest.send_spoofed_udp("172.16.0.99", t.WEB_A, 9000, b"spoofed")
        guest.send_frame_with_mac("02:00:00:00:be:ef", t.WEB_A, 9000, b"forged")
        assert by_ip.wait_for(1) and by_mac.wait_for(1)
    assert by_ip.frames[0].dst_port == 9000
    assert by_mac.frames[0].src_ip == "172.16.0.2"


def test_guest_removal_stops_the_relay_and_the_namespace(sandbox, guest):
    relay = guest.relay
    sandbox.remove_guest(guest)
    assert relay.poll() is not None
    assert not guest.exists()
    # the TAP is free again: another guest can attach
    again = sandbox.add_guest(guest.vm)
    assert again.ping("172.16.0.1")


def test_missing_tap_is_an_error_not_a_new_tap(sandbox):
    from sandbox import RelayError

    vm = {
        "id": "x",
        "slot": 9,
        "tap": "fhvm9",
        "netns": None,
        "host_ip": "172.16.9.1",
        "guest_ip": "172.16.9.2",
        "mac": "02:fc:00:00:00:09",
    }
    with pytest.raises(RelayError, match="no TAP"):
        sandbox.add_guest(vm)
    assert not any(link["ifname"] == "fhvm9" for link in sandbox.host.ip_json("link", "show"))
    assert f"{sandbox.prefix}-g9" not in sandbox.namespaces()
