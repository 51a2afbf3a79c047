"""Held flows, pure: a TCP flow's first payload bytes put back in order,
until the guard can decide, and what to tell the kernel about each packet.

The kernel sends the guard a copy of the server's SYN-ACK of each guarded
flow (its acknowledgement number is where the client's stream starts, *as
the server will read it*) and holds every packet from the guest that
carries payload until the guard gives a verdict; packets without payload
pass in the kernel. Here:

* ``start(key, first, now)`` records FIRST, the sequence number of the
  client's first byte. A new start for a decided flow is a new connection
  on the same addresses and ports (the old verdict goes); a different start
  while payload is held refuses the flow (the guard must read the bytes the
  server will read); without payload held it replaces the old one.
* ``packet(key, seq, syn, payload, packet_id, now)`` places the payload at
  its offset in the client's stream and, once the bytes from offset 0 on
  allow it, asks ``decide(key, prefix)`` (None: need more). It returns a list
  of ``(packet_id, action)`` to give to the kernel now.
* ``expire(now)`` refuses flows held longer than ``hold`` seconds and drops
  old records.

Why offsets and why the server's number: a guest could send a harmless
hello at a later offset first and the real request at offset 0 after it, or
send two SYNs with different numbers and count on the server following the
other one; the server reads from the number it acknowledged. A flow whose
SYN-ACK the guard did not see (it restarted, or the copy was lost) is
refused; so is payload in a SYN (TCP Fast Open), which comes before any
SYN-ACK. Overlapping copies must agree byte for byte (a normal client
retransmits the same bytes).

Actions: ``ACCEPT`` (the flow: the kernel keeps the verdict in the
connection's mark and lets the packet go on), ``REFUSE`` (the flow: reset
towards the guest), ``DROP`` (this packet only: a held copy of a refused
flow, which gets one reset, not one per packet), ``PASS`` (this packet only,
no verdict: it carries no payload). A decided flow is kept as a verdict for
``linger`` seconds: packets the kernel queued before it had the verdict get
the same one (a late "refused" would cut an accepted flow).
"""

import collections

from . import reasons, rule

PASS = "pass"
ACCEPT = "accept"
REFUSE = "refuse"
DROP = "drop"

STREAM_CAP = 16384 + 4 * 5      # a maximal ClientHello and its record headers
HOLD = 3.0                      # seconds a flow may be held before it is refused
SYN_TTL = 120.0                 # a flow's start record, until its first payload
LINGER = 10.0                   # a decided flow's verdict, for late packets
MAX_HELD = 64                   # packets held per flow
MAX_FLOWS = 4096                # SYN records and held flows per table

_WRAP = 1 << 32
_HALF = 1 << 31


class _Flow(object):
    __slots__ = ("isn", "chunks", "held", "held_since", "seen")

    def __init__(self, isn, now):
        self.isn = isn          # sequence number of the client's first byte
        self.chunks = {}        # offset -> bytes
        self.held = []          # packet ids, oldest first
        self.held_since = None
        self.seen = now


