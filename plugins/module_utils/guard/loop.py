"""The guard's loop: one queue socket per network namespace that holds
guarded VMs, all read by one thread through one epoll set, each queued packet
decided by the pure parts (``flows``, ``decide``) and answered with a verdict.

* ``NamespaceGuard``: one socket (``kernel.nfqueue.QueueSocket``, opened by
  the caller inside the namespace), its ``FlowTable``, and the VMs whose TAP
  is in that namespace, by guest address (one for a VM's own namespace,
  every ``--no-netns`` VM in the host's). ``handle(messages)`` turns queued
  packets and SYN-ACK copies into verdicts. It keeps, per VM, how many
  decisions it made by decision and reason (``decisions``), and the name
  each accepted flow was accepted for (``accepted``), so that a live policy
  change cuts the flows whose name left the list (``set_vms``).
* ``GuardLoop``: the epoll set; ``run(stop)`` until STOP (a
  ``threading.Event``) is set. ``post(fn)`` runs FN on the loop's thread
  (from any thread): every change to a NamespaceGuard (its VMs, its removal)
  goes through it, so it never races a decision.

Where native/vmsan_fastpath.c is built (kernel/fastpath.py), ``handle``
takes the common case of a connection in C (``guard_handle``: a SYN-ACK
copy's start record, the accept of a first segment holding a whole one-record
ClientHello for an allowed, pinned name), on this guard's own tables, and
``pump`` reads, handles and answers a queue socket in one call of C
(``guard_pump``); every other message goes to ``_handle_one``, which with
``_one`` stays the definition of what ``handle`` does (the tests run the
same traffic through both and compare every table).

A verdict for the flow goes back as ``NF_REPEAT`` with the verdict's bit in
the packet's mark (the rest of the mark kept): the packet runs through the
filter hook again, and the guard chain saves the bit in the connection's
mark (plan/name_guard.py). A packet of an address no VM of the namespace
has is dropped; so is a packet whose handling failed (a fault in the guard
refuses, it never passes).

A refused flow is reset (TCP), and told to ``on_refusal(Refusal)``, the one
place refusals leave the guard. A VM in audit mode (``VmView.audit``) has
what the guard would refuse accepted instead, and told the same way with
``verdict`` "would refuse" (counted as decision ``would_refuse``); a policy
change that ends audit mode cuts those flows. ``LogRefusals``, the default
``on_refusal``, logs each with the VM, the destination, the port and the
name seen; the operator view adds its events and metrics there. It runs on the loop's thread: it must
not block.
"""

import collections
import logging
import os
import resource
import select
import threading
import time
from collections import namedtuple

from ..kernel import conntrack_wire
from ..kernel import nfqueue as nq
from ..kernel.fastpath import native as _native
from ..model import events as E
from ..plan import name_guard as layout
from ..resolver.core import RefusalLog
from . import decide, flows, hostname, packet, reasons, rule

log = logging.getLogger("vmsan.guard")

EXPIRE_EVERY = 0.25
RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", 1)
SYN_ACK = packet.SYN | packet.ACK
ACCEPTED_PER_VM = 4096      # accepted flows whose name is remembered, per VM of a namespace (oldest forgotten)
PROTOCOL_NAMES = {packet.TCP: "tcp", packet.UDP: "udp"}

WOULD_REFUSE = "would_refuse"   # the decision label of a refusal let through (audit mode)

# One refused flow, as on_refusal is told it: proto "tcp" or "udp"; name: the
# name the flow asked for (SNI, Host, or None); reason: words; code: the
# reason's label (guard/reasons.py); verdict: model.events.REFUSED, or
# WOULD_REFUSE in audit mode (the flow was let through).
Refusal = namedtuple("Refusal", "vm_id proto src sport dst dport name reason code verdict", defaults=(E.REFUSED,))


