"""The empty-list rule and the budgets' input (model.inputs), the record's
Limits and their state codec (docs/policies.md, "Empty lists";
docs/contract.md, "Budgets")."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import state
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError
from ansible_collections.vmsan.network.plugins.module_utils.model.records import (
    DEFAULT_CONNECTIONS, DEFAULT_LIMITS, KEEP, DnsLimits, Limits, VmRecord)


@pytest.mark.parametrize("param,value", [
    ("allowed_domains", ""), ("allowed_domains", ","), ("allowed_domains", []), ("allowed_cidrs", " , "),
    ("allowed_cidrs", [""]), ("denied_cidrs", []),
])
def test_an_empty_list_without_a_policy_is_refused(param, value):
    with pytest.raises(InputError) as err:
        inputs.policy(None, **{param: value})
    assert err.value.param == param and "is empty" in err.value.detail


@pytest.mark.parametrize("mode,expected", [("custom", "custom"), ("deny-all", "deny-all"), ("allow-all", "allow-all")])
def test_an_empty_list_with_an_explicit_policy_adds_nothing(mode, expected):
    policy = inputs.policy(mode, allowed_domains=[], allowed_cidrs="", denied_cidrs=",")
    assert policy.mode == expected and not policy.has_lists


def test_lists_left_out_and_full_lists_are_as_before():
    assert inputs.policy(None).mode == "allow-all"
    assert inputs.policy(None, allowed_cidrs="10.0.0.0/8").mode == "custom"
    with pytest.raises(InputError):
        inputs.policy(None, allowed_domains="a.test,")      # an empty item among others


def test_limits_given_left_out_and_default():
    assert inputs.limits() is KEEP
    given = inputs.limits("500", None, 20, "default")
    assert given.connections == 500 and given.dns == DnsLimits(KEEP, 20, None)
    current = Limits(1000, DnsLimits(50, 8, 4))
    merged = inputs.limits(None, "30", None, "default").over(current)
    assert merged == Limits(1000, DnsLimits(30, 8, None))


@pytest.mark.parametrize("param,value", [
    ("limit_connections", "10"), ("limit_connections", "2000000"), ("limit_connections", "lots"),
    ("limit_dns_queries_per_second", "0"), ("limit_dns_upstream_queries", "5000"),
    ("limit_dns_tcp_connections", True),
])
def test_limits_out_of_range_are_refused_naming_the_flag(param, value):
    with pytest.raises(InputError) as err:
        inputs.limits(**{param: value})
    assert err.value.param == param and "default" in err.value.accepted
    assert err.value.render(inputs.label(param, "cli")).startswith("--" + param.replace("_", "-"))


def test_the_codec_writes_budgets_only_when_set_and_reads_them_back():
    plain = VmRecord("a", 1, "vmsan-a")
    data = state.encode(plain)
    assert "dns_limits" not in data and "connection_limit" not in data
    assert state.decode(data).limits == DEFAULT_LIMITS and plain.connection_budget == DEFAULT_CONNECTIONS
    limited = plain.but(limits=Limits(300, DnsLimits(queries_per_second=20)))
    data = state.encode(limited)
    assert data["dns_limits"] == {"queries_per_second": 20} and data["connection_limit"] == 300
    assert state.decode(data) == limited and limited.dns_limits == DnsLimits(20)


@pytest.mark.parametrize("bad", [{"connection_limit": 5}, {"dns_limits": {"queries_per_second": 0}},
                                 {"dns_limits": {"qps": 3}}, {"dns_limits": "lots"}])
def test_a_hand_edited_budget_out_of_range_makes_the_file_unreadable(bad):
    data = dict(state.encode(VmRecord("a", 1, "vmsan-a")), **bad)
    with pytest.raises(ValueError):
        state.decode(data)
