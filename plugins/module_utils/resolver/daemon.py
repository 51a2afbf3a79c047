"""The host DNS resolver (``vmsan resolver``): how a query travels through
the parts. Every DNS decision is ``core``'s (reading a query: ``wire``);
the parts are:

* ``registry``: the VMs by guest address, their budgets (``Meter``) and
  their learning (``Learner``, ``LearningWorker``);
* ``upstream``: queries in flight (one socket each), retries, the shared
  answer cache;
* ``servers``: the event loop, UDP and TCP.

Threads: the loop (the main thread: every socket, every decision, every
cache); the learning thread (netlink: adds to the VMs' sets, prunes); the
housekeeping thread (opens upstream sockets ahead of need, re-reads the
host's addresses, closes sockets of removed VMs' namespaces); a thread per
truncated answer fetched again over TCP. Work done off the loop comes back
to it through ``Loop.post``.

A query, in order: the VM by its source address; its query budget (beyond
it REFUSED, before the query is read); its cache of finished replies; the
cheap read (``wire``: FORMERR for anything a query should not carry); the
policy; the shared answer cache; its budget of upstream queries in flight;
upstream. An address in an allowed answer is added to the VM's ``dns`` set
(on the learning thread) before the guest gets the answer, so the guest
never sees an address the firewall would drop.
"""

import collections
import gc
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time

from ..kernel import netns as ns
from ..kernel.ipset_wire import describe, is_missing_set
from ..lifecycle.state import StateStore
from ..model import addressing as A
from ..model import events as E
from ..model.errors import VmsanError
from ..telemetry.metrics import Histogram
from . import cache, core, limits
from . import registry as reg
from . import servers
from . import upstream as up
from .health import stats_text
from .pin_journal import PinJournal
from .pins import PinTable

log = logging.getLogger("vmsan.resolver")

STATE_CHECK_MIN = 0.001     # at most one stat of the state directory per ms while queries come
HOUSEKEEPING = 0.25
HOST_ADDRESS_REFRESH = 5.0
SWEEP = 1.0                 # expired cache entries, log summaries
RECORDS_PER_TOKEN = 4       # an answer of N records costs its VM N // 4 queries more of its budget
UPSTREAM_TOKENS = 4         # a query sent upstream costs its VM this many of its budget (one was taken on arrival)
SWITCH_INTERVAL = 0.0005    # the GIL: the loop waits at most this for the learning thread's encoding
GC_FULL = 600.0             # seconds between full collections (see Resolver._freeze_survivors)
PINS_DIR = "pins"           # under the state directory: one journal of pins per VM (pin_journal.py)
# The daemon's CPU priority over the guests' VMMs (docs/domain-policies.md,
# "Priority"): the Nice= of roles/vmsan_host/files/vmsan-resolver.service (a
# unit test keeps the two equal), taken by the daemon itself when it was
# started at the default nice of 0 by anything else; VMSAN_DAEMON_NICE
# overrides it (0: leave the priority as it is).
DAEMON_NICE = -10
NICE_ENV = "VMSAN_DAEMON_NICE"

# kept under these names for the code and tests that know them
UPSTREAM_RETRY, UPSTREAM_GIVE_UP = up.UPSTREAM_RETRY, up.UPSTREAM_GIVE_UP
FRESH_RECHECK = reg.FRESH_RECHECK
Learner = reg.Learner


