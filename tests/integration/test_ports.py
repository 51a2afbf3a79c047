"""Published ports (docs/contract.md, "Published ports"), proved with a client in the sandbox's
internet, clients on the sandbox host itself, and servers in the guest.

The host's uplink address is 198.51.100.2; the internet client is
198.51.100.1 and has no route to any VM address, so every answer it gets came
through the host's DNAT."""

import json
import time

import pytest

from integration import snapshot
from integration.changes import C, of_kind
from sandbox import services
from sandbox.servers import TcpServer

pytestmark = pytest.mark.integration

UPLINK = "198.51.100.2"
CLIENT = "198.51.100.1"

POLICIES = {
    "allow-all": (),
    "custom": ("--network-policy", "custom", "--allowed-cidr", "203.0.113.0/24"),
    "deny-all": ("--network-policy", "deny-all"),
}


def create(sandbox, name, *flags):
    return sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out


def serve_http(endpoint, port):
    """HTTP/1.0 server in ENDPOINT's namespace answering ``vmsan-ok <ip>``."""
    server = TcpServer(endpoint.name, [("0.0.0.0", port)], services.http(services.Recorder()), name="http-%d" % port)
    endpoint.track(server.close)
    return server.start()


def serve_stream(endpoint, port):
    server = TcpServer(endpoint.name, [("0.0.0.0", port)], services.stream(services.Recorder()),
                       name="stream-%d" % port, conn_timeout=30)
    endpoint.track(server.close)
    return server.start()


def curl(sandbox, url):
    done = sandbox.host.run(["curl", "-s", "-m", "3", url], timeout=10)
    return done.stdout if done.returncode == 0 else None


def host_rules(sandbox):
    return snapshot.iptables(sandbox.host.path)


def sysctl(sandbox, key):
    return sandbox.host.sysctl(key)


