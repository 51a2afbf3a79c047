"""Self-tests of the network sandbox: they need root, not the product."""

import pytest

from sandbox.fakes import make_fake_vm, masquerade
from sandbox.fixtures import *  # noqa: F401,F403


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
