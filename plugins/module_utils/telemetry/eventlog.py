"""The event log (docs/operator.md, "The event log"): one JSON line per
refusal in ``$VMSAN_HOME/events/events.jsonl``, rotated by size, written by
the daemon (``EventLog``), read by ``vmsan events`` and ``vmsan policy
suggest`` (``read``, ``follow``).

Bounds, so that a guest that provokes a million refusals cannot flood the
disk, the journal or the daemon:

* per VM at most ``per_vm`` events per ``window`` seconds (a
  ``budget.LogBudget``); what is held back is counted by kind and written
  as one ``suppressed`` event when the window is over;
* the host at most ``per_host`` events per window, the same way;
* a queue of at most ``QUEUE_MAX`` lines between the callers and the writer
  thread (a caller never waits for the disk: the resolver's loop and the
  drop reader only append to it); beyond it lines are counted as lost;
* the file is rotated at ``max_bytes`` and ``backups`` old files are kept:
  the log never holds more than ``max_bytes * (backups + 1)`` bytes.

Each line written also goes to ``journal`` (the daemon's log, which its
systemd unit sends to the journal), through the same bounds.
"""

import collections
import errno
import logging
import os
import threading
import time

from ..model import events as E
from ..model.errors import VmsanError
from .budget import LogBudget

log = logging.getLogger("vmsan.events")

FILE_NAME = "events.jsonl"
DEFAULT_MAX_BYTES = 16 << 20
DEFAULT_BACKUPS = 3
PER_VM = 20                 # events per VM per window (then one summary line)
PER_HOST = 2000             # events of all VMs per window
WINDOW = 1.0
QUEUE_MAX = 10000
MAX_BUDGETS = 10000         # VMs remembered by the rate limit (then it starts over)
FOLLOW_POLL = 0.1


def directory(state_dir):
    """Where the log of the state directory STATE_DIR lives."""
    return os.path.join(state_dir, "events")


class EventLog(object):
    """The writer. ``record(event)`` from any thread; ``start()`` and
    ``stop()`` the writer thread (``stop`` writes what is queued first)."""

    def __init__(self, path_dir, max_bytes=DEFAULT_MAX_BYTES, backups=DEFAULT_BACKUPS, per_vm=PER_VM,
                 per_host=PER_HOST, window=WINDOW, journal=None, clock=time.time):
        self.dir = path_dir
        self.path = os.path.join(path_dir, FILE_NAME)
        self.max_bytes, self.backups = max_bytes, backups
        self.per_vm, self.window = per_vm, window
        self.clock = clock
        self.journal = journal if journal is not None else (lambda line: log.info("%s", line))
        self._budgets = {}
        self._host = LogBudget(per_host, window)
        self._host_held = collections.Counter()
        self._queue = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = None
        self._fd = None
        self._size = 0
        self.written = self.held = self.lost = 0
        self.by_kind = collections.Counter()        # events written, by (vm, kind, verdict): for the metrics

    # -- callers --------------------------------------------------------------
    def record(self, event):
        """Queue EVENT unless its VM's (or the host's) budget is spent;
        True if it was queued. Never blocks on the disk."""
        now = self.clock()
        with self._lock:
            budget = self._budgets.get(event.vm)
            if budget is None:
                if len(self._budgets) >= MAX_BUDGETS:
                    self._budgets.clear()
                budget = self._budgets[event.vm] = LogBudget(self.per_vm, self.window)
            if not budget.allow(event.kind, now):
                self.held += 1
                return False
            if not self._host.allow(event.kind, now):
                self._host_held[event.vm] += 1
                self.held += 1
                return False
            self._enqueue(event)
        self._wake.set()
        return True

    def _enqueue(self, event):
        if len(self._queue) >= QUEUE_MAX:
            self.lost += 1
            return
        self._queue.append(event)

    def summaries(self, now=None):
        """Queue one ``suppressed`` event per VM whose window is over and
        held events back (the writer thread calls this; tests may too)."""
        now = self.clock() if now is None else now
        with self._lock:
            for vm, budget in list(self._budgets.items()):
                held = budget.summary(now)
                if held:
                    self._enqueue(E.Event(now, vm, E.SUPPRESSED, count=sum(held.values()),
                                          detail=", ".join("%d %s" % (n, k) for k, n in sorted(held.items()))))
            if self._host.summary(now) and self._host_held:
                for vm, count in sorted(self._host_held.items()):
                    self._enqueue(E.Event(now, vm, E.SUPPRESSED, count=count, detail="host-wide event limit"))
                self._host_held.clear()

    # -- the writer -------------------------------------------------------------
    def start(self):
        try:
            os.makedirs(self.dir, mode=0o750, exist_ok=True)
            self._open()
        except OSError as exc:
            raise VmsanError("cannot open the event log %s: %s" % (self.path, exc.strerror))
        self._thread = threading.Thread(target=self._run, name="vmsan-events", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self):
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self):
        os.close(self._fd)
        for n in range(self.backups, 0, -1):
            older = "%s.%d" % (self.path, n)
            newer = "%s.%d" % (self.path, n - 1) if n > 1 else self.path
            try:
                if n == self.backups and os.path.exists(older):
                    os.unlink(older)
                os.rename(newer, older)
            except FileNotFoundError:
                pass
        if self.backups == 0:
            os.unlink(self.path)
        self._open()

    def _write(self, events):
        data = []
        for event in events:
            line = E.to_json(event)
            data.append(line)
            self.by_kind[(event.vm, event.kind, event.verdict)] += event.count if event.kind != E.SUPPRESSED else 0
        blob = "".join(line + "\n" for line in data).encode()
        if self._size and self._size + len(blob) > self.max_bytes:
            self._rotate()
        try:
            os.write(self._fd, blob)
            self._size += len(blob)
        except OSError as exc:
            self.lost += len(data)
            if exc.errno != errno.ENOSPC:
                log.warning("cannot write the event log %s: %s", self.path, exc.strerror)
            return
        self.written += len(data)
        for line in data:
            self.journal(line)

    def _run(self):
        next_summary = self.clock() + self.window
        while True:
            self._wake.wait(min(self.window, 0.5))
            self._wake.clear()
            if self.clock() >= next_summary:
                self.summaries()
                next_summary = self.clock() + self.window
            with self._lock:
                batch = list(self._queue)
                self._queue.clear()
            if batch:
                try:
                    self._write(batch)
                except OSError as exc:
                    log.warning("event log: %s", exc)
            if self._stopping:
                return


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------
def files(path_dir):
    """The log's files, oldest first."""
    base = os.path.join(path_dir, FILE_NAME)
    rotated = []
    for name in os.listdir(path_dir) if os.path.isdir(path_dir) else ():
        if name.startswith(FILE_NAME + ".") and name[len(FILE_NAME) + 1:].isdigit():
            rotated.append((int(name[len(FILE_NAME) + 1:]), os.path.join(path_dir, name)))
    out = [path for _n, path in sorted(rotated, reverse=True)]
    if os.path.exists(base):
        out.append(base)
    return out


