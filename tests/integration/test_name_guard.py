"""The name guard in the product (issue 13; docs/domain-policies.md, "The
name guard"): VMs made by ``vmsan create`` alone, ``vmsan daemon`` alone
(tests/integration/host_daemon.py) in the sandbox's host namespace, real
clients (curl, openssl s_client, Python's ssl) in the guests, and a TLS
server in the sandbox's internet that serves a.test, b.test and c.test on
203.0.113.10 (X) and d.test on 203.0.113.11 (Y) (tests/sandbox/tls.py).

Each check was seen red without what it proves: with the learned set
accepted as before (no guard jump in the plan) every check of the guard's
decisions, the daemon's restarts and the live change went red; with no
queue socket opened by the daemon (held packets dropped) those and the VM
removal went red; the CIDR check with the guard jumped to ahead of the
allowed CIDRs for every destination; the removal check with queues never
closed; the restart check with the pins' journal not read (pins from the
learned set only); the validation check without the port range check.
"""

import grp
import json
import os
import socket
import ssl
import subprocess
import time

import pytest

from sandbox import guard as sandbox_guard
from sandbox.servers import TcpServer
from sandbox.tls import OTHER, PORT, SHARED, TlsSite

from .host_daemon import Daemon

pytestmark = pytest.mark.integration

DOMAINS = "a.test,b.test,d.test,git.test:22,ntp.test:9000/udp"
CIDR_ONLY = "203.0.113.200"         # opened by --allowed-cidr, never held
PROMPT = 1.0                        # a refusal is a reset well within this, not a timeout


@pytest.fixture
def site(sandbox):
    site = TlsSite.start(sandbox.internet)
    for name in ("git.test", "ntp.test"):
        sandbox.internet.dns.set(name, "A", [OTHER])
    return site


@pytest.fixture
def daemon(sandbox, site):
    return Daemon(sandbox).start()


class Vm(object):
    """A VM made by ``vmsan create`` and its guest."""

    def __init__(self, sandbox, name, *flags):
        self.sandbox = sandbox
        self.vm = sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out
        self.id, self.netns = self.vm["id"], self.vm["netns"]
        self.guest = sandbox.add_guest(self.vm)

    def resolve(self, name):
        rcode, values = self.guest.dig(name, self.guest.dns_server)[:2]
        assert rcode == "NOERROR" and values, (name, rcode, values)
        return values[0]


@pytest.fixture
def vm(sandbox, daemon):
    return Vm(sandbox, "guard", "--allowed-domain", DOMAINS, "--allowed-cidr", CIDR_ONLY + "/32")


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


def curl(vm, site, name, ip=None, port=PORT, scheme="https", connect_to=None):
    """(exit code, body, seconds) of curl in the guest: NAME at IP, or with
    ``--connect-to NAME:PORT:OTHER:PORT`` (the SNI and Host are NAME, the
    connection goes where OTHER resolves)."""
    argv = ["curl", "-sS", "--max-time", "3"]
    if connect_to:
        argv += ["--connect-to", "%s:%d:%s:%d" % (name, port, connect_to, port),
                 "--resolve", "%s:%d:%s" % (connect_to, port, ip)]
    else:
        argv += ["--resolve", "%s:%d:%s" % (name, port, ip)]
    if scheme == "https":
        argv += ["--cacert", site.ca_file]
    began = time.monotonic()
    done = vm.guest.run(argv + ["%s://%s:%d/" % (scheme, name, port)], timeout=10)
    return done.returncode, done.stdout, time.monotonic() - began


def s_client(vm, ip, servername=None, port=PORT):
    """(handshake completed, seconds) of openssl s_client in the guest."""
    argv = ["openssl", "s_client", "-connect", "%s:%d" % (ip, port), "-brief"]
    argv += ["-servername", servername] if servername else ["-noservername"]
    began = time.monotonic()
    done = vm.guest.run(argv, input="Q\n", timeout=10)
    return "CONNECTION ESTABLISHED" in done.stderr, time.monotonic() - began


def raw(vm, ip, port, payload, timeout=2.0):
    """What a TCP client in the guest sees after sending PAYLOAD:
    ("data", bytes), ("reset", seconds), ("closed", seconds) or ("timeout", seconds)."""
    with sandbox_guard.entered(vm.guest.name):
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


