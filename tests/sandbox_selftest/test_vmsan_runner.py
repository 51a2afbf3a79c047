"""Sandbox.vmsan(): runs the command in the sandbox host with its own
VMSAN_HOME, parses JSON, and cleans up the namespaces the product made."""

import os
import sys

import pytest

from sandbox import Sandbox, VmsanError
from sandbox.netns import list_netns
from sandbox.sandbox import default_vmsan_cmd

FAKE_VMSAN = [sys.executable, os.path.join(os.path.dirname(__file__), "fake_vmsan.py")]


@pytest.fixture
def fake_sandbox(sandbox):
    sandbox.vmsan_cmd = FAKE_VMSAN
    return sandbox


def test_runs_in_the_sandbox_host_with_its_own_home(fake_sandbox):
    rc, out, err = fake_sandbox.vmsan("list")
    assert rc == 0 and err == ""
    assert out["argv"] == ["list", "--json"]
    assert out["home"] == fake_sandbox.home and os.path.isdir(out["home"])
    assert out["sandbox_only"] == "1"
    assert out["netns_link"] == f"net:[{fake_sandbox.host.inode()}]"


def test_exit_codes_and_plain_output(fake_sandbox):
    with pytest.raises(VmsanError, match="bad input"):
        fake_sandbox.vmsan("create", "fail")
    assert fake_sandbox.vmsan("create", "fail", check=False).rc == 2
    result = fake_sandbox.vmsan("show", "x", json_out=False)
    assert result.out == "plain output for show x\n"


def test_extra_env_reaches_the_command(fake_sandbox):
    out = fake_sandbox.vmsan("list", env={"VMSAN_HOME": "/nonexistent"}).out
    assert out["home"] == "/nonexistent"


def test_product_namespaces_are_removed_with_the_sandbox(sandbox_reaped):
    with Sandbox(vmsan_cmd=FAKE_VMSAN) as sb:
        vm_id = sb.unique_id("web")
        out = sb.vmsan("create", "--id", vm_id).out
        assert out["vm"]["netns"] == f"vmsan-{vm_id}"
        assert f"vmsan-{vm_id}" in sb.namespaces()
    assert f"vmsan-{vm_id}" not in list_netns()


def test_product_namespaces_named_in_state_files_are_removed_too(sandbox_reaped):
    with Sandbox(vmsan_cmd=FAKE_VMSAN) as sb:
        vm_id = f"x{sb.prefix}"  # an id that does not start with the prefix
        sb.vmsan("create", "--id", vm_id, json_out=False)  # output not parsed
        assert f"vmsan-{vm_id}" in list_netns()
    assert f"vmsan-{vm_id}" not in list_netns()


def test_command_can_be_overridden(monkeypatch):
    monkeypatch.setenv("VMSAN_CMD", "/opt/x/vmsan --verbose")
    assert default_vmsan_cmd() == ["/opt/x/vmsan", "--verbose"]
    monkeypatch.delenv("VMSAN_CMD")
    assert default_vmsan_cmd()[0].endswith("vmsan")
