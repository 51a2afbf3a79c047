"""The daemon's reader of dropped packets: the kernel's NFLOG copies
(plan/drops.py) in every namespace that holds a VM's TAP, and the IPv6
copies of each TAP (kernel/ipv6_tap.py), each turned into an event of the
VM that sent it (docs/operator.md, "The event log").

One thread, one epoll over all the sockets. Which VM a copy is of: the
namespace it came from, when that namespace is the VM's own; in the host
namespace (``--no-netns`` VMs, and the host's guard that keeps every guest
off the host's addresses) its source address, or for a spoofed source the
TAP it came in on.

Bounded three ways, so that a flood costs the daemon little: the kernel
copies at most the rules' limit; per VM at most ``READS_PER_VM`` copies a
second are read, after which its sockets rest until the second is over
(the kernel drops what does not fit their buffers, before making a copy);
and the event log's own budget per VM.

The VMs come from the state directory, re-read when it changes. A VM's
sockets are closed once it is gone or its namespace was made anew (an open
socket would keep a removed VM's namespace alive).
"""

import logging
import os
import select
import socket
import threading
import time

from ..kernel import ipv6_tap
from ..kernel import netns as ns
from ..kernel import nflog
from ..model import addressing as A
from ..model import events as E
from ..model.errors import VmsanError
from ..model.records import BrokenRecord
from ..plan import drops
from . import packets

log = logging.getLogger("vmsan.drops")

# seconds between looks at the state directory (a stat): a new VM's drops are
# read from at most this long after its namespace exists
REFRESH = 0.1
READS_PER_VM = 100          # copies read per VM per second; then its sockets rest
HOST = None                 # the key of the host namespace's sockets
# A guest kernel's own IPv6 housekeeping (router solicitations, MLD reports,
# duplicate address detection) goes to link-local multicast: counted with the
# other IPv6 drops, not logged (a few a minute per VM would use up its events)
LINK_LOCAL_MULTICAST = "ff02:"


def _inode(netns):
    try:
        return os.stat(ns.path(netns) if netns else "/proc/self/ns/net").st_ino
    except OSError:
        return None


class _Watch(object):
    """The sockets of one namespace: its NFLOG listener and the IPv6 copies
    of its TAPs, with the read budget of the VM they belong to."""

    def __init__(self, netns, inode):
        self.netns, self.inode = netns, inode
        self.log = None
        self.taps = {}          # ifname -> Ipv6Copies
        self.reads = {}         # vm id -> copies read this second
        self.paused = False

    def sockets(self):
        return ([self.log] if self.log is not None else []) + list(self.taps.values())

    def close(self):
        for sock in self.sockets():
            sock.close()
        self.log, self.taps = None, {}


