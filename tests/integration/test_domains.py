"""Domain allowlists end to end (docs/contract.md, "Policies" and "The
resolver"): guests behind their TAPs ask the host resolver (``vmsan resolver`` inside the sandbox host
namespace, upstream the sandbox's authoritative DNS on 203.0.113.53), and the
answers open exactly the addresses they name, for as long as they should."""

import threading
import time

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.kernel.ipsets import SetManager
from sandbox import guard, procs

pytestmark = pytest.mark.integration

AUTH_DNS, ROGUE_DNS, ROGUE_ANSWER = "203.0.113.53", "192.0.2.53", "192.0.2.66"
WEB_A, WEB_B, APEX, BAD = "203.0.113.10", "203.0.113.11", "203.0.113.200", "192.0.2.10"
HOST_UPLINK = "198.51.100.2"


class Resolver(object):
    """``vmsan resolver`` in the sandbox host namespace (nsenter), stopped at
    the end of the test by the sandbox if the test did not stop it."""

    def __init__(self, sandbox, *flags, upstream=AUTH_DNS):
        self.sandbox, self.flags, self.upstream, self.proc, self.runs = sandbox, flags, upstream, None, 0

    def start(self, timeout=15.0):
        self.runs += 1
        self.proc = self.sandbox.vmsan_spawn("resolver", "--upstream", self.upstream, *self.flags,
                                             log_name="resolver-%d.log" % self.runs)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening on" in self.log():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("resolver did not start: %s" % self.log())

    def stop(self):
        procs.stop(self.proc)

    def log(self):
        with open(self.proc.log_path) as handle:
            return handle.read()


@pytest.fixture
def resolver(sandbox):
    """Start with ``resolver(*flags)``; short TTL floor and grace by default
    so expiry can be watched."""
    started = []

    def start(*flags):
        r = Resolver(sandbox, *(flags or ("--ttl-floor", "1", "--grace", "1"))).start()
        started.append(r)
        return r
    yield start
    for r in started:
        r.stop()


def make_vm(sandbox, name, *flags):
    vm = sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out
    return vm, sandbox.add_guest(vm)


def learned(sandbox, vm):
    """{address: (comment, timeout)} of the VM's dns set, read where it lives."""
    with guard.entered(vm["netns"] or sandbox.host.name):
        with SetManager() as sets:
            name = "vmsan-%s-dns" % vm["id"]
            if not sets.exists(name):
                return {}
            return {m["address"]: (m["comment"], m["timeout"]) for m in sets.members(name)}


def dig(guest, name, server=None, **kw):
    return tuple(guest.dig(name, server or guest.dns_server, **kw)[:2])


def reaches(guest, ip, port=9000):
    """Reads the server's greeting (payload, not just a connect)."""
    reply = guest.tcp(ip, port)
    return bool(reply) and reply.startswith("hello %s " % ip)


# -- names on the list, names off it -----------------------------------------------

def test_allowed_name_resolves_and_its_address_becomes_reachable(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "ok", "--allowed-domain", "a.example.test")
    assert not reaches(guest, WEB_A)                  # nothing open before the answer
    assert dig(guest, "a.example.test") == ("NOERROR", [WEB_A])
    assert reaches(guest, WEB_A)
    assert guest.http("a.example.test") == "vmsan-ok %s\n" % WEB_A
    assert learned(sandbox, vm)[WEB_A][0] == "a.example.test"


def test_unlisted_name_gets_nxdomain_and_its_address_stays_closed(sandbox, resolver):
    r = resolver()
    vm, guest = make_vm(sandbox, "nx", "--allowed-domain", "a.example.test")
    assert dig(guest, "b.example.test") == ("NXDOMAIN", [])
    assert not reaches(guest, WEB_B)
    assert WEB_B not in learned(sandbox, vm)
    assert "refused b.example.test for VM %s" % vm["id"] in r.log()
    # and the upstream never heard of it
    assert "b.example.test" not in [q.name.lower() for q in sandbox.internet.dns.queries()]  # 0x20


