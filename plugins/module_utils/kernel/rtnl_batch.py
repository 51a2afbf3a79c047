"""Several rtnetlink requests sent in one write, acknowledged together.

Built on pyroute2's protocol layer (its message classes encode the requests);
the user-level IPRoute API costs about a millisecond of Python per call, which
dominates the creation of a VM when made ten times over. A batch is bound to
the network namespace of the thread that opens it.
"""

import errno
import fcntl
import socket
import struct

from ..model import changes as C
from ..model.changes import Change
from ..model.errors import KernelError
from .netconf import forwarding_af_spec
from .netlink_wire import NETLINK_ROUTE, NetlinkSocket
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg
except ImportError:  # the faces name the missing library (missing_required_lib)
    IFF_UP = 0x1


class Batch(object):
    def __init__(self):
        self._requests = []      # (encoded bytes, the Change it makes, tolerated errnos)

    def _add(self, msg, mtype, flags, description, tolerate=(), raw_attrs=b""):
        """DESCRIPTION: the Change the request makes."""
        """RAW_ATTRS: attributes already in wire form, appended to MSG."""
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = len(self._requests) + 1
        msg.encode()
        data = bytes(msg.data)
        if raw_attrs:
            data = struct.pack("I", len(data) + len(raw_attrs)) + data[4:] + raw_attrs
        self._requests.append((data, description, tuple(tolerate)))

    def veth(self, name, peer, peer_netns_fd=None):
        peer_attrs = [("IFLA_IFNAME", peer)]
        if peer_netns_fd is not None:
            peer_attrs.append(("IFLA_NET_NS_FD", peer_netns_fd))
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name),
                        ("IFLA_LINKINFO", {"attrs": [
                            ("IFLA_INFO_KIND", "veth"),
                            ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]})]})]
        self._add(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, Change(C.CREATE_VETH, name, (peer,)))

    def up(self, ifname):
        msg = ifinfmsg()
        msg["index"] = socket.if_nametoindex(ifname)
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        self._add(msg, RTM_NEWLINK, 0, Change(C.LINK_UP, ifname))

    def forwarding(self, ifname, strict_source=False):
        """IPv4 forwarding on for packets arriving on IFNAME (netconf.py);
        STRICT_SOURCE: its reverse-path filter strict too (a TAP)."""
        msg = ifinfmsg()
        msg["index"] = socket.if_nametoindex(ifname)
        self._add(msg, RTM_NEWLINK, 0, Change(C.FORWARDING, ifname),
                  raw_attrs=forwarding_af_spec(strict_source=strict_source))

    def mark_owner(self, ifname, marker):
        """IFNAME's alias (IFLA_IFALIAS) set to MARKER: who owns the device
        (lifecycle/ownership.py reads it back)."""
        msg = ifinfmsg()
        msg["index"] = socket.if_nametoindex(ifname)
        msg["attrs"] = [("IFLA_IFALIAS", marker)]
        self._add(msg, RTM_NEWLINK, 0, Change(C.MARK_OWNER, ifname, (marker,)))

    def address(self, ifname, address, prefixlen, tolerate_existing=False):
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET
        msg["prefixlen"] = prefixlen
        msg["index"] = socket.if_nametoindex(ifname)
        msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        self._add(msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
                  Change(C.ADDRESS, ifname, ("%s/%d" % (address, prefixlen),)),
                  (errno.EEXIST,) if tolerate_existing else ())

    def route(self, dst, prefixlen, gateway, ifname):
        msg = rtmsg()
        msg["family"] = socket.AF_INET
        msg["dst_len"] = prefixlen
        msg["table"] = 254          # main
        msg["proto"] = 4            # static
        msg["scope"] = 0            # universe
        msg["type"] = 1             # unicast
        attrs = [("RTA_GATEWAY", gateway), ("RTA_OIF", socket.if_nametoindex(ifname))]
        if prefixlen:
            attrs.insert(0, ("RTA_DST", dst))
        msg["attrs"] = attrs
        self._add(msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL,
                  Change(C.ROUTE, "%s/%d" % (dst, prefixlen), (gateway,)))

    def unreachable(self, dst, remove=False):
        """An ``unreachable DST/32`` route (main table), or with REMOVE its
        removal (none there is no error). The TAP's network address gets one:
        with a strict reverse-path filter the kernel then learns no
        neighbour from an ARP request that claims it (docs/policies.md)."""
        msg = rtmsg()
        msg["family"] = socket.AF_INET
        msg["dst_len"] = 32
        msg["table"] = 254          # main
        msg["proto"] = 4            # static
        msg["scope"] = 0            # universe
        msg["type"] = RTN_UNREACHABLE
        msg["attrs"] = [("RTA_DST", dst)]
        if remove:
            self._add(msg, RTM_DELROUTE, 0, Change(C.REMOVE_UNREACHABLE, dst + "/32"), (errno.ESRCH, errno.ENOENT))
        else:
            self._add(msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, Change(C.UNREACHABLE, dst + "/32"),
                      (errno.EEXIST,))

    def commit(self):
        """Send everything; return the Changes of the requests that changed
        something (a tolerated error means it was already so). Raises
        KernelError for the first other error, saying which request failed."""
        if not self._requests:
            return []
        with NetlinkSocket(NETLINK_ROUTE, "rtnetlink batch") as sock:
            sock.send(b"".join(data for data, _unused, _unused in self._requests))
            results = sock.acks(len(self._requests), range(1, len(self._requests) + 1))
        changed = []
        for seq, (_unused, change, tolerated) in enumerate(self._requests, 1):
            code = results.get(seq, 0)
            if code == 0:
                changed.append(change)
            elif code not in tolerated:
                raise KernelError(code, str(change))
        return changed


SIOCGIFFLAGS = 0x8913
RTN_UNREACHABLE = 7             # linux/rtnetlink.h


def link_index(ifname):
    """Index of IFNAME in this thread's namespace, or None (an ioctl: cheap)."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def is_up(ifname):
    """Whether IFNAME is administratively up (None if it does not exist)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        result = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, struct.pack("16sH14x", ifname.encode(), 0))
    except OSError:
        return None
    finally:
        sock.close()
    return bool(struct.unpack_from("H", result, 16)[0] & IFF_UP)
