"""Fixtures of the real-guest self-tests (tests/realguest/)."""

from __future__ import annotations

import os
import shutil

import pytest

from . import build as rg_build


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "realguest: boots a real Linux guest under QEMU (TCG) in a scratch network namespace; needs root"
    )


@pytest.fixture(scope="session")
def realguest_artifacts():
    """Kernel + initramfs (built into tests/.cache/realguest on first use) and QEMU."""
    if os.geteuid() != 0:
        pytest.skip("real-guest tests need root (network namespaces, TAP devices)")
    for tool in ("ip", "nsenter", "apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            pytest.skip(f"real-guest tests need {tool}")
    rg_build.ensure_host_tools(install=True)
    return rg_build.build()