def test_wildcard_covers_subdomains_at_any_depth_but_not_the_apex(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "wc", "--allowed-domain", "*.example.test")
    assert dig(guest, "a.b.example.test") == ("NOERROR", [WEB_A])
    assert dig(guest, "example.test") == ("NXDOMAIN", [])
    assert dig(guest, "badexample.test") == ("NXDOMAIN", [])
    assert reaches(guest, WEB_A)
    assert not reaches(guest, APEX) and not reaches(guest, BAD)


def test_case_and_trailing_dot_make_no_difference(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "case", "--allowed-domain", "A.Example.TEST.")
    for spelling in ("a.example.test", "A.EXAMPLE.TEST", "a.Example.Test.", "A.EXAMPLE.TEST."):
        assert dig(guest, spelling) == ("NOERROR", [WEB_A]), spelling
    assert reaches(guest, WEB_A)


def test_cname_to_a_name_off_the_list_works(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "cn", "--allowed-domain", "chain.example.test")
    # chain.example.test -> alias.example.test -> a.example.test, neither listed
    rcode, values = dig(guest, "chain.example.test")
    assert (rcode, values) == ("NOERROR", [WEB_A])
    assert reaches(guest, WEB_A)
    assert learned(sandbox, vm)[WEB_A][0] == "chain.example.test"
    assert dig(guest, "a.example.test") == ("NXDOMAIN", [])     # the target itself is not listed


def test_aaaa_answers_are_not_given(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "v6", "--allowed-domain", "dual.example.test,v6.example.test")
    assert dig(guest, "dual.example.test", qtype="AAAA") == ("NOERROR", [])
    assert dig(guest, "v6.example.test", qtype="AAAA") == ("NOERROR", [])
    assert dig(guest, "dual.example.test") == ("NOERROR", [WEB_B])


# -- rebinding --------------------------------------------------------------------

REBINDING_TARGETS = ["10.0.0.5", "127.0.0.1", "169.254.169.254", HOST_UPLINK]


@pytest.mark.parametrize("address", REBINDING_TARGETS)
def test_answer_pointing_inside_yields_no_address_and_learns_nothing(sandbox, resolver, address):
    r = resolver()
    sandbox.internet.dns.set("inner.example.test", "A", [address])
    vm, guest = make_vm(sandbox, "rb", "--allowed-domain", "inner.example.test")
    assert dig(guest, "inner.example.test") == ("NOERROR", [])
    assert learned(sandbox, vm) == {}
    assert "removed %s from the answer for inner.example.test" % address in r.log()


@pytest.mark.parametrize("address", REBINDING_TARGETS)
def test_answer_pointing_inside_works_when_an_allowed_cidr_covers_it(sandbox, resolver, address):
    resolver()
    sandbox.internet.dns.set("inner.example.test", "A", [address])
    vm, guest = make_vm(sandbox, "rbc", "--allowed-domain", "inner.example.test", "--allowed-cidr", address)
    assert dig(guest, "inner.example.test") == ("NOERROR", [address])


def test_private_address_is_reachable_only_through_an_allowed_cidr(sandbox, resolver):
    # 10.0.0.5 exists in the sandbox's internet (routed there by the host's
    # default route), so "works" can mean: the greeting is read.
    resolver()
    sandbox.internet.ip("addr add 10.0.0.5/32 dev lo")
    sandbox.internet.dns.set("inner.example.test", "A", ["10.0.0.5"])
    closed = make_vm(sandbox, "p1", "--allowed-domain", "inner.example.test")[1]
    opened = make_vm(sandbox, "p2", "--allowed-domain", "inner.example.test", "--allowed-cidr", "10.0.0.0/24")[1]
    assert dig(closed, "inner.example.test") == ("NOERROR", [])
    assert not reaches(closed, "10.0.0.5")
    assert dig(opened, "inner.example.test") == ("NOERROR", ["10.0.0.5"])
    assert reaches(opened, "10.0.0.5")


