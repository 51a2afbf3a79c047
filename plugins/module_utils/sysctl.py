"""Sysctls of the calling thread's network namespace, through /proc/sys/net
(which resolves to the namespace of the thread that opens it; /sys would give
the namespace of whoever mounted it)."""

import os


def path(key):
    return "/proc/sys/" + key.replace(".", "/")


def ensure(key, value, check_mode=False):
    """Set KEY to VALUE if it differs; returns a change string or None.
    One open for the read and the write: resolving a /proc/sys path costs
    more the more network namespaces and devices the machine has (~1 ms
    each with a thousand VMs)."""
    value = str(value)
    try:
        fd = os.open(path(key), os.O_RDONLY if check_mode else os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        current = os.read(fd, 256).decode().strip()
        if current == value:
            return None
        if not check_mode:
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, value.encode())
    finally:
        os.close(fd)
    return "sysctl %s=%s (was %s)" % (key, value, current)
