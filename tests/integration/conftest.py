"""Integration tests: real namespaces, real netfilter, guests behind TAPs.
Every test runs in a fresh sandbox (tests/sandbox); none touches the machine's
own network namespace."""

import pytest

from sandbox.fixtures import *  # noqa: F401,F403
from sandbox import guard


@pytest.fixture(autouse=True)
def _refuse_root_namespace_changes():
    """The harness's guard: tests act only through the sandbox (vmsan runs
    with VMSAN_SANDBOX_ONLY=1 inside the sandbox host namespace); the test
    process itself must still be in the namespace it started in, never
    inside a product namespace it could confuse with the host."""
    before = guard.current_netns_inode()
    yield
    assert guard.current_netns_inode() == before