class Resolver(object):
    """PINS: the pin table it records what it learns in (resolver/pins.py;
    the name guard reads it); JOURNAL: where pins are kept across restarts
    (resolver/pin_journal.py; None: nowhere). ``on_reloaded(states)``, when
    set, is told the VMs after each change of the state directory (on the
    loop's thread: it must be quick; the host daemon hands them to the name
    guard, which opens a new namespace's queue socket there, a millisecond
    or two, so the queue is bound before the VM's DNS is answered);
    ``before_learned_answer(policy)``, when set, is called on the loop's
    thread before an answer that opens addresses to a learning VM goes out
    (the host daemon makes sure the VM's guard queue is bound: a namespace
    that was not there yet at the reload, or could not be entered then, is
    bound now, not on the guard's next housekeeping tick, which a guest
    connecting at once would beat); ``stats_hooks``: callables whose dicts
    join the health answer."""

    def __init__(self, cfg, upstream, store=None, clock=time.monotonic, defaults=limits.DEFAULT_BUDGET,
                 pool=None, answer_bytes=cache.DEFAULT_ANSWER_BYTES, hot_bytes=cache.DEFAULT_HOT_BYTES,
                 pins=None, journal=None, telemetry=None):
        self.cfg = cfg
        # telemetry.service.Telemetry (or anything with its ``refusal``): where refusals are logged
        self.telemetry = telemetry
        self.latency = Histogram()      # upstream answers, for the metrics
        self.upstream_address = upstream
        self.clock = clock
        self.defaults = defaults
        self.pins = pins if pins is not None else PinTable()
        self.journal = journal
        self.on_reloaded = None
        self.before_learned_answer = None
        self.stats_hooks = []
        self._pinned_as = {}        # vm id -> (identity, policy key) its pins belong to
        self._starting = True       # the first read of the state: pins come back from the journals
        self.loop = servers.Loop(clock)
        self.registry = reg.Registry(store or StateStore(), defaults, clock, cache.SharedBytes(hot_bytes),
                                     on_new_policy=self._prune_later, on_reloaded=self._reloaded)
        self.notices = core.RefusalLog(interval=60.0)
        self.refusals = core.RefusalLog()
        self.upstream = up.Upstream(upstream, self.loop, clock, self._complete, self.notices, pool=pool)
        self.upstream.answers.max_bytes = answer_bytes
        self.learning = reg.LearningWorker(self.loop.post, on_batch=self._learned)
        self.unknown = reg.Meter("(no VM)", defaults, clock())    # every address that is no VM's, together
        self.rebinding = core.Rebinding()
        self.stats = collections.Counter()
        self.next_check = 0.0
        self._host_refreshed = -HOST_ADDRESS_REFRESH
        self._gc_full = clock()
        self._reload_requested = False
        self._stopping = threading.Event()
        self._started = time.monotonic()
        self.udp = self.tcp = None
        self.udp_server = self.tcp_server = None
        self.loop.every(servers.TICK, self._tick)
        self.loop.every(SWEEP, self._sweep)

    # -- state ------------------------------------------------------------------
    @property
    def vms(self):
        return self.registry.vms

    @property
    def answers(self):
        return self.upstream.answers

    def check_state(self, force=False):
        return self.registry.check_state(force)

    def maybe_check_state(self, now):
        if now >= self.next_check:
            self.next_check = now + STATE_CHECK_MIN
            self.registry.check_state()

    def request_reload(self):
        """SIGHUP: re-read every state file and forget every cached answer
        and learned-address record (e.g. after an operator flushed a set)."""
        self._reload_requested = True

    def forget_caches(self):
        self.upstream.answers.clear()
        self.registry.forget_caches()
        log.info("reload: caches dropped, state re-read")

    def _prune_later(self, state):
        """A VM's policy is new or changed: forget what its set learned under
        another policy (on the learning thread, after what it was doing)."""
        if state.policy.netns is not None and not ns.exists(state.policy.netns):
            return

        def prune():
            try:
                for address, name in state.learner.prune(state.policy):
                    log.info("VM %s: forgot %s (learned for %s, no longer allowed)", state.policy.vm_id, address,
                             name)
            except Exception as exc:
                log.warning("VM %s: cannot prune its learned addresses: %s", state.policy.vm_id, exc)
        self.learning.submit_call(state.learner, prune)

    # -- pins ---------------------------------------------------------------------
    def _reloaded(self, states):
        """After a change of the state directory: pins follow the VMs (a VM
        gone, recreated or no longer learning: its pins go; a policy change:
        the pins of names that left the list go), then ``on_reloaded``."""
        seen = {}
        for state in states:
            policy = state.policy
            if not policy.learns:
                continue
            mine = (policy.identity, policy.policy_key)
            seen[policy.vm_id] = mine
            before = self._pinned_as.get(policy.vm_id)
            if before is None:
                if not self._starting:
                    self.pins.forget_vm(policy.vm_id)      # a new VM: nothing of another may stay
            elif before[0] != policy.identity:
                self._forget_pins(policy.vm_id, "the VM was recreated")
            elif before[1] != policy.policy_key:
                dropped = self.pins.forget_names(policy.vm_id, lambda name, m=policy.matcher: bool(m.allowed(name)))
                if dropped:
                    log.info("VM %s: dropped %d pins of names that left its allowed domains", policy.vm_id,
                             len(dropped))
                    if self.journal is not None:
                        self.journal.rewrite(policy.vm_id, policy.identity, self.pins.addresses(policy.vm_id))
        for vm_id in [v for v in self._pinned_as if v not in seen]:
            self._forget_pins(vm_id, None)
        self._pinned_as = seen
        if self.on_reloaded is not None:
            try:
                self.on_reloaded(states)
            except Exception as exc:        # the guard's part must never stop DNS
                log.exception("after reading the state: %s", exc)

    def _forget_pins(self, vm_id, why):
        self.pins.forget_vm(vm_id)
        if self.journal is not None:
            self.journal.remove(vm_id)
        if why:
            log.info("VM %s: pins forgotten (%s)", vm_id, why)

    def restore_pins(self):
        """At the daemon's start, once the state was read (before serving):
        each learning VM's pins come back from its journal, or, without one,
        from its learned set; journals of VMs that are gone are removed."""
        states = [s for s in self.registry.states() if s.policy.learns]
        self._pinned_as = {s.policy.vm_id: (s.policy.identity, s.policy.policy_key) for s in states}
        if self.journal is not None:
            for state in states:
                self._restore_pins(state)
            for vm_id in self.journal.ids():
                if vm_id not in self._pinned_as:
                    self.journal.remove(vm_id)      # a VM removed while no daemon ran
        self._starting = False

    def _restore_pins(self, state):
        """STATE's pins from its journal (names that left its list meanwhile
        dropped), or, without one, from its learned set (each entry's
        comment: the latest name it was learned for); the journal is then
        rewritten from what was restored."""
        policy = state.policy
        now = self.clock()
        loaded = self.journal.load(policy.vm_id, policy.identity)
        if loaded is None:
            count = self._pins_from_set(state, now)
            source = "its learned set"
        else:
            count = 0
            for address, names, expires in loaded:
                names = [n for n in names if policy.matcher.allowed(n)]
                if names and self.pins.pin(policy.vm_id, address, names, expires):
                    count += 1
            source = "its journal"
        self.journal.rewrite(policy.vm_id, policy.identity, self.pins.addresses(policy.vm_id))
        if count:
            log.info("VM %s: %d pins restored from %s", policy.vm_id, count, source)

    def _pins_from_set(self, state, now):
        policy = state.policy
        if policy.netns is not None and not ns.exists(policy.netns):
            return 0
        try:
            with ns.entered(policy.netns):
                from ..kernel.ipsets import SetManager
                with SetManager() as sets:
                    members = sets.members(state.learner.set_name)
        except Exception as exc:
            log.warning("VM %s: cannot read its learned set to pin its addresses: %s", policy.vm_id, exc)
            return 0
        allowed = [m for m in members if m.get("comment") and policy.matcher.allowed(m["comment"])]
        return self.pins.rebuild(policy.vm_id, allowed, now)

    def _pin(self, state, q, answer, pairs):
        """Pin each (address, expires) of PAIRS, addresses of ANSWER to Q that
        STATE's VM has in its learned set, to Q's name and its CNAME chain."""
        names = core.chain_names(q, answer)
        if not names:
            return
        policy = state.policy
        for address, expires in pairs:
            if self.pins.pin(policy.vm_id, address, names, expires) and self.journal is not None:
                self.journal.write(policy.vm_id, policy.identity, address, names, expires)
        if self.journal is not None and self.journal.wants_compaction(policy.vm_id, self.pins.count(policy.vm_id)):
            self.journal.rewrite(policy.vm_id, policy.identity, self.pins.addresses(policy.vm_id))

    def refresh_host_addresses(self, now):
        """The host's own addresses, for the rebinding filter."""
        self._host_refreshed = now
        try:
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                found = {m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=2)}
        except Exception as exc:
            log.warning("cannot read the host's addresses: %s", exc)
            return
        found.discard(None)
        if found != self.rebinding.host_addresses():
            self.rebinding = core.Rebinding(found)

    # -- the log, per VM --------------------------------------------------------
    def _vm_log(self, meter, kind, level, text, *args):
        """One line about METER's VM, if its log budget has room (else it is
        counted in the VM's next summary line)."""
        if meter.log.allow(kind, self.clock()):
            log.log(level, text, *args)

    def note_over_budget(self, meter, now):
        """A query beyond METER's budget: True to answer it REFUSED, False
        to drop it (beyond twice the budget)."""
        meter.over_budget += 1
        self.stats["over_budget"] += 1
        if meter.log.allow("over budget", now):
            log.warning("VM %s: more than %d queries a second: answering REFUSED beyond that, nothing beyond "
                        "twice that", meter.vm_id, meter.budget.queries_per_second)
        self.budget_refusal(meter, "more than %d queries a second" % meter.budget.queries_per_second, now)
        if meter.refusals.take(now):
            return True
        meter.unanswered += 1
        return False

    def budget_refusal(self, meter, why, now):
        """An event for a query refused beyond one of METER's budgets: at
        most one a second per VM (a flood is not written down query by
        query; the event log's summary counts what its own limit held back)."""
        if self.telemetry is None or now < meter.event_due or meter is self.unknown:
            return
        meter.event_due = now + 1.0
        state = self.registry.by_id.get(meter.vm_id)
        self.telemetry.refusal(meter.vm_id, "dns_budget", detail=why,
                               policy_version=state.policy.version if state is not None else None)

    def note_malformed(self, meter, why, now):
        meter.formerr += 1
        self.stats["formerr"] += 1
        if meter.log.allow("malformed", now):
            log.info("VM %s: malformed query (%s): FORMERR", meter.vm_id, why)

    def note_tcp_refused(self, meter, limit, host_full):
        self.stats["tcp_refused"] += 1
        if host_full:
            self.note_host_problem("tcp full", "%d TCP connections open: refusing more" % servers.TCP_MAX_CONNECTIONS)
        else:
            self._vm_log(meter, "TCP refused", logging.WARNING,
                         "VM %s: %d TCP connections open (its limit): refusing more", meter.vm_id, limit)
            self.budget_refusal(meter, "more than %d TCP connections" % limit, self.clock())

    def note_tcp_unread(self, meter, ip):
        self.stats["tcp_unread"] += 1
        self._vm_log(meter, "TCP unread", logging.INFO,
                     "VM %s: closed a TCP connection whose answers were not read", meter.vm_id)

    def note_host_problem(self, kind, text):
        if self.notices.note(("host", kind), None, self.clock()) is not None:
            log.warning("%s", text)

    # -- queries ----------------------------------------------------------------
    def handle(self, data, ip, reply, tcp, state=None, checked=False):
        """Answer the query DATA from guest address IP: now through REPLY, or
        later (when upstream has answered, or its addresses are learned).
        STATE: the VM, when the caller looked it up; CHECKED: its budget
        was already charged. Returns False if nothing will be answered."""
        now = self.clock()
        if not checked:
            self.maybe_check_state(now)
            if state is None:
                state = self.registry.get(ip)
            if tcp:
                self.stats["queries"] += 1
        meter = state.meter if state is not None else self.unknown
        if state is not None:
            reply = _counting(reply, meter.rcodes)
        if not checked and not meter.bucket.take(now):
            if self.note_over_budget(meter, now) and len(data) >= 12 and not data[2] & 0x80:
                reply(core.bare_reply((data[0] << 8) | data[1], (data[2] << 8) | data[3], core.REFUSED))
                return True
            return False
        try:
            q = core.parse_query(data)
        except core.BadQuery as bad:
            self.note_malformed(meter, bad.why, now)
            reply(core.error_reply(bad))
            return True
        if q is None:
            return False
        if core.is_health_query(q):
            reply(core.health_reply(q, "ok" if state is not None else "ok " + stats_text(self.health_stats())))
            return True
        if state is None:
            if self.notices.note(ip, None, now) is not None:
                log.warning("refused a query from %s: no VM has that address", ip)
            reply(core.short_reply(q, core.REFUSED))
            return True
        hot = state.hot.get(cache.TCP_MARK + q.hot_key if tcp else q.hot_key)
        if hot is not None and now < hot.expires:
            self.stats["hot"] += 1
            reply(data[:2] + hot.at(now))
            return True
        action, pattern = state.policy.decide(q)
        if action != core.FORWARD:
            self._refuse(state, q, action, reply, now)
            return True
        if pattern is None and state.policy.audit:
            self._refusal(state, q, E.WOULD_REFUSE, "answered: audit mode")
        answer = self.upstream.answers.get(q.cache_key(), now)
        if answer is not None:
            self.stats["cached"] += 1
            self._answer(state, q, tcp, answer, reply, now)
            return True
        if meter.in_flight >= meter.budget.upstream_queries:
            self._vm_log(meter, "upstream budget", logging.WARNING,
                         "VM %s: %d queries upstream at once (its limit): answering REFUSED beyond that",
                         meter.vm_id, meter.budget.upstream_queries)
            self.budget_refusal(meter, "more than %d queries upstream at once" % meter.budget.upstream_queries, now)
            self.stats["over_budget"] += 1
            reply(core.short_reply(q, core.REFUSED))
            return True
        asked = self.upstream.ask(q, (ip, q, tcp, reply, meter), now)
        if not asked:
            reply(core.short_reply(q, core.SERVFAIL))
            return True
        if asked == up.SENT:
            # a new upstream query costs the loop a socket, a send, a reply to
            # read, filter and cache: several times a cached answer, so a guest
            # asking only new names gets a quarter as many a second
            meter.bucket.charge(UPSTREAM_TOKENS - 1)
        meter.in_flight += 1
        return True

    def _refusal(self, state, q, verdict, detail):
        if self.telemetry is not None:
            self.telemetry.refusal(state.policy.vm_id, "name", name=q.name or repr(b".".join(q.labels))[2:-1],
                                   detail=detail, verdict=verdict, policy_version=state.policy.version)

    def _refuse(self, state, q, action, reply, now):
        self._refusal(state, q, E.REFUSED, "REFUSED" if action == core.REFUSE else "NXDOMAIN")
        if action == core.REFUSE:
            reply(core.short_reply(q, core.REFUSED))
            return
        held = self.refusals.note(state.policy.vm_id, q.name, now)
        if held is not None:
            self._vm_log(state.meter, "refused", logging.INFO, "refused %s for VM %s: not in its allowed domains%s",
                         q.name or repr(b".".join(q.labels))[1:], state.policy.vm_id,
                         " (and %d more times)" % held if held else "")
        reply(core.short_reply(q, core.NXDOMAIN))

    def _answer(self, state, q, tcp, answer, reply, now):
        records = len(answer.answers) + len(answer.authority)
        if records > RECORDS_PER_TOKEN:     # reading and filtering an answer costs per record
            state.meter.bucket.charge(records // RECORDS_PER_TOKEN)
        view = core.guest_view(answer, q, state.policy, self.rebinding, int(now - answer.fetched))
        if view.removed and self.notices.note(state.policy.vm_id, ("rebinding", q.name), now) is not None:
            self._vm_log(state.meter, "rebinding", logging.WARNING,
                         "VM %s: removed %s from the answer for %s (rebinding protection)",
                         state.policy.vm_id, ", ".join(view.removed), q.name)
        if view.rcode == core.SERVFAIL:
            reply(core.short_reply(q, core.SERVFAIL))
            return
        todo = self._to_learn(state, view.learn, now) if state.policy.learns else ()
        if state.policy.learns and view.learn and self.before_learned_answer is not None:
            try:
                self.before_learned_answer(state.policy)
            except Exception as exc:     # the guard's fault: the answer goes on (its flows fail closed)
                log.warning("VM %s: %s", state.policy.vm_id, exc)
        if state.policy.learns and view.learn:
            # addresses the set holds for long enough already: pinned to this
            # name (too) until their entry runs out
            adding = {address for address, _timeout in todo}
            fresh = [(a, state.learned[a]) for a, _ttl in view.learn if a not in adding and a in state.learned]
            if fresh:
                self._pin(state, q, answer, fresh)
        if not todo:
            self._send_answer(state, q, tcp, answer, view, reply, now, True)
            return
        meter = state.meter
        if meter.learning >= reg.MAX_LEARN_JOBS:
            self._vm_log(meter, "learning queue", logging.WARNING,
                         "VM %s: %d answers wait for their addresses to be learned: SERVFAIL beyond that",
                         meter.vm_id, reg.MAX_LEARN_JOBS)
            reply(core.short_reply(q, core.SERVFAIL))
            return
        meter.learning += 1
        meter.bucket.charge(len(todo))          # a netlink message each: the learning thread's time is shared
        entries = [(address, timeout, q.name) for address, timeout in todo]
        self.learning.submit(state.learner, entries,
                             lambda failed: self._after_learning(state, q, tcp, answer, view, entries, failed, reply,
                                                                 now))

    def _to_learn(self, state, pairs, now):
        """(address, timeout) of PAIRS that the VM's set must be told of: new
        addresses, and those whose entry would run out before the answer's
        TTL plus half the grace period."""
        slack = self.cfg.grace / 2.0
        todo = []
        for address, ttl in pairs:
            timeout = core.learn_timeout(ttl, self.cfg)
            known = state.learned.get(address)
            if known is None or known < now + timeout - slack:
                todo.append((address, timeout))
        return todo

    def _after_learning(self, state, q, tcp, answer, view, entries, failed, reply, asked):
        """Back on the loop thread once the learning thread added ENTRIES
        (FAILED: {address: errno} the set refused). ASKED: when they were
        handed over (the set entries' timeouts run from a little later, so a
        pin until ASKED + timeout never outlives its entry)."""
        state.meter.learning -= 1
        now = self.clock()
        for address, timeout, _name in entries:
            if address not in failed:
                state.note_learned(address, now + timeout)
        current = self.registry.get(state.policy.guest_ip)
        if current is not state:        # its policy changed meanwhile: answer under the new one
            self._answer_waiter(current, q, tcp, answer, reply, now)
            return
        self._pin(state, q, answer, [(address, asked + timeout) for address, timeout, _name in entries
                                     if address not in failed])
        if failed:
            view = core.without(view, set(failed))
        self._send_answer(state, q, tcp, answer, view, reply, now, not failed)

    def _learned(self, learner, entries, failed, error):
        """After each batch of the learning thread (on the loop thread): what
        could not be learned is logged once per batch, a full set once until
        it takes addresses again."""
        self.stats["learned"] += len(entries) - len(failed)
        meter = learner.meter or self.unknown
        if error is not None:
            why = "its address set does not exist" if is_missing_set(error) else str(error)
            self._vm_log(meter, "not learned", logging.WARNING, "VM %s: cannot learn %d addresses (%s): %s",
                         learner.vm_id, len(entries), ", ".join(e[0] for e in entries[:4]), why)
            return
        full = [a for a, err in failed.items() if err == reg.IPSET_ERR_HASH_FULL]
        if full:
            if not learner.full:
                learner.full = True
                self._vm_log(meter, "set full", logging.WARNING,
                             "VM %s: its address set %s is full: %d addresses not learned (and left out of the "
                             "answers) until entries expire; this is logged once", learner.vm_id, learner.set_name,
                             len(full))
        elif learner.full and len(failed) < len(entries):
            learner.full = False
        others = {a: e for a, e in failed.items() if e != reg.IPSET_ERR_HASH_FULL}
        if others:
            self._vm_log(meter, "not learned", logging.WARNING, "VM %s: cannot learn %s",
                         learner.vm_id, ", ".join("%s (%s)" % (a, describe(e)) for a, e in list(others.items())[:4]))

    def _send_answer(self, state, q, tcp, answer, view, reply, now, cacheable):
        rendered = core.render(q, view, 65535 if tcp else core.udp_limit(q), now, answer.expires)
        if cacheable and answer.expires > now:
            state.hot.put(cache.TCP_MARK + q.hot_key if tcp else q.hot_key, rendered)
        reply(q.id.to_bytes(2, "big") + rendered.tail)

    def _answer_waiter(self, state, q, tcp, answer, reply, now):
        """Answer Q from a guest now under STATE (its VM as it is now, or
        None), with ANSWER (None: upstream gave none)."""
        if state is None:
            reply(core.short_reply(q, core.REFUSED))
            return
        action, _unused = state.policy.decide(q)
        if action != core.FORWARD:
            self._refuse(state, q, action, reply, now)
        elif answer is None:
            reply(core.short_reply(q, core.SERVFAIL))
        else:
            self._answer(state, q, tcp, answer, reply, now)

    def _complete(self, pending, reply):
        """An upstream query ended (REPLY: a DNSRecord, or None): cache the
        answer and give it to everyone who waited, each under the policy its
        VM has now."""
        now = self.clock()
        answer = None
        if reply is not None:
            try:
                answer = core.answer_from_reply(reply, now)
            except Exception as exc:
                log.warning("unreadable upstream answer for %s: %s", pending.q.name, exc)
        if answer is not None:
            self.upstream.answers.put(pending.key, answer, now)
            self.latency.observe(max(now - pending.sent, 0.0))
        for ip, q, tcp, reply_fn, meter in pending.waiters:
            meter.in_flight -= 1
            try:
                self._answer_waiter(self.registry.get(ip), q, tcp, answer, reply_fn, now)
            except Exception as exc:       # one bad waiter must not starve the others
                log.error("answering %s for %s failed: %s", q.name, ip, exc)

    def metrics_snapshot(self):
        """The resolver's counters for the metrics (telemetry.metrics.
        VmsanCollector's ``dns`` source); read from the scrape's thread."""
        rcodes, dropped = {}, {}
        for meter in list(self.registry.meters.values()):
            counts = rcodes.setdefault(meter.vm_id, {})
            for code, name in enumerate(core.RCODE_NAMES):
                if meter.rcodes[code]:
                    counts[name] = counts.get(name, 0) + meter.rcodes[code]
            dropped[meter.vm_id] = dropped.get(meter.vm_id, 0) + meter.unanswered
        now = self.clock()
        learned = {s.policy.vm_id: sum(1 for until in list(s.learned.values()) if until > now)
                   for s in self.registry.states() if s.policy.learns}
        return {"rcodes": rcodes, "dropped": dropped, "latency": self.latency, "learned": learned}

    def health_stats(self):
        stats = dict(self.stats)
        stats.update(vms=len(self.registry.vms), pending=self.upstream.in_flight(),
                     upstream=self.upstream.stats["upstream"], ignored=self.upstream.stats["ignored"],
                     answers=len(self.upstream.answers), answer_bytes=self.upstream.answers.bytes,
                     hot_bytes=self.registry.shared_hot.used,
                     tcp=len(self.tcp_server.conns) if self.tcp_server else 0,
                     learning=self.learning.pending(), rss_kib=_rss_kib(), gc_frozen=gc.get_freeze_count(),
                     uptime=int(time.monotonic() - self._started), pins=sum(self.pins.count(v) for v in self.pins.vms()))
        for hook in self.stats_hooks:
            try:
                stats.update(hook())
            except Exception as exc:
                log.warning("health counters: %s", exc)
        return stats

    # -- timers -----------------------------------------------------------------
    def _tick(self, now):
        if self._reload_requested:
            self._reload_requested = False
            self.forget_caches()
            self.registry.check_state(force=True)
        else:
            self.registry.check_state()
        self.upstream.retry_or_fail(now)
        if self.tcp_server is not None:
            self.tcp_server.tick(now)

    def _sweep(self, now):
        self._freeze_survivors(now)
        self.pins.expire(now)
        # Both caches are bounded in bytes whatever stays in them; this only
        # gives the bytes of expired entries back sooner, a slice a second.
        self.upstream.answers.expire_some(now)
        for state in self.registry.states():
            if state.hot:
                state.hot.expire_some(now)
        for meter in list(self.registry.meters.values()) + [self.unknown]:
            held = meter.log.summary(now)
            if held:
                log.warning("VM %s: %d more log lines held back in the last %d s: %s", meter.vm_id,
                            sum(held.values()), meter.log.window, limits.summary_text(held))

    def _freeze_survivors(self, now):
        """Python's cyclic collector, kept from pausing the loop: a full
        collection walks every object, and the caches hold hundreds of
        thousands (dnslib records): 40-140 ms measured. Once a second the
        young generations are collected and what survives is frozen
        (gc.freeze: never walked again; freed by its reference count as
        usual, which is how the caches' objects go: they hold no cycles).
        A cycle that was alive when frozen and dies later would stay, so
        every GC_FULL seconds everything is unfrozen and collected once."""
        if now - self._gc_full >= GC_FULL:
            self._gc_full = now
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
        gc.freeze()

    def housekeeping(self):
        """Off the loop: upstream sockets ahead of need, the host's addresses,
        netlink sockets of namespaces that are gone."""
        while not self._stopping.wait(HOUSEKEEPING):
            now = self.clock()
            try:
                self.upstream.pool.fill()
                for learner in list(self.registry.learners.values()):
                    learner.release_if_stale()
                if now - self._host_refreshed >= HOST_ADDRESS_REFRESH:
                    self.refresh_host_addresses(now)
            except Exception as exc:
                log.error("housekeeping: %s", exc)

    # -- serving ----------------------------------------------------------------
    def open_sockets(self, listen):
        # TCP first: a second resolver on the same address fails here,
        # before its UDP sockets could join this one's SO_REUSEPORT group
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(listen)
        self.tcp.listen(128)
        self.udp = servers.udp_queues(listen)
        self.udp_server = servers.UdpServer(self.udp, self.loop, self)
        self.tcp_server = servers.TcpServer(self.tcp, self.loop, self)
        self.upstream.pool.fill()

    def close(self):
        self._stopping.set()
        self.learning.stop()
        if self.tcp_server is not None:
            self.tcp_server.close_all()
        self.upstream.close()
        for sock in (self.udp or []) + [self.tcp]:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        self.registry.close()
        if self.journal is not None:
            self.journal.close()
        self.loop.close()

    def start_threads(self):
        self.learning.start()
        threading.Thread(target=self.housekeeping, name="housekeeping", daemon=True).start()

    def serve(self):
        """The loop, on the calling thread, until ``close`` or a signal."""
        self.loop.run()


def _counting(reply, rcodes):
    """REPLY, counting each reply it sends in RCODES by its rcode (the low
    four bits of the fourth byte)."""
    def counted(payload):
        if len(payload) > 3:
            rcodes[payload[3] & 0x0F] += 1
        reply(payload)
    return counted


def _rss_kib():
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return -1


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------
def default_upstream(path="/etc/resolv.conf"):
    try:
        with open(path) as handle:
            found = core.upstream_from_resolv_conf(handle.read())
    except OSError as exc:
        raise VmsanError("cannot read %s (%s); give the upstream with --upstream IP[:PORT]" % (path, exc.strerror))
    if found is None:
        raise VmsanError("%s names no IPv4 nameserver; give the upstream with --upstream IP[:PORT]" % path)
    return (found, 53)


def daemon_nice(env=None):
    """The nice value the daemon takes when started at nice 0: DAEMON_NICE,
    or the integer (-20..19) in $VMSAN_DAEMON_NICE. Raises VmsanError for
    anything else there."""
    text = (os.environ if env is None else env).get(NICE_ENV)
    if text is None or text.strip() == "":
        return DAEMON_NICE
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or not -20 <= value <= 19:
        raise VmsanError("%s=%r: give a whole number from -20 to 19 (the daemon's nice value; 0 leaves it as "
                         "started)" % (NICE_ENV, text))
    return value


def take_priority(nice, tasks_dir="/proc/self/task"):
    """Give every thread of this process the nice value NICE, if the
    process runs at the default 0 (a unit's Nice=, or an operator's
    ``nice``, is left alone). Linux keeps a nice value per thread and a new
    thread inherits its creator's: the threads started before this (the
    command server's) get it too. Returns the nice value the main thread
    has afterwards."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current != 0 or nice == 0:
        return current
    try:
        tids = [int(tid) for tid in os.listdir(tasks_dir)]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:      # a thread that just ended
            continue
        except OSError as exc:          # no CAP_SYS_NICE: said once, the daemon runs on at its nice value
            log.warning("cannot give the daemon nice %d: %s (set Nice= in its unit, or start it with nice)",
                        nice, exc.strerror or exc)
            break
    return os.getpriority(os.PRIO_PROCESS, 0)


def _raise_fd_limit():
    # One socket per upstream query in flight, one netlink socket per VM that
    # learns addresses, plus TCP clients.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard == resource.RLIM_INFINITY else min(hard, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(upstream=None, listen=None, ttl_floor=None, grace=None, budget=None, attach=None, name="vmsan-resolver",
         telemetry=None):
    """Run the resolver in the foreground until SIGTERM or SIGINT; SIGHUP
    re-reads every state file. UPSTREAM, LISTEN: (ip, port), validated by
    model.inputs; BUDGET: the per-VM defaults (model.inputs.resolver_budget's
    dict, or a limits.Budget). ATTACH(resolver): called once the resolver
    has read the state and restored its pins, before it serves (the host
    daemon starts the name guard there); what it returns, if anything, is
    called when the resolver stops, before its sockets close. NAME heads
    every log line. TELEMETRY: a telemetry.service.Telemetry, started
    before the resolver serves and stopped after it (the event log, the
    drop reader, the metrics server). Returns the exit status."""
    if not core.HAS_DNSLIB:
        raise VmsanError("the resolver needs the Python library dnslib (%s); install the pinned requirements "
                         "(scripts/setup.sh, or pip install -r requirements.txt)" % core.DNSLIB_IMPORT_ERROR)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format=name + ": %(levelname)s %(message)s")
    level = os.environ.get("VMSAN_RESOLVER_LOG", "INFO").upper()
    log.setLevel(level)
    logging.getLogger("vmsan").setLevel(level)      # the guard's and the commands' lines too
    logging.getLogger("vmsan.events").setLevel(logging.INFO)     # each event, to the journal through the unit
    cfg = core.settings(ttl_floor, grace)
    wanted_nice = daemon_nice()
    budget = limits.budget_from_flags(budget) if isinstance(budget, dict) else budget or limits.DEFAULT_BUDGET
    address = tuple(listen) if listen else (A.RESOLVER_IP, A.RESOLVER_PORT)
    ns.guard_sandbox()
    upstream = tuple(upstream) if upstream else default_upstream()
    if upstream == address:
        raise VmsanError("the upstream %s:%d is the resolver's own address" % upstream)
    _raise_fd_limit()
    nice = take_priority(wanted_nice)
    sys.setswitchinterval(SWITCH_INTERVAL)
    store = StateStore()
    resolver = Resolver(cfg, upstream, store=store, defaults=budget,
                        journal=PinJournal(os.path.join(store.root, PINS_DIR)), telemetry=telemetry)
    try:
        resolver.open_sockets(address)
    except OSError as exc:
        resolver.close()
        raise VmsanError("cannot listen on %s:%d: %s" % (address[0], address[1], exc.strerror))
    if telemetry is not None:
        telemetry.dns_source(resolver.metrics_snapshot)
        try:
            telemetry.start()
        except BaseException:
            resolver.close()
            raise

    def stop(signum, frame):
        raise servers.Stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda s, f: resolver.request_reload())
    detach = None
    try:
        resolver.check_state(force=True)
        resolver.restore_pins()
        resolver.refresh_host_addresses(resolver.clock())
        if attach is not None:
            detach = attach(resolver)
        gc.freeze()         # what is loaded at start lives as long as the process
        resolver.start_threads()
        log.info("listening on %s:%d (UDP, TCP); upstream %s:%d; %d VMs; learned addresses stay "
                 "max(TTL, %d s) + %d s; per VM: %d queries/s, %d upstream queries at once, %d TCP connections; "
                 "nice %d",
                 address[0], address[1], upstream[0], upstream[1], len(resolver.vms), cfg.ttl_floor, cfg.grace,
                 budget.queries_per_second, budget.upstream_queries, budget.tcp_connections, nice)
        resolver.serve()
    except servers.Stop:
        log.info("stopping")
    finally:
        try:
            if detach is not None:
                detach()
        finally:
            resolver.close()
            if telemetry is not None:
                telemetry.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0
