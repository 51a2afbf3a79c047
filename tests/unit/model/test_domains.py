"""Allowlist matching (docs/contract.md, "Precedence in custom"): exact names, ``*.`` wildcards at
any depth but not the apex, case and trailing dot ignored."""

import itertools

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import domains

PATTERNS = ("api.example.com", "*.github.com", "*.example.test", "x.y.z")


@pytest.mark.parametrize("name,expected", [
    ("api.example.com", "api.example.com"),
    ("API.Example.COM.", "api.example.com"),
    ("www.api.example.com", None),          # exact means exact
    ("example.com", None),
    ("api.github.com", "*.github.com"),
    ("raw.api.github.com", "*.github.com"),  # any depth
    ("github.com", None),                    # not the apex
    ("badgithub.com", None),                 # a suffix is not a subdomain
    ("a.b.example.test", "*.example.test"),
    ("A.B.EXAMPLE.TEST.", "*.example.test"),
    ("example.test", None),
    ("badexample.test", None),
    ("x.y.z", "x.y.z"),
    ("y.z", None),
    ("", None),
])
def test_allowed_and_matcher_agree(name, expected):
    assert domains.allowed(name, PATTERNS) == expected
    assert domains.Matcher(PATTERNS).allowed(name) == expected


def test_matcher_equals_linear_scan_on_many_names():
    labels = ["a", "b", "example", "test", "github", "com"]
    patterns = ["*.example.test", "a.b", "*.com", "github.com", "*.b.example.test"]
    matcher = domains.Matcher(patterns)
    for n in range(1, 5):
        for parts in itertools.product(labels, repeat=n):
            name = ".".join(parts)
            assert bool(matcher.allowed(name)) == bool(domains.allowed(name, patterns)), name


def test_empty_matcher_is_false():
    assert not domains.Matcher(())
    assert domains.Matcher(()).allowed("a.example.test") is None
