"""The warm path (issue 14): the CLI's cases run through the daemon and
in-process (--no-daemon) in the same sandbox and agree byte for byte; a VM
made through the daemon works from its guest; a daemon killed mid-command
leaves nothing the next command cannot converge; a non-root user is refused
and changes nothing; a client in another namespace is declined."""

import json
import os
import time

import pytest

from integration import snapshot
from warm_daemon import command_server

pytestmark = pytest.mark.integration

WEB = "203.0.113.10"
NOBODY = 65534

# Each case is a sequence of commands ({a}, {b}: VM ids of the sandbox);
# every sequence ends with the host as it began, so it can run again.
# Together they run every verb the daemon serves (create, network, port
# add/remove/list, list, show, remove) with text and JSON output, and the
# errors: bad input (exit 2), an unknown VM (exit 2), a conflict.
CASES = {
    "lifecycle": [
        ("create", "--id", "{a}", "--json"),
        ("create", "--id", "{a}"),                                   # exists: exit 2
        ("list",), ("list", "--json"), ("show", "{a}", "--json"), ("show", "{a}"),
        ("network", "{a}", "--network-policy", "deny-all"),
        ("network", "{a}", "--network-policy", "deny-all", "--json"),    # no change
        ("network", "{a}", "--network-policy", "custom", "--allowed-domain", "example.test,*.example.test",
         "--allowed-cidr", "203.0.113.0/24", "--denied-cidr", "203.0.113.128/25", "--json"),
        ("port", "add", "{a}", "8080,9090/udp", "--json"), ("port", "list", "{a}"), ("port", "list", "{a}", "--json"),
        ("port", "add", "{a}", "8080"), ("port", "remove", "{a}", "9090/udp", "--json"),
        ("port", "add", "{a}", "7070:70"), ("port", "remove", "{a}", "7070"),
        ("network", "{a}", "--bandwidth", "50mbit", "--bandwidth-in", "20mbit", "--json"),
        ("network", "{a}", "--network-policy", "allow-all"),
        ("remove", "{a}", "--json"), ("list", "--json"), ("list",),
    ],
    "no-netns": [
        ("create", "--id", "{b}", "--no-netns", "--network-policy", "deny-all", "--publish-port", "8081"),
        ("list",), ("show", "{b}"), ("remove", "{b}"),
    ],
    "bad input": [
        ("create", "--id", "has space"), ("create", "--id", "has space", "--json"), ("create", "--frobnicate"),
        ("create", "--allowed-cidr", "10.0.0.1/8"), ("create", "--allowed-cidr", "10.0.0.1/8", "--json"),
        ("create", "--network-policy", "deny-all", "--allowed-domain", "a.example"), ("create", "--slot", "99999"),
        ("create", "--publish-port", "99999", "--json"), ("network", "{a}"), ("network", "{a}", "--json"),
        ("network", "{a}", "--allowed-cidr", "300.1.1.1", "--json"), ("network", "{a}", "--bandwidth", "fast"),
        ("port", "add", "{a}", "not-a-port"), ("port", "remove", "{a}", "8080/sctp", "--json"), ("port",),
        ("port", "list"), ("show", "has space"), ("show",), ("remove",), ("list", "extra"),
    ],
    "unknown VM": [
        ("network", "no-such-vm", "--network-policy", "deny-all"),
        ("network", "no-such-vm", "--network-policy", "deny-all", "--json"),
        ("port", "add", "no-such-vm", "8080"), ("port", "add", "no-such-vm", "8080", "--json"),
        ("port", "remove", "no-such-vm", "8080"), ("port", "remove", "no-such-vm", "8080", "--json"),
        ("port", "list", "no-such-vm"), ("port", "list", "no-such-vm", "--json"),
        ("show", "no-such-vm"), ("show", "no-such-vm", "--json"),
        ("remove", "no-such-vm"), ("remove", "no-such-vm", "--json"),
    ],
    "refused on a VM": [
        ("create", "--id", "{a}", "--publish-port", "8080"),
        ("create", "--id", "{b}", "--publish-port", "8080", "--json"),        # the port is {a}'s: exit 2
        ("port", "remove", "{a}", "9999"), ("port", "remove", "{a}", "9999", "--json"),   # not published
        ("port", "add", "{a}", "8080:81"),                                    # the same host port
        ("network", "{a}", "--network-policy", "deny-all", "--allowed-cidr", "203.0.113.0/24", "--json"),
        ("create", "--id", "{b}", "--slot", "{slot_of_a}"),                   # the slot is {a}'s
        ("remove", "{a}"),
    ],
}

