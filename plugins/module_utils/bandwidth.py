"""Bandwidth caps through tc (pyroute2). Not implemented yet: a cap is
refused rather than silently ignored."""

from .errors import InputError


def converge(record, check_mode=False):
    if record.get("bandwidth") or record.get("bandwidth_in"):
        raise InputError("bandwidth", "bandwidth caps are not supported yet")
    return []


def teardown(record, check_mode=False):
    return []


def leftovers(record):
    return []