class FlowTable(object):
    """The held flows of one queue (one network namespace).

    ``decide(key, prefix) -> rule.Verdict or None`` is called with the
    contiguous bytes from the start of the client's stream. ``on_verdict(key,
    verdict)`` (optional) is told every decision, for the log.
    ``lets_through(key)`` (optional): whether a refusal of KEY's flow is
    only told, and the flow accepted (audit mode)."""

    def __init__(self, decide, on_verdict=None, hold=HOLD, syn_ttl=SYN_TTL, linger=LINGER,
                 max_flows=MAX_FLOWS, lets_through=None):
        self.decide = decide
        self.on_verdict = on_verdict
        self.lets_through = lets_through
        self.hold, self.syn_ttl, self.linger, self.max_flows = hold, syn_ttl, linger, max_flows
        self.flows = collections.OrderedDict()      # key -> _Flow, oldest first
        self.decided = collections.OrderedDict()    # key -> (action, until)

    # -- events ----------------------------------------------------------------
    def start(self, key, first, now):
        """The server acknowledged FIRST as the client's first byte of KEY;
        returns actions (for this flow if it had payload held from another
        start, or for the oldest held flow if room had to be made)."""
        self.decided.pop(key, None)
        flow = self.flows.get(key)
        if flow is None:
            out = self._room(now)
            self.flows[key] = _Flow(first, now)
            return out
        if flow.isn != first:
            if flow.held:
                return self._finish(key, flow, rule.refuse("the server acknowledged another start", code=reasons.STREAM), now)
            flow.isn, flow.seen = first, now
        return []

    def packet(self, key, seq, syn, payload, packet_id, now):
        """What to do with one queued packet (and with the packets held
        before it, if this one decides the flow)."""
        late = self.decided.get(key)
        if late is not None:
            action = late[0]
            return [(packet_id, ACCEPT if action == ACCEPT else DROP)]
        flow = self.flows.get(key)
        if not payload:
            return [(packet_id, PASS)]
        if syn:
            return self._finish(key, flow or _Flow(None, now), rule.refuse("payload in a SYN", code=reasons.STREAM), now,
                                extra=[packet_id])
        if flow is None:
            return self._finish(key, _Flow(None, now), rule.refuse("its SYN-ACK was not seen", code=reasons.STREAM), now,
                                extra=[packet_id])
        offset = (seq - flow.isn) % _WRAP
        if offset >= _HALF:
            return self._finish(key, flow, rule.refuse("payload before the start of the stream", code=reasons.STREAM), now,
                                extra=[packet_id])
        flow.held.append(packet_id)
        if flow.held_since is None:
            flow.held_since = now
        if offset == 0 and not flow.chunks:
            # the common case, a flow's first segment in order: it is the prefix
            prefix = flow.chunks[0] = payload[:STREAM_CAP]
        else:
            if offset < STREAM_CAP:
                conflict = self._place(flow, offset, payload[:STREAM_CAP - offset])
                if conflict:
                    return self._finish(key, flow, rule.refuse("retransmitted bytes differ", code=reasons.STREAM), now)
            prefix = self._prefix(flow)
        verdict = self.decide(key, prefix) if prefix else None
        if verdict is None:
            if len(prefix) >= STREAM_CAP:
                verdict = rule.refuse("nothing to decide on in the first %d bytes" % STREAM_CAP,
                                      code=reasons.LIMIT)
            elif len(flow.held) > MAX_HELD:
                verdict = rule.refuse("more than %d packets held" % MAX_HELD, code=reasons.LIMIT)
            else:
                return []
        return self._finish(key, flow, verdict, now)

    def expire(self, now):
        """Verdicts for flows held too long; forgets stale records."""
        out = []
        for key in list(self.flows):
            flow = self.flows[key]
            if flow.held_since is not None and now - flow.held_since >= self.hold:
                refused = rule.refuse("held %.1f s without a complete request" % self.hold, code=reasons.TIMEOUT)
                out += self._finish(key, flow, refused, now)
            elif flow.held_since is None and now - flow.seen >= self.syn_ttl:
                del self.flows[key]
        while self.decided:
            key, (action, until) = next(iter(self.decided.items()))
            if until > now:
                break
            del self.decided[key]
        return out

    def cut(self, key):
        """KEY's connection is being cut (its conntrack entry deleted): its
        kept verdict goes, so a packet that comes after is judged afresh
        (and refused: nobody saw its SYN-ACK)."""
        self.decided.pop(key, None)

    def forget(self):
        """Every held packet, to be dropped (the table is going away, e.g.
        its VM was removed); the kernel drops what it still holds when the
        queue is unbound anyway."""
        ids = [pid for flow in self.flows.values() for pid in flow.held]
        self.flows.clear()
        self.decided.clear()
        return [(pid, DROP) for pid in ids]

    # -- inside -------------------------------------------------------------------
    def _room(self, now):
        """Make room for one more flow: forget the oldest SYN record, or, if
        every flow is held, refuse the oldest."""
        out = []
        while len(self.flows) >= self.max_flows:
            idle = next((k for k, f in self.flows.items() if not f.held), None)
            if idle is not None:
                del self.flows[idle]
            else:
                key, flow = next(iter(self.flows.items()))
                out += self._finish(key, flow, rule.refuse("too many flows held", code=reasons.LIMIT), now)
        return out

    @staticmethod
    def _place(flow, offset, data):
        """Store DATA at OFFSET; True if it contradicts bytes held before."""
        end = offset + len(data)
        for start, chunk in flow.chunks.items():
            stop = start + len(chunk)
            lo, hi = max(start, offset), min(stop, end)
            if lo < hi and chunk[lo - start:hi - start] != data[lo - offset:hi - offset]:
                return True
        known = flow.chunks.get(offset)
        if known is None or len(known) < len(data):
            flow.chunks[offset] = data
        return False

    @staticmethod
    def _prefix(flow):
        """The contiguous bytes from offset 0."""
        out = b""
        for start in sorted(flow.chunks):
            if start > len(out):
                break
            chunk = flow.chunks[start]
            if start + len(chunk) > len(out):
                out += chunk[len(out) - start:]
        return out

    def _finish(self, key, flow, verdict, now, extra=()):
        self.flows.pop(key, None)
        held = flow.held + list(extra)
        if verdict.action == rule.ACCEPT or (self.lets_through is not None and self.lets_through(key)):
            action = ACCEPT
        else:
            action = REFUSE
        self.decided[key] = (action, now + self.linger)
        self.decided.move_to_end(key)
        if len(self.decided) > 4 * self.max_flows:
            self.decided.popitem(last=False)
        if self.on_verdict is not None:
            self.on_verdict(key, verdict)
        if not held:
            return []
        if action == ACCEPT:
            return [(pid, ACCEPT) for pid in held]
        return [(held[0], REFUSE)] + [(pid, DROP) for pid in held[1:]]
