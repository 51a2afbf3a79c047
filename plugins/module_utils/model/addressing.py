"""Addresses and names of a VM slot (docs/contract.md, "Addressing"). Pure functions.

Slots 0..254 follow the seed's scheme exactly: subnet ``172.16.{s}.0/30``.
From slot 255 on, the scheme packs further /30s into the unused rest of each
``172.16.B.0/24`` (offsets 4, 8, ... 252), so every VM address stays inside
172.16.0.0/16 and slots below 255 are unchanged.

Transit links (veth pair between the host namespace and a VM's namespace) use
one /30 each from 169.254.64.0/18: link-local, so never routed beyond the host,
and clear of the well-known metadata addresses (169.254.169.254, 169.254.170.2).
The first /30 of that range is reserved for the host resolver's address.
"""

import ipaddress

SEED_SLOTS = 255                     # slots 0..254 use the seed's scheme
EXTRA_PER_OCTET = 63                 # /30s at offsets 4..252 of each /24
# The VM range would hold 255 + 256*63 slots; the transit range (a /18, 4096
# /30s, the first reserved for the resolver) is the tighter bound.
MAX_SLOT = 4094

VM_RANGE = ipaddress.IPv4Network("172.16.0.0/16")
TRANSIT_RANGE = ipaddress.IPv4Network("169.254.64.0/18")
RESOLVER_IP = "169.254.64.1"
RESOLVER_PORT = 53
LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")

_TRANSIT_BASE = int(TRANSIT_RANGE.network_address)


def check_slot(slot):
    if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot <= MAX_SLOT:
        raise ValueError("slot must be an integer from 0 to %d" % MAX_SLOT)
    return slot


def subnet(slot):
    check_slot(slot)
    if slot < SEED_SLOTS:
        return ipaddress.IPv4Network("172.16.%d.0/30" % slot)
    extra = slot - SEED_SLOTS
    octet, index = divmod(extra, EXTRA_PER_OCTET)
    return ipaddress.IPv4Network("172.16.%d.%d/30" % (octet, 4 * (index + 1)))


def host_ip(slot):
    return str(subnet(slot).network_address + 1)


def guest_ip(slot):
    return str(subnet(slot).network_address + 2)


def tap_name(slot):
    return "fhvm%d" % check_slot(slot)


def guest_mac(slot):
    """Locally administered unicast MAC (first octet 0x06) that spells the guest
    IPv4 address, so it is unique per slot and readable in captures."""
    octets = [int(x) for x in guest_ip(slot).split(".")]
    return "06:00:%02x:%02x:%02x:%02x" % tuple(octets)


def transit(slot):
    """(host side, VM side) addresses of the slot's transit /30, as strings."""
    base = _TRANSIT_BASE + 4 * (check_slot(slot) + 1)
    return (str(ipaddress.IPv4Address(base + 1)), str(ipaddress.IPv4Address(base + 2)))


def veth_names(slot):
    """(host side, VM side) veth names; both are created in the host namespace
    first, so both must be unique there."""
    return ("vmsan-h%d" % slot, "vmsan-g%d" % slot)


def netns_name(vm_id):
    return "vmsan-%s" % vm_id


def boot_args(slot):
    """The guest kernel's ``ip=`` argument (nfsroot syntax): address, no server,
    gateway, netmask, no hostname, eth0, no autoconf, DNS = the host side."""
    return "ip=%s::%s:255.255.255.252::eth0:off:%s" % (guest_ip(slot), host_ip(slot), host_ip(slot))


def firecracker_interface(slot):
    """A Firecracker ``network-interfaces`` entry for the VM's TAP."""
    return {"iface_id": "eth0", "guest_mac": guest_mac(slot), "host_dev_name": tap_name(slot)}
