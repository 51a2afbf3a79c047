"""The VMs the resolver serves, and what it keeps for each: the registry
(state files -> ``VmState`` by guest address), each VM's ``Meter`` (its
budgets and counters, kept across policy changes), and its learning
(``Learner``: one netlink socket in the VM's namespace; ``LearningWorker``:
the one thread that talks to the kernel, so that no netlink round trip
happens on the thread that answers every VM).

A VM is known by the source address of its queries (the VM's anti-spoofing
rules make that trustworthy). Its state file says its policy and, when it
has them, its own budgets (``limits.budget_from_record``).
"""

import collections
import logging
import os
import socket
import threading
import time

from ..kernel import netns as ns
from ..kernel.ipset_wire import IpsetError, IpsetSocket
from ..kernel.ipsets import SetManager
from ..model.errors import NotFoundError, VmsanError
from ..plan import firewall as fp
from . import cache, core, limits

log = logging.getLogger("vmsan.resolver")

FRESH_MTIME_NS = 30 * 1000 * 1000    # see Registry.check_state
FRESH_RECHECK = 0.005
MAX_LEARNED_RECORDS = 8192          # per VM: what the resolver remembers having learned (an optimisation only)
MAX_LEARN_JOBS = 256                # per VM, waiting for the learning thread; beyond: SERVFAIL
IPSET_ERR_HASH_FULL = 4352          # the kernel's IPSET_ERR_TYPE_SPECIFIC for hash sets: maxelem reached


def _netns_inode(name):
    if name is None:
        return None
    try:
        return os.stat(ns.path(name)).st_ino
    except OSError:
        return None


# --------------------------------------------------------------------------
# a VM's budgets and counters
# --------------------------------------------------------------------------
class Meter(object):
    """What one VM (one identity: a recreated VM gets a new one) may still
    take: its query bucket, its upstream queries in flight, its TCP
    connections, its learning jobs waiting, its log lines."""

    __slots__ = ("vm_id", "budget", "bucket", "refusals", "in_flight", "tcp", "learning", "log", "over_budget",
                 "formerr", "problems", "rcodes", "unanswered", "event_due")

    def __init__(self, vm_id, budget, now, log_lines=20, log_window=60.0):
        self.vm_id, self.budget = vm_id, budget
        self.bucket = limits.TokenBucket(budget.queries_per_second, now=now)
        # REFUSED goes out at most at the same rate again; beyond that a
        # flood is dropped unanswered (each answer costs the host a send)
        self.refusals = limits.TokenBucket(budget.queries_per_second, now=now)
        self.in_flight = self.tcp = self.learning = 0
        self.log = limits.LogBudget(log_lines, log_window)
        self.over_budget = self.formerr = 0
        self.problems = ()
        # for the metrics (telemetry): replies by rcode (the index), queries left unanswered
        self.rcodes = [0] * 16
        self.unanswered = 0
        self.event_due = 0.0        # budget refusals go to the event log at most once a second

    def set_budget(self, budget):
        if budget != self.budget:
            self.budget = budget
            self.bucket.set_rate(budget.queries_per_second)
            self.refusals.set_rate(budget.queries_per_second)


