"""guard/service.py without a kernel: which namespaces get a queue socket,
and when. The opener stands in for kernel/nfqueue.py's socket (a socket
pair: the loop polls a real file descriptor); the namespace's file is
"there" when the test says so."""

import socket

from ansible_collections.vmsan.network.plugins.module_utils.guard import service as guard_service
from ansible_collections.vmsan.network.plugins.module_utils.guard.service import GuardedVm, GuardService
from ansible_collections.vmsan.network.plugins.module_utils.resolver.pins import PinTable

VM = GuardedVm("web", "172.16.0.2", "vmsan-web", ("a.test",))


class Opener(object):
    def __init__(self):
        self.opened, self._pairs = [], []

    def __call__(self, netns):
        mine, other = socket.socketpair()
        self._pairs.append(other)
        self.opened.append(netns)
        return mine


def test_a_namespace_made_after_the_reload_is_bound_before_its_vms_answer(monkeypatch):
    """The reload named the VM while its namespace was not there yet: no
    socket then. ensure() (the resolver, before an answer that opens
    addresses) binds it at once, not on the control thread's next tick,
    which a guest connecting right after its answer would beat (its
    SYN-ACK copy lost, its flow refused as one whose SYN-ACK was not seen)."""
    namespaces = {}
    monkeypatch.setattr(guard_service, "_inode", lambda netns: namespaces.get(netns))
    opener = Opener()
    guard = GuardService(PinTable(), opener=opener)     # no threads: nothing happens behind the test's back
    try:
        guard.want([VM])
        guard.sync()
        assert opener.opened == [] and guard.ensure("vmsan-web") is False      # no namespace yet
        namespaces["vmsan-web"] = 4242
        assert guard.ensure("vmsan-web") is True and opener.opened == ["vmsan-web"]
        assert guard.ensure("vmsan-web") is True and opener.opened == ["vmsan-web"]   # bound once
        assert guard.ensure("vmsan-other") is False and opener.opened == ["vmsan-web"]  # not guarded
    finally:
        guard.close()


def test_the_loop_thread_runs_at_the_guests_nice_not_the_daemons():
    """service._at_least_nice: a thread at the daemon's -10 goes to GUARD_NICE
    (0); one an operator set higher keeps its value."""
    import os
    import threading
    seen = {}

    def thread(start):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, start)
        guard_service._at_least_nice(guard_service.GUARD_NICE)
        seen[start] = os.getpriority(os.PRIO_PROCESS, tid)
    for start in (-10, 5):
        t = threading.Thread(target=thread, args=(start,))
        t.start()
        t.join()
    assert seen == {-10: 0, 5: 5}
