"""Pure parts of ipsets: how a CIDR list is stored in a hash:net set."""

from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.kernel.ipsets import storable


def test_whole_internet_becomes_two_halves():
    assert storable(["0.0.0.0/0", "10.0.0.0/8"]) == ["0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8"]


def test_canonical_input_is_kept_as_it_is():
    cidrs = inputs.cidr_list("allowed_cidrs", "10.1.2.3,192.0.2.0/24,203.0.113.7/32")
    assert storable(cidrs) == list(cidrs)
    # the same text the kernel's members are read back as (address/prefix)
    assert all("/" in c for c in storable(cidrs))
