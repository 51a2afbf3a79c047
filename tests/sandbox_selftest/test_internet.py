"""The internet namespace's servers and DNS, probed from the sandbox host."""

import time

from sandbox import topology as t


def test_host_reaches_the_internet_only_through_its_uplink(sandbox):
    routes = sandbox.host.ip_json("route", "show")
    assert {r["dst"] for r in routes} == {"default", "198.51.100.0/24"}
    links = {link["ifname"] for link in sandbox.host.ip_json("link", "show")}
    assert links == {"lo", "uplink0"}


def test_tcp_and_udp_greetings_name_both_ends(sandbox):
    for ip in t.INTERNET_IPS:
        assert sandbox.host.tcp(ip, 9000) == f"hello {ip} 198.51.100.2\n"
        assert sandbox.host.udp(ip, 9000) == f"hello {ip} 198.51.100.2\n"
    assert sandbox.host.udp(t.INET_IP6, 9000) == f"hello {t.INET_IP6} {t.HOST_UPLINK_IP6}\n"


def test_servers_log_who_reached_them(sandbox):
    sandbox.host.udp(t.WEB_A, 9000, payload=b"marker-1")
    sandbox.host.tcp(t.WEB_B, 9000)
    (datagram,) = sandbox.internet.udp_received()
    assert (datagram.src_ip, datagram.payload, datagram.dst_ip) == (
        "198.51.100.2",
        b"marker-1",
        t.WEB_A,
    )
    assert datagram.time <= time.time()
    (conn,) = sandbox.internet.tcp_connections()
    assert (conn.src_ip, conn.dst_ip, conn.dst_port) == ("198.51.100.2", t.WEB_B, 9000)
    sandbox.internet.clear_records()
    assert sandbox.internet.udp_received() == []


def test_http_dot_doh_and_icmp(sandbox):
    host = sandbox.host
    assert host.http(t.WEB_APEX) == f"vmsan-ok {t.WEB_APEX}\n"
    assert host.http("a.example.test") == f"vmsan-ok {t.WEB_A}\n"  # resolved via 203.0.113.53
    assert host.tcp(t.WEB_A, 853).startswith("dot ")
    assert host.tcp(t.WEB_A, 443).startswith("doh ")
    assert host.ping(t.WEB_B)
    assert not host.ping("203.0.113.99", timeout=0.3)


def test_probes_report_failure_within_their_timeout(sandbox):
    host = sandbox.host
    started = time.monotonic()
    assert host.tcp(t.WEB_A, 9999) is None  # refused
    assert host.udp(t.WEB_A, 9999) is None  # port unreachable
    assert host.tcp("203.0.113.99", 9000, timeout=0.5) is None  # no route in the internet
    assert time.monotonic() - started < 3


def test_a_connection_that_carries_nothing_is_not_success(sandbox):
    import socket

    with sandbox.internet.entered():
        silent = socket.socket()  # listens, never accepts, never sends
    silent.bind((t.WEB_A, 7777))
    silent.listen()
    try:
        assert sandbox.host.tcp(t.WEB_A, 7777, timeout=0.5) is None
    finally:
        silent.close()


def test_stream_flows_until_closed(sandbox):
    stream = sandbox.host.stream(t.WEB_A, 9001)
    assert stream.connected
    assert stream.is_flowing()
    stream.close()
    assert not sandbox.host.stream("203.0.113.99", 9001, timeout=0.3).connected
