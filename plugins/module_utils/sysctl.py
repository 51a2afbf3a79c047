"""Sysctls of the calling thread's network namespace, through /proc/sys/net
(which resolves to the namespace of the thread that opens it; /sys would give
the namespace of whoever mounted it)."""

import os


def _path(key):
    return "/proc/sys/" + key.replace(".", "/")


def read(key):
    with open(_path(key)) as handle:
        return handle.read().strip()


def ensure(key, value, check_mode=False):
    """Set KEY to VALUE if it differs; returns a change string or None."""
    value = str(value)
    try:
        current = read(key)
    except FileNotFoundError:
        return None
    if current == value:
        return None
    if not check_mode:
        fd = os.open(_path(key), os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    return "sysctl %s=%s (was %s)" % (key, value, current)
