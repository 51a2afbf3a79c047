"""The guard tells the machine's namespace from a sandbox's, and entered()
always brings the thread back."""

import threading

import pytest

from sandbox import guard


def test_root_namespace_is_refused_outside_a_sandbox(sandbox_reaped):
    # pytest itself runs in the machine's namespace
    assert guard.current_netns_inode() == guard.root_netns_inode()
    with pytest.raises(guard.RootNamespaceError, match="root"):
        guard.assert_not_root_netns()


def test_entered_switches_the_thread_and_restores_it(sandbox):
    before = guard.current_netns_inode()
    with guard.entered(sandbox.host.name):
        assert guard.current_netns_inode() == sandbox.host.inode()
        guard.assert_not_root_netns()
    assert guard.current_netns_inode() == before


def test_entered_restores_after_an_error(sandbox):
    before = guard.current_netns_inode()
    with pytest.raises(ZeroDivisionError):
        with sandbox.internet.entered():
            1 / 0
    assert guard.current_netns_inode() == before


def test_entered_moves_only_the_calling_thread(sandbox):
    entered_here = threading.Event()
    done = threading.Event()
    seen = {}

    def bystander():
        entered_here.wait(5)
        seen["inode"] = guard.current_netns_inode()
        done.set()

    thread = threading.Thread(target=bystander)
    thread.start()  # started before entering: stays where it was
    with sandbox.host.entered():
        entered_here.set()
        done.wait(5)
    thread.join()
    assert seen["inode"] == guard.root_netns_inode()


def test_threads_started_inside_entered_inherit_the_namespace(sandbox):
    # Documented caveat: a new thread starts in its creator's namespace.
    seen = {}
    with sandbox.host.entered():
        thread = threading.Thread(target=lambda: seen.update(inode=guard.current_netns_inode()))
        thread.start()
        thread.join()
    assert seen["inode"] == sandbox.host.inode()


def test_entering_the_root_namespace_is_refused(sandbox_reaped, tmp_path):
    # a path that names the root namespace, as a mistaken test might pass
    with pytest.raises(guard.RootNamespaceError):
        with guard.entered("/proc/2/ns/net"):
            pass
    assert guard.current_netns_inode() == guard.root_netns_inode()
