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


def pytest_sessionfinish(session):
    """A pytest-xdist worker hands its boots to the controller, which prints the summary."""
    from .boot import BOOTS

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["realguest_boots"] = [list(boot) for boot in BOOTS]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    from .boot import BOOTS

    BOOTS.extend(tuple(boot) for boot in getattr(node, "workeroutput", {}).get("realguest_boots", []))


def pytest_terminal_summary(terminalreporter):
    """Boot-to-result (QEMU start to the last probe line) and wall time of every guest."""
    from .boot import BOOTS

    if not BOOTS:
        return
    terminalreporter.write_sep("-", f"real guests: {len(BOOTS)} boots, {sum(w for _, _, w in BOOTS):.1f} s of QEMU")
    for test, to_result, wall in BOOTS:
        shown = f"{to_result:6.2f}s" if to_result is not None else "   n/a "
        terminalreporter.write_line(f"boot-to-result {shown}  wall {wall:6.2f}s  {test or '(outside a test)'}")