def test_mixed_answer_keeps_only_the_public_address(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "mix", "--allowed-domain", "rebind.example.test")
    assert dig(guest, "rebind.example.test") == ("NOERROR", [WEB_A])
    assert set(learned(sandbox, vm)) == {WEB_A}


# -- expiry -----------------------------------------------------------------------

def test_learned_address_is_dropped_after_ttl_and_grace(sandbox, resolver):
    resolver("--ttl-floor", "1", "--grace", "1")
    vm, guest = make_vm(sandbox, "ttl", "--allowed-domain", "short.example.test")   # TTL 2
    assert dig(guest, "short.example.test") == ("NOERROR", [WEB_B])
    assert reaches(guest, WEB_B)
    assert learned(sandbox, vm)[WEB_B][1] <= 3        # max(2, 1) + 1
    deadline = time.monotonic() + 6
    while WEB_B in learned(sandbox, vm) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert WEB_B not in learned(sandbox, vm)
    assert not reaches(guest, WEB_B)
    # asking again opens it again
    assert dig(guest, "short.example.test") == ("NOERROR", [WEB_B])
    assert reaches(guest, WEB_B)


# -- no bypass --------------------------------------------------------------------

@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_query_to_another_server_is_answered_by_the_host_resolver(sandbox, resolver, tcp):
    resolver()
    vm, guest = make_vm(sandbox, "rg", "--allowed-domain", "a.example.test")
    sandbox.internet.clear_records()
    assert dig(guest, "a.example.test", ROGUE_DNS, tcp=tcp) == ("NOERROR", [WEB_A])    # not 192.0.2.66
    assert dig(guest, "b.example.test", ROGUE_DNS, tcp=tcp) == ("NXDOMAIN", [])
    assert dig(guest, "a.example.test", AUTH_DNS, tcp=tcp) == ("NOERROR", [WEB_A])
    assert sandbox.internet.rogue_dns.queries() == []
    assert reaches(guest, WEB_A)
    assert ROGUE_ANSWER not in learned(sandbox, vm)


def test_dns_over_tls_is_dropped(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "dot", "--allowed-domain", "a.example.test")
    assert dig(guest, "a.example.test") == ("NOERROR", [WEB_A])
    assert reaches(guest, WEB_A)                       # the address is open ...
    assert guest.tcp(WEB_A, 853) is None               # ... but not its port 853
    assert guest.tcp(ROGUE_DNS, 853) is None


def test_deny_all_gets_refused_at_once(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "dn", "--network-policy", "deny-all")
    for tcp in (False, True):
        # the gateway, another server, and the resolver's own address
        servers = (guest.dns_server, ROGUE_DNS, "169.254.64.1")
        results = [guest.dig("a.example.test", servers[i % 3], tcp=tcp) for i in range(6)]
        assert all(r[0] == "REFUSED" for r in results), results
        assert min(r[2] for r in results) < 0.1, results
    assert sandbox.internet.dns.queries() == []


def test_an_address_learned_for_one_vm_opens_nothing_for_another(sandbox, resolver):
    resolver()
    vm1, g1 = make_vm(sandbox, "one", "--allowed-domain", "a.example.test")
    vm2, g2 = make_vm(sandbox, "two", "--allowed-domain", "b.example.test")
    assert dig(g1, "a.example.test") == ("NOERROR", [WEB_A])
    assert reaches(g1, WEB_A)
    assert not reaches(g2, WEB_A)
    assert learned(sandbox, vm2) == {}


def test_allow_all_guest_is_answered_and_nothing_is_learned(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "aa")
    assert dig(guest, "b.example.test") == ("NOERROR", [WEB_B])
    assert dig(guest, "dual.example.test", qtype="AAAA") == ("NOERROR", [])


def test_no_netns_vm_learns_into_the_host_namespace(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "nn", "--no-netns", "--allowed-domain", "a.example.test")
    assert not reaches(guest, WEB_A)
    assert dig(guest, "a.example.test") == ("NOERROR", [WEB_A])
    assert reaches(guest, WEB_A)
    assert learned(sandbox, vm)[WEB_A][0] == "a.example.test"


