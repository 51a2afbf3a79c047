"""Links, addresses and routes through pyroute2, in the calling thread's
network namespace: reading them (cheap lookups, never a dump that grows with
the number of VMs), and making the Changes that ``plan.devices`` decides
(``Netlink.apply``). pyroute2's NetlinkError becomes a KernelError saying
what was being done."""

import errno
import os
from contextlib import contextmanager

from ..model import changes as C
from ..model.errors import KernelError
from ..plan import devices
from .rtnl_batch import is_up, link_index
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink.exceptions import NetlinkError
except ImportError:  # the faces name the missing library (missing_required_lib)
    NetlinkError = ()


@contextmanager
def _doing(what):
    try:
        yield
    except NetlinkError as exc:
        raise KernelError(exc.code, what)


class Netlink(object):
    """An rtnetlink socket bound to the namespace it was opened in.

    pyroute2's IPRoute (~60 ms of imports, ~1 ms a request) is opened on
    first use: lookups of a link that does not exist (an ioctl), route
    lookups and link deletion (kernel/rtnl_query.py) do without it, so a
    removal never opens one."""

    def __init__(self):
        self._ipr = None
        self._netns = os.stat("/proc/thread-self/ns/net").st_ino

    @property
    def ipr(self):
        if self._ipr is None:
            if os.stat("/proc/thread-self/ns/net").st_ino != self._netns:
                raise RuntimeError("Netlink used outside the network namespace it was opened in")
            from pyroute2.iproute.linux import IPRoute
            with _doing("open an rtnetlink socket"):
                self._ipr = IPRoute()
        return self._ipr

    def close(self):
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading --------------------------------------------------------------
    def link(self, ifname):
        """The RTM_NEWLINK message of IFNAME, or None (one RTM_GETLINK by
        name: a filtered dump would read every link of the namespace)."""
        if self.index(ifname) is None:
            return None         # an ioctl says so; no request needed
        try:
            return self.ipr.link("get", ifname=ifname)[0]
        except (NetlinkError, IndexError):
            return None

    @staticmethod
    def index(ifname):
        return link_index(ifname)

    def addresses(self, index):
        with _doing("read the addresses of link %d" % index):
            return {"%s/%d" % (m.get_attr("IFA_ADDRESS"), m["prefixlen"])
                    for m in self.ipr.get_addr(index=index, family=2)}

    def route_get(self, dst_ip):
        """(gateway, oif, prefsrc) of the route the kernel would use to DST_IP,
        or None: one lookup, however large the routing table."""
        from .rtnl_query import route_get
        return route_get(dst_ip)

    @staticmethod
    def tun_info(msg):
        info = msg.get_attr("IFLA_LINKINFO")
        if not info or info.get_attr("IFLA_INFO_KIND") != "tun":
            return None
        data = info.get_attr("IFLA_INFO_DATA")
        return {"owner": data.get_attr("IFLA_TUN_OWNER") if data else None,
                "multi_queue": data.get_attr("IFLA_TUN_MULTI_QUEUE") if data else None}

    # -- observe and plan -------------------------------------------------------
    def connected_plan(self, ifname, local_ip, prefixlen, peer_ip):
        """The Changes that give IFNAME (if it exists) LOCAL_IP/PREFIXLEN and
        bring it up. Checked by asking the kernel how it would reach PEER_IP
        (directly out of IFNAME from LOCAL_IP); the addresses are read only
        when that answer is wrong."""
        index = link_index(ifname)
        if index is None:
            return []
        up = is_up(ifname)
        if devices.connected_is_right(index, up, self.route_get(peer_ip), local_ip):
            return []
        return devices.connected_plan(ifname, "%s/%d" % (local_ip, prefixlen), up, self.addresses(index))

    def route_plan(self, dst, gateway, probe_ip, ifname):
        """The Changes for a route to DST via GATEWAY on IFNAME, checked by
        asking the kernel which route it would use for PROBE_IP (one lookup,
        not a table dump)."""
        return devices.route_plan(dst, gateway, ifname, link_index(ifname), self.route_get(probe_ip))

    def up_plan(self, ifname):
        return [] if is_up(ifname) in (True, None) else [C.Change(C.LINK_UP, ifname)]

    # -- changing ---------------------------------------------------------------
    def apply(self, changes):
        """Make CHANGES (of ``plan.devices``: addresses, links up, routes)."""
        for change in changes:
            with _doing(str(change)):
                self._make(change)

    def _make(self, change):
        kind, name = change.kind, change.subject
        if kind == C.LINK_UP:
            self.ipr.link("set", index=self._index(name), state="up")
        elif kind in (C.ADDRESS, C.REMOVE_ADDRESS):
            address, prefixlen = change.detail[0].split("/")
            self.ipr.addr("add" if kind == C.ADDRESS else "del", index=self._index(name), address=address,
                          prefixlen=int(prefixlen))
        elif kind == C.ROUTE_DEV:
            gateway, ifname = change.detail
            self.ipr.route("replace", dst=name, gateway=gateway, oif=link_index(ifname))
        else:
            raise ValueError("not a link, address or route change: %s" % change)

    @staticmethod
    def _index(ifname):
        index = link_index(ifname)
        if index is None:
            raise KernelError(errno.ENODEV, "find link %s" % ifname)
        return index

    def create_veth(self, host_name, peer_name, peer_netns_fd):
        peer = {"ifname": peer_name}
        if peer_netns_fd is not None:
            peer["net_ns_fd"] = peer_netns_fd
        with _doing("create veth %s/%s" % (host_name, peer_name)):
            self.ipr.link("add", ifname=host_name, kind="veth", peer=peer)

    def delete_link(self, ifname):
        """Delete IFNAME; returns once the kernel has unlisted it (without
        waiting for it to free the device: rtnl_query.delete_link)."""
        index = self.index(ifname)
        if index is None:
            return False
        from .rtnl_query import delete_link
        try:
            delete_link(index, ifname)
        except KernelError:
            raise
        except OSError as exc:
            raise KernelError(exc.errno, "delete link %s" % ifname)
        return True

    def delete_address(self, ifname, cidr):
        with _doing("remove address %s from %s" % (cidr, ifname)):
            address, prefixlen = cidr.split("/")
            self.ipr.addr("del", index=self._index(ifname), address=address, prefixlen=int(prefixlen))
