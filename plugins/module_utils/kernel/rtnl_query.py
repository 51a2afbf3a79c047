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
import os
import socket
import struct
import threading
import time

from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETROUTE
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg
    HAS_PYROUTE2 = True
except ImportError:  # the modules report the missing library (missing_required_lib)
    HAS_PYROUTE2 = False

NETLINK_ROUTE = 0
_NLMSG_ERROR = 2
_HEADER = struct.Struct("IHHII")
UNLIST_TIMEOUT = 5.0     # seconds; a link still listed after that is an error
_POLL = 0.0002


def _socket():
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock


def _encode(msg, mtype, flags):
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = 1
    msg.encode()
    return bytes(msg.data)


def _error_code(buf):
    """The errno of the first NLMSG_ERROR in BUF (0: success), or None."""
    offset = 0
    while offset + _HEADER.size <= len(buf):
        length, mtype = _HEADER.unpack_from(buf, offset)[:2]
        if mtype == _NLMSG_ERROR:
            return -struct.unpack_from("i", buf, offset + 16)[0]
        if length < _HEADER.size:
            break
        offset += (length + 3) & ~3
    return None


def _listed(index):
    try:
        socket.if_indextoname(index)
        return True
    except OSError:
        return False


def delete_link(index, name=None):
    """Delete link INDEX; return once it is unlisted: True, or False if it
    did not exist. Raises OSError if the kernel refuses."""
    sock = _socket()
    request = _encode(_dellink(index), RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK)
    outcome = {}

    def send():
        try:
            sock.send(request)
            outcome["code"] = _error_code(sock.recv(65536))
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
            raise OSError(code, "delete link %s: %s" % (name or index, os.strerror(code)))
        if code == -1 and not _listed(index):
            return True
        if time.monotonic() > deadline:
            raise OSError(errno.ETIMEDOUT, "delete link %s: still listed after %.0f s" % (name or index, UNLIST_TIMEOUT))
        time.sleep(_POLL)


def _dellink(index):
    msg = ifinfmsg()
    msg["index"] = index
    return msg


def route_get(dst_ip):
    """(gateway, oif, prefsrc) of the route the kernel would take to DST_IP,
    or None when it has none (one lookup, however large the table)."""
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["dst_len"] = 32
    msg["attrs"] = [("RTA_DST", dst_ip)]
    sock = _socket()
    try:
        sock.send(_encode(msg, RTM_GETROUTE, NLM_F_REQUEST))
        buf = sock.recv(65536)
    finally:
        sock.close()
    if len(buf) < _HEADER.size:
        return None
    mtype = _HEADER.unpack_from(buf, 0)[1]
    if mtype == _NLMSG_ERROR:
        code = _error_code(buf)
        if code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENODEV, errno.ESRCH):
            return None
        raise OSError(code, "route to %s: %s" % (dst_ip, os.strerror(code)))
    reply = rtmsg(buf)
    reply.decode()
    return (reply.get_attr("RTA_GATEWAY"), reply.get_attr("RTA_OIF"), reply.get_attr("RTA_PREFSRC"))
