"""The daemon's telemetry, as one component with ``start()`` and ``stop()``
(docs/operator.md): the event log's writer, the reader of dropped packets,
and, with ``metrics_listen``, the metrics server. The daemon's entry point
makes one, starts it before it serves and stops it last; the resolver and
the name guard report their refusals through ``refusal`` and hand the
metrics their counters through ``dns_source`` and ``guard_source``.
"""

import time

from ..lifecycle.state import StateStore
from ..model import events as E
from . import eventlog
from . import metrics as M
from .dropped import DropReader


class Telemetry(object):
    def __init__(self, state_dir=None, metrics_listen=None, event_log=True, clock=time.time, reads_per_vm=None,
                 **log_options):
        """EVENT_LOG False: no event log (and no drop reader), metrics only."""
        self.store = StateStore(state_dir)
        self.clock = clock
        self.events = self.drops = None
        if event_log:
            self.events = eventlog.EventLog(eventlog.directory(self.store.root), clock=clock, **log_options)
            self.drops = DropReader(self.store, self.events.record, clock=clock,
                                    **({"reads_per_vm": reads_per_vm} if reads_per_vm else {}))
        self.collector = M.VmsanCollector(self.store, events=self.events)
        self.metrics_listen = metrics_listen
        self.server = None
        self.registry = None
        if metrics_listen is not None:
            self.registry = M.registry_with(self.collector)
            self.server = M.MetricsServer(self.registry, metrics_listen)
        self._started = []

    # -- the hooks ------------------------------------------------------------------
    def refusal(self, vm_id, kind, destination=None, port=None, protocol=None, name=None, detail=None,
                verdict=E.REFUSED, policy_version=None):
        """Log one refusal of VM_ID (any thread; never blocks): the
        resolver's (kind ``name``, ``dns_budget``) and the name guard's
        (kind ``guard``). False when a rate limit held it back, or there
        is no event log."""
        if self.events is None:
            return False
        return self.events.record(E.Event(self.clock(), vm_id, kind, verdict, destination, port, protocol, name,
                                          policy_version, detail))

    def dns_source(self, fn):
        """FN() gives the resolver's counters (see metrics.VmsanCollector)."""
        self.collector.dns = fn

    def guard_source(self, fn):
        """FN() gives the name guard's decisions {(vm, decision, reason): n}."""
        self.collector.guard = fn

    # -- the component --------------------------------------------------------------
    def start(self):
        """The event log, then the drop reader, then the metrics server
        (which may fail to bind: then what started is stopped again)."""
        try:
            for part in (self.events, self.drops, self.server):
                if part is not None:
                    part.start()
                    self._started.append(part)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        while self._started:
            self._started.pop().stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
