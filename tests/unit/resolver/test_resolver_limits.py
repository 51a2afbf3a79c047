"""Budgets of one VM (resolver/limits.py) and the bounded caches
(resolver/cache.py): pure, with explicit clocks."""

import dataclasses
from collections import namedtuple

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError
from ansible_collections.vmsan.network.plugins.module_utils.resolver import cache, limits


# -- the token bucket -----------------------------------------------------------------

def test_bucket_gives_its_burst_then_its_rate():
    bucket = limits.TokenBucket(10, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(50)) == 10
    assert not bucket.take(0.05)
    assert bucket.take(0.1)                 # one token a tenth of a second
    assert sum(bucket.take(t / 1000.0) for t in range(200, 1200)) == 10      # 10 in a second
    assert sum(bucket.take(100.0) for _ in range(50)) == 10                  # saved up: never beyond the burst


def test_bucket_rate_change_keeps_what_is_left_within_the_new_burst():
    bucket = limits.TokenBucket(100, now=0.0)
    bucket.set_rate(5)
    assert sum(bucket.take(0.0) for _ in range(50)) == 5


# -- budgets from the state record ------------------------------------------------------

def test_budget_defaults_when_the_record_has_none():
    assert limits.budget_from_record({"id": "a"}) == (limits.DEFAULT_BUDGET, [])
    assert limits.DEFAULT_BUDGET == limits.Budget(1000, 128, 16)


def test_budget_fields_of_the_record_override_the_defaults():
    record = {"id": "a", "dns_limits": {"queries_per_second": 50, "tcp_connections": 2}}
    assert limits.budget_from_record(record) == (limits.Budget(50, 128, 2), [])


def test_budget_reads_an_object_record_too():
    @dataclasses.dataclass(frozen=True)
    class Limits:
        queries_per_second: int = None
        upstream_queries: int = 8
        tcp_connections: int = None

    Record = namedtuple("Record", "id dns_limits")
    assert limits.budget_from_record(Record("a", Limits()))[0] == limits.Budget(1000, 8, 16)
    assert limits.budget_from_record(Record("a", None))[0] == limits.DEFAULT_BUDGET


@pytest.mark.parametrize("value", [0, -1, 10 ** 7, "50", 1.5, True])
def test_a_bad_budget_in_the_record_is_named_and_never_applied(value):
    budget, problems = limits.budget_from_record({"dns_limits": {"queries_per_second": value}})
    assert budget == limits.DEFAULT_BUDGET
    assert len(problems) == 1 and "dns_limits.queries_per_second" in problems[0]


def test_a_record_field_that_is_no_mapping_is_named():
    budget, problems = limits.budget_from_record({"dns_limits": "lots"})
    assert budget == limits.DEFAULT_BUDGET and problems


def test_flags_give_the_daemon_defaults():
    values = inputs.resolver_budget(vm_queries_per_second="200", vm_tcp_connections=4)
    assert limits.budget_from_flags(values) == limits.Budget(200, 128, 4)


@pytest.mark.parametrize("param,value", [("vm_queries_per_second", "0"), ("vm_upstream_queries", "lots"),
                                         ("vm_tcp_connections", "1.5"), ("vm_queries_per_second", "1000001"),
                                         ("vm_tcp_connections", True)])
def test_bad_budget_flags_name_the_parameter(param, value):
    with pytest.raises(InputError) as err:
        inputs.resolver_budget(**{param: value})
    assert err.value.param == param and "accepted: %d-%d" % inputs.RESOLVER_BUDGETS[param][1:3] in str(err.value)
    assert inputs.label(param, "cli") == "--" + param.replace("_", "-")


# -- the log budget ---------------------------------------------------------------------

def test_log_budget_lets_lines_through_then_counts_and_sums_up_once():
    budget = limits.LogBudget(lines=3, window=10.0)
    assert [budget.allow("refused", t) for t in (0, 1, 2)] == [True, True, True]
    assert not budget.allow("refused", 3) and not budget.allow("malformed", 4) and not budget.allow("refused", 5)
    assert budget.summary(9.0) is None                      # the window is not over
    assert budget.summary(10.0) == {"refused": 2, "malformed": 1}
    assert budget.summary(10.5) is None                     # once
    assert budget.allow("refused", 11.0)                    # a new window


