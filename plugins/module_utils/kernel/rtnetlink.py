"""Links, addresses and routes through pyroute2, in the calling thread's
network namespace. Every ``ensure_*`` compares with the kernel first and returns
the list of changes it made (or would make, in check mode)."""

import os

from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink.exceptions import NetlinkError
    HAS_PYROUTE2 = True
except Exception:  # pragma: no cover - depends on the target
    HAS_PYROUTE2 = False

IFF_UP = 0x1


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

    # -- queries ------------------------------------------------------------
    def link(self, ifname):
        """The RTM_NEWLINK message of IFNAME, or None (one RTM_GETLINK by
        name: a filtered dump would read every link of the namespace)."""
        if self.index(ifname) is None:
            return None         # an ioctl says so; no request needed
        try:
            return self.ipr.link("get", ifname=ifname)[0]
        except (NetlinkError, IndexError):
            return None

    def index(self, ifname):
        from .rtnl_batch import link_index
        return link_index(ifname)

    def addresses(self, index):
        return {"%s/%d" % (m.get_attr("IFA_ADDRESS"), m["prefixlen"])
                for m in self.ipr.get_addr(index=index, family=2)}

    def route_get(self, dst_ip):
        """(gateway, oif, prefsrc) of the route the kernel would use to DST_IP,
        or None: one lookup, however large the routing table."""
        from .rtnl_query import route_get
        return route_get(dst_ip)

    def ensure_connected(self, ifname, local_ip, prefixlen, peer_ip, check_mode=False):
        """IFNAME holds LOCAL_IP/PREFIXLEN and is up. Checked by asking the
        kernel how it would reach PEER_IP (directly out of IFNAME from
        LOCAL_IP), instead of dumping every address of the namespace, which
        grows with the number of VMs on the host."""
        from .rtnl_batch import is_up, link_index
        index = link_index(ifname)
        if index is None:
            return []
        up = is_up(ifname)
        if up and self.route_get(peer_ip) == (None, index, local_ip):
            return []
        changes = self.ensure_address(ifname, "%s/%d" % (local_ip, prefixlen), check_mode)
        if not up:
            changes += self.ensure_up(ifname, check_mode)
        return changes

    @staticmethod
    def tun_info(msg):
        info = msg.get_attr("IFLA_LINKINFO")
        if not info or info.get_attr("IFLA_INFO_KIND") != "tun":
            return None
        data = info.get_attr("IFLA_INFO_DATA")
        return {"owner": data.get_attr("IFLA_TUN_OWNER") if data else None,
                "multi_queue": data.get_attr("IFLA_TUN_MULTI_QUEUE") if data else None}

    # -- changes ------------------------------------------------------------
    def ensure_up(self, ifname, check_mode=False):
        msg = self.link(ifname)
        if msg is None or msg["flags"] & IFF_UP:
            return []
        if not check_mode:
            self.ipr.link("set", index=msg["index"], state="up")
        return ["link %s up" % ifname]

    def ensure_address(self, ifname, cidr, check_mode=False, exclusive=True):
        """IFNAME holds the IPv4 address CIDR (and, if EXCLUSIVE, no other)."""
        index = self.index(ifname)
        if index is None:
            return ["address %s on %s" % (cidr, ifname)] if check_mode else []
        have = self.addresses(index)
        changes = []
        for stale in sorted(have - {cidr}) if exclusive else ():
            changes.append("remove address %s from %s" % (stale, ifname))
            if not check_mode:
                addr, plen = stale.split("/")
                self.ipr.addr("del", index=index, address=addr, prefixlen=int(plen))
        if cidr not in have:
            changes.append("address %s on %s" % (cidr, ifname))
            if not check_mode:
                addr, plen = cidr.split("/")
                self.ipr.addr("add", index=index, address=addr, prefixlen=int(plen))
        return changes

    def ensure_route(self, dst, gateway, probe_ip, ifname, check_mode=False):
        """A route to DST via GATEWAY (on IFNAME); checked by asking the kernel
        which route it would use for PROBE_IP (one lookup, not a table dump)."""
        from .rtnl_batch import link_index
        index = link_index(ifname)
        current = self.route_get(probe_ip)
        if index is not None and current is not None and current[:2] == (gateway, index):
            return []
        if not check_mode:
            kwargs = {"dst": dst, "gateway": gateway, "oif": index}
            try:
                self.ipr.route("replace", **kwargs)
            except NetlinkError as exc:
                raise OSError(exc.code, "route %s via %s: %s" % (dst, gateway, os.strerror(exc.code)))
        return ["route %s via %s dev %s" % (dst, gateway, ifname)]

    def create_veth(self, host_name, peer_name, peer_netns_fd):
        peer = {"ifname": peer_name}
        if peer_netns_fd is not None:
            peer["net_ns_fd"] = peer_netns_fd
        self.ipr.link("add", ifname=host_name, kind="veth", peer=peer)

    def delete_link(self, ifname):
        """Delete IFNAME; returns once the kernel has unlisted it (without
        waiting for it to free the device: rtnl_query.delete_link)."""
        index = self.index(ifname)
        if index is None:
            return False
        from .rtnl_query import delete_link
        delete_link(index, ifname)
        return True
