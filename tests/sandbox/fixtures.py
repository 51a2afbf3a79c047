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


@pytest.fixture(scope="session")
def sandbox_reaped():
    """Once per session: remove what crashed earlier runs left (only sandboxes
    whose owning process is gone)."""
    reason = _why_unusable()
    if reason:
        pytest.skip(reason)
    cleanup.reap()


@pytest.fixture
def sandbox(sandbox_reaped):
    """A fresh :class:`sandbox.Sandbox`, closed after the test."""
    before = guard.current_netns_inode()
    with Sandbox() as sb:
        yield sb
    # A test that left an entered() block open would run the next one in a
    # sandbox namespace that no longer exists.
    assert guard.current_netns_inode() == before, "test left its thread in another netns"
