"""The name guard as the host daemon runs it: the loop on a thread of its own
(named ``vmsan-guard``), one queue socket in every network namespace that
holds a guarded VM's TAP, kept in step with the VMs as they come, go and
change policy.

* ``want(vms)``: the guarded VMs now (``GuardedVm``: id, guest address, the
  namespace that holds its TAP, its allowed domains), from any thread; it
  only records them, so the resolver's loop can call it on every reload.
* A control thread (``guard-control``) makes it so: it opens a queue socket
  inside each namespace that needs one (``kernel.nfqueue``, queue and log
  group of ``plan.name_guard``; the host's own for ``--no-netns`` VMs),
  hands each namespace's VMs to its ``NamespaceGuard`` on the loop's thread
  (a policy change cuts the flows the new list no longer accepts), and
  closes the socket of a namespace with no guarded VM left. Every
  HOUSEKEEPING seconds it also looks at each namespace's file: a namespace
  that is gone or was replaced (a VM removed, or recreated under the same
  name) has its socket closed at once, so the guard never keeps a removed
  VM's namespace alive; a namespace that could not be opened yet (a VM
  being created) is tried again.
* Faults stay inside: an exception in a decision drops that packet, one in
  the loop restarts the loop, one in the control thread is logged and tried
  again. None reaches the resolver.

Without a socket bound to a namespace's queue the kernel drops what the
rules queue (no ``--queue-bypass``): a guarded VM's new flows fail closed
while its namespace has no guard, and whenever the daemon is down.
"""

import ctypes
import logging
import os
import threading
import time
from collections import namedtuple

from ..kernel import fastpath
from ..kernel import netns as ns
from ..kernel import nfqueue as nq
from ..model.errors import VmsanError
from ..plan import name_guard as layout
from .loop import GuardLoop, LogRefusals, NamespaceGuard, VmView

log = logging.getLogger("vmsan.guard")

HOUSEKEEPING = 0.25
PR_SET_NAME = 15
# The loop thread's nice value: the guests' (their VMMs run at 0), not the
# daemon's -10 (docs/domain-policies.md, "Priority"). The guard's work is
# per new connection of a guest, with no budget per VM: above the guests, a
# guest opening connections as fast as it can would take CPU from the
# others; and at -10 the thread preempts the guest on every held packet,
# so it wakes once per connection instead of once per batch (measured: about
# twice the CPU per decision, and a lower connection rate, bench/guard_bench.py).
GUARD_NICE = 0

# netns: the namespace that holds the VM's TAP (None: the daemon's own, for --no-netns);
# audit: its policy is in audit mode (the guard lets through what it would refuse)
GuardedVm = namedtuple("GuardedVm", "vm_id guest_ip netns allowed_domains audit", defaults=(False,))


def open_queue(netns):
    """The guard's queue socket of namespace NETNS (None: this thread's)."""
    with ns.entered(netns):
        return nq.QueueSocket(layout.QUEUE_NUM, log_group=layout.LOG_GROUP)


def _inode(netns):
    """The inode of NETNS's namespace file (None: it does not exist; the
    daemon's own namespace is 0, it cannot go)."""
    if netns is None:
        return 0
    try:
        return os.stat(ns.path(netns)).st_ino
    except OSError:
        return None