# --------------------------------------------------------------------------
# reachability
# --------------------------------------------------------------------------
@pytest.mark.parametrize("netns", ["netns", "no-netns"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_internet_reaches_guest_on_published_tcp_and_udp_ports_under_every_policy(sandbox, policy, netns):
    flags = POLICIES[policy] + (("--no-netns",) if netns == "no-netns" else ())
    vm = create(sandbox, "pub", "--publish-port", "8080,9053/udp,8443:443", *flags)
    guest = sandbox.add_guest(vm)
    guest.serve_tcp(vm["guest_ip"], 8080, label="web")
    guest.serve_tcp(vm["guest_ip"], 443, label="tls")
    guest.serve_udp(vm["guest_ip"], 9053, label="dns")
    guest.serve_tcp(vm["guest_ip"], 8081, label="secret")       # listening, not published

    tcp = sandbox.internet.tcp(UPLINK, 8080)
    udp = sandbox.internet.udp(UPLINK, 9053)
    remapped = sandbox.internet.tcp(UPLINK, 8443)
    print("policy %s (%s): tcp %r udp %r 8443->443 %r" % (policy, netns, tcp, udp, remapped))
    # the guest sees the real client: the host only rewrote the destination
    assert tcp and tcp.split() == ["web", vm["guest_ip"], CLIENT]
    assert udp and udp.split() == ["dns", vm["guest_ip"], CLIENT]
    assert remapped and remapped.split() == ["tls", vm["guest_ip"], CLIENT]
    # a port the guest listens on but did not publish stays closed
    assert sandbox.internet.tcp(UPLINK, 8081) is None
    # and the policy still governs what the guest itself opens
    outbound = guest.tcp("203.0.113.10", 9000)
    assert (outbound is not None) is (policy != "deny-all")


def test_a_flushed_dnat_rule_is_what_breaks_the_port_and_a_rerun_repairs_it(sandbox):
    vm = create(sandbox, "drift", "--publish-port", "8080")
    guest = sandbox.add_guest(vm)
    guest.serve_tcp(vm["guest_ip"], 8080, label="web")
    assert sandbox.internet.tcp(UPLINK, 8080)
    chain = "vmsan-%s-pub" % vm["id"]
    sandbox.host.run(["iptables-legacy", "-w", "-t", "nat", "-F", chain], check=True)
    assert sandbox.internet.tcp(UPLINK, 8080) is None           # without the DNAT: nothing
    again = sandbox.vmsan("port", "add", vm["id"], "8080").out
    assert of_kind(again, C.SET_CHAIN, chain), again
    assert sandbox.internet.tcp(UPLINK, 8080)
    assert sandbox.vmsan("port", "add", vm["id"], "8080").out["changes"] == []      # idempotent


@pytest.mark.parametrize("netns", ["netns", "no-netns"])
def test_the_host_itself_reaches_the_guest_through_loopback_and_its_own_address(sandbox, netns):
    flags = ("--no-netns",) if netns == "no-netns" else ()
    vm = create(sandbox, "loop", "--publish-port", "8080,127.0.0.1:7000:80,9053/udp",
                "--network-policy", "deny-all", *flags)
    guest = sandbox.add_guest(vm)
    serve_http(guest, 8080)
    serve_http(guest, 80)
    guest.serve_udp(vm["guest_ip"], 9053, label="dns")
    body = curl(sandbox, "http://127.0.0.1:8080/")
    print("curl 127.0.0.1:8080 ->", repr(body))
    assert body == "vmsan-ok %s\n" % vm["guest_ip"]
    assert curl(sandbox, "http://%s:8080/" % UPLINK) == "vmsan-ok %s\n" % vm["guest_ip"]
    assert curl(sandbox, "http://127.0.0.1:7000/") == "vmsan-ok %s\n" % vm["guest_ip"]
    assert sandbox.host.udp("127.0.0.1", 9053)
    # published on 127.0.0.1 only: not from the internet
    assert sandbox.internet.tcp(UPLINK, 7000) is None

    # route_localnet on the host's interface towards the VM is what makes
    # 127.0.0.1 work: without it the kernel will not route a loopback source
    iface = "vmsan-h%d" % vm["slot"] if netns == "netns" else vm["tap"]
    key = "net.ipv4.conf.%s.route_localnet" % iface
    assert sysctl(sandbox, key) == "1"
    sandbox.host.sysctl(key, 0)
    assert curl(sandbox, "http://127.0.0.1:8080/") is None
    repaired = sandbox.vmsan("port", "add", vm["id"], "8080").out
    assert [c["subject"] for c in of_kind(repaired, C.SYSCTL)] == [key], repaired["changes"]
    assert curl(sandbox, "http://127.0.0.1:8080/") == "vmsan-ok %s\n" % vm["guest_ip"]

    # no port left that loopback could reach: back to the kernel default
    sandbox.vmsan("port", "remove", vm["id"], "8080,127.0.0.1:7000,9053/udp")
    assert sysctl(sandbox, key) == "0"


# --------------------------------------------------------------------------
# conflicts
# --------------------------------------------------------------------------
def test_a_port_another_vm_publishes_is_refused_and_nothing_changes(sandbox):
    first = create(sandbox, "first", "--publish-port", "8080:80")
    second = create(sandbox, "second")
    second_ns = "/run/netns/" + second["netns"]
    before = snapshot.host(sandbox), snapshot.state_files(sandbox), snapshot.iptables(second_ns)

    refused = sandbox.vmsan("create", "--id", sandbox.unique_id("third"), "--publish-port", "9000,8080",
                            check=False)
    print("create:", refused.err.strip())
    assert refused.rc == 2
    assert "8080/tcp" in refused.err and first["id"] in refused.err

    refused = sandbox.vmsan("port", "add", second["id"], "127.0.0.1:8080:81", check=False)
    print("port add:", refused.err.strip())
    assert refused.rc == 2 and "8080/tcp" in refused.err and first["id"] in refused.err

    after = snapshot.host(sandbox), snapshot.state_files(sandbox), snapshot.iptables(second_ns)
    assert snapshot.diff(before[0], after[0]) == {} and before[1:] == after[1:]
    # another protocol on the same number is a different port
    sandbox.vmsan("port", "add", second["id"], "8080/udp")


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_port_a_host_process_listens_on_is_refused_naming_it(sandbox, proto):
    import os
    vm = create(sandbox, "lst")
    listener = (sandbox.host.serve_tcp if proto == "tcp" else sandbox.host.serve_udp)("127.0.0.1", 9999)
    before = snapshot.host(sandbox), snapshot.state_files(sandbox)
    for argv in (("create", "--id", sandbox.unique_id("new"), "--publish-port", "9999/%s" % proto),
                 ("port", "add", vm["id"], "9999/%s" % proto)):
        refused = sandbox.vmsan(*argv, check=False)
        print(" ".join(argv[:2]), "->", refused.err.strip())
        assert refused.rc == 2
        assert "9999/%s" % proto in refused.err and "127.0.0.1:9999" in refused.err
        assert "pid %d" % os.getpid() in refused.err        # the holder: this test process
    after = snapshot.host(sandbox), snapshot.state_files(sandbox)
    assert snapshot.diff(before[0], after[0]) == {} and before[1] == after[1]
    # on another host address the listener is not in the way
    sandbox.vmsan("port", "add", vm["id"], "%s:9999/%s" % (UPLINK, proto))
    assert listener.received() == []


@pytest.mark.parametrize("ports,needle", [
    ("0", "out of range"), ("65536", "out of range"), ("8080,8080", "given twice"),
    ("8080/sctp", "unknown protocol"), ("1.2.3:80", "invalid host address"),
])
def test_bad_ports_are_refused_naming_the_flag_and_the_form(sandbox, ports, needle):
    before = snapshot.host(sandbox), snapshot.state_files(sandbox)
    refused = sandbox.vmsan("create", "--id", sandbox.unique_id("bad"), "--publish-port", ports, check=False)
    assert refused.rc == 2
    assert "--publish-port" in refused.err and needle in refused.err and "host_port" in refused.err
    after = snapshot.host(sandbox), snapshot.state_files(sandbox)
    assert snapshot.diff(before[0], after[0]) == {} and before[1] == after[1]


# --------------------------------------------------------------------------
# vmsan port add / remove / list on a running VM
# --------------------------------------------------------------------------
def test_port_add_and_remove_leave_the_other_ports_working(sandbox):
    vm = create(sandbox, "live", "--publish-port", "9101,9102", "--network-policy", "deny-all")
    guest = sandbox.add_guest(vm)
    serve_stream(guest, 9101)
    serve_stream(guest, 9102)
    guest.serve_tcp(vm["guest_ip"], 8081, label="added")
    kept = sandbox.internet.stream(UPLINK, 9101)
    dropped = sandbox.internet.stream(UPLINK, 9102)
    time.sleep(0.3)
    assert kept.is_flowing() and dropped.is_flowing()

    added = sandbox.vmsan("port", "add", vm["id"], "8081").out
    print("add:", added["changes"])
    assert sandbox.internet.tcp(UPLINK, 8081).startswith("added")
    assert kept.is_flowing() and dropped.is_flowing()
    assert sandbox.vmsan("port", "list", vm["id"]).out == ["9101:9101/tcp", "9102:9102/tcp", "8081:8081/tcp"]

    removed = sandbox.vmsan("port", "remove", vm["id"], "9102").out
    print("remove:", removed["changes"])
    assert [c["detail"] for c in of_kind(removed, C.CUT_PORT_CONNECTIONS)] == [[1]], removed["changes"]
    assert dropped.wait_stopped(timeout=3)          # its connection went with the port
    assert kept.is_flowing()                        # the other port's did not
    assert sandbox.internet.tcp(UPLINK, 8081).startswith("added")
    assert sandbox.internet.stream(UPLINK, 9102).connected is False
    kept.close()
    dropped.close()


def test_concurrent_port_adds_on_one_vm_lose_nothing(sandbox):
    import concurrent.futures
    vm = create(sandbox, "conc", "--publish-port", "8000")
    wanted = ["%d" % p for p in range(8001, 8011)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda p: sandbox.vmsan("port", "add", vm["id"], p, check=False), wanted))
    assert all(r.rc == 0 for r in results), [r.err for r in results if r.rc]
    published = sandbox.vmsan("port", "list", vm["id"]).out
    assert sorted(published) == sorted("%s:%s/tcp" % (p, p) for p in ["8000"] + wanted)
    assert host_rules(sandbox).count("-j DNAT") == 11


def test_removing_every_port_leaves_no_dnat_rule_chain_or_sysctl(sandbox):
    vm = create(sandbox, "gone", "--publish-port", "8080,127.0.0.1:5353:53/udp")
    rules = host_rules(sandbox)
    assert "-j DNAT" in rules and "vmsan-%s-pub" % vm["id"] in rules
    removed = sandbox.vmsan("port", "remove", vm["id"], "8080,127.0.0.1:5353/udp").out
    print(removed["changes"])
    rules = host_rules(sandbox)
    assert "-j DNAT" not in rules and "-pub" not in rules
    assert sysctl(sandbox, "net.ipv4.conf.vmsan-h%d.route_localnet" % vm["slot"]) == "0"
    assert sandbox.vmsan("port", "list", vm["id"]).out == []
    # a second run finds nothing to do
    assert sandbox.vmsan("network", vm["id"], "--network-policy", "allow-all").out["changes"] == []


def test_port_remove_of_a_port_not_published_names_the_ones_that_are(sandbox):
    vm = create(sandbox, "rm", "--publish-port", "8080:80")
    before = snapshot.host(sandbox), snapshot.state_files(sandbox)
    refused = sandbox.vmsan("port", "remove", vm["id"], "8081", check=False)
    assert refused.rc == 2 and "8080:80/tcp" in refused.err
    refused = sandbox.vmsan("port", "add", vm["id"], "8080:8080", check=False)
    assert refused.rc == 2 and "8080:80/tcp" in refused.err and "remove" in refused.err
    after = snapshot.host(sandbox), snapshot.state_files(sandbox)
    assert snapshot.diff(before[0], after[0]) == {} and before[1] == after[1]
    # removing by host port alone works whatever the guest port
    sandbox.vmsan("port", "remove", vm["id"], "8080")
    assert json.loads(snapshot.state_files(sandbox)["%s.json" % vm["id"]])["published_ports"] == []


def test_guests_do_not_reach_published_ports_and_dns_survives_a_port_53(sandbox):
    """Published ports are for the outside: a guest reaches neither its own
    nor another VM's through the host's address, and a port published on
    0.0.0.0:53 does not capture the guests' DNS on its way to the resolver."""
    web = create(sandbox, "web", "--publish-port", "8080,53/udp")
    other = create(sandbox, "oth")
    web_guest, other_guest = sandbox.add_guest(web), sandbox.add_guest(other)
    web_guest.serve_tcp(web["guest_ip"], 8080, label="web")
    web_guest_dns = web_guest.serve_udp(web["guest_ip"], 53, label="guestdns")
    assert sandbox.internet.tcp(UPLINK, 8080)
    for guest in (web_guest, other_guest):
        assert guest.tcp(UPLINK, 8080) is None
    # a stand-in for the host resolver, started after the port was published
    # (the conflict check would rightly refuse 53/udp while it listens)
    resolver = sandbox.host.serve_udp("169.254.64.1", 53, label="resolver")
    reply = other_guest.udp(other["host_ip"], 53, payload=b"query")
    print("guest DNS ->", repr(reply))
    assert reply and reply.split()[0] == "resolver"
    assert resolver.received() and web_guest_dns.received() == []