class DropReader(object):
    """Reads dropped-packet copies of the VMs in STORE (a StateStore) and
    hands SINK (EventLog.record) one Event each."""

    def __init__(self, store, sink, clock=time.time, reads_per_vm=READS_PER_VM):
        self.store, self.sink, self.clock = store, sink, clock
        self.reads_per_vm = reads_per_vm
        self.ep = select.epoll()
        self.watches = {}       # netns name or HOST -> _Watch
        self.fds = {}           # fd -> (watch, socket, kind)
        self.records = {}       # vm id -> VmRecord
        self.by_ip = {}         # guest address -> VmRecord
        self.by_tap = {}        # TAP name -> VmRecord
        self.by_netns = {}      # a VM's own namespace -> VmRecord
        self.versions = {}      # vm id -> policy version
        self._sig = None
        self._wanted = {}       # namespace key -> its VMs, as the last look at the state directory found them
        self._stop = threading.Event()
        self._thread = None
        self._second = 0
        self.copies = 0         # read, in all
        self.errors = 0

    # -- the VMs ------------------------------------------------------------------
    def refresh(self, force=False):
        try:
            st = os.stat(self.store.vms_dir)
            sig = (st.st_ino, st.st_mtime_ns)
        except OSError:
            sig = None
        if sig == self._sig and not force:
            self._reopen_stale()
            self._complete()
            return
        self._sig = sig
        records = [r for r in self.store.scan() if not isinstance(r, BrokenRecord)] if sig else []
        self.records = {r.id: r for r in records}
        self.by_ip = {A.guest_ip(r.slot): r for r in records}
        self.by_tap = {A.tap_name(r.slot): r for r in records}
        self.by_netns = {r.netns: r for r in records if r.netns}
        self.versions = {r.id: E.policy_version(r.policy) for r in records}
        # the host namespace always: its guard drops every guest's packets to the host
        wanted = {HOST: []} if records else {}
        for record in records:
            wanted.setdefault(record.netns if record.netns else HOST, []).append(record)
        for key in [k for k in self.watches if k not in wanted]:
            self._drop_watch(key)
        self._wanted = wanted
        for key, vms in wanted.items():
            self._ensure_watch(key, vms)

    def _complete(self):
        """Watch what the last look at the state directory wanted but could
        not have yet: a VM's record is written before its namespace and TAP
        exist, and the directory does not change again when they appear."""
        for key, vms in self._wanted.items():
            watch = self.watches.get(key)
            if watch is None or watch.log is None or len(watch.taps) < len(vms):
                self._ensure_watch(key, vms)

    def _reopen_stale(self):
        for key, watch in list(self.watches.items()):
            if key is not HOST and _inode(key) != watch.inode:
                self._drop_watch(key)
                if key in self.by_netns:
                    self._ensure_watch(key, [self.by_netns[key]])

    def _drop_watch(self, key):
        watch = self.watches.pop(key)
        for sock in watch.sockets():
            self._unregister(sock)
        watch.close()

    def _register(self, watch, sock, kind):
        self.ep.register(sock.fileno(), select.EPOLLIN)
        self.fds[sock.fileno()] = (watch, sock, kind)

    def _unregister(self, sock):
        fd = sock.fileno()
        if self.fds.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def _ensure_watch(self, key, vms):
        if key is not HOST and not ns.exists(key):
            return
        watch = self.watches.get(key)
        if watch is None:
            watch = self.watches[key] = _Watch(key, _inode(key))
        try:
            with ns.entered(key):
                if watch.log is None:
                    watch.log = nflog.LogSocket(sorted(drops.GROUPS.values()))
                    self._register(watch, watch.log, "nflog")
                    log.debug("reading the drops of %s", key or "the host namespace")
                taps = {A.tap_name(r.slot) for r in vms}
                for name in [t for t in watch.taps if t not in taps]:
                    self._unregister(watch.taps[name])
                    watch.taps.pop(name).close()
                for name in taps - set(watch.taps):
                    try:
                        copies = ipv6_tap.Ipv6Copies(name)
                    except OSError:
                        continue        # the TAP is not there (yet): the next look tries again
                    watch.taps[name] = copies
                    self._register(watch, copies, "ipv6")
        except (OSError, VmsanError) as exc:
            self.errors += 1
            log.debug("cannot watch %s: %s", key or "the host namespace", exc)

    # -- copies -------------------------------------------------------------------
    def _vm_of(self, watch, source, indev):
        if watch.netns is not HOST:
            return self.by_netns.get(watch.netns)
        record = self.by_ip.get(source)
        if record is None and indev:
            try:
                record = self.by_tap.get(socket.if_indextoname(indev))
            except OSError:
                record = None
        return record

    def _event(self, record, kind, verdict, seen):
        detail = None
        if kind == "spoofed" and seen.source != A.guest_ip(record.slot):
            detail = "source %s" % seen.source
        return E.Event(self.clock(), record.id, kind, verdict, seen.destination, seen.port, seen.protocol,
                       policy_version=self.versions.get(record.id), detail=detail)

    def _over_budget(self, watch, vm_id):
        count = watch.reads.get(vm_id, 0) + 1
        watch.reads[vm_id] = count
        return count > self.reads_per_vm

    def _read(self, watch, sock, kind):
        if kind == "nflog":
            for copy in sock.receive():
                found = drops.of_group(copy.group)
                seen = packets.ipv4(copy.payload)
                if found is None or seen is None:
                    continue
                record = self._vm_of(watch, seen.source, copy.indev)
                if record is None:
                    continue
                self.copies += 1
                if self._over_budget(watch, record.id):
                    self._pause(watch)
                    return
                self.sink(self._event(record, found[0], found[1], seen))
        else:
            record = self.by_tap.get(sock.ifname)
            for payload in sock.receive():
                seen = packets.ipv6(payload)
                if seen is None or record is None or seen.destination.startswith(LINK_LOCAL_MULTICAST):
                    continue
                self.copies += 1
                if self._over_budget(watch, record.id):
                    self._pause(watch)
                    return
                self.sink(self._event(record, "ipv6", E.REFUSED, seen))

    def _pause(self, watch):
        """WATCH's VM read its budget for this second: its sockets rest."""
        if watch.paused:
            return
        watch.paused = True
        for sock in watch.sockets():
            try:
                self.ep.modify(sock.fileno(), 0)
            except (OSError, ValueError):
                pass

    def _new_second(self):
        for watch in self.watches.values():
            watch.reads.clear()
            if watch.paused:
                watch.paused = False
                for sock in watch.sockets():
                    try:
                        self.ep.modify(sock.fileno(), select.EPOLLIN)
                    except (OSError, ValueError):
                        pass

    # -- the thread ---------------------------------------------------------------
    def run(self):
        next_refresh = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if int(now) != self._second:
                self._second = int(now)
                self._new_second()
            if now >= next_refresh:
                next_refresh = now + REFRESH
                try:
                    self.refresh()
                except Exception as exc:       # a bad state file must not end the reader
                    self.errors += 1
                    log.warning("drop reader: %s", exc)
            for fd, _events in self.ep.poll(min(REFRESH, 1.0 - (now % 1.0))):
                entry = self.fds.get(fd)
                if entry is None:
                    continue
                try:
                    self._read(*entry)
                except (OSError, VmsanError) as exc:
                    self.errors += 1
                    log.debug("drop reader: %s", exc)

    def start(self):
        self.refresh(force=True)
        self._thread = threading.Thread(target=self.run, name="vmsan-drops", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        for key in list(self.watches):
            self._drop_watch(key)
        self.ep.close()
