"""Pins: which names each learned address was learned for, per VM. Pure.

The resolver pins an address when it learns it (the asked name and every
name on the answer's CNAME chain, with the learned set entry's expiry); the
name guard (a layer above) reads the pins to decide whether a flow that
names a host may go to that address. It lives here, below the guard, because
the resolver writes it and the guard reads it, in one process.

* ``pin(vm, address, names, expires)``: add or refresh; an expiry only
  moves later (the resolver re-adds a set entry only when the new answer
  outlives it, so the entry's timeout only moves later too).
* ``names(vm, address, now)``: the names pinned and not expired.
* ``forget_names(vm, keep)``: drop the pins of names for which KEEP(name) is
  false (a policy change); ``forget_address``; ``forget_vm``.
* ``expire(now)``: drop what ran out (amortised: a heap of expiries).

Times are the caller's clock (monotonic seconds). Thread safe: the resolver
writes from its threads while the guard reads from its loop. What survives
a restart is the resolver's journal (resolver/pin_journal.py).
"""

import heapq
import threading

_NONE = frozenset()      # the names of an address with no pins


class PinTable(object):
    def __init__(self):
        self._vms = {}          # vm -> {address: {name: expires}}
        self._heap = []         # (expires, vm, address, name); stale ones skipped
        self._lock = threading.Lock()

    def pin(self, vm, address, names, expires):
        """Pin ADDRESS to each of NAMES (lower case, no trailing dot) for VM
        until EXPIRES, or later if it was pinned for longer. Returns whether
        a pin is new or lasts longer now."""
        moved = False
        with self._lock:
            by_name = self._vms.setdefault(vm, {}).setdefault(address, {})
            for name in names:
                if by_name.get(name, float("-inf")) < expires:
                    by_name[name] = expires
                    heapq.heappush(self._heap, (expires, vm, address, name))
                    moved = True
        return moved

    def count(self, vm):
        """How many (address, name) pins VM holds (expired ones included
        until ``expire`` ran)."""
        with self._lock:
            return sum(len(by_name) for by_name in self._vms.get(vm, {}).values())

    def rebuild(self, vm, members, now):
        """Pin what VM's learned set holds: MEMBERS as the set lists them,
        dicts with ``address``, ``timeout`` (seconds left) and ``comment``
        (the asked name). What a daemon that starts again knows, when it has
        no record of its own (the CNAME chain and earlier names of a shared
        address are lost: one comment per entry). Returns how many."""
        count = 0
        for member in members:
            name = (member.get("comment") or "").lower().rstrip(".")
            timeout = member.get("timeout")
            if name and timeout:
                self.pin(vm, member["address"], [name], now + timeout)
                count += 1
        return count

    def names(self, vm, address, now):
        """The names ADDRESS is pinned to for VM at time NOW (a frozenset)."""
        with self._lock:
            table = self._vms.get(vm)
            by_name = table.get(address) if table is not None else None
            if not by_name:
                return _NONE
            return frozenset([name for name, until in by_name.items() if until > now])

    def addresses(self, vm):
        """{address: {name: expires}} of VM (a copy), for a dump or a test."""
        with self._lock:
            return {a: dict(n) for a, n in self._vms.get(vm, {}).items()}

    def forget_names(self, vm, keep):
        """Drop VM's pins of every name for which KEEP(name) is false;
        returns [(address, name)] dropped."""
        dropped = []
        with self._lock:
            table = self._vms.get(vm, {})
            for address in list(table):
                by_name = table[address]
                for name in [n for n in by_name if not keep(n)]:
                    del by_name[name]
                    dropped.append((address, name))
                if not by_name:
                    del table[address]
        return dropped

    def forget_address(self, vm, address):
        with self._lock:
            self._vms.get(vm, {}).pop(address, None)

    def forget_vm(self, vm):
        with self._lock:
            self._vms.pop(vm, None)

    def vms(self):
        with self._lock:
            return list(self._vms)

    def expire(self, now):
        """Drop every pin whose expiry is NOW or earlier; returns how many."""
        dropped = 0
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                until, vm, address, name = heapq.heappop(heap)
                by_name = self._vms.get(vm, {}).get(address)
                if by_name is None or by_name.get(name) != until:
                    continue        # refreshed, forgotten or already gone
                del by_name[name]
                dropped += 1
                if not by_name:
                    del self._vms[vm][address]
                    if not self._vms[vm]:
                        del self._vms[vm]
            if len(heap) > 64 and len(heap) > 4 * self._count():
                self._rebuild()
        return dropped

    def _count(self):
        return sum(len(n) for t in self._vms.values() for n in t.values())

    def _rebuild(self):
        self._heap = [(until, vm, address, name) for vm, table in self._vms.items()
                      for address, by_name in table.items() for name, until in by_name.items()]
        heapq.heapify(self._heap)
