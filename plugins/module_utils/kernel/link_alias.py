"""Links' aliases (IFLA_IFALIAS), read without pyroute2's IPRoute: one
RTM_GETLINK for one link, or one dump of the namespace's links (names and
aliases only). vmsan writes an owner marker there (``Batch.mark_owner``);
lifecycle/ownership.py says what it means. Both read the calling thread's
network namespace.
"""

import socket
import struct

from ..model.errors import KernelError
from .netlink_wire import NETLINK_ROUTE, NLMSG_ERROR, NetlinkSocket, error_of, messages
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE
    from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg    # encodes the requests only
except ImportError:  # the faces name the missing library (missing_required_lib)
    pass


def _request(flags, index=0):
    msg = ifinfmsg()
    msg["index"] = index
    msg["header"]["type"] = RTM_GETLINK
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = 1
    msg.encode()
    return bytes(msg.data)


IFLA_IFNAME = 3
IFLA_IFALIAS = 20
_IFINFOMSG_END = 16 + 16        # nlmsghdr, struct ifinfomsg
_ATTR = struct.Struct("=HH")


def _decoded(data):
    """(name, alias) of one RTM_NEWLINK message, read from its top-level
    attributes by hand: pyroute2's decoder costs ~0.1 ms a link, which a
    dump of a thousand links would pay a thousand times."""
    name = alias_text = None
    pos = _IFINFOMSG_END
    while pos + 4 <= len(data):
        length, kind = _ATTR.unpack_from(data, pos)
        if length < 4:
            break
        kind &= 0x3FFF
        if kind in (IFLA_IFNAME, IFLA_IFALIAS):
            text = data[pos + 4:pos + length].split(b"\0", 1)[0].decode("utf-8", "replace")
            if kind == IFLA_IFNAME:
                name = text
            else:
                alias_text = text
        pos += (length + 3) & ~3
    return name, alias_text


def alias(ifname):
    """IFNAME's alias ('' when it has none), or None when there is no such link."""
    try:
        index = socket.if_nametoindex(ifname)
    except OSError:
        return None
    with NetlinkSocket(NETLINK_ROUTE, "read the alias of %s" % ifname) as sock:
        mtype, message = sock.exchange(_request(NLM_F_REQUEST, index), 1)
    if mtype == NLMSG_ERROR:
        code = error_of(message)
        if code == 19:      # ENODEV: gone meanwhile
            return None
        raise KernelError(code, "read the alias of %s" % ifname)
    return _decoded(message)[1] or ""


def links():
    """{name: alias ('' for none)} of every link of this namespace."""
    found = {}
    with NetlinkSocket(NETLINK_ROUTE, "list the links") as sock:
        sock.send(_request(NLM_F_REQUEST | NLM_F_DUMP))
        while True:
            data = sock.recv()
            for mtype, seq, pos, length in messages(data):
                if seq != 1:
                    continue
                if mtype == NLMSG_DONE:
                    return found
                if mtype == NLMSG_ERROR:
                    raise KernelError(error_of(data[pos:pos + length]), "list the links")
                if mtype == RTM_NEWLINK:
                    name, text = _decoded(data[pos:pos + length])
                    found[name] = text or ""