class LogRefusals(object):
    """The default ``on_refusal``: one log line per refused flow, at most one
    per VM, destination and name every INTERVAL seconds (the lines held back
    are counted in the next one), so a looping guest cannot flood the log."""

    def __init__(self, interval=10.0, clock=time.monotonic):
        self.limit, self.clock = RefusalLog(interval), clock

    def __call__(self, event):
        held = self.limit.note(event.vm_id, (event.dst, event.name), self.clock())
        if held is not None:
            log.info("VM %s: %s %s %s:%d -> %s:%d (name %s): %s%s", event.vm_id,
                     "refused" if event.verdict == E.REFUSED else "would refuse (audit mode, let through)",
                     event.proto, event.src, event.sport, event.dst, event.dport, event.name or "none",
                     event.reason, " (and %d more)" % held if held else "")


class VmView(object):
    """What the guard needs of one VM. AUDIT: its policy is in audit mode
    (what the guard would refuse is let through, and told)."""

    __slots__ = ("vm_id", "guest_ip", "policy", "audit")

    def __init__(self, vm_id, guest_ip, allowed_domains, audit=False):
        self.vm_id, self.guest_ip = vm_id, guest_ip
        self.policy = rule.GuardPolicy(allowed_domains)
        self.audit = bool(audit)


class Counters(object):
    __slots__ = ("accepted", "refused", "would_refuse", "passed", "dropped", "messages", "logged", "late", "cut",
                 "faults")

    def __init__(self):
        self.accepted = self.refused = self.passed = self.dropped = self.messages = self.logged = self.late = 0
        self.cut = self.faults = self.would_refuse = 0

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}


