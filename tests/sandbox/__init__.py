"""Network test harness for vmsan: throwaway namespaces that stand in for the
host, the internet and the guests, so that tests never touch the real network.

See docs/testing.md. scripts/setup.sh installs it in the venv (a .pth file
naming tests/), so pytest, the benchmarks, the demo and Molecule import it as::

    from sandbox import Sandbox
    from sandbox.fixtures import *  # the ``sandbox`` pytest fixture
"""

from .guard import (
    RootNamespaceError,
    assert_not_root_netns,
    current_netns_inode,
    entered,
    root_netns_inode,
)
from .guest import Guest, RelayError
from .netns import CommandError, Namespace
from .probes import Stream
from .sandbox import Sandbox, VmsanError, VmsanResult
from .sniffer import Sniffer

__all__ = [
    "CommandError",
    "Guest",
    "Namespace",
    "RelayError",
    "RootNamespaceError",
    "Sandbox",
    "Sniffer",
    "Stream",
    "VmsanError",
    "VmsanResult",
    "assert_not_root_netns",
    "current_netns_inode",
    "entered",
    "root_netns_inode",
]
