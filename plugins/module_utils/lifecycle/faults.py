"""Failure injection for the tests of rollback and crash recovery.

Only active inside the test sandbox (VMSAN_SANDBOX_ONLY=1): with
VMSAN_FAIL_AT=<point> the run raises at that point (a failure part-way),
with VMSAN_FAIL_AT=<point>:kill the process kills itself there (a crash).
"""

import os
import signal

from ..model.errors import VmsanError


def point(name):
    """NAME: after-netns, after-links or after-firewall (where lifecycle.converge calls it)."""
    if os.environ.get("VMSAN_SANDBOX_ONLY") != "1":
        return
    wanted = os.environ.get("VMSAN_FAIL_AT", "")
    where, _unused, how = wanted.partition(":")
    if where != name:
        return
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise VmsanError("injected failure at %s (VMSAN_FAIL_AT)" % name)