def run(sandbox, argv, *flags, env=None):
    result = sandbox.vmsan(*argv, *flags, json_out=False, check=False, env=env)
    return result.rc, result.out, result.err


def expand(sandbox, step):
    ids = {"a": sandbox.unique_id("wa"), "b": sandbox.unique_id("wb"), "slot_of_a": "0"}
    return [part.format(**ids) for part in step]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_cli_cases_agree_through_the_daemon_and_in_process(sandbox, case):
    steps = [expand(sandbox, step) for step in CASES[case]]
    before = snapshot.host(sandbox)
    with command_server(sandbox) as daemon:
        warm = [run(sandbox, step) for step in steps]
        assert snapshot.diff(before, snapshot.host(sandbox)) == {}
        cold = [run(sandbox, step, "--no-daemon") for step in steps]
        served = daemon.served()
    assert snapshot.diff(before, snapshot.host(sandbox)) == {}
    for step, w, c in zip(steps, warm, cold):
        assert w == c, "%s differs: warm %r, in-process %r" % (" ".join(step), w, c)
    # the daemon ran every command of the first pass (a usage error too) and
    # none of the second
    assert served == steps
    codes = [rc for rc, _o, _e in warm]
    if case in ("bad input", "unknown VM"):
        assert set(codes) == {2}, list(zip(steps, warm))
    else:
        assert 0 in codes
    if case == "unknown VM":
        assert all("no VM with id 'no-such-vm'" in err for _rc, _o, err in warm), warm
    if case == "refused on a VM":
        assert codes == [0, 2, 2, 2, 2, 2, 2, 0], list(zip(steps, warm))
    # JSON output is one JSON document; errors go to stderr only
    for step, (rc, out, err) in zip(steps, warm):
        if "--json" in step and rc == 0:
            json.loads(out)
        if rc != 0:
            assert out == "" and err.startswith("vmsan: "), (step, out, err)


def test_a_vm_made_through_the_daemon_works_from_its_guest(sandbox):
    with command_server(sandbox) as daemon:
        vm = sandbox.vmsan("create", "--id", sandbox.unique_id("g")).out
        guest = sandbox.add_guest(vm)
        assert guest.tcp(WEB, 9000)
        sandbox.vmsan("network", vm["id"], "--network-policy", "deny-all")
        assert not guest.tcp(WEB, 9000, timeout=1)
        sandbox.vmsan("network", vm["id"], "--network-policy", "allow-all")
        assert guest.tcp(WEB, 9000)
        assert [argv[0] for argv in daemon.served()] == ["create", "network", "network"]


def test_a_daemon_killed_mid_create_leaves_what_the_next_command_converges(sandbox):
    before = snapshot.host(sandbox)
    vm_id = sandbox.unique_id("k")
    kill = {"VMSAN_FAIL_AT": "after-links:kill"}     # the daemon's own failure injection: it dies
    with command_server(sandbox, env=kill) as daemon:
        began = time.monotonic()
        rc, out, err = run(sandbox, ("create", "--id", vm_id), env=kill)
        took = time.monotonic() - began
        daemon.proc.wait(5)
        assert daemon.proc.returncode == -9
    assert rc == 1 and out == "" and "stopped while it ran 'create'" in err and "vmsan remove VM" in err
    assert took < 2.0, "a killed daemon cost the command %.1f s" % took
    # no daemon now (its socket file is left behind): in-process, silently
    assert os.path.exists(os.path.join(sandbox.home, "daemon.sock"))
    listed = sandbox.vmsan("list")
    assert [v["id"] for v in listed.out] == [vm_id] and listed.err == ""
    sandbox.vmsan("remove", vm_id)
    assert snapshot.diff(before, snapshot.host(sandbox)) == {}
    assert snapshot.state_files(sandbox) == {}
    with command_server(sandbox) as daemon:        # a new daemon takes over the stale socket
        vm = sandbox.vmsan("create", "--id", vm_id).out
        assert sandbox.add_guest(vm).tcp(WEB, 9000)
        assert [argv[0] for argv in daemon.served()] == ["create"], daemon.log()


