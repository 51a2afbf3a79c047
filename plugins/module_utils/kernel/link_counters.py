"""What the kernel counted on the network devices of the calling thread's
namespace: bytes and packets each way (``/proc/net/dev``), and the IPv6
packets a device dropped on arrival (``/proc/net/dev_snmp6/DEV``,
``Ip6InDiscards``: IPv6 is off on a VM's TAP, so every IPv6 packet the guest
sends is one of those).

Read through ``/proc/thread-self/net``, which shows the network namespace of
the calling thread (``netns.entered``), by field name: the numeric order of
the kernel's IPv6 counters (``IFLA_INET6_STATS``) changed in 6.3, their
names did not. One read of ``dev`` gives every device of the namespace.
"""

from collections import namedtuple

from ..model.errors import KernelError

PROC_NET = "/proc/thread-self/net"

# rx: what the device received (for a TAP: what the guest sent), tx: what it sent
DeviceCounters = namedtuple("DeviceCounters", "rx_bytes rx_packets tx_bytes tx_packets")


def parse_dev(text):
    """{ifname: DeviceCounters} of the text of /proc/net/dev."""
    out = {}
    for line in text.splitlines()[2:]:
        name, colon, rest = line.partition(":")
        if not colon:
            continue
        fields = rest.split()
        if len(fields) < 10:
            continue
        out[name.strip()] = DeviceCounters(int(fields[0]), int(fields[1]), int(fields[8]), int(fields[9]))
    return out


def device_counters():
    """{ifname: DeviceCounters} of every device of this namespace."""
    try:
        with open(PROC_NET + "/dev") as handle:
            return parse_dev(handle.read())
    except OSError as exc:
        raise KernelError(exc.errno, "read the device counters")


def parse_snmp6(text, field="Ip6InDiscards"):
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == field:
            return int(parts[1])
    return None


def ipv6_discards(ifname):
    """IPv6 packets IFNAME dropped on arrival, or None when the device has
    no IPv6 counters (gone, or made without IPv6)."""
    try:
        with open("%s/dev_snmp6/%s" % (PROC_NET, ifname)) as handle:
            return parse_snmp6(handle.read())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KernelError(exc.errno, "read the IPv6 counters of %s" % ifname)
