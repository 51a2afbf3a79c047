"""IPv4 forwarding through netlink instead of /proc/sys.

Reading ``net.ipv4.ip_forward`` or a device's ``forwarding`` through /proc
costs a lookup that grows with the number of namespaces on the machine (see
sysctl.py); the kernel gives the same switches over rtnetlink:

* read: RTM_GETNETCONF for one device, or for the whole namespace
  (NETCONFA_IFINDEX_ALL, which is what ``net.ipv4.ip_forward`` writes);
* set, per device: RTM_NEWLINK with IFLA_AF_SPEC / AF_INET / IFLA_INET_CONF
  holding the one entry to change (``Batch.forwarding``).

Forwarding is decided per input device (the kernel's IN_DEV_FORWARD), so a
VM's namespace forwards between its TAP and its veth with both devices'
switches on and the namespace-wide one left alone.
"""

import errno
import socket
import struct

from ..model.errors import KernelError
from .netlink_wire import NETLINK_ROUTE, NLMSG_ERROR, NetlinkSocket, error_of
from .netlink_wire import attr as _attr
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink import NLM_F_REQUEST, nlmsg
    from pyroute2.netlink.rtnl import RTM_GETNETCONF, RTM_NEWNETCONF
except ImportError:  # the faces name the missing library (missing_required_lib)
    nlmsg = object

# linux/netconf.h and linux/if_link.h, which pyroute2 0.9.7 does not name:
# the "every device" index of RTM_GETNETCONF, the attribute kinds of
# IFLA_AF_SPEC / AF_INET / IFLA_INET_CONF, and ipv4_devconf's forwarding entry
NETCONFA_IFINDEX_ALL = -1
IFLA_AF_SPEC = 26
IFLA_INET_CONF = 1
IPV4_DEVCONF_FORWARDING = 1      # index into ipv4_devconf, counted from 1
IPV4_DEVCONF_RP_FILTER = 8
RP_FILTER_STRICT = 1


class netconfmsg(nlmsg):
    """struct netconfmsg: one family byte, padded to the attribute alignment."""
    fields = (("family", "B"), ("__pad", "3x"))
    nla_map = (("NETCONFA_UNSPEC", "none"),
               ("NETCONFA_IFINDEX", "int32"),
               ("NETCONFA_FORWARDING", "int32"),
               ("NETCONFA_RP_FILTER", "int32"),
               ("NETCONFA_MC_FORWARDING", "int32"),
               ("NETCONFA_PROXY_NEIGH", "int32"),
               ("NETCONFA_IGNORE_ROUTES_WITH_LINKDOWN", "int32"),
               ("NETCONFA_INPUT", "int32"),
               ("NETCONFA_BC_FORWARDING", "int32"))


def forwarding(ifindex=NETCONFA_IFINDEX_ALL):
    """IPv4 forwarding of device IFINDEX (default: the namespace's
    ``net.ipv4.ip_forward``) in the calling thread's namespace: True or
    False, or None when the device does not exist."""
    conf = device_conf(ifindex)
    return None if conf is None else bool(conf.get_attr("NETCONFA_FORWARDING"))


def device_conf(ifindex=NETCONFA_IFINDEX_ALL):
    """The RTM_NEWNETCONF answer (decoded netconfmsg) for IFINDEX, or None
    when the device does not exist."""
    request = netconfmsg()
    request["family"] = socket.AF_INET
    request["attrs"] = [("NETCONFA_IFINDEX", ifindex)]
    request["header"]["type"] = RTM_GETNETCONF
    request["header"]["flags"] = NLM_F_REQUEST
    request["header"]["sequence_number"] = 1
    request.encode()
    with NetlinkSocket(NETLINK_ROUTE, "read IPv4 forwarding (RTM_GETNETCONF)") as sock:
        mtype, message = sock.exchange(request.data, 1)
    if mtype == NLMSG_ERROR:
        code = error_of(message)
        if code in (errno.ENODEV, errno.EINVAL):     # no such device
            return None
        raise KernelError(code, "read IPv4 forwarding of ifindex %d (RTM_GETNETCONF)" % ifindex)
    if mtype != RTM_NEWNETCONF:
        raise KernelError(None, "read IPv4 forwarding of ifindex %d" % ifindex,
                          "answered with message type %d" % mtype)
    reply = netconfmsg(message)
    reply.decode()
    return reply


def forwarding_af_spec(on=True, strict_source=False):
    """The IFLA_AF_SPEC attribute that sets one device's IPv4 forwarding
    (and nothing else of its configuration). STRICT_SOURCE: also its
    reverse-path filter to strict, so that the device accepts packets, and
    ARP requests, only from senders routed back through it (a TAP: the
    guest; docs/policies.md, "ARP and neighbour entries")."""
    entry = _attr(IPV4_DEVCONF_FORWARDING, struct.pack("I", 1 if on else 0))
    if strict_source:
        entry += _attr(IPV4_DEVCONF_RP_FILTER, struct.pack("I", RP_FILTER_STRICT))
    return _attr(IFLA_AF_SPEC, _attr(socket.AF_INET, _attr(IFLA_INET_CONF, entry)))