class NamespaceGuard(object):
    # the common case of a connection in C (native/vmsan_fastpath.c,
    # guard_handle): set at the end of this module when it is built; None:
    # every message through _handle_one, the definition
    _fast = None
    _fast_pump = None
    accepted_per_vm = ACCEPTED_PER_VM

    def __init__(self, name, sock, vms, pins, clock=time.monotonic, on_refusal=None):
        self.name, self.sock, self.pins, self.clock = name, sock, pins, clock
        self.vms = {vm.guest_ip: vm for vm in vms}
        self.flows = flows.FlowTable(self._decide_tcp, on_verdict=self._tell, lets_through=self._lets_through)
        self.marks = {}             # held packet id -> its mark
        self.cut = []               # ctnetlink deletes of refused or cut flows, sent after the verdicts
        self.counters = Counters()
        self.decisions = {}         # vm id -> {(decision, reason): count}
        # (proto, src, sport, dst, dport) -> (vm id, reason code, name, let
        # through): the flows accepted by this guard (or let through in audit
        # mode), newest last, for a policy change
        self.accepted = collections.OrderedDict()
        self.on_refusal = on_refusal or LogRefusals(clock=clock)
        self._now = clock()
        # the pump in C, on a real queue socket (None: receive, handle and
        # verdicts in Python, the definition)
        native_handles = getattr(sock, "native_handles", None)
        self._pump_args = native_handles() if self._fast_pump is not None and native_handles else None

    def set_vms(self, vms):
        """The namespace's guarded VMs are now VMS (on the loop's thread).
        A VM whose allowlist changed has its accepted flows judged again:
        those the new list no longer accepts (their name, or their port
        entry, left it) are cut: their conntrack entries deleted and their
        kept verdicts dropped, so their next packet is refused. A VM that is
        no longer guarded (removed, or its policy names no domains now) is
        forgotten: what its new policy forbids is cut by the policy change
        itself (lifecycle), by address. Returns how many flows were cut."""
        old = self.vms
        self.vms = {vm.guest_ip: vm for vm in vms}
        changed = {ip for ip, vm in old.items() if ip in self.vms and self.vms[ip].vm_id == vm.vm_id
                   and (self.vms[ip].policy.entries != vm.policy.entries or self.vms[ip].audit != vm.audit)}
        for ip in sorted(changed):
            # the line a live change is seen by (it comes after the resolver dropped the names' pins)
            vm = self.vms[ip]
            log.info("VM %s: the guard's allowlist is now %s%s", vm.vm_id, ",".join(vm.policy.entries),
                     " (audit mode)" if vm.audit else "")
        still = {vm.vm_id for vm in self.vms.values()}
        doomed, forgotten = [], []
        for key, (vm_id, code, name, let_through) in self.accepted.items():
            vm = self.vms.get(key[1])
            if vm is None or vm.vm_id != vm_id:
                forgotten.append(key)
            elif key[1] in changed and not (vm.audit if let_through else
                                            vm.policy.still_allows(code, name, PROTOCOL_NAMES.get(key[0]), key[4])):
                doomed.append(key)
        for key in forgotten:
            del self.accepted[key]
        for key in doomed:
            vm_id = self.accepted.pop(key)[0]
            self.cut.append(conntrack_wire.delete_message(*key))
            self.flows.cut(key[1:])
            self.counters.cut += 1
            self._count(vm_id, "cut", reasons.POLICY_CHANGE)
            log.info("VM %s: cut %s %s:%d -> %s:%d: its policy no longer allows it", vm_id,
                     PROTOCOL_NAMES.get(key[0], key[0]), key[1], key[2], key[3], key[4])
        for vm_id in [v for v in self.decisions if v not in still]:
            del self.decisions[vm_id]
        self.flush()
        return len(doomed)

    def flush(self):
        """Send what waits to be sent without a verdict (conntrack deletes)."""
        if self.cut and self.sock is not None:
            cut, self.cut = self.cut, []
            self.sock.verdicts([], then=cut)

    # -- decisions ---------------------------------------------------------------
    def _decide_tcp(self, key, prefix):
        vm = self.vms.get(key[0])
        if vm is None:
            return rule.refuse("no guarded VM has the address %s" % key[0], code=reasons.UNKNOWN_VM)
        return decide.tcp(vm.policy, self.pins.names(vm.vm_id, key[2], self._now), key[3], prefix)

    def _count(self, vm_id, decision, code):
        by = self.decisions.get(vm_id)
        if by is None:
            by = self.decisions[vm_id] = {}
        key = (decision, code)
        by[key] = by.get(key, 0) + 1

    def _lets_through(self, key):
        """Whether a refusal of KEY's flow is let through (its VM audits)."""
        vm = self.vms.get(key[0])
        return vm is not None and vm.audit

    def _tell(self, key, verdict, proto=packet.TCP):
        vm = self.vms.get(key[0])
        vm_id = vm.vm_id if vm is not None else None
        if verdict.action == rule.ACCEPT:
            self.counters.accepted += 1
            if vm_id is not None:
                self._count(vm_id, verdict.action, verdict.code)
                self._remember(vm_id, (proto,) + key, verdict)
            return
        if vm is not None and vm.audit:
            # audit mode: accepted, and told as what it would have been
            self.counters.would_refuse += 1
            self._count(vm_id, WOULD_REFUSE, verdict.code)
            self._remember(vm_id, (proto,) + key, verdict, let_through=True)
            self.on_refusal(Refusal(vm_id, PROTOCOL_NAMES.get(proto, str(proto)), key[0], key[1], key[2], key[3],
                                    verdict.name, verdict.reason, verdict.code, E.WOULD_REFUSE))
            return
        if vm_id is not None:
            self._count(vm_id, verdict.action, verdict.code)
        self.counters.refused += 1
        self.accepted.pop((proto,) + key, None)      # a new connection on the ports of an accepted one
        if proto == packet.TCP:
            # the reset goes to the guest; the kernel's entry must go too
            self.cut.append(conntrack_wire.delete_message(proto, *key))
        self.on_refusal(Refusal(vm_id or "?", PROTOCOL_NAMES.get(proto, str(proto)), key[0], key[1], key[2],
                                key[3], verdict.name, verdict.reason, verdict.code))

    def _remember(self, vm_id, key, verdict, let_through=False):
        accepted = self.accepted
        accepted[key] = (vm_id, verdict.code, verdict.name, let_through)
        accepted.move_to_end(key)
        if len(accepted) > self.accepted_per_vm * max(1, len(self.vms)):
            # forgotten: a later policy change judges that flow by its
            # address only (the CLI's cut), as for flows from before a restart
            accepted.popitem(last=False)

    # -- messages -----------------------------------------------------------------
    def handle(self, messages):
        """[(packet_id, verdict, mark or None)] for MESSAGES."""
        self._now = now = self.clock()
        if self._fast is not None:
            # the common case in C, the rest through _handle_one, in order
            return self._fast(self, messages, now)
        out = []
        for msg in messages:
            out += self._handle_one(msg, now)
        return out

    def _handle_one(self, msg, now):
        """The verdicts for one message: the definition of what ``handle``
        does with each (``_fast`` calls it for every message it does not
        take itself)."""
        self.counters.messages += 1
        try:
            return self._one(msg, now)
        except Exception as exc:    # a fault refuses, and stops neither this namespace nor the others
            self.counters.faults += 1
            log.exception("namespace %s: cannot handle a packet (dropped): %s", self.name or "(host)", exc)
            if msg.kind == nq.QUEUED:
                self.marks.pop(msg.packet_id, None)
                return [(msg.packet_id, nq.NF_DROP, None)]
            return []

    def _one(self, msg, now):
        pkt = packet.read(msg.payload)
        if msg.kind == nq.LOGGED:
            # the server's SYN-ACK, on its way to the guest: its ack is
            # the client's first byte
            self.counters.logged += 1
            if pkt is not None and pkt.proto == packet.TCP and pkt.flags & SYN_ACK == SYN_ACK:
                key = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
                return self._verdicts(self.flows.start(key, pkt.ack, now))
            return []
        self.marks[msg.packet_id] = msg.mark
        if pkt is None:
            return self._verdicts([(msg.packet_id, flows.DROP)])
        if pkt.proto == packet.TCP:
            key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
            if key in self.flows.decided:
                self.counters.late += 1
            return self._verdicts(self.flows.packet(key, pkt.seq, bool(pkt.flags & packet.SYN), pkt.payload,
                                                    msg.packet_id, now))
        vm = self.vms.get(pkt.src)
        if vm is None:
            verdict = rule.refuse("no guarded VM has the address %s" % pkt.src, code=reasons.UNKNOWN_VM)
        else:
            verdict = decide.udp(vm.policy, self.pins.names(vm.vm_id, pkt.dst, now), pkt.dport)
        self._tell((pkt.src, pkt.sport, pkt.dst, pkt.dport), verdict, packet.UDP)
        action = flows.ACCEPT if verdict.action == rule.ACCEPT or (vm is not None and vm.audit) else flows.REFUSE
        return self._verdicts([(msg.packet_id, action)])

    def expire(self):
        """Verdicts for flows held too long, after the SYN-ACK copies that
        waited in the log socket (read on this timer too, so that copies of
        flows that send nothing do not fill it)."""
        out = self.handle(self.sock.logged()) if self.sock is not None else []
        self._now = self.clock()
        return out + self._verdicts(self.flows.expire(self._now))

    def _verdicts(self, actions):
        out = []
        for pid, action in actions:
            mark = self.marks.pop(pid, 0)
            if action == flows.ACCEPT:
                out.append((pid, nq.NF_REPEAT, (mark & ~layout.MARK_MASK) | layout.MARK_ACCEPTED))
            elif action == flows.REFUSE:
                out.append((pid, nq.NF_REPEAT, (mark & ~layout.MARK_MASK) | layout.MARK_REFUSED))
            elif action == flows.PASS:
                self.counters.passed += 1
                out.append((pid, nq.NF_ACCEPT, None))
            else:
                self.counters.dropped += 1
                out.append((pid, nq.NF_DROP, None))
        return out

    def pump(self, items=None):
        """Read what the socket has (or take ITEMS), answer it."""
        if items is None:
            if self._pump_args is not None:
                return self._pump_native()
            items = self.handle(self.sock.receive(timeout=0))
        if items or self.cut:
            cut, self.cut = self.cut, []
            self.sock.verdicts(items, then=cut)
        return len(items)

    def _pump_native(self):
        """``pump()`` in one call of C (native/vmsan_fastpath.c, guard_pump):
        QueueSocket.receive(timeout=0), handle, QueueSocket.verdicts with
        the pending cuts; its errors raised as QueueSocket raises them."""
        count, err, where, overflows = self._fast_pump(self, *self._pump_args)
        if overflows:
            self.sock.overflowed(overflows)
        if where:
            raise self.sock.error(where, err)
        return count

    def close(self):
        """Unbind the queue (the kernel drops what it still holds: fail
        closed) and forget every flow."""
        self.flows.forget()
        self.marks.clear()
        self.accepted.clear()
        if self.sock is not None:
            self.sock.close()