def refusal_logged(daemon, vm, name, dport=PORT):
    """The daemon logged a refused flow of VM with the destination port and NAME."""
    return daemon.wait_for(":%d (name %s)" % (dport, name), timeout=2.0) and any(
        line.startswith("vmsan-daemon: INFO VM %s: refused tcp " % vm.id) and "(name %s)" % name in line
        for line in daemon.log().splitlines())


class Echo(object):
    """A TLS connection from the guest to the site's /echo, kept open."""

    def __init__(self, vm, site, ip, name):
        ctx = ssl.create_default_context(cafile=site.ca_file)
        with sandbox_guard.entered(vm.guest.name):
            raw_sock = socket.create_connection((ip, PORT), timeout=2)
        self.sock = ctx.wrap_socket(raw_sock, server_hostname=name)
        self.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode())
        assert self.sock.recv(4096).startswith(b"HTTP/1.1 200")

    def works(self, line):
        try:
            self.sock.sendall(line + b"\n")
            return self.sock.recv(100) == line + b"\n"
        except (OSError, ssl.SSLError):
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# -- TLS: the SNI must be allowed and pinned ---------------------------------------


def test_allowed_names_on_a_shared_address_pass_after_a_decision(vm, daemon, site):
    x = vm.resolve("a.test")
    assert vm.resolve("b.test") == x == SHARED
    before = daemon.stats()
    for name in ("a.test", "b.test"):
        rc, body, _ = curl(vm, site, name, x)
        assert (rc, body) == (0, "tls %s %s\n" % (name, x))
    after = daemon.stats()
    assert after["guard_accepted"] - before["guard_accepted"] == 2     # both flows were held and decided
    # each held hello woke the guard (the health answer counts its wake-ups)
    assert after["guard_wakeups"] - before["guard_wakeups"] >= 2


def test_an_unlisted_sni_to_the_shared_address_is_reset_and_logged(vm, daemon, site):
    x = vm.resolve("a.test")
    rc, _body, seconds = curl(vm, site, "c.test", x, connect_to="a.test")   # SNI c.test to a.test's address
    assert rc in (35, 56) and seconds < PROMPT      # reset during the handshake, at once
    assert not [h for h in site.handshakes() if h.sni == "c.test"]
    assert refusal_logged(daemon, vm, "c.test"), daemon.log()
    established, seconds = s_client(vm, x, "c.test")
    assert not established and seconds < PROMPT
    established, _ = s_client(vm, x, "a.test")
    assert established


def test_http_host_follows_the_same_rule(vm, daemon, site):
    x = vm.resolve("a.test")
    rc, body, _ = curl(vm, site, "a.test", x, port=80, scheme="http")
    assert (rc, body) == (0, "vmsan-ok %s\n" % x)
    rc, _, seconds = curl(vm, site, "c.test", x, port=80, scheme="http")
    assert rc in (52, 56) and seconds < PROMPT
    assert refusal_logged(daemon, vm, "c.test", dport=80), daemon.log()


def test_an_allowed_name_is_refused_at_an_address_pinned_to_another(vm, daemon, site):
    """a.test -> X, d.test -> Y, both allowed: SNI d.test sent to X is fronting."""
    x, y = vm.resolve("a.test"), vm.resolve("d.test")
    assert (x, y) == (SHARED, OTHER)
    rc, _, seconds = curl(vm, site, "d.test", x)
    assert rc in (35, 56) and seconds < PROMPT
    assert refusal_logged(daemon, vm, "d.test"), daemon.log()
    rc, body, _ = curl(vm, site, "d.test", y)
    assert (rc, body) == (0, "tls d.test %s\n" % y)


