"""The command server (daemon/commands.py) and the client (faces/client.py)
over real Unix sockets, with a stand-in executor (no kernel): answers, the
fallbacks (no socket, dead socket file, a daemon that never answers, one
that dies or goes silent mid-command, one killed mid-command), deadlines,
faults, and who may connect, proved with a child that drops to ``nobody``."""

import json
import os
import signal
import socket
import stat
import tempfile
import threading
import time

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.daemon import commands, protocol
from ansible_collections.vmsan.network.plugins.module_utils.faces import client
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import VmsanError

NOBODY = 65534
# The promise: a dead or wedged daemon costs a command at most this long
# before it falls back or fails clearly (a bound on hanging, not a benchmark).
NEVER_HANGS = 2.0

if os.geteuid() != 0:
    pytest.skip("the command server tests need root (peer credentials, setuid)", allow_module_level=True)


class Executor(object):
    """Stands in for cli.run: prints its argv as JSON on stdout, a line on
    stderr, and exits with the number after ``exit``; ``sleep S`` sleeps;
    ``boom`` raises."""

    def __init__(self):
        self.calls = []
        self.started = threading.Event()

    def __call__(self, argv, stdout, stderr, env):
        self.calls.append((list(argv), dict(env)))
        self.started.set()
        if "sleep" in argv:
            time.sleep(float(argv[argv.index("sleep") + 1]))
        if argv[:1] == ["boom"]:
            raise RuntimeError("a bug in the command")
        stdout.write(json.dumps({"argv": argv}) + "\n")
        stderr.write("vmsan: warning: from the stand-in\n")
        return int(argv[argv.index("exit") + 1]) if "exit" in argv else 0


@pytest.fixture
def home():
    # outside pytest's 0700 tmp tree, so that a child running as nobody can
    # reach the socket when a test opens it up
    path = tempfile.mkdtemp(prefix="vmsan-warm-test-")
    os.chmod(path, 0o700)
    yield path
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def environ(home):
    return dict(os.environ, VMSAN_HOME=home)


@pytest.fixture
def served(home):
    executor = Executor()
    server = commands.CommandServer(executor, state_dir=home).start()
    yield server, executor
    server.stop()


def ask(home, argv):
    return client.through_daemon(argv, environ=environ(home))


def test_the_answer_is_the_executors_output_and_status(served, home):
    server, executor = served
    answer = ask(home, ["create", "--id", "a", "exit", "2"])
    assert (answer.code, json.loads(answer.stdout), answer.stderr) == (
        2, {"argv": ["create", "--id", "a", "exit", "2"]}, "vmsan: warning: from the stand-in\n")
    assert executor.calls[0][1]["VMSAN_HOME"] == os.path.abspath(home)
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600


def test_main_prints_the_answer_and_returns_its_status(served, home, monkeypatch, capsys):
    monkeypatch.setenv("VMSAN_HOME", home)
    assert client.main(["list", "exit", "3"]) == 3
    out, err = capsys.readouterr()
    assert json.loads(out) == {"argv": ["list", "exit", "3"]} and err == "vmsan: warning: from the stand-in\n"


def test_no_socket_falls_back_at_once(home):
    began = time.monotonic()
    assert ask(home, ["list"]) is None
    assert time.monotonic() - began < NEVER_HANGS


def test_a_dead_socket_file_falls_back_silently(home, capsys):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(protocol.socket_path(home))
    dead.close()                     # the file stays, nobody listens
    began = time.monotonic()
    assert ask(home, ["create"]) is None
    assert time.monotonic() - began < NEVER_HANGS
    assert capsys.readouterr().err == ""


def test_a_daemon_that_accepts_but_never_answers_costs_half_a_second(home, capsys):
    wedged = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    wedged.bind(protocol.socket_path(home))
    wedged.listen(8)                 # the kernel accepts; nobody reads
    try:
        began = time.monotonic()
        assert ask(home, ["create", "--id", "a"]) is None
        assert time.monotonic() - began < NEVER_HANGS
        assert "did not answer within 0.5 s; running in-process" in capsys.readouterr().err
    finally:
        wedged.close()


class Scripted(object):
    """A fake daemon that says "ready" and then does what it is told."""

    def __init__(self, home, after_go):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(protocol.socket_path(home))
        self.sock.listen(8)
        self.after_go = after_go
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _unused = self.sock.accept()
        protocol.receive(conn)
        protocol.send(conn, {"type": "ready"})
        protocol.receive(conn)
        if self.after_go == "die":
            conn.close()
        elif self.after_go == "silence":
            time.sleep(3)
            conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("after_go, what", [("die", "stopped"), ("silence", "went silent")])
def test_a_daemon_lost_mid_command_is_a_clear_error_for_a_change(home, after_go, what):
    fake = Scripted(home, after_go)
    try:
        began = time.monotonic()
        answer = ask(home, ["remove", "vm-1"])
        assert time.monotonic() - began < NEVER_HANGS
        assert answer.code == 1 and answer.stdout == ""
        assert "%s while it ran 'remove'" % what in answer.stderr
        assert "converges" in answer.stderr
    finally:
        fake.close()


