"""Persistent TAP devices through /dev/net/tun (there is no netlink call that
creates one). The device appears in the network namespace of the thread that
opens /dev/net/tun, so call this inside ``netns.entered``."""

import fcntl
import os
import struct

from ..model.errors import KernelError

try:   # the ioctl numbers of this architecture, as pyroute2 knows them
    from pyroute2.netlink.rtnl.ifinfmsg.tuntap import TUNSETIFF, TUNSETOWNER, TUNSETPERSIST
except ImportError:  # the faces name the missing library (missing_required_lib)
    TUNSETIFF = TUNSETOWNER = TUNSETPERSIST = None

# linux/if_tun.h; pyroute2 0.9.7 names these only inside its tuntap plugin's code
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


def create_persistent(name, owner=None):
    """Create a single-queue persistent TAP named NAME, optionally owned by uid
    OWNER so that an unprivileged (jailed) VMM can open it. The flags match what
    Firecracker asks for when it attaches (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)."""
    if TUNSETIFF is None:
        raise KernelError(None, "create TAP %s" % name, "no TUNSETIFF for this architecture (pyroute2)")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            ifreq = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
            fcntl.ioctl(fd, TUNSETIFF, ifreq)
            if owner is not None:
                fcntl.ioctl(fd, TUNSETOWNER, owner)
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise KernelError(exc.errno, "create TAP %s" % name)
