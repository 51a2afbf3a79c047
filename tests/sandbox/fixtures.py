"""pytest fixtures for the network sandbox.

In a conftest.py::

    from sandbox.fixtures import *  # noqa: F401,F403

or, in the top-level conftest only, ``pytest_plugins = ["sandbox.fixtures"]``.
"""

import os
import shutil

import pytest

from . import cleanup, guard
from .sandbox import Sandbox

__all__ = ["sandbox", "sandbox_reaped"]

_REQUIRED_TOOLS = ("ip", "nsenter")


def _why_unusable():
    if os.geteuid() != 0:
        return "network sandbox tests need root"
    if not os.path.exists("/dev/net/tun"):
        return "network sandbox tests need /dev/net/tun"
    missing = [tool for tool in _REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"network sandbox tests need {', '.join(missing)}"
    return None


def reap_before_the_run(config):
    """Remove what crashed earlier runs left (only sandboxes whose owning
    process is gone), once, in the process that starts the run: without
    pytest-xdist that is the one process; with it, the controller, before any
    worker starts. A worker never reaps at its start: it would take the
    leftover that another worker's test made on purpose to examine
    (tests/sandbox_selftest/test_cleanup.py)."""
    if hasattr(config, "workerinput") or _why_unusable():
        return
    cleanup.reap()


@pytest.fixture(scope="session")
def sandbox_reaped():
    """Skips where a sandbox cannot be built; leftovers of killed runs are
    already gone (``reap_before_the_run``, called by tests/conftest.py)."""
    reason = _why_unusable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def sandbox(sandbox_reaped):
    """A fresh :class:`sandbox.Sandbox`, closed after the test."""
    before = guard.current_netns_inode()
    with Sandbox() as sb:
        yield sb
    # A test that left an entered() block open would run the next one in a
    # sandbox namespace that no longer exists.
    assert guard.current_netns_inode() == before, "test left its thread in another netns"