@pytest.mark.parametrize("after_go", ["die", "silence"])
def test_a_daemon_lost_mid_command_reruns_a_read_in_process(home, after_go, capsys):
    fake = Scripted(home, after_go)
    try:
        began = time.monotonic()
        assert ask(home, ["show", "vm-1"]) is None
        assert time.monotonic() - began < NEVER_HANGS
        assert "running in-process" in capsys.readouterr().err
    finally:
        fake.close()


def test_a_daemon_killed_mid_command(home):
    """A real server in a child process, SIGKILLed while it runs a command:
    the client fails clearly at once; the lock and the socket file it leaves
    do not stop the next server."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:                     # the daemon
        try:
            os.close(ready_r)
            executor = Executor()
            commands.CommandServer(lambda *a: (os.write(ready_w, b"x"), time.sleep(30)) and 0, state_dir=home).start()
            os.write(ready_w, b"s")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"s"
        outcome = {}
        asking = threading.Thread(target=lambda: outcome.update(answer=ask(home, ["create", "--id", "a"])))
        asking.start()
        assert os.read(ready_r, 1) == b"x"      # the command runs
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        asking.join(NEVER_HANGS + 1)
        assert time.monotonic() - killed < NEVER_HANGS
        answer = outcome["answer"]
        assert answer.code == 1 and "stopped while it ran 'create'" in answer.stderr
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
    assert os.path.exists(protocol.socket_path(home))        # left behind
    assert ask(home, ["list"]) is None                        # dead: in-process
    executor = Executor()
    with commands.CommandServer(executor, state_dir=home):    # the lock died with it
        assert ask(home, ["list"]).code == 0


def test_a_command_over_its_deadline_fails_and_others_go_on(home):
    executor = Executor()
    with commands.CommandServer(executor, state_dir=home, deadline=0.5):
        outcome = {}
        slow = threading.Thread(target=lambda: outcome.update(answer=ask(home, ["network", "vm-1", "sleep", "3"])))
        slow.start()
        assert executor.started.wait(2)
        assert ask(home, ["list", "exit", "0"]).code == 0     # served while the other one hangs
        slow.join(5)
        answer = outcome["answer"]
        assert answer.code == 1 and "did not finish 'network' within 0.5 s" in answer.stderr


def test_a_fault_in_a_command_is_its_exit_1_and_the_server_goes_on(served, home):
    answer = ask(home, ["boom"])
    assert answer.code == 1 and "RuntimeError: a bug in the command" in answer.stderr
    assert ask(home, ["list"]).code == 0


def test_other_settings_are_declined_so_the_client_runs_in_process(served, home):
    server, executor = served
    env = dict(environ(home), VMSAN_SANDBOX_ONLY="0" if os.environ.get("VMSAN_SANDBOX_ONLY") == "1" else "1")
    assert client.through_daemon(["create"], environ=env) is None
    env = dict(environ(home), VMSAN_FAIL_AT="after-links:kill")
    assert client.through_daemon(["create"], environ=env) is None
    assert executor.calls == []


def test_one_server_per_state_directory(served, home):
    with pytest.raises(VmsanError, match="another vmsan daemon serves"):
        commands.CommandServer(Executor(), state_dir=home).start()


def test_stop_removes_the_socket(home):
    server = commands.CommandServer(Executor(), state_dir=home).start()
    server.stop()
    assert not os.path.exists(server.path)
    assert ask(home, ["list"]) is None


# -- who may connect: a child that drops to nobody ------------------------------------------
def as_user(fn, uid=NOBODY, gid=NOBODY, groups=()):
    """FN() run in a forked child with uid/gid/groups dropped; its return
    value (JSON) comes back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            result = fn()
            os.write(w, json.dumps(result).encode())
        except BaseException as exc:
            os.write(w, json.dumps({"child error": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def answer_of(home, argv):
    def fn():
        assert os.geteuid() == NOBODY
        answer = client.through_daemon(argv, environ=environ(home))
        return None if answer is None else [answer.code, answer.stdout, answer.stderr]
    return fn


def test_a_user_is_refused_by_the_sockets_mode(served, home):
    server, executor = served
    os.chmod(home, 0o755)            # the directory is not what stops it
    code, out, err = as_user(answer_of(home, ["remove", "vm-1"]))
    assert code == 1 and out == ""
    assert "permission denied on the vmsan daemon's socket" in err and "need root" in err
    assert executor.calls == []


def test_a_user_is_refused_by_peer_credentials_even_on_an_open_socket(served, home):
    server, executor = served
    os.chmod(home, 0o755)
    os.chmod(server.path, 0o666)     # a mistake by hand: SO_PEERCRED still says no
    code, out, err = as_user(answer_of(home, ["remove", "vm-1"]))
    assert code == 1 and out == ""
    assert "refused this command: uid 65534 is not root" in err
    assert executor.calls == []


def test_a_granted_group_is_served_also_as_a_supplementary_group(home):
    executor = Executor()
    group = 65533               # a gid that no account has (nobody is not in it)
    with commands.CommandServer(executor, state_dir=home, group=group) as server:
        st = os.stat(server.path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, group, 0o660)
        assert os.stat(home).st_gid == group and os.stat(home).st_mode & stat.S_IXGRP
        # not a member: the socket's mode stops it
        code, _out, err = as_user(answer_of(home, ["list"]))
        assert code == 1 and "permission denied" in err
        # a member through a supplementary group: served
        code, out, _err = as_user(answer_of(home, ["list"]), groups=(group,))
        assert code == 0 and json.loads(out) == {"argv": ["list"]}
    assert [c[0] for c in executor.calls] == [["list"]]


# -- the executor the daemon runs the CLI with (faces/warm.py) -------------------------------
def test_the_executor_gives_each_thread_its_own_streams(capsys, home, monkeypatch):
    import io
    from ansible_collections.vmsan.network.plugins.module_utils.faces import warm
    monkeypatch.setenv("VMSAN_HOME", home)
    results = {}

    def one(name, argv):
        out, err = io.StringIO(), io.StringIO()
        results[name] = (warm.run(argv, out, err, {}), out.getvalue(), err.getvalue())
    threads = [threading.Thread(target=one, args=("bad%d" % i, ["create", "--id", "has space %d" % i]))
               for i in range(8)] + [threading.Thread(target=one, args=("list", ["list", "--json"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        code, out, err = results["bad%d" % i]
        assert code == 2 and out == "" and err.startswith("vmsan: --id: invalid VM id 'has space %d'" % i)
        assert err.count("vmsan:") == 1
    assert results["list"] == (0, "[]\n", "")
    assert capsys.readouterr() == ("", "")                 # nothing reached the daemon's own streams


def test_the_executor_runs_the_clis_run(monkeypatch):
    from ansible_collections.vmsan.network.plugins.module_utils.faces import cli, warm
    seen = []
    monkeypatch.setattr(cli, "run", lambda argv, out, err, env: seen.append((argv, env)) or 4, raising=False)
    assert warm.run(["list"], None, None, {"VMSAN_HOME": "/tmp/x"}) == 4
    (argv, env), = seen
    assert argv == ["list"] and env["VMSAN_HOME"] == "/tmp/x" and env.get("PATH") == os.environ.get("PATH")


def test_a_socket_served_by_another_user_is_never_believed(home, capsys):
    """A user who can write the state directory could put a socket there
    that answers with made-up output: the client checks the server's uid."""
    os.chmod(home, 0o777)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:                     # the impostor, as nobody
        try:
            os.close(ready_r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            fake.bind(protocol.socket_path(home))
            fake.listen(1)
            os.write(ready_w, b"s")
            fake.settimeout(5)
            conn, _unused = fake.accept()
            protocol.receive(conn)
            protocol.send(conn, {"type": "ready"})
            protocol.receive(conn)
            protocol.send(conn, {"type": "done", "exit": 0, "stdout": '{"tap": "made-up"}\n', "stderr": ""})
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"s"
        assert ask(home, ["create", "--id", "a"]) is None
        assert "served by uid 65534, not root: ignoring it" in capsys.readouterr().err
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)


def test_an_oversized_request_is_dropped_and_the_server_goes_on(served, home):
    server, executor = served
    conn = protocol.unix_socket()
    conn.connect(server.path)
    conn.sendall((protocol.MAX_REQUEST + 1).to_bytes(4, "big") + b"x" * 1024)
    conn.settimeout(2)
    try:
        assert conn.recv(16) == b""   # closed without an answer ...
    except ConnectionResetError:
        pass                          # ... with what we sent unread
    conn.close()
    assert ask(home, ["list"]).code == 0 and len(executor.calls) == 1


def test_a_client_that_says_it_is_elsewhere_is_declined(served, home):
    server, executor = served
    conn = protocol.unix_socket()
    conn.connect(server.path)
    ns = protocol.namespaces()
    for claimed in ({"net": ns["net"] + 1, "mnt": ns["mnt"]}, {"net": ns["net"], "mnt": ns["mnt"] + 1}, {}):
        conn = protocol.unix_socket()
        conn.connect(server.path)
        protocol.send(conn, {"type": "request", "v": protocol.VERSION, "ns": claimed, "argv": ["list"],
                             "env": protocol.env_of(environ(home))})
        assert protocol.receive(conn) == {"type": "decline",
                                          "reason": "the client is in another network or mount namespace"}
        conn.close()
    assert executor.calls == []
    assert ask(home, ["list"]).code == 0       # where it really is: served