def test_a_2kb_hello_in_three_segments_completes(vm, daemon, site):
    """A ClientHello of about 2 KB (long ALPN names stand in for a
    post-quantum key share) written in three pieces with TCP_NODELAY: the
    guard reassembles it, the handshake and the request complete."""
    x = vm.resolve("a.test")
    ctx = ssl.create_default_context(cafile=site.ca_file)
    ctx.set_alpn_protocols(["x" * 250 + str(i) for i in range(7)] + ["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="a.test")
    before = daemon.stats()
    with sandbox_guard.entered(vm.guest.name):
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
    after = daemon.stats()
    assert after["guard_accepted"] - before["guard_accepted"] == 1
    # the SYN-ACK's copy and three held pieces reached the guard, one verdict
    assert after["guard_messages"] - before["guard_messages"] >= 4


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


def test_no_sni_plain_bytes_and_ssh_are_reset(vm, daemon, site, ssh_server):
    x = vm.resolve("a.test")
    before = daemon.stats()
    established, seconds = s_client(vm, x)             # no SNI
    assert not established and seconds < PROMPT
    assert refused_promptly(raw(vm, x, PORT, b"hello there\r\n\r\n"))
    assert refused_promptly(raw(vm, x, 22, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
    after = daemon.stats()
    assert after["guard_refused"] - before["guard_refused"] == 3
    assert after["guard_accepted"] == before["guard_accepted"]


def test_a_name_port_entry_lets_ssh_reach_that_name(vm, daemon, site, ssh_server):
    """git.test:22 is allowed: any TCP protocol to the addresses pinned to
    git.test, on port 22 only."""
    y = vm.resolve("git.test")
    assert raw(vm, y, 22, b"SSH-2.0-OpenSSH_9.2\r\n") == ("data", b"ssh-ok SSH-2.0-OpenSSH_9.2\r\n")
    assert refused_promptly(raw(vm, y, PORT, b"SSH-2.0-OpenSSH_9.2\r\n"))     # another port
    x = vm.resolve("a.test")
    assert refused_promptly(raw(vm, x, 22, b"SSH-2.0-OpenSSH_9.2\r\n"))      # X is not git.test's


def test_udp_to_learned_addresses_only_with_a_udp_entry(sandbox, vm, daemon, site):
    """UDP 443 to a learned address (X, a.test) is dropped: QUIC falls back
    to TCP, where the name is checked; ntp.test:9000/udp (ntp.test -> Y)
    lets UDP 9000 reach Y, and only Y."""
    quic = sandbox.internet.serve_udp("0.0.0.0", 443, label="quic")
    x, y = vm.resolve("a.test"), vm.resolve("ntp.test")
    assert vm.guest.udp(x, 443) is None
    assert quic.received() == []                        # the datagram never left the host
    assert vm.guest.udp(y, 9000) == "hello %s 198.51.100.2\n" % y
    assert vm.guest.udp(x, 9000) is None                # X is not ntp.test's
    assert len(sandbox.internet.udp_received()) == 1    # only the allowed datagram got out
    assert not vm.guest.ping(x)                         # nor ICMP


def test_a_cidr_allowed_destination_is_not_held(vm, daemon, site):
    """203.0.113.200 is opened by --allowed-cidr: no guard on its path (the
    name is not even on the allowlist), with the daemon running or not."""
    before = daemon.stats()["guard_messages"]
    rc, body, _ = curl(vm, site, "c.test", CIDR_ONLY)
    assert (rc, body) == (0, "tls c.test %s\n" % CIDR_ONLY)
    assert daemon.stats()["guard_messages"] == before
    daemon.stop()
    rc, body, _ = curl(vm, site, "c.test", CIDR_ONLY)
    assert (rc, body) == (0, "tls c.test %s\n" % CIDR_ONLY)


def test_denied_cidrs_win_and_dns_is_untouched(sandbox, daemon, site):
    """A denied CIDR drops even an allowed name's address before the guard
    sees it; DNS goes to the resolver, not to the guard."""
    vm = Vm(sandbox, "deny", "--allowed-domain", "a.test,d.test", "--denied-cidr", SHARED + "/32")
    before = daemon.stats()["guard_messages"]
    assert vm.guest.dig("a.test", vm.guest.dns_server, tcp=True)[0] == "NOERROR"     # TCP DNS too
    y = vm.resolve("d.test")
    rc, _body, seconds = curl(vm, site, "a.test", SHARED)
    assert rc == 28 and seconds >= 2.5                 # dropped (a timeout), not reset by the guard
    assert daemon.stats()["guard_messages"] == before
    rc, body, _ = curl(vm, site, "d.test", y)
    assert (rc, body) == (0, "tls d.test %s\n" % y)
    text = subprocess.run(["nsenter", "--net=/run/netns/" + vm.netns, "iptables-legacy-save", "-t", "filter"],
                          capture_output=True, text=True, check=True).stdout
    assert "-A vmsan-%s-out -m set --match-set vmsan-%s-dns dst -j vmsan-%s-guard" % ((vm.id,) * 3) in text
    assert "NFQUEUE --queue-num 3013" in text and "--queue-bypass" not in text


# -- the daemon stopped, started again, and VMs that go ------------------------------


def test_the_daemon_stopped_fails_closed_accepted_flows_keep_running(vm, daemon, site):
    x = vm.resolve("a.test")
    kept = Echo(vm, site, x, "a.test")
    try:
        assert kept.works(b"one")
        daemon.stop()
        rc, _, seconds = curl(vm, site, "a.test", x)
        assert rc == 28 and seconds >= 2.5          # held and dropped: a timeout, never a pass
        assert kept.works(b"two")                    # the accepted flow stays in the kernel
        daemon.start()                               # the VM is not touched
        rc, body, _ = curl(vm, site, "a.test", x)    # the guest's cached answer still works
        assert (rc, body) == (0, "tls a.test %s\n" % x), daemon.log()
        assert kept.works(b"three")
    finally:
        kept.close()


def test_a_restart_keeps_the_pins_a_guest_has_cached(vm, daemon, site):
    """b.test shares a.test's address and was resolved second: the learned
    set's entry names a.test only, so only the pins' journal knows b.test.
    After a restart (SIGTERM) and after a crash (SIGKILL), a guest that
    kept its answer for b.test still connects without asking again."""
    x = vm.resolve("a.test")
    assert vm.resolve("b.test") == x
    for stop in (daemon.stop, daemon.kill):
        stop()
        daemon.start()
        rc, body, _ = curl(vm, site, "b.test", x)
        assert (rc, body) == (0, "tls b.test %s\n" % x), stop.__name__
    rc, _, _ = curl(vm, site, "d.test", x)
    assert rc in (35, 56)                            # what was never pinned stays refused


def nsids(sandbox):
    """{nsid: name} the sandbox's host namespace has for its peers (a
    namespace with a link to the host gets one; it goes with the namespace)."""
    out = subprocess.run(["ip", "-n", sandbox.host.name, "-j", "netns", "list-id"], capture_output=True, text=True,
                         check=True).stdout
    return {entry["nsid"]: entry.get("name") for entry in json.loads(out or "[]")}


def test_a_vm_removed_while_the_daemon_runs_leaves_no_queue_behind(sandbox, vm, daemon, site):
    """The guard's queue socket (and the resolver's netlink socket) in the
    VM's namespace would keep the namespace alive after ``vmsan remove``
    unlinked it; the daemon closes them, and the namespace is really gone."""
    vm.resolve("a.test")
    assert daemon.wait_for("namespace %s: guarding %s" % (vm.netns, vm.id))
    nsid = [i for i, name in nsids(sandbox).items() if name == vm.netns]
    assert len(nsid) == 1
    sandbox.remove_guest(vm.guest)
    sandbox.vmsan("remove", vm.id)
    assert daemon.wait_for("namespace %s: queue closed" % vm.netns)
    deadline = time.monotonic() + 5
    while nsid[0] in nsids(sandbox) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert nsid[0] not in nsids(sandbox)             # the kernel freed the namespace


# -- live policy changes ------------------------------------------------------------


def test_a_live_change_cuts_the_flows_whose_name_left_and_drops_its_pins(sandbox, vm, daemon, site):
    """b.test resolved first, then a.test (same address X): the set entry
    names b.test, so the change that removes a.test keeps X learned and the
    address-level cut keeps flows to X. The guard cuts the flow it accepted
    for a.test, keeps the one for b.test, and forgets a.test's pins: with
    a.test allowed again, the guest's old answer no longer opens X for it."""
    x = vm.resolve("b.test")
    assert vm.resolve("a.test") == x
    for_a, for_b = Echo(vm, site, x, "a.test"), Echo(vm, site, x, "b.test")
    try:
        assert for_a.works(b"one") and for_b.works(b"one")
        sandbox.vmsan("network", vm.id, "--allowed-domain", "b.test,d.test")
        assert daemon.wait_for("VM %s: cut tcp" % vm.id)
        assert not for_a.works(b"two")
        assert for_b.works(b"two")
        sandbox.vmsan("network", vm.id, "--allowed-domain", "a.test,b.test")
        # the guard has the new list (and the resolver, before it, dropped the pins of the names that left)
        assert daemon.wait_for("VM %s: the guard's allowlist is now a.test,b.test" % vm.id)
        rc, _, _ = curl(vm, site, "a.test", x)
        assert rc in (35, 56)                        # a.test's pin went with the name
        assert vm.resolve("a.test") == x
        rc, body, _ = curl(vm, site, "a.test", x)
        assert (rc, body) == (0, "tls a.test %s\n" % x)
    finally:
        for_a.close()
        for_b.close()


# -- --no-netns: the host namespace's queue, other software's marks -------------------


def test_no_netns_vms_are_guarded_in_the_host_namespace_and_other_marks_survive(sandbox, daemon, site):
    """Two --no-netns VMs share the host namespace's queue. Other software
    marking the same packets and connections (bit 0x1, mangle) keeps its
    bits: a counting rule sees the guard's verdict and bit 0x1 together on
    the packet and on the connection."""
    host = sandbox.host
    one = Vm(sandbox, "nn1", "--no-netns", "--allowed-domain", "a.test")
    two = Vm(sandbox, "nn2", "--no-netns", "--allowed-domain", "d.test")
    for rule in ("-I PREROUTING -i %s -j MARK --or-mark 0x1" % one.vm["tap"],
                 "-I PREROUTING -i %s -j CONNMARK --or-mark 0x1" % one.vm["tap"],
                 "-A POSTROUTING -m mark --mark 0x10000001/0x30000001",          # counts, goes on
                 "-A POSTROUTING -m connmark --mark 0x10000001/0x30000001"):
        host.run(["iptables-legacy", "-w", "-t", "mangle"] + rule.split(), check=True)
    x = one.resolve("a.test")
    rc, body, _ = curl(one, site, "a.test", x)
    assert (rc, body) == (0, "tls a.test %s\n" % x)
    rc, _, seconds = curl(one, site, "c.test", x)
    assert rc in (35, 56) and seconds < PROMPT
    y = two.resolve("d.test")
    rc, body, _ = curl(two, site, "d.test", y)
    assert (rc, body) == (0, "tls d.test %s\n" % y)
    rc, _, _ = curl(two, site, "a.test", x)           # X is not learned for VM two at all
    assert rc == 28
    counted = host.run(["iptables-legacy", "-w", "-t", "mangle", "-L", "POSTROUTING", "-v", "-n", "-x"],
                       check=True).stdout
    packets = [int(line.split()[0]) for line in counted.splitlines() if "0x10000001/0x30000001" in line]
    assert len(packets) == 2 and all(n >= 1 for n in packets), counted
    assert daemon.stats()["guard_queues"] == 1         # one queue for both


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


# -- the systemd unit's capabilities ------------------------------------------------

UNIT = os.path.join(os.path.dirname(__file__), "..", "..", "roles", "vmsan_host", "files", "vmsan-resolver.service")
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}


def unit_setting(key):
    with open(UNIT) as handle:
        values = [line.split("=", 1)[1].strip() for line in handle if line.startswith(key + "=")]
    assert len(values) == 1, (key, values)
    return values[0]


def test_the_units_command_and_capabilities_are_enough_for_the_guard(sandbox, site):
    """The daemon as the unit runs it (its ExecStart's subcommand, its
    CapabilityBoundingSet, NoNewPrivileges; setpriv stands in for systemd)
    with --socket-group: it gives the command socket to the group, runs
    ``vmsan create`` for the command (the warm path: iptables, namespaces),
    serves DNS, binds the guard's queue, accepts an allowed name and resets
    the unlisted one."""
    command = unit_setting("ExecStart").split()[1:]
    assert command == ["daemon"]
    caps = unit_setting("CapabilityBoundingSet").split()
    bounding = "-all," + ",".join("+" + cap[len("CAP_"):].lower() for cap in caps)
    daemon = Daemon(sandbox, "--socket-group", "nogroup", command=command[0],
                    wrap=("setpriv", "--no-new-privs", "--bounding-set", bounding, "--"))
    daemon.start()
    assert os.stat(os.path.join(sandbox.home, "daemon.sock")).st_gid == grp.getgrnam("nogroup").gr_gid
    with open("/proc/%d/status" % daemon.proc.pid) as handle:
        status = dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == sum(1 << CAP_NUMBERS[cap] for cap in caps)     # really only those
    vm = Vm(sandbox, "caps", "--allowed-domain", "a.test")
    x = vm.resolve("a.test")
    rc, body, _ = curl(vm, site, "a.test", x)
    assert (rc, body) == (0, "tls a.test %s\n" % x), daemon.log()
    rc, _, seconds = curl(vm, site, "c.test", x, connect_to="a.test")
    assert rc in (35, 56) and seconds < PROMPT
    assert refusal_logged(daemon, vm, "c.test"), daemon.log()