def _matches(event, vm, since):
    return (vm is None or event.vm == vm) and (since is None or event.time >= since)


def _events_of(lines, vm, since):
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = E.from_json(line)
        except ValueError:
            continue            # a line cut by a crash, or not ours
        if _matches(event, vm, since):
            yield event


def read(path_dir, vm=None, since=None):
    """The events of the log in PATH_DIR (of VM, from SINCE on), oldest first."""
    for path in files(path_dir):
        try:
            with open(path) as handle:
                yield from _events_of(handle, vm, since)
        except FileNotFoundError:
            continue            # rotated away meanwhile


def follow(path_dir, vm=None, since=None, stop=None, poll=FOLLOW_POLL):
    """What ``read`` gives, then each event as it is written, until
    STOP() (default: never) is true; follows the file across rotations.
    The current file is opened first and read on from where the old lines
    end, so a line written while the old ones are read is not missed."""
    path = os.path.join(path_dir, FILE_NAME)
    handle, inode = None, None
    try:
        try:
            handle = open(path)
            inode = os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            pass
        rotated = [p for p in files(path_dir) if p != path] if handle is not None else files(path_dir)
        for older in rotated:
            try:
                with open(older) as old:
                    yield from _events_of(old, vm, since)
            except FileNotFoundError:
                continue
        partial = ""
        while stop is None or not stop():
            if handle is not None:
                chunk = handle.read()
                if chunk:
                    text = partial + chunk
                    lines = text.split("\n")
                    partial = lines.pop()
                    yield from _events_of(lines, vm, since)
                    continue
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current is not None and current != inode:
                # rotated: read the rest of the old file above, then the new one from its start
                if handle is not None:
                    rest = handle.read()
                    yield from _events_of((partial + rest).split("\n"), vm, since)
                    handle.close()
                handle, inode, partial = open(path), current, ""
                continue
            time.sleep(poll)
    finally:
        if handle is not None:
            handle.close()
