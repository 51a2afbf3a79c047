"""Allowlist entries with a port (model/inputs.domain_entry,
model/domains.split_entry): ``name:port`` and ``name:port/udp``, validated
in the one place both faces use, and matched by name for DNS."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import state
from ansible_collections.vmsan.network.plugins.module_utils.model import domains, inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError


@pytest.mark.parametrize("text,norm", [
    ("git.example.com:22", "git.example.com:22"),
    ("Git.Example.COM.:022", "git.example.com:22"),
    ("git.example.com:22/tcp", "git.example.com:22"),
    ("ntp.example.com:123/udp", "ntp.example.com:123/udp"),
    ("ntp.example.com:123/UDP", "ntp.example.com:123/udp"),
    ("*.example.com:8443", "*.example.com:8443"),
    ("api.example.com", "api.example.com"),
])
def test_entries_are_normalised(text, norm):
    assert inputs.domain_entry("allowed_domains", text) == norm


@pytest.mark.parametrize("text,why", [
    ("git.example.com:", "port must be 1-65535"),
    ("git.example.com:0", "port must be 1-65535"),
    ("git.example.com:65536", "port must be 1-65535"),
    ("git.example.com:ssh", "port must be 1-65535"),
    ("git.example.com:22:23", "port must be 1-65535"),
    ("git.example.com:22/sctp", "unknown protocol"),
    ("git.example.com/udp", "needs a port"),
    (":22", "not a valid domain name"),
    ("bad_-.com:22", "invalid label"),
])
def test_bad_entries_name_the_parameter_and_the_form(text, why):
    with pytest.raises(InputError) as caught:
        inputs.domain_entry("allowed_domains", text)
    assert caught.value.param == "allowed_domains"
    assert why in caught.value.detail
    assert "name:port" in str(caught.value) or "host names" in str(caught.value)


def test_policy_keeps_entries_as_text():
    pol = inputs.policy(allowed_domains="a.example.com,git.example.com:22,ntp.example.com:123/udp")
    assert pol.mode == "custom"
    assert pol.allowed_domains == ("a.example.com", "git.example.com:22", "ntp.example.com:123/udp")
    # and the state file keeps them as they are
    record = VmRecord(id="web", slot=0, netns="vmsan-web", policy=pol)
    assert state.decode(state.encode(record)).policy == pol


def test_split_entry():
    assert domains.split_entry("git.example.com:22") == ("git.example.com", 22, "tcp")
    assert domains.split_entry("ntp.example.com:123/udp") == ("ntp.example.com", 123, "udp")
    assert domains.split_entry("*.example.com") == ("*.example.com", None, None)


def test_dns_matching_goes_by_the_name_of_a_port_entry():
    """``git.example.com:22`` lets the guest resolve git.example.com (and the
    resolver and `vmsan network` keep its learned addresses)."""
    entries = ("git.example.com:22", "*.ntp.example.com:123/udp")
    matcher = domains.Matcher(entries)
    assert matcher.allowed("git.example.com") == "git.example.com"
    assert matcher.allowed("a.ntp.example.com") == "*.ntp.example.com"
    assert matcher.allowed("example.com") is None
    assert domains.allowed("GIT.example.com.", entries) == "git.example.com:22"
    assert domains.allowed("x.example.com", entries) is None
