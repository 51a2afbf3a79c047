"""Child processes of the harness: bounded runs and background processes that
cannot outlive the test process."""

import ctypes
import os
import signal
import subprocess
import time

PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when the thread that forked it dies.

    This is what keeps relays and servers from surviving a crashed or killed
    pytest. The signal follows the *thread* that forked the child, so spawn
    long-lived children from a thread that lives as long as they should.
    """
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def nsenter_argv(ns_path, argv):
    """Enter only the network namespace (never the mount namespace: docs/contract.md, "Test topology")."""
    return ["nsenter", f"--net={ns_path}", "--", *[str(a) for a in argv]]


def run(argv, timeout=30, check=False, input=None, env=None, text=True):
    """Run to completion with a time limit; output is captured."""
    return subprocess.run(
        [str(a) for a in argv],
        input=input,
        capture_output=True,
        text=text,
        timeout=timeout,
        check=check,
        env=env,
        preexec_fn=die_with_parent,
    )


def spawn(argv, env=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw):
    """Start in the background; the caller (or its cleanup) must ``stop()`` it."""
    return subprocess.Popen(
        [str(a) for a in argv],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=env,
        preexec_fn=die_with_parent,
        **kw,
    )


def stop(proc, grace=2.0):
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def kill_pid(pid, grace=2.0):
    """Stop a process that is not our child (e.g. left by a crashed run)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
