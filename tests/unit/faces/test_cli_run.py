"""faces/cli.run: a command run in-process writes only to the streams it is
given, takes VMSAN_HOME from the environment it is given, and gives the same
bytes and exit status as a ``vmsan`` process (what the daemon relies on)."""

import io
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.faces import cli

VMSAN = os.path.join(os.path.dirname(sys.executable), "vmsan")


def run(argv, env):
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(argv, out, err, env)
    return status, out.getvalue(), err.getvalue()


def process(argv, env):
    done = subprocess.run([VMSAN] + argv, capture_output=True, text=True, env=env)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def home(tmp_path):
    os.makedirs(tmp_path / "vms")
    record = {"schema": 1, "id": "web", "slot": 4, "netns": "vmsan-web", "status": "ready",
              "policy": {"mode": "custom", "allowed_domains": ["a.example.com"], "allowed_cidrs": [],
                         "denied_cidrs": ["10.0.0.0/8"]},
              "published_ports": ["8080:80/tcp"], "bandwidth": 50000000, "bandwidth_in": None, "tap_owner": None,
              "created": "2026-01-01T00:00:00Z"}
    (tmp_path / "vms" / "web.json").write_text(json.dumps(record))
    (tmp_path / "vms" / "bad.json").write_text("[]")
    return str(tmp_path)


@pytest.mark.parametrize("argv", [["list", "--json"], ["list"], ["--help"], ["create", "--help"], ["bogus"],
                                  ["create", "--allowed-cidr", "10.0.0.1/8"], ["network", "web"],
                                  ["resolver", "--grace", "soon"], []])
def test_in_process_is_byte_identical_to_the_command(argv, home):
    if not os.path.exists(VMSAN):
        pytest.skip("no vmsan command in this venv (scripts/setup.sh makes it)")
    env = dict(os.environ, VMSAN_HOME=home)
    assert run(argv, env) == process(argv, env)


def test_the_state_directory_comes_from_the_given_environment(home, monkeypatch):
    monkeypatch.setenv("VMSAN_HOME", "/nonexistent")
    status, out, err = run(["list", "--json"], {"VMSAN_HOME": home})
    assert status == 0 and err == ""
    listed = json.loads(out)
    assert [v["id"] for v in listed] == ["bad", "web"]
    assert "broken" in listed[0] and listed[1]["published_ports"] == ["8080:80/tcp"]


def test_nothing_goes_to_the_process_streams(home, capsys):
    run(["list"], {"VMSAN_HOME": home})
    run(["create", "--slot", "x"], {"VMSAN_HOME": home})
    assert capsys.readouterr() == ("", "")


def test_the_command_line_face_imports_no_netlink_or_libiptc():
    """``vmsan --help`` and every bad flag are answered without pyroute2 or
    python-iptables (engineer 'warm' keeps the command path cheap)."""
    code = ("import sys\n"
            "from ansible_collections.vmsan.network.plugins.module_utils.faces import cli\n"
            "import io\n"
            "cli.run(['create', '--allowed-cidr', 'nonsense'], io.StringIO(), io.StringIO(), {})\n"
            "print(sorted(m for m in ('pyroute2', 'iptc', 'dnslib') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_list_checks_the_kernel_without_the_manager_or_python_iptables(home):
    """``vmsan list`` reads the state files and checks each VM's devices
    (lifecycle/status.py: a link dump, stats of namespaces); it imports
    neither the lifecycle's manager and converge nor python-iptables (issue
    14: the warm path's list stays cheap; issue 16: it still shows the status)."""
    code = ("import io, sys\n"
            "from ansible_collections.vmsan.network.plugins.module_utils.faces import cli\n"
            "out = io.StringIO()\n"
            "assert cli.run(['list', '--json'], out, io.StringIO(), {'VMSAN_HOME': %r}) == 0\n"
            "assert '\"web\"' in out.getvalue()\n"
            "mu = 'ansible_collections.vmsan.network.plugins.module_utils.'\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('iptc', 'secrets')\n"
            "             or m.startswith(mu + 'lifecycle.manager') or m.startswith(mu + 'lifecycle.converge')\n"
            "             or m.startswith(mu + 'kernel.iptables')))\n" % home)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_top_level_help_shows_no_daemon():
    status, out, _err = run(["--help"], {})
    assert status == 0 and "--no-daemon" in out.split("positional arguments")[0]
