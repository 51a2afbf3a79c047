"""Named network namespaces, created and entered in-process.

A namespace is entered with setns(2) on the calling thread only, so the rest of
the process is untouched; sockets (netlink, libiptc, /dev/net/tun, /proc/sys
files) opened while inside belong to that namespace for their whole life.
Creating one follows iproute2's convention (a bind mount of the namespace on
/run/netns/NAME) without forking, which keeps ``create`` in the millisecond
range.
"""

import ctypes
import errno
import os
from contextlib import contextmanager

from ..model.errors import VmsanError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

# the C library the interpreter itself links: ctypes.util.find_library("c")
# would start ``ldconfig -p`` (~5 ms) on every command
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def path(name):
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name):
    return os.path.exists(path(name))


def current_inode():
    return os.stat("/proc/thread-self/ns/net").st_ino


def init_inode():
    """Inode of the init process's network namespace (the machine's own).
    Where PID 1 may not be inspected (some containers), kthreadd's (PID 2):
    kernel threads live in the initial namespaces."""
    try:
        return os.stat("/proc/1/ns/net").st_ino
    except OSError:
        pass
    try:
        with open("/proc/2/comm") as handle:
            if handle.read().strip() == "kthreadd":
                return os.stat("/proc/2/ns/net").st_ino
    except OSError:
        pass
    return None


def guard_sandbox():
    """With VMSAN_SANDBOX_ONLY=1 (set by the test harness) refuse to touch the
    machine's own network namespace: a second line of defence behind the
    harness's guard."""
    if os.environ.get("VMSAN_SANDBOX_ONLY") == "1" and current_inode() == init_inode():
        raise VmsanError("VMSAN_SANDBOX_ONLY=1 but this process is in the root network "
                         "namespace; refusing to change the machine's network")


def _setns(fd):
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


@contextmanager
def entered(name):
    """Run the block with this thread inside namespace NAME (None: stay)."""
    if name is None:
        yield
        return
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise VmsanError("network namespace %r does not exist" % name)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(origin)
    finally:
        os.close(origin)


def _share_run_dir():
    # As iproute2 does: /run/netns must be a shared mount so that a namespace
    # bound there is visible in every mount namespace.
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    if _libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", MS_BIND | MS_REC, None),
           "bind %s" % NETNS_RUN_DIR)
    _check(_libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None),
           "share %s" % NETNS_RUN_DIR)


def create(name):
    """Create namespace NAME; the calling thread stays where it was."""
    _share_run_dir()
    target = path(name)
    try:
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise VmsanError("network namespace %r already exists" % name)
    origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        try:
            _check(_libc.mount(b"/proc/thread-self/ns/net", target.encode(), b"none", MS_BIND, None),
                   "bind %s" % target)
        finally:
            _setns(origin)
    except Exception:
        try:
            os.unlink(target)
        except OSError:
            pass
        raise
    finally:
        os.close(origin)


def remove(name):
    """Remove namespace NAME if it exists; returns True if it did."""
    target = path(name)
    if not os.path.exists(target):
        return False
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, "umount %s: %s" % (target, os.strerror(err)))
    os.unlink(target)
    return True
