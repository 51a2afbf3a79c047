"""The name guard's rule layout, proved from a guest (phase 1, issue 13):
real clients (curl, openssl s_client, Python's ssl) in the guest, a TLS
server in the sandbox's internet that serves a.test, b.test and c.test on
203.0.113.10 and d.test on 203.0.113.11 (tests/sandbox/tls.py), the VM made
by ``vmsan create``, the guard's rules on top and its loop in this process
(tests/integration/guarded_vm.py).

Every check goes red without the guard: ``VMSAN_GUARD_TEST_MODE=rules-off``
(today's rules: the learned set open for everything) and
``VMSAN_GUARD_TEST_MODE=reader-off`` (the rules, nobody reading the queue).
"""

import socket
import ssl
import time

import pytest

from sandbox import guard as sandbox_guard
from sandbox.servers import TcpServer
from sandbox.tls import OTHER, PORT, SHARED, TlsSite

from .guarded_vm import GuardedVm, Resolver

pytestmark = pytest.mark.integration

DOMAINS = ("a.test", "b.test", "d.test", "git.test:22", "ntp.test:9000/udp")
CIDR_ONLY = "203.0.113.200"         # opened by --allowed-cidr, never held
PROMPT = 1.0                        # a refusal is a reset well within this, not a timeout


@pytest.fixture
def site(sandbox):
    site = TlsSite.start(sandbox.internet)
    sandbox.internet.dns.set("git.test", "A", [OTHER])
    sandbox.internet.dns.set("ntp.test", "A", [OTHER])
    sandbox.internet.dns.set("cidr.test", "A", [CIDR_ONLY])
    Resolver(sandbox).start()
    return site


@pytest.fixture
def gvm(sandbox, site):
    return GuardedVm(sandbox, "guard", DOMAINS, cidrs=(CIDR_ONLY + "/32",))


@pytest.fixture
def ssh_server(sandbox):
    """TCP 22 on every internet address: answers the client's first line
    with ``ssh-ok <line>`` (the client speaks first, as SSH clients do)."""
    def handler(conn, peer, stopping):
        data = conn.recv(200)
        conn.sendall(b"ssh-ok " + data)
    server = TcpServer(sandbox.internet.name, [("0.0.0.0", 22)], handler, name="inet-ssh")
    server.start()
    sandbox.internet.track(server.close)
    return server


def curl(gvm, name, ip, site, port=PORT, path="/", scheme="https"):
    """(exit code, body, seconds) of curl in the guest, NAME resolved to IP."""
    argv = ["curl", "-sS", "--max-time", "3", "--resolve", "%s:%d:%s" % (name, port, ip)]
    if scheme == "https":
        argv += ["--cacert", site.ca_file]
    began = time.monotonic()
    done = gvm.guest.run(argv + ["%s://%s:%d%s" % (scheme, name, port, path)], timeout=10)
    return done.returncode, done.stdout, time.monotonic() - began


def s_client(gvm, ip, servername=None, port=PORT):
    """(handshake completed, seconds) of openssl s_client in the guest."""
    argv = ["openssl", "s_client", "-connect", "%s:%d" % (ip, port), "-brief"]
    argv += ["-servername", servername] if servername else ["-noservername"]
    began = time.monotonic()
    done = gvm.guest.run(argv, input="Q\n", timeout=10)
    return "CONNECTION ESTABLISHED" in done.stderr, time.monotonic() - began


def raw(gvm, ip, port, payload, timeout=2.0):
    """What a TCP client in the guest sees after sending PAYLOAD:
    ("data", bytes), ("reset", seconds), ("closed", seconds) or ("timeout", seconds)."""
    with sandbox_guard.entered(gvm.guest.name):
        sock = socket.socket()
    sock.settimeout(timeout)
    began = time.monotonic()
    try:
        sock.connect((ip, port))
        sock.sendall(payload)
        data = sock.recv(4096)
        return ("data", data) if data else ("closed", time.monotonic() - began)
    except ConnectionResetError:
        return "reset", time.monotonic() - began
    except socket.timeout:
        return "timeout", time.monotonic() - began
    finally:
        sock.close()


def refused_promptly(outcome):
    return outcome[0] == "reset" and outcome[1] < PROMPT


# -- TLS: the SNI must be allowed and pinned ---------------------------------------


def test_allowed_sni_on_a_shared_address_passes_after_a_decision(gvm, site):
    x = gvm.resolve("a.test")
    assert gvm.resolve("b.test") == x == SHARED
    for name in ("a.test", "b.test"):
        rc, body, _ = curl(gvm, name, x, site)
        assert (rc, body) == (0, "tls %s %s\n" % (name, x))
    assert gvm.counters().accepted == 2         # both flows were held and decided


