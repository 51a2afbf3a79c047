"""IP sets through pyroute2, in the network namespace of the calling thread.

Per VM (custom policy only): ``vmsan-<id>-allow`` and ``vmsan-<id>-deny``
(hash:net, the policy's CIDR lists, so 1000 CIDRs cost one lookup) and
``vmsan-<id>-dns`` (hash:ip with timeouts and comments: addresses the resolver
learned, each tagged with the name it was learned for).
"""

import ipaddress

from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink.exceptions import NetlinkError
    HAS_PYROUTE2 = True
except Exception:  # pragma: no cover - depends on the target
    HAS_PYROUTE2 = False

IPSET_ERR_EXIST = 4097          # "set with the same name already exists"
LEARNED_DEFAULT_TIMEOUT = 300


def _entries(msg):
    adt = msg.get_attr("IPSET_ATTR_ADT")
    if not adt:
        return []
    result = []
    for data in adt.get_attrs("IPSET_ATTR_DATA"):
        addr = data.get_attr("IPSET_ATTR_IP_FROM").get_attr("IPSET_ATTR_IPADDR_IPV4")
        cidr = data.get_attr("IPSET_ATTR_CIDR")
        item = {"address": addr, "cidr": cidr,
                "timeout": data.get_attr("IPSET_ATTR_TIMEOUT"),
                "comment": data.get_attr("IPSET_ATTR_COMMENT")}
        result.append(item)
    return result


def storable(networks):
    """NETWORKS as a hash:net set can hold them: it cannot hold /0, which
    becomes its two /1 halves."""
    out = []
    for net in networks:        # canonical CIDR text (inputs.cidr)
        if net.endswith("/0"):
            out.extend(str(half) for half in ipaddress.IPv4Network(net).subnets(1))
        else:
            out.append(net)
    return out


class SetManager(object):
    """Open while inside the namespace; the socket stays bound to it."""

    def __init__(self):
        from pyroute2.ipset import IPSet      # ~25 ms of imports (asyncio): only when used
        self.ipset = IPSet()

    def close(self):
        self.ipset.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def names(self):
        return {msg.get_attr("IPSET_ATTR_SETNAME") for msg in self.ipset.list()}

    def exists(self, name):
        try:
            list(self.ipset.headers(name))   # a generator: errors come when read
            return True
        except NetlinkError:
            return False

    def members(self, name):
        """Entries of set NAME as [{'address', 'cidr', 'timeout', 'comment'}]."""
        result = []
        for msg in self.ipset.list(name):
            result.extend(_entries(msg))
        return result

    def networks(self, name):
        """Members of a hash:net set as normalised CIDR strings."""
        # the kernel stores a network by its network address: the text is
        # already the canonical form that inputs.cidr produces
        return {"%s/%d" % (item["address"], item["cidr"] if item["cidr"] is not None else 32)
                for item in self.members(name)}

    def create_net_set(self, name):
        self.ipset.create(name, stype="hash:net", exclusive=False)

    def create_learned_set(self, name):
        self.ipset.create(name, stype="hash:ip", timeout=LEARNED_DEFAULT_TIMEOUT, comment=True, exclusive=False)

    def replace_networks(self, name, networks):
        """Make hash:net set NAME hold exactly NETWORKS, atomically for readers:
        fill a temporary set (a few list messages, see ipset_wire.fill) and swap it in."""
        from .ipset_wire import IpsetSocket
        temp = name + "~"
        if self.exists(temp):
            self.ipset.destroy(temp)
        self.ipset.create(temp, stype="hash:net")
        try:
            with IpsetSocket() as sock:
                sock.fill(temp, storable(networks))
            if not self.exists(name):
                self.ipset.rename(temp, name)
                return
            self.ipset.swap(temp, name)
        finally:
            if self.exists(temp):
                self.ipset.destroy(temp)

    def edit_networks(self, name, remove, add, narrow_first=True):
        """Change hash:net set NAME in place: delete REMOVE and add ADD (CIDR
        lists, each already storable). A list that changes by a few entries
        costs a few messages instead of refilling every member. The order
        says what a packet in between meets: NARROW_FIRST deletes before it
        adds (for an allow list: never more open than old or new), else it
        adds first (for a deny list: never less closed)."""
        from .ipset_wire import IpsetSocket
        with IpsetSocket() as sock:
            if remove and narrow_first:
                sock.delete_many(name, remove)
            if add:
                sock.add_many(name, [(net, None, None) for net in add])
            if remove and not narrow_first:
                sock.delete_many(name, remove)

    def forget(self, name, address):
        try:
            self.ipset.delete(name, address, etype="ip")
        except NetlinkError:
            pass

    def destroy(self, name):
        if self.exists(name):
            self.ipset.destroy(name)
            return True
        return False
