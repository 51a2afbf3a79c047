"""Self-tests of the network sandbox: they need root, not the product."""

import os
import sys

import pytest

# tests/ on sys.path (tests/conftest.py does it too; this keeps the folder
# usable on its own).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox.fakes import make_fake_vm, masquerade  # noqa: E402
from sandbox.fixtures import *  # noqa: E402,F401,F403


@pytest.fixture
def fake_vm(sandbox):
    return make_fake_vm(sandbox)[0]


@pytest.fixture
def guest(sandbox, fake_vm):
    return sandbox.add_guest(fake_vm)


@pytest.fixture
def routed_guest(sandbox, guest):
    masquerade(sandbox)
    return guest
