"""The guard's loop: one queue socket per network namespace that holds
guarded VMs, all read by one thread through one epoll set, each queued packet
decided by the pure parts (``flows``, ``decide``) and answered with a verdict.

* ``NamespaceGuard``: one socket (``kernel.nfqueue.QueueSocket``, opened by
  the caller inside the namespace), its ``FlowTable``, and the VMs whose TAP
  is in that namespace, by guest address (one for a VM's own namespace,
  every ``--no-netns`` VM in the host's). ``handle(messages)`` turns queued
  packets and SYN copies into verdicts.
* ``GuardLoop``: the epoll set; ``run(stop)`` until STOP (a
  ``threading.Event``) is set. ``add``/``remove`` may be called from other
  threads (the daemon's state reload).

A verdict for the flow goes back as ``NF_REPEAT`` with the verdict's bit in
the packet's mark (the rest of the mark kept): the packet runs through the
filter hook again, and the guard chain saves the bit in the connection's
mark (plan/name_guard.py). A packet of an address no VM of the namespace
has is dropped.
"""

import logging
import resource
import select
import threading
import time

from ..kernel import conntrack_wire
from ..kernel import nfqueue as nq
from ..plan import name_guard as layout
from ..resolver.core import RefusalLog
from . import decide, flows, packet, rule

log = logging.getLogger("vmsan.guard")

EXPIRE_EVERY = 0.25
RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", 1)
SYN_ACK = packet.SYN | packet.ACK


class VmView(object):
    """What the guard needs of one VM."""

    __slots__ = ("vm_id", "guest_ip", "policy")

    def __init__(self, vm_id, guest_ip, allowed_domains):
        self.vm_id, self.guest_ip = vm_id, guest_ip
        self.policy = rule.GuardPolicy(allowed_domains)


class Counters(object):
    __slots__ = ("accepted", "refused", "passed", "dropped", "messages", "logged", "late")

    def __init__(self):
        self.accepted = self.refused = self.passed = self.dropped = self.messages = self.logged = self.late = 0


class NamespaceGuard(object):
    def __init__(self, name, sock, vms, pins, clock=time.monotonic, refusals=None):
        self.name, self.sock, self.pins, self.clock = name, sock, pins, clock
        self.vms = {vm.guest_ip: vm for vm in vms}
        self.flows = flows.FlowTable(self._decide_tcp, on_verdict=self._tell)
        self.marks = {}             # held packet id -> its mark
        self.cut = []               # ctnetlink deletes of refused TCP flows, sent after the verdicts
        self.counters = Counters()
        self.refusals = refusals or RefusalLog()
        self._now = clock()

    def set_vms(self, vms):
        self.vms = {vm.guest_ip: vm for vm in vms}

    # -- decisions ---------------------------------------------------------------
    def _decide_tcp(self, key, prefix):
        vm = self.vms.get(key[0])
        if vm is None:
            return rule.refuse("no guarded VM has the address %s" % key[0])
        return decide.tcp(vm.policy, self.pins.names(vm.vm_id, key[2], self._now), key[3], prefix)

    def _tell(self, key, verdict, proto=packet.TCP):
        if verdict.action == rule.ACCEPT:
            self.counters.accepted += 1
            return
        self.counters.refused += 1
        if proto == packet.TCP:
            # the reset goes to the guest; the kernel's entry must go too
            self.cut.append(conntrack_wire.delete_message(proto, *key))
        vm = self.vms.get(key[0])
        vm_id = vm.vm_id if vm is not None else "?"
        held = self.refusals.note(vm_id, (key[2], verdict.name), self._now)
        if held is not None:
            log.info("VM %s: refused %s:%d -> %s:%d (name %s): %s%s", vm_id, key[0], key[1], key[2], key[3],
                     verdict.name or "none", verdict.reason, " (and %d more)" % held if held else "")

    # -- messages -----------------------------------------------------------------
    def handle(self, messages):
        """[(packet_id, verdict, mark or None)] for MESSAGES."""
        self._now = now = self.clock()
        out = []
        for msg in messages:
            self.counters.messages += 1
            pkt = packet.read(msg.payload)
            if msg.kind == nq.LOGGED:
                # the server's SYN-ACK, on its way to the guest: its ack is
                # the client's first byte
                self.counters.logged += 1
                if pkt is not None and pkt.proto == packet.TCP and pkt.flags & SYN_ACK == SYN_ACK:
                    key = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
                    out += self._verdicts(self.flows.start(key, pkt.ack, now))
                continue
            self.marks[msg.packet_id] = msg.mark
            if pkt is None:
                out += self._verdicts([(msg.packet_id, flows.DROP)])
            elif pkt.proto == packet.TCP:
                key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
                if key in self.flows.decided:
                    self.counters.late += 1
                out += self._verdicts(self.flows.packet(key, pkt.seq, bool(pkt.flags & packet.SYN), pkt.payload,
                                                        msg.packet_id, now))
            else:
                vm = self.vms.get(pkt.src)
                if vm is None:
                    verdict = rule.refuse("no guarded VM has the address %s" % pkt.src)
                else:
                    verdict = decide.udp(vm.policy, self.pins.names(vm.vm_id, pkt.dst, now), pkt.dport)
                self._tell((pkt.src, pkt.sport, pkt.dst, pkt.dport), verdict, packet.UDP)
                action = flows.ACCEPT if verdict.action == rule.ACCEPT else flows.REFUSE
                out += self._verdicts([(msg.packet_id, action)])
        return out

    def expire(self):
        self._now = self.clock()
        return self._verdicts(self.flows.expire(self._now))

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
            items = self.handle(self.sock.receive(timeout=0))
        if items or self.cut:
            cut, self.cut = self.cut, []
            self.sock.verdicts(items, then=cut)
        return len(items)


class GuardLoop(object):
    def __init__(self):
        self._guards = {}           # fd -> NamespaceGuard
        self._epoll = select.epoll()
        self._lock = threading.Lock()
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

    def run(self, stop, tick=0.05):
        """Serve until STOP is set. ``cpu_seconds`` and ``system_seconds``
        grow with the thread's CPU time as it runs (what a decision costs,
        for the benchmark)."""
        last = resource.getrusage(RUSAGE_THREAD)
        next_expire = time.monotonic() + EXPIRE_EVERY
        try:
            while not stop.is_set():
                for fd, _events in self._epoll.poll(tick):
                    guard = self._guards.get(fd)
                    if guard is None:
                        continue
                    try:
                        guard.pump()
                    except nq.NfqueueError as exc:
                        log.warning("namespace %s: %s", guard.name, exc)
                last = self._account(last)
                now = time.monotonic()
                if now >= next_expire:
                    next_expire = now + EXPIRE_EVERY
                    for guard in self.guards():
                        guard.pump(guard.expire())
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