def _name_thread(name):
    """The name ``top -H`` and /proc/PID/task/TID/comm show for this thread
    (Python's thread names stay inside Python)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _at_least_nice(nice):
    """This thread's nice value raised to NICE if it is below (a thread
    may always lower its own priority; a higher nice set by an operator
    stays)."""
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.warning("guard: cannot set its thread's nice value to %d: %s", nice, exc)


class _Namespace(object):
    __slots__ = ("guard", "inode", "vms")

    def __init__(self, guard, inode, vms):
        self.guard, self.inode, self.vms = guard, inode, vms


class GuardService(object):
    def __init__(self, pins, on_refusal=None, clock=time.monotonic, opener=open_queue):
        self.pins, self.clock, self.opener = pins, clock, opener
        self.on_refusal = on_refusal or LogRefusals(clock=clock)
        self.loop = GuardLoop()
        self._namespaces = {}       # netns -> _Namespace; the control thread's (or sync's caller's)
        self._wanted = {}           # netns -> (GuardedVm, ...), sorted
        self._cond = threading.Condition()
        self._dirty = False
        self._stop = threading.Event()
        self._threads = []
        self._failing = {}          # netns -> the error last logged for it
        self._closed = False
        self._making = threading.Lock()     # one _reconcile at a time (the control thread, sync's caller)

    # -- what is wanted ------------------------------------------------------------
    def want(self, vms):
        """The guarded VMs are VMS (GuardedVm); made so on the control thread."""
        grouped = {}
        for vm in vms:
            grouped.setdefault(vm.netns, []).append(vm)
        wanted = {netns: tuple(sorted(group)) for netns, group in grouped.items()}
        with self._cond:
            if wanted != self._wanted:
                self._wanted = wanted
                self._dirty = True
                self._cond.notify()

    def sync(self):
        """Make it so now, on the calling thread: at the daemon's start, and
        after every reload of the state directory, so that a VM's queue is
        bound (and a replaced namespace's socket opened again) before the
        resolver answers the VM's DNS. A guest that connects right after its
        first answer would otherwise race the control thread: its server's
        SYN-ACK copy lost to an unbound log group, its flow refused."""
        self._reconcile()

    def ensure(self, netns):
        """NETNS's queue bound now, if a guarded VM is there and it is not
        bound yet (the resolver's thread, before an answer that opens
        addresses): True when it is bound. The common case is one dict
        lookup; the rare one (a namespace made after the reload that named
        its VM, or one that could not be entered then) is a reconcile here,
        since on the control thread's tick the guest's first SYN-ACK would
        be gone before the queue's log group was bound, and its flow refused."""
        if netns in self._namespaces:
            return True
        with self._cond:
            if netns not in self._wanted:
                return False
        self._reconcile()
        return netns in self._namespaces

    # -- threads -------------------------------------------------------------------
    def start(self):
        # which reader runs is what a decision costs (docs/domain-policies.md)
        log.info("guard: packets and ClientHellos are read in %s%s", fastpath.describe(),
                 "" if fastpath.native else " (native/vmsan_fastpath.c is not built: scripts/build-native.sh)")
        for target, name in ((self._serve, "vmsan-guard"), (self._control, "guard-control")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self):
        _name_thread("vmsan-guard")
        _at_least_nice(GUARD_NICE)
        while not self._stop.is_set():
            try:
                self.loop.run(self._stop)
            except Exception as exc:        # the loop itself failed: start it again
                log.exception("guard loop: %s (restarted)", exc)
                self._stop.wait(0.1)

    def _control(self):
        _name_thread("guard-control")
        while not self._stop.is_set():
            with self._cond:
                if not self._dirty:
                    self._cond.wait(HOUSEKEEPING)
            if self._stop.is_set():
                return
            try:
                self._reconcile()
            except Exception as exc:
                log.exception("guard: %s", exc)

    def close(self):
        """Stop the threads and unbind every queue (held packets are dropped:
        fail closed)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._cond:
            self._cond.notify()
        for thread in self._threads:
            thread.join(5)
        for netns in list(self._namespaces):
            entry = self._namespaces.pop(netns)
            self.loop.remove(entry.guard)
            entry.guard.close()
        self.loop.close()

    # -- making it so --------------------------------------------------------------
    def _reconcile(self):
        with self._making:
            self._reconcile_now()

    def _reconcile_now(self):
        with self._cond:
            wanted, self._dirty = dict(self._wanted), False
        for netns in [n for n in self._namespaces if n not in wanted]:
            self._drop(netns, "no guarded VM left")
        for netns, vms in wanted.items():
            inode = _inode(netns)
            entry = self._namespaces.get(netns)
            if entry is not None and entry.inode != inode:
                self._drop(netns, "its namespace is gone" if inode is None else "its namespace was replaced")
                entry = None
            views = [VmView(vm.vm_id, vm.guest_ip, vm.allowed_domains, vm.audit) for vm in vms]
            if entry is None:
                if inode is not None:
                    self._open(netns, inode, vms, views)
            elif entry.vms != vms:
                entry.vms = vms
                guard = entry.guard
                self.loop.post(lambda guard=guard, views=views: guard.set_vms(views))

    def _open(self, netns, inode, vms, views):
        try:
            sock = self.opener(netns)
        except (VmsanError, OSError) as exc:
            if self._failing.get(netns) != str(exc):
                self._failing[netns] = str(exc)
                log.error("namespace %s: cannot guard its VMs (%s), their guarded flows are dropped; trying again",
                          netns or "(host)", exc)
            return
        self._failing.pop(netns, None)
        guard = NamespaceGuard(netns, sock, views, self.pins, self.clock, self.on_refusal)
        self._namespaces[netns] = _Namespace(guard, inode, vms)
        self.loop.add(guard)
        log.info("namespace %s: guarding %s", netns or "(host)", ", ".join(vm.vm_id for vm in vms))

    def _drop(self, netns, why):
        entry = self._namespaces.pop(netns)
        self._failing.pop(netns, None)
        guard, loop = entry.guard, self.loop

        def drop():
            loop.remove(guard)
            guard.close()
        if self._threads and not self._stop.is_set():
            loop.post(drop)
        else:
            drop()
        log.info("namespace %s: queue closed (%s)", netns or "(host)", why)

    # -- what the daemon reads -----------------------------------------------------
    def namespaces(self):
        return sorted(self._namespaces, key=lambda n: n or "")

    def decisions(self):
        """{vm id: {(decision, reason): count}} of every guarded VM (a copy)."""
        out = {}
        for guard in self.loop.guards():
            for vm_id, by in list(guard.decisions.items()):
                mine = out.setdefault(vm_id, {})
                for key, count in list(by.items()):
                    mine[key] = mine.get(key, 0) + count
        return out

    def stats(self):
        """Totals for the daemon's health answer: guard_* counters."""
        totals = {}
        guards = self.loop.guards()
        for guard in guards:
            for name, value in guard.counters.as_dict().items():
                totals[name] = totals.get(name, 0) + value
        out = {"guard_" + name: totals.get(name, 0)
               for name in ("accepted", "refused", "would_refuse", "cut", "messages", "faults")}
        out["guard_queues"] = len(guards)
        out["guard_wakeups"] = self.loop.wakeups
        out["guard_cpu_us"] = int(self.loop.cpu_seconds * 1e6)
        out["guard_system_us"] = int(self.loop.system_seconds * 1e6)
        return out
