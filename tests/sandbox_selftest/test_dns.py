"""The authoritative DNS (mutable while it runs) and the rogue DNS."""

from sandbox import topology as t
from sandbox.dns import ROGUE_ANSWER


def dig(sandbox, name, **kw):
    rcode, values, _ = sandbox.host.dig(name, t.AUTH_DNS, **kw)
    return rcode, values


def test_default_records(sandbox):
    assert dig(sandbox, "a.example.test") == ("NOERROR", ["203.0.113.10"])
    assert dig(sandbox, "A.Example.Test.") == ("NOERROR", ["203.0.113.10"])
    assert dig(sandbox, "b.example.test") == ("NOERROR", ["203.0.113.11"])
    assert dig(sandbox, "a.b.example.test") == ("NOERROR", ["203.0.113.10"])
    assert dig(sandbox, "example.test") == ("NOERROR", ["203.0.113.200"])
    assert dig(sandbox, "badexample.test") == ("NOERROR", ["192.0.2.10"])
    assert dig(sandbox, "api.example.com") == ("NOERROR", ["203.0.113.10"])
    assert dig(sandbox, "multi.example.test") == ("NOERROR", ["203.0.113.10", "203.0.113.11"])
    assert dig(sandbox, "chain.example.test") == ("NOERROR", ["203.0.113.10"])
    assert dig(sandbox, "chain.example.test", qtype="CNAME") == (
        "NOERROR",
        ["alias.example.test"],
    )
    assert dig(sandbox, "v6.example.test", qtype="AAAA") == ("NOERROR", ["2001:db8::1"])
    assert dig(sandbox, "v6.example.test") == ("NOERROR", [])
    assert dig(sandbox, "nothing.example.test") == ("NXDOMAIN", [])


def test_tcp_answers_like_udp(sandbox):
    assert dig(sandbox, "a.example.test", tcp=True) == ("NOERROR", ["203.0.113.10"])
    assert dig(sandbox, "nothing.test", tcp=True) == ("NXDOMAIN", [])


def test_records_change_while_running(sandbox):
    dns = sandbox.internet.dns
    dns.set("new.example.test", "A", ["203.0.113.11", "203.0.113.10"], ttl=5)
    assert dig(sandbox, "new.example.test") == ("NOERROR", ["203.0.113.11", "203.0.113.10"])
    dns.set("a.example.test", "A", "203.0.113.200")
    assert dig(sandbox, "a.example.test") == ("NOERROR", ["203.0.113.200"])
    dns.set("a.example.test", "CNAME", "b.example.test")
    assert dig(sandbox, "a.example.test") == ("NOERROR", ["203.0.113.11"])
    dns.remove("a.example.test")
    assert dig(sandbox, "a.example.test") == ("NXDOMAIN", [])
    dns.reset()
    assert dig(sandbox, "a.example.test") == ("NOERROR", ["203.0.113.10"])


def test_queries_are_logged(sandbox):
    sandbox.host.dig("b.example.test", t.AUTH_DNS, tcp=True)
    (query,) = sandbox.internet.dns.queries()
    assert (query.name, query.qtype, query.proto, query.src_ip) == (
        "b.example.test",
        "A",
        "tcp",
        "198.51.100.2",
    )
    assert sandbox.internet.rogue_dns.queries() == []


def test_rogue_server_answers_everything(sandbox):
    for tcp in (False, True):
        rcode, values, _ = sandbox.host.dig("a.example.test", t.ROGUE_DNS, tcp=tcp)
        assert (rcode, values) == ("NOERROR", [ROGUE_ANSWER])
    assert len(sandbox.internet.rogue_dns.queries()) == 2


def test_no_server_means_timeout_not_an_answer(sandbox):
    rcode, values, elapsed = sandbox.host.dig("a.example.test", t.WEB_A, timeout=0.5)
    assert rcode.startswith("ERROR") or rcode == "TIMEOUT"
    assert values == [] and elapsed < 1.5