def _as_nobody(fn):
    """FN() in a forked child running as nobody; its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(w, json.dumps(fn()).encode())
        except BaseException as exc:
            os.write(w, json.dumps({"child error": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b"".join(iter(lambda: os.read(r, 65536), b""))
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.parametrize("opened", [False, True], ids=["socket as made", "socket opened by hand"])
def test_a_non_root_user_is_refused_and_changes_no_vm(sandbox, opened):
    from ansible_collections.vmsan.network.plugins.module_utils.faces import client
    with command_server(sandbox) as daemon:
        vm = sandbox.vmsan("create", "--id", sandbox.unique_id("n")).out
        before, states = snapshot.host(sandbox), snapshot.state_files(sandbox)
        if opened:
            os.chmod(sandbox.home, 0o755)
            os.chmod(daemon.socket, 0o666)
        environ = sandbox.vmsan_env()

        def remove_as_nobody():
            answer = client.through_daemon(["remove", vm["id"]], environ=environ)
            return None if answer is None else [answer.code, answer.stdout, answer.stderr]
        code, out, err = _as_nobody(remove_as_nobody)
        assert code == 1 and out == ""
        if opened:
            assert "refused this command: uid 65534 is not root" in err
            assert "refused a command from uid 65534" in daemon.log()
        else:
            assert "permission denied on the vmsan daemon's socket" in err
        assert [argv[0] for argv in daemon.served()] == ["create"]
        assert snapshot.diff(before, snapshot.host(sandbox)) == {}
        assert snapshot.state_files(sandbox) == states
        assert sandbox.add_guest(vm).tcp(WEB, 9000)


def test_a_client_in_another_namespace_is_declined_and_runs_in_process(sandbox):
    with command_server(sandbox) as daemon:
        vm = sandbox.vmsan("create", "--id", sandbox.unique_id("o")).out
        # list checks each VM against the kernel of the namespace it runs in:
        # in-process there, it gives what a run with --no-daemon there gives
        here = sandbox.internet.run([*sandbox.vmsan_cmd, "list", "--no-daemon"], env=sandbox.vmsan_env())
        elsewhere = sandbox.internet.run([*sandbox.vmsan_cmd, "list"], env=sandbox.vmsan_env())
        assert (elsewhere.returncode, elsewhere.stdout, elsewhere.stderr) == (0, here.stdout, "")
        assert vm["id"] in elsewhere.stdout
        assert "another network or mount namespace" in daemon.log()
        assert [argv[0] for argv in daemon.served()] == ["create"]
        sandbox.vmsan("remove", vm["id"])


def test_daemon_and_in_process_creates_at_once_share_the_lock(sandbox):
    """Twelve creates at once, half through the daemon and half in-process:
    the same state lock, so every VM gets its own slot and all work."""
    import concurrent.futures
    ids = [sandbox.unique_id("m%d" % i) for i in range(12)]
    with command_server(sandbox) as daemon:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda i: sandbox.vmsan("create", "--id", ids[i], *(("--no-daemon",) if i % 2 else ())),
                                    range(12)))
        served = [argv[2] for argv in daemon.served()]
    vms = [r.out for r in results]
    assert sorted(served) == sorted(ids[0::2])
    assert len({vm["slot"] for vm in vms}) == 12 and len({vm["tap"] for vm in vms}) == 12
    listed = sandbox.vmsan("list").out
    assert sorted(v["id"] for v in listed) == sorted(ids)
    for vm in vms[:2] + vms[-2:]:
        assert sandbox.add_guest(vm).tcp(WEB, 9000)
    for vm in vms:
        sandbox.vmsan("remove", vm["id"])