# --------------------------------------------------------------------------
# learning into a VM's set
# --------------------------------------------------------------------------
class Learner(object):
    """Adds addresses to one VM's ``dns`` set over one netlink socket that
    lives in the namespace holding the VM's TAP (opened on first use,
    reopened when that namespace is no longer the one it was opened in, or
    when the socket itself failed; a refusal by the kernel, such as a full
    set, keeps the socket). Used by the learning thread only."""

    def __init__(self, vm_id, netns_name, meter=None):
        self.vm_id, self.netns, self.meter = vm_id, netns_name, meter
        self.set_name = fp.set_name(vm_id, "dns")
        self._sock = None
        self._inode = None
        self._lock = threading.Lock()
        self.full = False       # the set refused an address for being full, and nothing since was learned

    def _open(self):
        with ns.entered(self.netns):
            self._sock = IpsetSocket()
        self._inode = _netns_inode(self.netns)

    def close(self):
        with self._lock:
            self._close()

    def _close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def still_valid(self):
        """False once the namespace the socket lives in is gone or replaced
        (an open socket would keep a removed VM's namespace alive)."""
        return self._sock is None or self.netns is None or _netns_inode(self.netns) == self._inode

    def release_if_stale(self):
        with self._lock:
            if not self.still_valid():
                self._close()

    def add_many(self, entries):
        """Add every (address, timeout, comment) of ENTRIES in one batch.
        Returns {address: errno} of those the kernel refused (every entry
        of a batch is tried); raises OSError/VmsanError when the batch could
        not be sent at all (twice: the socket is reopened once)."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._sock is None or not self.still_valid():
                        self._close()
                        self._open()
                    self._sock.add_many(self.set_name, entries)
                    return {}
                except IpsetError as exc:
                    if exc.failures:        # the kernel refused these; the socket is fine
                        return {entries[index][0]: err for index, err in exc.failures}
                    self._close()
                    if attempt:
                        raise
                except (OSError, VmsanError):
                    self._close()
                    if attempt:
                        raise
        return {}

    def prune(self, vm):
        """Forget learned addresses whose name VM's policy no longer allows
        (the CLI prunes too, with the same pruner; this catches what an
        answer in flight learned under the old policy while the change was
        being made)."""
        with self._lock:
            with ns.entered(self.netns):
                with SetManager() as sets:
                    return sets.prune_learned(self.set_name, vm.matcher.allowed)[0]


class LearningWorker(object):
    """The thread that adds learned addresses to the VMs' sets (and prunes
    them after a policy change). Jobs wait in one queue per VM and are taken
    in turn, a VM's waiting jobs together as one netlink batch, so a VM
    whose answers carry many addresses delays only its own answers. A job's
    DONE(failed) runs on the daemon's loop thread through POST, with
    {address: errno} of what the kernel refused."""

    def __init__(self, post, on_batch=None):
        self.post = post
        self.on_batch = on_batch        # (learner, entries, failed, error) after each batch, posted
        self._queues = collections.OrderedDict()     # learner -> deque of jobs
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="learning", daemon=True)
        self._thread.start()

    def stop(self):
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def submit(self, learner, entries, done):
        """ENTRIES: [(address, timeout, comment)]."""
        with self._cond:
            queue = self._queues.get(learner)
            if queue is None:
                queue = self._queues[learner] = collections.deque()
            queue.append((entries, done))
            self._cond.notify()

    def submit_call(self, learner, call):
        """Run CALL() on this thread in LEARNER's turn (a prune)."""
        self.submit(learner, None, call)

    def pending(self):
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def _next(self):
        with self._cond:
            while not self._queues and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None, None
            learner, queue = self._queues.popitem(last=False)
            jobs = list(queue)
            return learner, jobs

    def _run(self):
        while True:
            learner, jobs = self._next()
            if learner is None:
                return
            calls = [done for entries, done in jobs if entries is None]
            jobs = [(entries, done) for entries, done in jobs if entries is not None]
            for call in calls:
                try:
                    call()
                except Exception as exc:
                    log.warning("VM %s: %s", learner.vm_id, exc)
            if jobs:
                self._learn(learner, jobs)

    def _learn(self, learner, jobs):
        merged = collections.OrderedDict()
        for entries, _done in jobs:
            for address, timeout, comment in entries:
                merged[address] = (address, timeout, comment)     # the latest answer's timeout and name
        entries = list(merged.values())
        error = None
        try:
            failed = learner.add_many(entries)
        except Exception as exc:        # the set or the namespace is gone: nothing was learned
            failed, error = {address: getattr(exc, "errno", None) or -1 for address in merged}, exc
        if self.on_batch is not None:
            self.post(lambda: self.on_batch(learner, entries, failed, error))
        for _entries, done in jobs:
            self.post(lambda done=done: done(failed))


# --------------------------------------------------------------------------
# the VMs
# --------------------------------------------------------------------------
class VmState(object):
    """A VM's policy plus what the resolver keeps for it under that policy;
    replaced whole when the policy changes, so nothing cached under the old
    policy survives. The meter and the learner belong to the VM's identity
    and carry over."""

    __slots__ = ("policy", "sig", "learner", "meter", "hot", "learned")

    def __init__(self, policy, sig, learner, meter, shared_hot, hot_limit):
        self.policy, self.sig, self.learner, self.meter = policy, sig, learner, meter
        self.hot = cache.HotCache(shared_hot, hot_limit)
        self.learned = {}       # address -> monotonic time its set entry runs out

    def note_learned(self, address, until):
        if len(self.learned) >= MAX_LEARNED_RECORDS:
            self.learned.clear()
        self.learned[address] = until


