"""Test configuration shared by all suites.

tests/ is put on sys.path so the sandbox harness imports as ``sandbox``;
the collection is imported as installed by scripts/setup.sh.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs root and builds network namespaces (tests/sandbox)")
    config.addinivalue_line("markers", "realguest: boots a real Linux guest under QEMU")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
