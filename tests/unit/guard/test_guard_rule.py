"""The guard's rule (guard/rule.py, guard/decide.py): a name must be allowed
and the address pinned to it; name:port[/udp] entries; everything else is
refused."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.guard import decide, rule
from ansible_collections.vmsan.network.plugins.module_utils.guard.rule import ACCEPT, REFUSE, GuardPolicy

from .guard_hellos import built_hello

POLICY = GuardPolicy(("a.test", "b.test", "d.test", "*.cdn.test", "git.test:22", "*.ntp.test:123/udp"))
AT_X = frozenset({"a.test", "b.test"})          # a.test and b.test resolved to X
AT_Y = frozenset({"d.test"})


def tcp(pinned, data, port=443):
    return decide.tcp(POLICY, pinned, port, data)


def test_allowed_and_pinned_sni_is_accepted():
    assert tcp(AT_X, built_hello("a.test")).action == ACCEPT
    assert tcp(AT_X, built_hello("B.TEST")).action == ACCEPT


def test_name_not_on_the_list_is_refused_even_on_a_shared_address():
    verdict = tcp(AT_X | {"c.test"}, built_hello("c.test"))
    assert (verdict.action, verdict.name) == (REFUSE, "c.test")
    assert "not in the allowed domains" in verdict.reason


def test_allowed_name_at_an_address_pinned_to_another_name_is_refused():
    """d.test is allowed, but the guest learned X for a.test: SNI d.test to X
    is fronting (pinning)."""
    verdict = tcp(AT_X, built_hello("d.test"))
    assert verdict.action == REFUSE and "not pinned to d.test" in verdict.reason
    assert tcp(AT_Y, built_hello("d.test")).action == ACCEPT


def test_cname_chain_names_are_pinned_too():
    """alias.cdn.test -> CNAME edge.cdn.test -> X: the resolver pins X to both."""
    pinned = frozenset({"alias.cdn.test", "edge.cdn.test"})
    assert tcp(pinned, built_hello("edge.cdn.test")).action == ACCEPT
    assert tcp(frozenset({"alias.cdn.test"}), built_hello("edge.cdn.test")).action == REFUSE


def test_http_host_follows_the_same_rule():
    get = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n"
    assert tcp(AT_X, get % b"a.test:80", port=80).action == ACCEPT
    assert tcp(AT_X, get % b"c.test", port=80).action == REFUSE
    assert tcp(AT_X, get % b"d.test", port=80).action == REFUSE


def test_incomplete_first_bytes_wait():
    assert tcp(AT_X, built_hello("a.test")[:40]) is None
    assert tcp(AT_X, b"GET / HTTP/1.1\r\n") is None


@pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH_9.2\r\n", b"\x00\x00\x00\x10junk", b"hello world\r\n\r\n",
                                  built_hello()])
def test_other_protocols_and_no_name_are_refused(data):
    assert tcp(AT_X, data, port=22).action == REFUSE


def test_port_entry_lets_any_protocol_reach_the_pinned_name_on_that_port():
    git = frozenset({"git.test"})
    verdict = tcp(git, b"SSH-2.0-OpenSSH_9.2\r\n", port=22)
    assert verdict.action == ACCEPT and verdict.name == "git.test"
    assert tcp(git, b"", port=22).action == ACCEPT         # decided without payload
    assert tcp(git, b"SSH-2.0-x\r\n", port=2222).action == REFUSE   # another port
    assert tcp(AT_X, b"SSH-2.0-x\r\n", port=22).action == REFUSE    # address not pinned to git.test
    # the port entry does not make git.test a TLS/HTTP name on other ports
    assert tcp(git, built_hello("git.test"), port=443).action == REFUSE


def test_udp_only_with_a_udp_entry_for_that_port_and_a_pinned_name():
    ntp = frozenset({"pool.ntp.test"})
    assert decide.udp(POLICY, ntp, 123).action == ACCEPT
    assert decide.udp(POLICY, ntp, 443).action == REFUSE         # QUIC: no entry
    assert decide.udp(POLICY, AT_X, 123).action == REFUSE        # not pinned to an ntp name
    assert decide.udp(POLICY, frozenset({"git.test"}), 22).action == REFUSE  # a TCP entry


def test_policy_lists_the_ports_the_kernel_must_queue():
    assert POLICY.udp_ports == (123,)
    assert POLICY.tcp_ports() == (22,)
    assert not GuardPolicy(("a.test",)).ports


def test_nothing_pinned_refuses_everything():
    assert tcp(frozenset(), built_hello("a.test")).action == REFUSE
    assert rule.decide_port(POLICY, frozenset(), "tcp", 22) is None
