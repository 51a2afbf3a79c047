"""Know which network namespace a thread is in, and move a thread between them.

The guard exists so that no test, by mistake, changes links, routes, sysctls or
netfilter of the machine it runs on: code that touches the network calls
``assert_not_root_netns()`` first, and in-process test code reaches a sandbox
namespace only through ``entered()``.

Network namespaces are per thread: ``setns(2)`` moves the calling thread alone,
which is why everything here looks at ``/proc/thread-self`` and not at
``/proc/self`` (that one follows the main thread).
"""

import contextlib
import ctypes
import errno
import functools
import os

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)


class RootNamespaceError(RuntimeError):
    """Raised when something meant for a sandbox would run in the machine's own namespace."""


def netns_inode(path):
    """Inode number of a namespace file (the namespace's identity).

    readlink() gives ``net:[INODE]`` and works where stat() may not; stat()
    covers bind mounts such as /run/netns/NAME, which are not symlinks.
    """
    try:
        link = os.readlink(path)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not a symlink, e.g. /run/netns/NAME
            raise
        return os.stat(path).st_ino
    return int(link[link.index("[") + 1 : link.index("]")])


@functools.cache  # the init namespace never changes
def root_netns_inode():
    """Identity of the init network namespace.

    That is PID 1's namespace; where PID 1 may not be inspected (it holds
    capabilities that we lack), kthreadd's (PID 2): kernel threads always live
    in the initial namespaces.
    """
    try:
        return netns_inode("/proc/1/ns/net")
    except PermissionError:
        with open("/proc/2/comm") as f:
            if f.read().strip() != "kthreadd":
                raise RootNamespaceError(
                    "cannot tell the root network namespace: /proc/1/ns/net is not "
                    "readable and PID 2 is not kthreadd"
                ) from None
        return netns_inode("/proc/2/ns/net")


def current_netns_inode():
    """Identity of the network namespace of the calling thread."""
    return netns_inode("/proc/thread-self/ns/net")


def netns_path(name_or_path):
    """``/run/netns/NAME`` for a bare name; a path is returned unchanged."""
    if "/" in name_or_path:
        return name_or_path
    return os.path.join(NETNS_RUN_DIR, name_or_path)


def in_root_netns():
    return current_netns_inode() == root_netns_inode()


def assert_not_root_netns(what="this code"):
    """Refuse to go on in the machine's own network namespace."""
    if in_root_netns():
        raise RootNamespaceError(
            f"{what} must run inside a sandbox network namespace, but the current "
            "thread is in the root (init) network namespace; refusing to touch the "
            "real host network"
        )


def setns_fd(fd):
    """Move the calling thread into the network namespace that ``fd`` refers to."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns_name):
    """Run the body with the calling thread inside ``/run/netns/<ns_name>``.

    Sockets created in the body stay in that namespace after it ends, so a
    server socket can be made here and served from any thread. The thread goes
    back to the namespace it came from on exit, error or not.
    """
    target = os.open(netns_path(ns_name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(target)
        raise
    try:
        setns_fd(target)
        try:
            assert_not_root_netns(f"entered({ns_name!r})")
            yield
        finally:
            setns_fd(original)
    finally:
        os.close(original)
        os.close(target)
