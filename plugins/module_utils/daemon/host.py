"""The host daemon (``vmsan daemon``; ``vmsan resolver`` is its old name):
one process per host that runs the DNS resolver and the name guard (and,
started around it by ``faces``, the warm path's command server).

* The resolver (``resolver.daemon``) is the main thread's event loop; it
  records the pins (which names each learned address was learned for) and
  keeps them in a journal per VM, so a restart keeps them.
* The name guard (``guard.service``) runs on threads of its own: it is told
  the guarded VMs after every change of the state directory the resolver
  notices (``Resolver.on_reloaded``), opens a queue socket in each namespace
  that holds one, and reads the same pin table.
* What the guard counts is the daemon's to read: ``Daemon.guard.decisions()``
  ({vm: {(decision, reason): n}}) and its totals in the health answer
  (``guard_*``). ``on_refusal`` is where each refused flow goes (the log,
  by default; the operator view adds events and metrics).

A fault in the guard or in a command cannot stop DNS: the guard's work is
on its own threads and its faults are caught there; the resolver calls it
only to hand over the VMs, inside a ``try``. When the daemon is down, the
kernel drops what the guard's rules queue (no ``--queue-bypass``): guarded
flows fail closed, flows accepted before keep running (their verdict is in
their connection's mark), and a restart guards them again with no change
to the VMs.
"""

import logging

from ..guard.loop import LogRefusals
from ..guard.service import GuardedVm, GuardService
from ..plan import name_guard
from ..resolver import daemon as resolver_daemon
from ..telemetry.service import Telemetry

log = logging.getLogger("vmsan.daemon")


class Daemon(object):
    """The parts of one running daemon, for whoever needs to read them
    (the operator view's metrics): ``resolver`` and ``guard``."""

    def __init__(self, on_refusal=None, metrics_listen=None):
        self.on_refusal, self.metrics_listen = on_refusal, metrics_listen
        self.resolver = None
        self.guard = None

    def attach(self, resolver):
        """resolver.daemon.main's ATTACH: the guard on RESOLVER's pins, in
        step with its VMs, started before DNS is served; returns what stops it."""
        self.resolver = resolver
        self.guard = GuardService(resolver.pins, on_refusal=self.on_refusal)
        resolver.on_reloaded = self.guarded_vms_changed
        resolver.before_learned_answer = lambda policy: self.guard.ensure(policy.netns)
        resolver.stats_hooks.append(self.guard.stats)
        self.guarded_vms_changed(resolver.registry.states())      # queues bound before DNS is served
        self.guard.start()
        log.info("name guard: %d namespaces", len(self.guard.namespaces()))
        return self.guard.close

    def guarded_vms_changed(self, states):
        """The resolver's VMs after a change: those whose policy the guard is
        on (``custom`` with allowed domains, plan/name_guard.guards; in audit
        mode too, where it lets through what it would refuse) are the guarded
        ones. Made so on the resolver's thread before it answers again
        (``GuardService.sync``: opening a new namespace's queue socket takes a
        millisecond or two), so a guest's first flow after its first answer
        finds its queue bound."""
        self.guard.want([GuardedVm(s.policy.vm_id, s.policy.guest_ip, s.policy.netns, s.policy.allowed_domains,
                                   s.policy.audit)
                         for s in states if s.policy.learns and name_guard.guards(s.policy)])
        self.guard.sync()

    def guard_decisions(self):
        """{(vm, decision, reason): n} of the guard (the metrics' guard source)."""
        guard = self.guard
        if guard is None:
            return {}
        return {(vm, decision, reason): n for vm, by in guard.decisions().items()
                for (decision, reason), n in by.items()}


def refusals_to(telemetry, versions):
    """An ``on_refusal`` that logs each refused flow of the name guard (and,
    in audit mode, each it let through: verdict "would refuse") as an event
    of kind ``guard`` (the event log's rate limits apply); VERSIONS():
    {vm id: policy version}. The guard's own log line (LogRefusals) stays."""
    log_line = LogRefusals()

    def on_refusal(refusal):
        log_line(refusal)
        telemetry.refusal(refusal.vm_id, "guard", destination=refusal.dst, port=refusal.dport,
                          protocol=refusal.proto, name=refusal.name, detail=refusal.code,
                          verdict=refusal.verdict, policy_version=versions().get(refusal.vm_id))
    return on_refusal


def main(upstream=None, listen=None, ttl_floor=None, grace=None, budget=None, metrics_listen=None,
         event_log=True):
    """Run the daemon in the foreground until SIGTERM or SIGINT (SIGHUP:
    re-read every state file). The flags as model.inputs validated them;
    METRICS_LISTEN ((ip, port) or None): where the metrics are served;
    EVENT_LOG False: no event log. Returns the exit status."""
    telemetry = None
    daemon = Daemon(metrics_listen=metrics_listen)
    if event_log or metrics_listen is not None:
        telemetry = Telemetry(metrics_listen=metrics_listen, event_log=event_log)

        def policy_versions():
            resolver = daemon.resolver
            return {s.policy.vm_id: s.policy.version for s in resolver.registry.states()} if resolver else {}
        daemon.on_refusal = refusals_to(telemetry, policy_versions)
        telemetry.guard_source(daemon.guard_decisions)
    return resolver_daemon.main(upstream=upstream, listen=listen, ttl_floor=ttl_floor, grace=grace, budget=budget,
                                attach=daemon.attach, name="vmsan-daemon", telemetry=telemetry)
