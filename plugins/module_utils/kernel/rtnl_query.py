"""Two rtnetlink requests a VM's removal makes, without pyroute2's IPRoute
(whose import and socket cost ~60 ms and ~1 ms a request): deleting a link,
and asking which route the kernel would take to an address. Both work in the
calling thread's network namespace.

Deleting a link returns as soon as the kernel has unlisted it. The kernel
answers an RTM_DELLINK only after it has also freed the device, which waits
for an RCU barrier (netdev_run_todo): 12-40 ms here for a veth, however
idle, while the device is gone from every table within ~0.5 ms. So the
request goes out on a thread of its own, and the caller returns when the
index no longer names a link (or the kernel refused). What the kernel does
after that (freeing memory) no longer shows anywhere, and it finishes even
if this process exits or is killed, since the request is already past the
point where a signal can stop it.
"""

import errno
import socket
import threading
import time

from ..model.errors import KernelError
from .netlink_wire import NETLINK_ROUTE, NLMSG_ERROR, NetlinkSocket, error_of, read_acks
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETROUTE
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg
except ImportError:  # the faces name the missing library (missing_required_lib)
    pass

UNLIST_TIMEOUT = 5.0     # seconds; a link still listed after that is an error
_POLL = 0.0002
_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENODEV, errno.ESRCH)


def _encode(msg, mtype, flags):
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = 1
    msg.encode()
    return bytes(msg.data)


def _listed(index):
    try:
        socket.if_indextoname(index)
        return True
    except OSError:
        return False


def delete_link(index, name=None):
    """Delete link INDEX; return once it is unlisted: True, or False if it
    did not exist. Raises KernelError if the kernel refuses."""
    what = "delete link %s" % (name or index)
    sock = NetlinkSocket(NETLINK_ROUTE, what, timeout=UNLIST_TIMEOUT)
    msg = ifinfmsg()
    msg["index"] = index
    request = _encode(msg, RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK)
    outcome = {}

    def send():
        try:
            sock.send(request)
            acks = read_acks(sock.recv())
            outcome["code"] = acks[0][1] if acks else None
        except OSError as exc:
            outcome["code"] = exc.errno
        finally:
            sock.close()

    sender = threading.Thread(target=send, name="vmsan-dellink", daemon=True)
    sender.start()
    deadline = time.monotonic() + UNLIST_TIMEOUT
    while True:
        code = outcome.get("code", -1)
        if code == 0:
            return True
        if code == errno.ENODEV:
            return False
        if code not in (-1, None):
            raise KernelError(code, what)
        if code == -1 and not _listed(index):
            return True
        if time.monotonic() > deadline:
            raise KernelError(errno.ETIMEDOUT, what, "still listed after %.0f s" % UNLIST_TIMEOUT)
        time.sleep(_POLL)


RTN_LOCAL = 2       # rtnetlink.h: a route to an address of this host


def route_get(dst_ip):
    """(gateway, oif, prefsrc) of the route the kernel would take to DST_IP,
    or None when it has none (one lookup, however large the table)."""
    reply = _route(dst_ip)
    if reply is None:
        return None
    return (reply.get_attr("RTA_GATEWAY"), reply.get_attr("RTA_OIF"), reply.get_attr("RTA_PREFSRC"))


def is_local(address):
    """Whether ADDRESS is one of this namespace's own (the kernel routes it
    locally; one lookup, whatever net.ipv4.ip_nonlocal_bind says)."""
    reply = _route(address)
    return reply is not None and reply["type"] == RTN_LOCAL


def _route(dst_ip):
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["dst_len"] = 32
    msg["attrs"] = [("RTA_DST", dst_ip)]
    with NetlinkSocket(NETLINK_ROUTE, "route to %s" % dst_ip) as sock:
        mtype, answer = sock.exchange(_encode(msg, RTM_GETROUTE, NLM_F_REQUEST), 1)
    if mtype == NLMSG_ERROR:
        code = error_of(answer)
        if code in _NO_ROUTE:
            return None
        raise KernelError(code, "route to %s" % dst_ip)
    reply = rtmsg(answer)
    reply.decode()
    return reply