# -- live update --------------------------------------------------------------------

def test_live_update_closes_the_old_names_addresses_within_a_second(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "lu", "--allowed-domain", "a.example.test")
    assert dig(guest, "a.example.test") == ("NOERROR", [WEB_A])
    stream = guest.stream(WEB_A)
    assert stream.is_flowing()
    sandbox.vmsan("network", vm["id"], "--network-policy", "custom", "--allowed-domain", "b.example.test")
    # the first attempt after the command returns is already dropped ...
    assert guest.tcp(WEB_A, 9000, timeout=0.5) is None
    # ... and the open connection stops carrying data within a second
    assert stream.wait_stopped(timeout=1.0)
    assert not stream.is_flowing()
    assert dig(guest, "a.example.test") == ("NXDOMAIN", [])
    assert WEB_A not in learned(sandbox, vm)
    assert dig(guest, "b.example.test") == ("NOERROR", [WEB_B])
    assert reaches(guest, WEB_B) and not reaches(guest, WEB_A)


def test_live_update_itself_prunes_learned_addresses(sandbox, resolver):
    """The CLI forgets what the new policy no longer allows, resolver or not."""
    r = resolver("--ttl-floor", "300", "--grace", "300")
    vm, guest = make_vm(sandbox, "lp", "--allowed-domain", "a.example.test,b.example.test")
    assert dig(guest, "a.example.test") == ("NOERROR", [WEB_A])
    assert dig(guest, "b.example.test") == ("NOERROR", [WEB_B])
    r.stop()
    sandbox.vmsan("network", vm["id"], "--allowed-domain", "b.example.test")
    assert set(learned(sandbox, vm)) == {WEB_B}
    assert reaches(guest, WEB_B) and not reaches(guest, WEB_A)


def test_vm_recreated_with_the_same_id_learns_again(sandbox, resolver):
    resolver()
    vm, guest = make_vm(sandbox, "re", "--allowed-domain", "a.example.test")
    assert dig(guest, "a.example.test") == ("NOERROR", [WEB_A])
    sandbox.remove_guest(guest)
    sandbox.vmsan("remove", vm["id"])          # verifies nothing of the VM is left
    vm2, guest2 = make_vm(sandbox, "re", "--allowed-domain", "a.example.test")
    assert not reaches(guest2, WEB_A)
    assert dig(guest2, "a.example.test") == ("NOERROR", [WEB_A])
    assert reaches(guest2, WEB_A)


# -- many guests at once ------------------------------------------------------------

GUESTS = 50


