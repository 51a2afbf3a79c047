"""Nothing a sandbox made outlives it: not on close, not on errors, and what a
killed run leaves is found and removed by cleanup.py (and nothing else is)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from sandbox.fakes import make_fake_vm, masquerade

from sandbox import Sandbox, cleanup, registry
from sandbox.internet import Internet
from sandbox.netns import list_netns


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def ours(prefix):
    return [n for n in list_netns() if prefix in n]


def test_close_leaves_nothing(sandbox_reaped):
    # Other runs may create and remove namespaces meanwhile: look at this
    # sandbox's names only.
    sb = Sandbox().start()
    vm, _ = make_fake_vm(sb, slot=1, in_netns=True)
    other_vm, _ = make_fake_vm(sb, slot=2)
    guests = [sb.add_guest(vm), sb.add_guest(other_vm)]
    masquerade(sb)
    iperf = sb.internet.iperf3_server()
    stream = guests[1].stream("203.0.113.10", 9001)
    assert stream.is_flowing()
    sb.host.sniff("uplink0")
    sb.host.serve_tcp("0.0.0.0", 7000)
    pids = [g.relay.pid for g in guests] + [iperf.pid]
    assert len(ours(sb.prefix)) == 5  # host, inet, vm1, g1, g2

    sb.close()

    assert ours(sb.prefix) == []  # `ip netns list` shows nothing of it
    assert not any(alive(pid) for pid in pids)
    assert not os.path.exists(sb.home)
    assert not os.path.exists(os.path.join(registry.OWNER_DIR, sb.prefix))


def test_error_inside_the_block_still_cleans_up(sandbox_reaped):
    with pytest.raises(KeyboardInterrupt):
        with Sandbox() as sb:
            sb.add_guest(make_fake_vm(sb)[0])
            raise KeyboardInterrupt
    assert ours(sb.prefix) == []


def test_failed_setup_cleans_up(sandbox_reaped, monkeypatch):
    def broken(self):
        raise RuntimeError("servers did not start")

    monkeypatch.setattr(Internet, "start_servers", broken)
    sb = Sandbox()
    with pytest.raises(RuntimeError, match="servers did not start"):
        sb.start()
    assert ours(sb.prefix) == []


CRASHING_RUN = """
import time
from sandbox import Sandbox
from sandbox.fakes import make_fake_vm
sb = Sandbox().start()
guest = sb.add_guest(make_fake_vm(sb)[0])
print(sb.prefix, guest.relay.pid, flush=True)
time.sleep(60)
"""


def test_cleanup_script_reaps_a_killed_run_and_spares_a_live_one(sandbox):
    child = subprocess.Popen([sys.executable, "-c", CRASHING_RUN], stdout=subprocess.PIPE, text=True)
    try:
        prefix, relay_pid = child.stdout.readline().split()
    finally:
        child.send_signal(signal.SIGKILL)  # no cleanup of its own can run
        child.wait()
        child.stdout.close()
    deadline = time.monotonic() + 3
    while alive(int(relay_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(relay_pid)), "the relay must die with its parent"
    assert len(ours(prefix)) == 3  # the names stay until someone removes them

    dry = subprocess.run(
        [sys.executable, "-m", "sandbox.cleanup", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dry.returncode == 0 and f"delete netns {prefix}-host" in dry.stdout
    assert sandbox.prefix not in dry.stdout  # a live sandbox is not a leftover

    cleanup.reap()
    assert ours(prefix) == []
    assert len(ours(sandbox.prefix)) == 2
    assert sandbox.host.tcp("203.0.113.10", 9000)