def test_log_budget_counts_until_its_summary_is_taken():
    budget = limits.LogBudget(lines=1, window=10.0)
    assert budget.allow("x", 0.0) and not budget.allow("x", 1.0)
    assert not budget.allow("x", 15.0)                      # the summary comes first
    assert budget.summary(15.0) == {"x": 2}
    assert budget.allow("x", 15.5)


def test_summary_text():
    assert limits.summary_text({"refused": 3, "malformed": 9}) == "9 malformed, 3 refused"


# -- caches bounded in bytes --------------------------------------------------------------

class Item(object):
    def __init__(self, expires, size=100, tail=b"x" * 50):
        self.expires, self.size, self.tail = expires, size, tail


def test_answer_cache_stays_within_its_bytes_dropping_the_oldest():
    answers = cache.AnswerCache(max_bytes=1000, size_of=lambda item: item.size)
    for i in range(25):
        answers.put(i, Item(100.0), 0.0)
    assert answers.bytes <= 1000 and len(answers) == 10
    assert answers.get(24, 1.0) is not None and answers.get(0, 1.0) is None
    assert not answers.put("huge", Item(100.0, size=5000), 0.0)
    assert not answers.put("gone", Item(1.0), 2.0)           # expired already


def test_answer_cache_drops_expired_entries():
    answers = cache.AnswerCache(max_bytes=300, size_of=lambda item: item.size)
    answers.put("old", Item(5.0), 0.0)
    answers.put("keep", Item(100.0), 0.0)
    answers.put("soon", Item(6.0), 0.0)
    answers.expire(10.0)                                     # old and soon have expired
    assert answers.get("keep", 10.0) is not None and len(answers) == 1 and answers.bytes == 100
    assert answers.get("keep", 200.0) is None and len(answers) == 0 and answers.bytes == 0


def test_hot_caches_share_their_bytes_and_each_stays_within_its_own():
    shared = cache.SharedBytes(limit=6 * cache.hot_size(b"k00", Item(0)))
    first, second = cache.HotCache(shared, limit=4 * cache.hot_size(b"k00", Item(0))), cache.HotCache(shared)
    for i in range(10):
        first.put(b"k%02d" % i, Item(100.0))
    assert len(first) == 4 and list(first) == [b"k06", b"k07", b"k08", b"k09"]     # the oldest went
    for i in range(10):
        second.put(b"s%02d" % i, Item(100.0))
    assert len(second) == 2 and shared.used == first.bytes + second.bytes <= shared.limit
    first.clear()
    assert shared.used == second.bytes
    second.expire(200.0)
    assert shared.used == 0 and not second


def test_a_hot_cache_that_has_nothing_to_give_back_keeps_nothing_more():
    shared = cache.SharedBytes(limit=2 * cache.hot_size(b"k0", Item(0)))
    full, empty = cache.HotCache(shared), cache.HotCache(shared)
    full.put(b"k0", Item(100.0))
    full.put(b"k1", Item(100.0))
    assert not empty.put(b"e0", Item(100.0)) and not empty and shared.used == full.bytes


def test_padding_cannot_grow_a_hot_cache():
    from dnslib import EDNS0, EDNSOption, DNSRecord
    from ansible_collections.vmsan.network.plugins.module_utils.resolver import wire
    hot = cache.HotCache(cache.SharedBytes())
    for i in range(1000):
        record = DNSRecord.question("a.example.test")
        record.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(12, bytes([i % 256]) * (i % 400))]))
        hot.put(wire.read_query(bytes(record.pack())).hot_key, Item(100.0))
    assert len(hot) == 1


def test_expiry_a_slice_at_a_time_reaches_every_entry():
    answers = cache.AnswerCache(size_of=lambda item: item.size)
    hot = cache.HotCache(cache.SharedBytes(), limit=10 << 20)
    for i in range(5000):
        answers.put(i, Item(10.0 if i % 2 else 1000.0), 0.0)
        hot.put(b"k%d" % i, Item(10.0 if i % 2 else 1000.0))
    for _step in range(3):
        answers.expire_some(20.0, step=2000)
        hot.expire_some(20.0, step=2000)
    assert len(answers) == 2500 and len(hot) == 2500 and hot.shared.used == hot.bytes