class GuardLoop(object):
    def __init__(self):
        self._guards = {}           # fd -> NamespaceGuard
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._posted = collections.deque()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        self.wakeups = 0            # epoll wake-ups with packets to read (decisions per wake-up: the batching)
        self.cpu_seconds = 0.0      # the loop thread's CPU time: user + system
        self.system_seconds = 0.0   # of which in the kernel (system calls, the packets' way on after a verdict)

    def add(self, guard):
        with self._lock:
            fd = guard.sock.fileno()
            self._guards[fd] = guard
            self._epoll.register(fd, select.EPOLLIN)

    def remove(self, guard):
        with self._lock:
            fd = guard.sock.fileno()
            if self._guards.pop(fd, None) is not None:
                self._epoll.unregister(fd)

    def guards(self):
        with self._lock:
            return list(self._guards.values())

    def post(self, fn):
        """Run FN() on the loop's thread, after the packets it is handling
        (thread safe)."""
        self._posted.append(fn)
        try:
            os.eventfd_write(self._wake, 1)
        except OSError:
            pass

    def _run_posted(self):
        try:
            os.eventfd_read(self._wake)
        except OSError:
            pass
        while self._posted:
            fn = self._posted.popleft()
            try:
                fn()
            except Exception as exc:
                log.exception("guard: %s", exc)

    def run(self, stop, tick=0.05):
        """Serve until STOP is set. ``cpu_seconds`` and ``system_seconds``
        grow with the thread's CPU time as it runs, every EXPIRE_EVERY
        seconds (what a decision costs, for the benchmark)."""
        last = resource.getrusage(RUSAGE_THREAD)
        next_expire = time.monotonic() + EXPIRE_EVERY
        wake = self._wake
        try:
            while not stop.is_set():
                for fd, _events in self._epoll.poll(tick):
                    if fd == wake:
                        self._run_posted()
                        continue
                    guard = self._guards.get(fd)
                    if guard is None:
                        continue
                    self.wakeups += 1
                    try:
                        guard.pump()
                    except nq.NfqueueError as exc:
                        log.warning("namespace %s: %s", guard.name or "(host)", exc)
                    except Exception as exc:
                        log.exception("namespace %s: %s", guard.name or "(host)", exc)
                now = time.monotonic()
                if now >= next_expire:
                    # the thread's CPU time is a running total: read on the
                    # timer, not per wake-up (a system call each)
                    last = self._account(last)
                    next_expire = now + EXPIRE_EVERY
                    for guard in self.guards():
                        try:
                            guard.pump(guard.expire())
                        except Exception as exc:
                            log.warning("namespace %s: %s", guard.name or "(host)", exc)
        finally:
            self._account(last)

    def _account(self, last):
        usage = resource.getrusage(RUSAGE_THREAD)
        system = usage.ru_stime - last.ru_stime
        self.system_seconds += system
        self.cpu_seconds += usage.ru_utime - last.ru_utime + system
        return usage

    def close(self):
        self._epoll.close()
        os.close(self._wake)


if _native is not None:
    _native.configure_guard(flows._Flow, flows.ACCEPT, (rule.ACCEPT, reasons.NAME), reasons.NAME, "tcp",
                            hostname.from_bytes, flows.STREAM_CAP, layout.MARK_MASK, layout.MARK_ACCEPTED,
                            nq.NF_REPEAT)
    NamespaceGuard._fast = staticmethod(_native.guard_handle)
    NamespaceGuard._fast_pump = staticmethod(_native.guard_pump)