class Registry(object):
    """VMs by guest address (``vms``: text, ``vms_raw``: the packed address),
    re-read from the state directory when it changes. ``on_new_policy`` is
    called with each VM whose policy is new or changed and learns (to prune
    its set), once its record is past "creating"; ``on_reloaded`` with every VM (its VmStates) after each
    re-read that changed something (pins, the name guard)."""

    def __init__(self, store, defaults=limits.DEFAULT_BUDGET, clock=time.monotonic, shared_hot=None,
                 hot_limit=cache.DEFAULT_HOT_BYTES_PER_VM, on_new_policy=None, on_reloaded=None):
        self.store, self.defaults, self.clock = store, defaults, clock
        self.shared_hot = shared_hot or cache.SharedBytes()
        self.hot_limit = hot_limit
        self.on_new_policy = on_new_policy
        self.on_reloaded = on_reloaded
        self.vms = {}               # guest ip -> VmState (replaced whole on reload)
        self.vms_raw = {}           # the same, keyed by the packed address
        self.by_id = {}
        self.learners = {}          # VM identity -> Learner
        self.meters = {}            # VM identity -> Meter
        self.lock = threading.Lock()
        self._dir_sig = ()
        self._recheck_at = 0.0

    def get(self, ip):
        return self.vms.get(ip)

    def states(self):
        return list(self.by_id.values())

    def check_state(self, force=False):
        """Re-read changed state files if the state directory changed.

        A directory's mtime comes from the kernel's coarse clock (one tick,
        up to 10 ms), so a second change within the tick of the first leaves
        it as it was: while the mtime is younger than FRESH_MTIME_NS, the
        files are looked at again every FRESH_RECHECK seconds."""
        try:
            st = os.stat(self.store.vms_dir)
            sig = (st.st_ino, st.st_mtime_ns)
            fresh = time.time_ns() - st.st_mtime_ns < FRESH_MTIME_NS
        except OSError:
            sig, fresh = None, False
        if sig == self._dir_sig and not force:
            if not self._recheck_at or time.monotonic() < self._recheck_at:
                return False
        if not self.lock.acquire(blocking=False):
            return False
        try:
            self._reload()
            self._dir_sig = sig
            self._recheck_at = time.monotonic() + FRESH_RECHECK if fresh else 0.0
        finally:
            self.lock.release()
        return True

    def _reload(self):
        by_id, changed = {}, []
        now = self.clock()
        for vm_id in self.store.ids():
            path = self.store.path(vm_id)
            try:
                st = os.stat(path)
            except OSError:
                continue
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            old = self.by_id.get(vm_id)
            if old is not None and old.sig == sig:
                by_id[vm_id] = old
                continue
            try:
                record = self.store.load(vm_id)
                policy = core.VmPolicy(record)
            except NotFoundError:
                continue
            except Exception as exc:    # a corrupt file: that VM's queries are refused
                log.error("cannot read the state of VM %s: %s (its queries are refused)", vm_id, exc)
                continue
            budget, problems = limits.budget_from_record(record, self.defaults)
            meter = self.meters.get(policy.identity)
            if meter is None:
                meter = self.meters[policy.identity] = Meter(policy.vm_id, budget, now)
            meter.set_budget(budget)
            if problems and tuple(problems) != meter.problems:
                log.error("VM %s: %s (the daemon's defaults apply)", vm_id, "; ".join(problems))
            meter.problems = tuple(problems)
            if old is not None and old.policy.identity == policy.identity \
                    and old.policy.policy_key == policy.policy_key:
                old.sig = sig
                by_id[vm_id] = old
                continue
            learner = self.learners.get(policy.identity)
            if learner is None:
                learner = self.learners[policy.identity] = Learner(policy.vm_id, policy.netns, meter)
            state = VmState(policy, sig, learner, meter, self.shared_hot, self.hot_limit)
            by_id[vm_id] = state
            if old is None:
                log.info("VM %s (%s): policy %s", vm_id, policy.guest_ip, policy.mode)
            else:
                log.info("VM %s (%s): policy now %s%s", vm_id, policy.guest_ip, policy.mode,
                         "" if old.policy.identity == policy.identity else " (VM recreated)")
            # a record still "creating" is written before its kernel steps
            # (lifecycle/manager._create): its set may not be there yet, and
            # a VM being made has nothing learned under another policy
            if policy.learns and record.status != "creating":
                changed.append(state)
        identities = {s.policy.identity for s in by_id.values()}
        gone = [i for i in self.learners if i not in identities]
        for identity in gone:
            self.learners.pop(identity).close()
        for identity in [i for i in self.meters if i not in identities]:
            del self.meters[identity]
        replaced = [s for vm_id, s in self.by_id.items() if by_id.get(vm_id) is not s]
        arrived = [vm_id for vm_id in by_id if vm_id not in self.by_id]
        self.by_id = by_id
        self.vms = {s.policy.guest_ip: s for s in by_id.values()}
        self.vms_raw = {socket.inet_aton(ip): s for ip, s in self.vms.items()}
        for state in replaced:
            state.hot.clear()       # gives its bytes back to the shared budget
        if self.on_new_policy is not None:
            for state in changed:
                self.on_new_policy(state)
        if self.on_reloaded is not None and (replaced or arrived):
            self.on_reloaded(self.states())

    def forget_caches(self):
        for state in self.states():
            state.hot.clear()
            state.learned.clear()

    def close(self):
        for learner in list(self.learners.values()):
            learner.close()
