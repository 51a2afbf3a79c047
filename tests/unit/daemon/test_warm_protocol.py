"""The warm path's wire format (daemon/protocol.py) and the client's choice
of path (faces/client.py), without a server."""

import os
import socket

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.daemon import protocol
from ansible_collections.vmsan.network.plugins.module_utils.faces import client
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import state

MESSAGES = [
    {"type": "request", "v": 1, "ns": {"net": 4026531840, "mnt": 4026531841},
     "argv": ["create", "--id", "vm-1", "--allowed-domain", "a.example,*.b.example"],
     "env": {"VMSAN_HOME": "/tmp/x", "VMSAN_SANDBOX_ONLY": "1"}},
    {"type": "request", "v": 1, "ns": {"net": 1, "mnt": 2}, "argv": ["list"], "env": {}},
    {"type": "ready"}, {"type": "go"}, {"type": "running"},
    {"type": "decline", "reason": "the client is in another network or mount namespace"},
    {"type": "refused", "message": "uid 65534 is not root"},
    {"type": "done", "exit": 2, "stdout": "", "stderr": "vmsan: --allowed-cidr: bad\n"},
    {"type": "done", "exit": 0, "stdout": '{\n  "id": "vm-\u00e9"\n}\n' * 1000, "stderr": ""},
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m["type"])
def test_every_message_survives_the_wire(message):
    a, b = socket.socketpair()
    with a, b:
        protocol.send(a, message)
        assert protocol.receive(b) == message


def test_a_frame_is_length_prefixed_fields():
    frame = protocol.encode({"type": "refused", "message": "no"})
    assert frame == b"\x00\x00\x00\x11" + b"\x00\x00\x00\x07refused" + b"\x00\x00\x00\x02no"


@pytest.mark.parametrize("body", [b"", b"\x00\x00\x00\x09nonsense!", b"\x00\x00\x00\x07request\x00\x00\x00\x01",
                                  protocol.encode({"type": "request", "v": 1, "argv": ["x"], "env": {}})[4:-5],
                                  b"\x00\x00\x00\x04done\x00\x00\x00\x01x", b"\x00\x00\x00\xffready"])
def test_malformed_frames_are_protocol_errors(body):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(body)