def test_unlisted_sni_to_the_shared_address_is_reset_and_logged(gvm, site, caplog):
    x = gvm.resolve("a.test")
    caplog.set_level("INFO", logger="vmsan.guard")
    rc, _body, seconds = curl(gvm, "c.test", x, site)
    assert rc in (35, 56) and seconds < PROMPT      # reset during the handshake, at once
    assert not [h for h in site.handshakes() if h.sni == "c.test"]
    assert gvm.counters().refused >= 1
    assert any("VM %s" % gvm.id in r.message and "c.test" in r.message for r in caplog.records)
    established, seconds = s_client(gvm, x, "c.test")
    assert not established and seconds < PROMPT
    established, _ = s_client(gvm, x, "a.test")
    assert established


def test_an_allowed_name_is_refused_at_an_address_pinned_to_another(gvm, site):
    """a.test -> X, d.test -> Y, both allowed: SNI d.test sent to X is fronting."""
    x, y = gvm.resolve("a.test"), gvm.resolve("d.test")
    assert (x, y) == (SHARED, OTHER)
    rc, _, seconds = curl(gvm, "d.test", x, site)
    assert rc in (35, 56) and seconds < PROMPT
    rc, body, _ = curl(gvm, "d.test", y, site)
    assert (rc, body) == (0, "tls d.test %s\n" % y)


def test_http_host_follows_the_same_rule(gvm, site):
    x = gvm.resolve("a.test")
    rc, body, _ = curl(gvm, "a.test", x, site, port=80, scheme="http")
    assert (rc, body) == (0, "vmsan-ok %s\n" % x)
    rc, _, seconds = curl(gvm, "c.test", x, site, port=80, scheme="http")
    assert rc in (52, 56) and seconds < PROMPT
    assert gvm.counters().accepted == 1 and gvm.counters().refused == 1


