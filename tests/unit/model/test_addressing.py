import ipaddress

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import addressing as A


def test_seed_scheme_below_255():
    assert str(A.subnet(0)) == "172.16.0.0/30"
    assert A.host_ip(7) == "172.16.7.1"
    assert A.guest_ip(254) == "172.16.254.2"
    assert A.tap_name(12) == "fhvm12"


def test_extended_slots_stay_in_vm_range_and_never_overlap():
    seen = set()
    for slot in list(range(0, 600)) + list(range(A.MAX_SLOT - 300, A.MAX_SLOT + 1)):
        net = A.subnet(slot)
        assert net.prefixlen == 30 and net.subnet_of(A.VM_RANGE)
        assert net not in seen
        seen.add(net)
    assert str(A.subnet(255)) == "172.16.0.4/30"


def test_slot_bounds():
    with pytest.raises(ValueError):
        A.subnet(A.MAX_SLOT + 1)
    with pytest.raises(ValueError):
        A.subnet(-1)


def test_mac_is_locally_administered_unicast_and_unique():
    macs = {A.guest_mac(s) for s in range(0, 2000)}
    assert len(macs) == 2000
    first = int(A.guest_mac(3).split(":")[0], 16)
    assert first & 0x02 and not first & 0x01


def test_transit_links_are_distinct_and_clear_of_resolver_and_metadata():
    nets = set()
    for slot in (0, 1, 254, 255, A.MAX_SLOT):
        host, vm = A.transit(slot)
        net = ipaddress.ip_network(host + "/30", strict=False)
        assert ipaddress.ip_address(vm) in net and net.subnet_of(A.TRANSIT_RANGE)
        assert ipaddress.ip_address(A.RESOLVER_IP) not in net
        nets.add(net)
    assert len(nets) == 5
    assert ipaddress.ip_address("169.254.169.254") not in A.TRANSIT_RANGE


def test_boot_args_and_firecracker_entry():
    assert A.boot_args(3) == "ip=172.16.3.2::172.16.3.1:255.255.255.252::eth0:off:172.16.3.1"
    assert A.firecracker_interface(3) == {"iface_id": "eth0", "guest_mac": "06:00:ac:10:03:02",
                                          "host_dev_name": "fhvm3"}