@pytest.mark.slow
def test_fifty_guests_at_once_get_only_their_own_policys_answers(sandbox, resolver):
    """50 VMs, each with a guest (relay) of its own. VM i may resolve
    n<i>.example.test only (every third VM is deny-all); all guests ask for
    their own name and their neighbour's at the same moment."""
    r = resolver("--ttl-floor", "60", "--grace", "60")
    dns = sandbox.internet.dns
    vms, guests = [], []
    for i in range(GUESTS):
        dns.set("n%d.example.test" % i, "A", ["203.0.113.%d" % (20 + i)])
        flags = ["--network-policy", "deny-all"] if i % 3 == 2 else ["--allowed-domain", "n%d.example.test" % i]
        vm, guest = make_vm(sandbox, "m%d" % i, *flags)
        vms.append(vm)
        guests.append(guest)
    barrier = threading.Barrier(GUESTS)
    results = {}

    def ask(i):
        barrier.wait()
        own = guests[i].dig("n%d.example.test" % i, guests[i].dns_server, timeout=3)
        other = guests[i].dig("n%d.example.test" % ((i + 1) % GUESTS), guests[i].dns_server, timeout=3)
        results[i] = (own[:2], other[:2])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(GUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i in range(GUESTS):
        own, other = results[i]
        if i % 3 == 2:
            assert own == ("REFUSED", []) and other == ("REFUSED", []), (i, results[i])
        else:
            assert own == ("NOERROR", ["203.0.113.%d" % (20 + i)]), (i, results[i])
            assert other == ("NXDOMAIN", []), (i, results[i])
            assert set(learned(sandbox, vms[i])) == {"203.0.113.%d" % (20 + i)}, i
    assert "Traceback" not in r.log()


# -- fail closed --------------------------------------------------------------------

def test_fail_closed_without_the_daemon_and_back_after_restart(sandbox, resolver):
    r = resolver()
    vm, guest = make_vm(sandbox, "fc", "--allowed-domain", "a.example.test")
    r.stop()
    for server, tcp in ((guest.dns_server, False), (guest.dns_server, True), (ROGUE_DNS, False), (AUTH_DNS, True)):
        rcode, values = dig(guest, "a.example.test", server, tcp=tcp, timeout=0.5)
        assert rcode not in ("NOERROR", "NXDOMAIN") and values == [], (server, tcp, rcode)
    assert not reaches(guest, WEB_A)
    assert learned(sandbox, vm) == {}
    assert sandbox.internet.rogue_dns.queries() == []
    r.start()                                  # the VM is not touched
    assert dig(guest, "a.example.test") == ("NOERROR", [WEB_A])
    assert reaches(guest, WEB_A)


# -- the netlink sender the resolver learns through (ipset_wire) ---------------------

def _set_members(sandbox, name):
    """{address or CIDR: (timeout, comment)} from the ipset command's own view."""
    out = sandbox.host.run(["ipset", "save", name], check=True).stdout
    members = {}
    for line in out.splitlines():
        words = line.split()
        if words[:2] != ["add", name]:
            continue
        options = dict(zip(words[3::2], words[4::2]))
        members[words[2]] = (int(options["timeout"]) if "timeout" in options else None,
                             options.get("comment", "").strip('"') or None)
    return members


@pytest.fixture
def ipset_socket(sandbox):
    from ansible_collections.vmsan.network.plugins.module_utils.kernel.ipset_wire import IpsetSocket
    with guard.entered(sandbox.host.name):
        sock = IpsetSocket()        # lives in the sandbox host namespace from now on
    yield sock
    sock.close()


def test_ipset_wire_adds_with_timeout_and_comment_and_refreshes(sandbox, ipset_socket):
    sandbox.host.run(["ipset", "create", "wire-ip", "hash:ip", "timeout", "0", "comment"], check=True)
    ipset_socket.add("wire-ip", "203.0.113.10", 600, "a.example.test")
    ipset_socket.add("wire-ip", "203.0.113.11", None, None)
    members = _set_members(sandbox, "wire-ip")
    assert 590 <= members["203.0.113.10"][0] <= 600 and members["203.0.113.10"][1] == "a.example.test"
    assert members["203.0.113.11"] == (0, None)             # the set's default: no timeout
    ipset_socket.add("wire-ip", "203.0.113.10", 3000, "b.example.test")     # exist: refresh
    timeout, comment = _set_members(sandbox, "wire-ip")["203.0.113.10"]
    assert timeout > 2900 and comment == "b.example.test"
    with pytest.raises(OSError) as err:
        ipset_socket.add("wire-ip", "203.0.113.10", 10, "c", exist=False)
    assert err.value.errno == 4103                          # IPSET_ERR_EXIST
    ipset_socket.delete("wire-ip", "203.0.113.10")
    ipset_socket.delete("wire-ip", "203.0.113.10")          # exist: no error when gone
    assert set(_set_members(sandbox, "wire-ip")) == {"203.0.113.11"}


def test_ipset_wire_templated_adds_reach_the_kernel_as_given(sandbox, ipset_socket):
    """What the learning thread sends for answers of 64 addresses (16
    learned each, one name per answer): all but the first two messages of
    each name are written into a template (kernel/ipset_wire.Templates);
    the set holds every address with its own timeout and name."""
    sandbox.host.run(["ipset", "create", "wire-tpl", "hash:ip", "timeout", "0", "comment"], check=True)
    entries = [("198.18.%d.%d" % (n, i), 600 + 60 * n + i, "m%d.many.test" % n) for n in range(4) for i in range(16)]
    assert ipset_socket.add_many("wire-tpl", entries) == 64
    assert ipset_socket.templates.patched == 63          # one pyroute2 encoding for every name of that length
    members = _set_members(sandbox, "wire-tpl")
    assert set(members) == {a for a, _t, _c in entries}
    for address, timeout, name in entries:
        assert timeout - 10 <= members[address][0] <= timeout and members[address][1] == name, address
    ipset_socket.delete_many("wire-tpl", [a for a, _t, _c in entries[:32]])
    assert set(_set_members(sandbox, "wire-tpl")) == {a for a, _t, _c in entries[32:]}


def test_ipset_wire_adds_networks_to_a_hash_net_set(sandbox, ipset_socket):
    sandbox.host.run(["ipset", "create", "wire-net", "hash:net"], check=True)
    ipset_socket.add_many("wire-net", [("198.51.100.0/24", None, None), ("192.0.2.7/32", None, None),
                                       ("203.0.113.5", None, None)])
    assert set(_set_members(sandbox, "wire-net")) == {"198.51.100.0/24", "192.0.2.7", "203.0.113.5"}
    with guard.entered(sandbox.host.name):
        with SetManager() as sets:
            assert sets.networks("wire-net") == {"198.51.100.0/24", "192.0.2.7/32", "203.0.113.5/32"}
    match = sandbox.host.run(["ipset", "test", "wire-net", "198.51.100.77"])
    assert match.returncode == 0, match.stderr


def test_ipset_wire_adds_a_batch_of_1000(sandbox, ipset_socket):
    sandbox.host.run(["ipset", "create", "wire-batch", "hash:net"], check=True)
    networks = ["10.%d.%d.0/24" % (i // 256, i % 256) for i in range(1000)]
    assert ipset_socket.add_many("wire-batch", [(n, None, None) for n in networks]) == 1000
    assert set(_set_members(sandbox, "wire-batch")) == set(networks)
    ipset_socket.delete_many("wire-batch", networks[:500])
    assert set(_set_members(sandbox, "wire-batch")) == set(networks[500:])


def test_ipset_wire_fills_a_new_set_with_list_messages(sandbox, ipset_socket):
    import errno
    sandbox.host.run(["ipset", "create", "wire-fill", "hash:net"], check=True)
    networks = ["10.%d.%d.0/24" % (i // 256, i % 256) for i in range(1000)] + ["192.0.2.9/32"]
    assert ipset_socket.fill("wire-fill", networks) == 1001          # six list messages
    assert set(_set_members(sandbox, "wire-fill")) == set(networks[:-1]) | {"192.0.2.9"}
    with pytest.raises(OSError) as err:
        ipset_socket.fill("wire-fill-missing", networks)
    assert err.value.errno == errno.ENOENT


def test_ipset_wire_reports_a_missing_set_as_enoent(sandbox, ipset_socket):
    import errno
    with pytest.raises(OSError) as err:
        ipset_socket.add("wire-missing", "203.0.113.10", 60, "a.example.test")
    assert err.value.errno == errno.ENOENT
    with pytest.raises(OSError) as err:              # a whole batch of failures: every ack is read
        ipset_socket.add_many("wire-missing", [("10.0.%d.%d" % (i // 256, i % 256), None, None) for i in range(1000)])
    assert err.value.errno == errno.ENOENT and len(err.value.failures) == 1000
    sandbox.host.run(["ipset", "create", "wire-missing", "hash:ip"], check=True)
    ipset_socket.add("wire-missing", "203.0.113.10")         # and the socket still works
    assert set(_set_members(sandbox, "wire-missing")) == {"203.0.113.10"}