def test_a_closed_connection_and_an_oversized_frame_are_protocol_errors():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"\x00\x00")
        a.close()
        with pytest.raises(protocol.ProtocolError, match="closed"):
            protocol.receive(b)
    a, b = socket.socketpair()
    with a, b:
        a.sendall((protocol.MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(protocol.ProtocolError, match="frame of"):
            protocol.receive(b)


@pytest.mark.parametrize("home", [None, "", "/tmp/vmsan-elsewhere", "relative/dir"])
def test_the_socket_follows_the_state_directory(monkeypatch, home):
    if home is None:
        monkeypatch.delenv("VMSAN_HOME", raising=False)
    else:
        monkeypatch.setenv("VMSAN_HOME", home)
    # the protocol's copy of the default agrees with the state store's
    assert protocol.state_dir() == state.home()
    assert protocol.socket_path() == os.path.join(state.home(), "daemon.sock")
    assert protocol.env_of()["VMSAN_HOME"] == os.path.abspath(state.home())


def test_env_of_takes_only_the_keys_that_change_what_a_command_does():
    env = protocol.env_of({"VMSAN_HOME": "/h", "VMSAN_SANDBOX_ONLY": "1", "PATH": "/bin", "VMSAN_FAIL_AT": ""})
    assert env == {"VMSAN_HOME": "/h", "VMSAN_SANDBOX_ONLY": "1"}


def test_a_long_socket_path_is_reached_through_its_directory(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / protocol.SOCKET_NAME)
    assert len(path) > 108
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name, fd = protocol.connectable(path)
    server.bind(name)
    os.close(fd)
    server.listen(1)
    assert os.path.exists(path)
    peer = protocol.unix_socket()
    name, fd = protocol.connectable(path)
    peer.connect(name)
    os.close(fd)
    peer.close()
    server.close()


@pytest.mark.parametrize("argv, warm", [
    (["create", "--id", "a"], True), (["network", "a", "--network-policy", "deny-all"], True),
    (["port", "add", "a", "8080"], True), (["list", "--json"], True), (["show", "a"], True),
    (["remove", "a"], True), (["doctor"], False), (["resolver"], False), (["create", "--help"], False),
    (["-h"], False), ([], False), (["list", "-h"], False)])
def test_which_commands_go_to_the_daemon(argv, warm):
    assert client.warm_command(argv) is warm


@pytest.mark.parametrize("argv, ro", [
    (["list"], True), (["show", "a", "--json"], True), (["port", "list", "a"], True),
    (["port", "add", "a", "80"], False), (["create"], False), (["remove", "a"], False), (["network", "a"], False)])
def test_which_commands_may_run_twice(argv, ro):
    assert client.read_only(argv) is ro


def test_no_daemon_keeps_the_command_in_process(monkeypatch, tmp_path):
    monkeypatch.setenv("VMSAN_HOME", str(tmp_path))
    asked, ran = [], []
    monkeypatch.setattr(client, "through_daemon", lambda argv, *a, **k: asked.append(argv))
    from ansible_collections.vmsan.network.plugins.module_utils.faces import cli
    monkeypatch.setattr(cli, "main", lambda argv: ran.append(argv) or 5)
    assert client.main(["list", "--no-daemon", "--json"]) == 5
    assert ran == [["list", "--json"]] and asked == []
    monkeypatch.setenv("VMSAN_NO_DAEMON", "1")
    assert client.main(["list"]) == 5
    assert asked == []
    monkeypatch.delenv("VMSAN_NO_DAEMON")
    assert client.main(["list"]) == 5       # no daemon answered: in-process
    assert asked == [["list"]]


def test_the_client_imports_neither_pyroute2_nor_iptc():
    import subprocess
    import sys
    code = ("import sys; from ansible_collections.vmsan.network.plugins.module_utils.faces import client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'iptc', 'json', 'socket', "
            "'setuptools', 'pkg_resources') or '.lifecycle' in m or '.kernel' in m))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_command_imports_no_setuptools_and_no_pyroute2_package_init():
    """What ``vmsan create`` imports in-process: python-iptables without
    setuptools' distutils, pyroute2's submodules without its __init__
    (NDB, IPDB, ...), no asyncio for a VM without sets or connections."""
    import subprocess
    import sys
    mu = "ansible_collections.vmsan.network.plugins.module_utils"
    code = ("import sys; import %s.faces.cli, %s.lifecycle.manager, %s.lifecycle.converge, %s.lifecycle.policy, "
            "%s.lifecycle.ports, %s.kernel.tc; import iptc; "
            "print(sorted(m for m in ('setuptools', 'pkg_resources', 'distutils', 'pyroute2.ndb.main', 'pyroute2.ipdb', "
            "'pyroute2.iproute', 'asyncio') if m in sys.modules))" % ((mu,) * 6))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_pyroute2_top_level_names_still_work():
    """The package registered without its __init__ runs it on the first
    lookup of a top-level name (vmsan doctor's ``from pyroute2 import ...``)."""
    import subprocess
    import sys
    code = ("from ansible_collections.vmsan.network.plugins.module_utils.kernel import rtnl_batch; import sys; "
            "assert 'pyroute2.ndb.main' not in sys.modules; "
            "from pyroute2 import IPRoute, NDB; import pyroute2; print(IPRoute.__name__, pyroute2.__version__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("IPRoute ")


def test_the_library_lookup_agrees_with_ctypes_without_starting_a_process():
    """kernel.third_party answers python-iptables' find_library calls from
    the loader's directories: the same sonames ctypes finds with ldconfig."""
    import ctypes.util
    from ansible_collections.vmsan.network.plugins.module_utils.kernel import third_party
    lookup = third_party._LibraryLookup()
    for name in ("c", "xtables", "ip4tc", "ip6tc"):
        assert lookup.find(name) == ctypes.util.find_library(name), name
    assert lookup.find("xtwrapper") is None      # python-iptables' own: loaded from its directory
    assert os.path.isdir(lookup.xtables_dir())
