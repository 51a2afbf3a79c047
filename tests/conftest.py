"""Test configuration shared by all suites.

The collection and the sandbox harness (tests/sandbox, as ``sandbox``) are
imported as scripts/setup.sh installed them in the venv.
"""

from sandbox.fixtures import reap_before_the_run


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs root and builds network namespaces (tests/sandbox)")
    config.addinivalue_line("markers", "realguest: boots a real Linux guest under QEMU")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_sessionstart(session):
    reap_before_the_run(session.config)
