"""IP sets through pyroute2, in the network namespace of the calling thread.

Per VM (custom policy only): ``vmsan-<id>-allow`` and ``vmsan-<id>-deny``
(hash:net, the policy's CIDR lists, so 1000 CIDRs cost one lookup) and
``vmsan-<id>-dns`` (hash:ip with timeouts and comments: addresses the resolver
learned, each tagged with the name it was learned for).

pyroute2's NetlinkError becomes a KernelError saying what was being done.
"""

import errno
from contextlib import contextmanager

from ..model.errors import KernelError
from ..plan.sets import prune, storable  # noqa: F401  (storable: how a hash:net set holds a list)
from .ipset_wire import IpsetSocket, describe
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.ipset import IPSET_ERR_EXIST
except ImportError:  # the faces name the missing library (missing_required_lib)
    NetlinkError = ()
    IPSET_ERR_EXIST = None

LEARNED_DEFAULT_TIMEOUT = 300


@contextmanager
def _doing(what):
    try:
        yield
    except NetlinkError as exc:
        raise KernelError(exc.code, what, describe(exc.code))


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


class SetManager(object):
    """Open while inside the namespace; the socket stays bound to it."""

    def __init__(self):
        from pyroute2.ipset import IPSet      # ~25 ms of imports (asyncio): only when used
        with _doing("open an ipset socket"):
            self.ipset = IPSet()

    def close(self):
        self.ipset.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def names(self):
        with _doing("list ipsets"):
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
        with _doing("list ipset %s" % name):
            for msg in self.ipset.list(name):
                result.extend(_entries(msg))
        return result

    def networks(self, name):
        """Members of a hash:net set as normalised CIDR strings."""
        # the kernel stores a network by its network address: the text is
        # already the canonical form that inputs.cidr produces
        return {"%s/%d" % (item["address"], item["cidr"] if item["cidr"] is not None else 32)
                for item in self.members(name)}

    def learned(self, name):
        """{address: the name it was learned for} of learned set NAME (empty
        when there is no such set)."""
        if not self.exists(name):
            return {}
        return {m["address"]: m["comment"] for m in self.members(name)}

    def create_net_set(self, name):
        with _doing("create ipset %s" % name):
            self.ipset.create(name, stype="hash:net", exclusive=False)

    def create_learned_set(self, name):
        with _doing("create ipset %s" % name):
            self.ipset.create(name, stype="hash:ip", timeout=LEARNED_DEFAULT_TIMEOUT, comment=True,
                              exclusive=False)

    def replace_networks(self, name, networks):
        """Make hash:net set NAME hold exactly NETWORKS, atomically for readers:
        fill a temporary set (a few list messages, see ipset_wire.fill) and swap it in."""
        temp = name + "~"
        with _doing("fill ipset %s" % name):
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
        with IpsetSocket() as sock:
            if remove and narrow_first:
                sock.delete_many(name, remove)
            if add:
                sock.add_many(name, [(net, None, None) for net in add])
            if remove and not narrow_first:
                sock.delete_many(name, remove)

    def forget(self, name, address):
        """Delete ADDRESS from set NAME; one that is gone already is no error."""
        try:
            self.ipset.delete(name, address, etype="ip")
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, IPSET_ERR_EXIST):
                raise KernelError(exc.code, "forget %s in ipset %s" % (address, name), describe(exc.code))

    def prune_learned(self, name, allows, check_mode=False):
        """The one pruner of learned addresses (the VM's policy change and the
        resolver both use it): forget the members of learned set NAME whose
        name ALLOWS(name) no longer allows. Returns (forgotten [(address,
        name)], kept {address: name})."""
        forget, kept = prune(self.learned(name), allows)
        if not check_mode:
            for address, _learned_for in forget:
                self.forget(name, address)
        return forget, kept

    def destroy(self, name):
        with _doing("destroy ipset %s" % name):
            if self.exists(name):
                self.ipset.destroy(name)
                return True
        return False
