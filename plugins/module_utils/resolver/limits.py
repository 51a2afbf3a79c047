"""What one VM may take of the shared resolver (pure: numbers and clocks
in, verdicts out; the daemon keeps one ``Meter`` per VM).

* ``TokenBucket``: queries per second, checked for every datagram and TCP
  message before anything of it is read; beyond it the guest gets REFUSED;
* ``Budget``: the numbers of one VM (queries per second, upstream queries
  in flight, TCP connections), read from its state record by
  ``budget_from_record`` (the only code that knows where they live there)
  or the daemon-wide defaults (``vmsan resolver --vm-...`` flags);
* ``LogBudget`` (telemetry.budget, shared with the event log): log lines per VM and window, with one summary line of what
  was held back.
"""

import collections
import dataclasses
from collections import namedtuple

from ..model.inputs import RESOLVER_BUDGETS
# the log budget lives with the event log's; re-exported for the resolver
from ..telemetry.budget import LogBudget, summary_text  # noqa: F401  pylint: disable=unused-import

# Defaults (model.inputs.RESOLVER_BUDGETS): far above what a normal guest
# asks (a busy build VM resolves a few hundred names a second at its peak, a
# web page a few dozen at once), and low enough that one guest at the limit
# costs the others little (docs/domain-policies.md, "Budgets").
Budget = namedtuple("Budget", "queries_per_second upstream_queries tcp_connections")
BUDGET_RANGES = collections.OrderedDict((field, RESOLVER_BUDGETS["vm_" + field][1:3]) for field in Budget._fields)
DEFAULT_BUDGET = Budget(*(RESOLVER_BUDGETS["vm_" + field][3] for field in Budget._fields))


def budget_from_flags(values):
    """The daemon-wide Budget from model.inputs.resolver_budget's dict."""
    return Budget(*(values["vm_" + field] for field in Budget._fields))


# Where a VM's own numbers live in its state record (written by the faces;
# absent today, when the daemon-wide defaults apply):
#     {"id": ..., "dns_limits": {"queries_per_second": 200,
#                                "upstream_queries": 32,
#                                "tcp_connections": 4}, ...}
# Any field may be left out (its default applies).
RECORD_FIELD = "dns_limits"


def budget_from_record(record, defaults=DEFAULT_BUDGET):
    """(Budget, [problems]) of the VM whose state record is RECORD (a dict,
    or an object with a ``dns_limits`` attribute): its own numbers where it
    has valid ones, DEFAULTS for the rest. A value out of range or not a
    whole number is left out and named in the problems (the faces validate
    what they write; this only keeps a hand-edited file from widening a
    budget)."""
    if isinstance(record, dict):
        given = record.get(RECORD_FIELD)
    else:
        given = getattr(record, RECORD_FIELD, None)
    if given is None:
        return defaults, []
    if dataclasses.is_dataclass(given):
        given = dataclasses.asdict(given)
    elif hasattr(given, "_asdict"):
        given = given._asdict()
    elif not isinstance(given, dict):
        return defaults, ["%s is not a mapping: %r" % (RECORD_FIELD, given)]
    values, problems = defaults._asdict(), []
    for field, (low, high) in BUDGET_RANGES.items():
        value = given.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append("%s.%s=%r is not a whole number in %d-%d" % (RECORD_FIELD, field, value, low, high))
            continue
        values[field] = value
    return Budget(**values), problems


class TokenBucket(object):
    """RATE tokens a second, at most BURST saved up; ``take(now)`` spends one
    if there is one. Starts full."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate, burst=None, now=0.0):
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self.tokens, self.stamp = self.burst, now

    def take(self, now):
        tokens = self.tokens
        if now > self.stamp:
            tokens += (now - self.stamp) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True

    def charge(self, tokens):
        """Take TOKENS more (work that cost more than a query: the bucket
        may go below zero, and the queries after it wait longer)."""
        self.tokens -= tokens

    def set_rate(self, rate, burst=None):
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self.tokens = min(self.tokens, self.burst)
