"""A VM's ``created`` stamp tells a VM recreated under the same id apart
(the resolver's VmPolicy.identity): two creates within one second must get
different stamps."""

from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.manager import creation_stamp
from ansible_collections.vmsan.network.plugins.module_utils.resolver.core import VmPolicy
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import decode


def test_the_stamp_is_utc_to_the_microsecond():
    assert creation_stamp(clock=lambda: 1764637323042100123) == "2025-12-02T01:02:03.042100Z"


def test_two_creates_within_one_second_are_two_identities():
    first, again = creation_stamp(clock=lambda: 1000250000000), creation_stamp(clock=lambda: 1000750000000)
    assert first != again

    def policy(created):
        return VmPolicy(decode({"schema": 1, "id": "re", "slot": 3, "netns": "vmsan-re", "created": created,
                                "policy": {"mode": "custom", "allowed_domains": ["a.example.test"]}}))
    assert policy(first).identity != policy(again).identity