def test_a_2kb_hello_in_three_segments_completes(gvm, site):
    """A ClientHello of about 2 KB (long ALPN names stand in for a
    post-quantum key share) written in three pieces with TCP_NODELAY: the
    guard reassembles it, the handshake and the request complete."""
    x = gvm.resolve("a.test")
    ctx = ssl.create_default_context(cafile=site.ca_file)
    ctx.set_alpn_protocols(["x" * 250 + str(i) for i in range(7)] + ["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="a.test")
    with sandbox_guard.entered(gvm.guest.name):
        sock = socket.create_connection((x, PORT), timeout=3)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        assert len(hello) > 1900
        third = len(hello) // 3
        for piece in (hello[:third], hello[third:2 * third], hello[2 * third:]):
            sock.sendall(piece)
            time.sleep(0.05)
        body = _finish_tls_request(tls, sock, incoming, outgoing)
    finally:
        sock.close()
    assert body.endswith(b"tls a.test %s\n" % x.encode())
    assert gvm.counters().accepted == 1
    # the SYN-ACK's copy and three held pieces reached the guard, one verdict
    assert gvm.counters().messages >= 4 and gvm.counters().logged == 1


def _finish_tls_request(tls, sock, incoming, outgoing):
    """Drive TLS over SOCK through the memory BIOs: the handshake, one
    request, the whole answer."""
    def pump():
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        incoming.write(data)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            pump()
    tls.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    sock.sendall(outgoing.read())
    answer = b""
    while True:
        try:
            chunk = tls.read(65536)
            if not chunk:
                break
            answer += chunk
        except ssl.SSLWantReadError:
            try:
                pump()
            except ConnectionError:
                break
        except ssl.SSLZeroReturnError:
            break
    return answer


# -- no name, other protocols, ports ----------------------------------------------


def test_no_sni_plain_bytes_and_ssh_are_reset(gvm, site, ssh_server):
    x = gvm.resolve("a.test")
    established, seconds = s_client(gvm, x)             # no SNI
    assert not established and seconds < PROMPT
    assert refused_promptly(raw(gvm, x, PORT, b"hello there\r\n\r\n"))
    assert refused_promptly(raw(gvm, x, 22, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
    assert gvm.counters().refused == 3 and gvm.counters().accepted == 0


def test_a_name_port_entry_lets_ssh_reach_that_name(gvm, site, ssh_server):
    """git.test:22 is allowed: any TCP protocol to the addresses pinned to
    git.test, on port 22 only."""
    y = gvm.resolve("git.test")
    assert raw(gvm, y, 22, b"SSH-2.0-OpenSSH_9.2\r\n") == ("data", b"ssh-ok SSH-2.0-OpenSSH_9.2\r\n")
    assert refused_promptly(raw(gvm, y, PORT, b"SSH-2.0-OpenSSH_9.2\r\n"))     # another port
    x = gvm.resolve("a.test")
    assert refused_promptly(raw(gvm, x, 22, b"SSH-2.0-OpenSSH_9.2\r\n"))      # X is not git.test's
    assert gvm.counters().accepted == 1


def test_udp_to_learned_addresses_only_with_a_udp_entry(gvm, site):
    """ntp.test:9000/udp is allowed (ntp.test -> Y); UDP to X (a.test) is
    dropped, on 9000 as on 443 (QUIC falls back to TCP); so is ICMP."""
    x, y = gvm.resolve("a.test"), gvm.resolve("ntp.test")
    assert gvm.guest.udp(y, 9000) == "hello %s 198.51.100.2\n" % y
    assert gvm.guest.udp(x, 9000) is None
    assert len(site.internet.udp_received()) == 1      # only the allowed datagram got out
    assert not gvm.guest.ping(x)                        # nor ICMP: only TCP (checked) and listed UDP
    assert gvm.counters().accepted == 1


def test_a_cidr_allowed_destination_is_not_held(gvm, site):
    """203.0.113.200 is opened by --allowed-cidr: no guard on its path (the
    name is not even on the allowlist), with or without the guard reading."""
    rc, body, _ = curl(gvm, "c.test", CIDR_ONLY, site)
    assert (rc, body) == (0, "tls c.test %s\n" % CIDR_ONLY)
    assert gvm.counters().messages == 0
    gvm.stop_guard()
    rc, body, _ = curl(gvm, "c.test", CIDR_ONLY, site)
    assert rc == 0


def test_dns_denied_cidrs_and_the_rules_as_iptables_save(gvm, site):
    text = gvm.iptables_save()
    assert "-A vmsan-%s-out -m set --match-set vmsan-%s-dns dst -j vmsan-%s-guard" % ((gvm.id,) * 3) in text
    assert "NFQUEUE --queue-num 3013" in text and "--queue-bypass" not in text
    print(text)


# -- the guard stopped and started again ----------------------------------------


def test_guard_stopped_fails_closed_and_accepted_flows_keep_running(gvm, site):
    x = gvm.resolve("a.test")
    ctx = ssl.create_default_context(cafile=site.ca_file)
    with sandbox_guard.entered(gvm.guest.name):
        raw_sock = socket.create_connection((x, PORT), timeout=2)
    with ctx.wrap_socket(raw_sock, server_hostname="a.test") as kept:
        kept.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        kept.sendall(b"one\n")
        assert kept.recv(100) == b"one\n"

        gvm.stop_guard()
        rc, _, seconds = curl(gvm, "a.test", x, site)
        assert rc == 28 and seconds >= 2.5          # held and dropped: a timeout, never a pass
        assert gvm.guest.dig("b.test", gvm.guest.dns_server)[0] == "NOERROR"    # DNS untouched
        kept.sendall(b"two\n")
        assert kept.recv(100) == b"two\n"           # the accepted flow stays in the kernel

        gvm.start_guard()                           # pins rebuilt from the learned set
        rc, body, _ = curl(gvm, "a.test", x, site)
        assert (rc, body) == (0, "tls a.test %s\n" % x)
        kept.sendall(b"three\n")
        assert kept.recv(100) == b"three\n"


def test_a_new_connection_on_the_ports_of_an_accepted_one_is_checked_again(gvm, site):
    """Same source port, same destination, right after an accepted flow was
    reset: the new connection's hello is read (the old verdict is not reused)."""
    x = gvm.resolve("a.test")
    port = 40999

    def hello_from_port(name):
        with sandbox_guard.entered(gvm.guest.name):
            sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.bind(("0.0.0.0", port))
        sock.settimeout(2)
        ctx = ssl.create_default_context(cafile=site.ca_file)
        try:
            sock.connect((x, PORT))
            with ctx.wrap_socket(sock, server_hostname=name):
                return "established"
        except (ConnectionResetError, ssl.SSLError, OSError):
            return "refused"
        finally:
            sock.close()
    assert hello_from_port("a.test") == "established"
    assert hello_from_port("c.test") == "refused"
    assert hello_from_port("a.test") == "established"
    assert gvm.counters().accepted == 2 and gvm.counters().refused == 1


# -- the name:port[/udp] form through the command ------------------------------------


def test_port_entries_are_validated_by_the_command_and_stored(sandbox):
    before = sorted(sandbox.namespaces())
    bad = sandbox.vmsan("create", "--id", sandbox.unique_id("bad"), "--allowed-domain", "git.test:0", check=False)
    assert bad.rc == 2
    assert "--allowed-domain" in bad.err and "port must be 1-65535" in bad.err and "name:port" in bad.err
    bad = sandbox.vmsan("create", "--id", sandbox.unique_id("bad"), "--allowed-domain", "ntp.test:123/sctp",
                        check=False)
    assert bad.rc == 2 and "unknown protocol" in bad.err
    assert sorted(sandbox.namespaces()) == before                   # nothing made
    vm = sandbox.vmsan("create", "--id", sandbox.unique_id("ok"), "--allowed-domain",
                       "a.test,Git.Test:22/tcp,ntp.test:123/UDP").out
    shown = sandbox.vmsan("show", vm["id"]).out
    assert shown["allowed_domains"] == ["a.test", "git.test:22", "ntp.test:123/udp"]
