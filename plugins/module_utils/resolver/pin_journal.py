"""The pins of each VM on disk, so that they survive a restart of the daemon
(an upgrade must not cut off guests that hold a cached answer): one file
per VM, ``$VMSAN_HOME/pins/<vm id>``, next to the state files.

    # vmsan pins 1 slot=3 netns=vmsan-web created=2026-12-02T01:02:03Z
    203.0.113.10 1764640000.250 a.test
    203.0.113.10 1764640030.000 b.test cdn.b.test

A header naming the VM's identity (a VM recreated under the same id starts
a new file; a file of another identity is ignored and replaced), then one
line per pin as the resolver made it: the address, its expiry in wall-clock
seconds (the table's monotonic times do not survive a reboot, wall-clock
ones survive a restart) and the names (the asked name and its CNAME
chain). Lines are appended when a pin is new or lasts longer (``write``,
one ``write(2)`` on a file kept open, no fsync: a power cut takes the VMs'
sets too), and the file is rewritten from the table (``rewrite``: a
temporary file renamed over it) when the table dropped pins (a policy
change) or when the file holds many more lines than live pins
(``wants_compaction``). ``load`` reads the live pins back.

Used on the resolver's loop thread only. A file that cannot be written is
logged once; the pins stay in memory.
"""

import logging
import os
import time

log = logging.getLogger("vmsan.resolver")

VERSION = 1
MAGIC = "# vmsan pins %d " % VERSION
COMPACT_SLACK = 64          # lines beyond twice the live pins before a file is rewritten


def identity_text(identity):
    """The header words of a VM identity (core.VmPolicy.identity: id, slot,
    namespace, creation time)."""
    _vm_id, slot, netns, created = identity
    return "slot=%s netns=%s created=%s" % (slot, netns or "-", created or "-")


class PinJournal(object):
    def __init__(self, directory, wall=time.time, clock=time.monotonic):
        self.directory, self.wall, self.clock = directory, wall, clock
        self._open = {}         # vm id -> [fd, identity text, lines written since the last rewrite]
        self._failed = set()    # vm ids whose file could not be written (logged once)

    def path(self, vm_id):
        return os.path.join(self.directory, vm_id)

    def ids(self):
        """The VM ids that have a file."""
        try:
            return sorted(n for n in os.listdir(self.directory) if not n.startswith("."))
        except OSError:
            return []

    # -- reading -------------------------------------------------------------------
    def load(self, vm_id, identity):
        """[(address, names, expires)] of VM_ID's file, expires on this
        process's monotonic clock, expired pins left out; None when there is
        no file, or it belongs to another identity or cannot be read."""
        try:
            with open(self.path(vm_id)) as handle:
                lines = handle.read().splitlines()
        except OSError:
            return None
        if not lines or lines[0] != MAGIC + identity_text(identity):
            return None
        now_wall, now = self.wall(), self.clock()
        out = []
        for line in lines[1:]:
            words = line.split()
            if len(words) < 3:
                continue            # a line cut short by a crash
            try:
                left = float(words[1]) - now_wall
            except ValueError:
                continue
            if left > 0:
                out.append((words[0], words[2:], now + left))
        return out

    # -- writing -------------------------------------------------------------------
    def write(self, vm_id, identity, address, names, expires):
        """Append one pin (EXPIRES on the monotonic clock)."""
        entry = self._file(vm_id, identity)
        if entry is None:
            return
        line = "%s %.3f %s\n" % (address, self.wall() + (expires - self.clock()), " ".join(names))
        try:
            os.write(entry[0], line.encode("ascii", "replace"))
            entry[2] += 1
        except OSError as exc:
            self._fail(vm_id, exc)

    def wants_compaction(self, vm_id, live):
        """Whether VM_ID's file holds many more lines than its LIVE pins."""
        entry = self._open.get(vm_id)
        return entry is not None and entry[2] > 2 * live + COMPACT_SLACK

    def rewrite(self, vm_id, identity, table):
        """Replace VM_ID's file by the pins of TABLE ({address: {name:
        expires}}, PinTable.addresses)."""
        self._close(vm_id)
        now_wall, now = self.wall(), self.clock()
        lines = [MAGIC + identity_text(identity)]
        for address in sorted(table):
            by_expiry = {}
            for name, expires in table[address].items():
                if expires > now:
                    by_expiry.setdefault(expires, []).append(name)
            for expires, names in sorted(by_expiry.items()):
                lines.append("%s %.3f %s" % (address, now_wall + (expires - now), " ".join(sorted(names))))
        path = self.path(vm_id)
        temporary = path + ".new"
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            with open(temporary, "w") as handle:
                handle.write("\n".join(lines) + "\n")
            os.rename(temporary, path)
        except OSError as exc:
            self._fail(vm_id, exc)
            return
        self._failed.discard(vm_id)

    def remove(self, vm_id):
        self._close(vm_id)
        self._failed.discard(vm_id)
        try:
            os.unlink(self.path(vm_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path(vm_id), exc.strerror)

    def close(self):
        for vm_id in list(self._open):
            self._close(vm_id)

    # -- inside ---------------------------------------------------------------------
    def _file(self, vm_id, identity):
        """[fd, identity, lines] of VM_ID's file open for appending; a file of
        another identity (or none) starts anew with the header."""
        ident = identity_text(identity)
        entry = self._open.get(vm_id)
        if entry is not None and entry[1] == ident:
            return entry
        self._close(vm_id)
        path = self.path(vm_id)
        fd = None
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            first = os.pread(fd, len(MAGIC + ident) + 1, 0).decode("ascii", "replace")
            if first != MAGIC + ident + "\n":
                os.ftruncate(fd, 0)
                os.write(fd, (MAGIC + ident + "\n").encode("ascii", "replace"))
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            self._fail(vm_id, exc)
            return None
        entry = self._open[vm_id] = [fd, ident, 0]
        return entry

    def _close(self, vm_id):
        entry = self._open.pop(vm_id, None)
        if entry is not None:
            os.close(entry[0])

    def _fail(self, vm_id, exc):
        if vm_id not in self._failed:
            self._failed.add(vm_id)
            log.warning("VM %s: cannot write its pins to %s (%s): a restart of the daemon will not know them",
                        vm_id, self.path(vm_id), getattr(exc, "strerror", None) or exc)
