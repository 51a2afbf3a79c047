"""The metrics, in the Prometheus exposition format through prometheus_client
(docs/operator.md, "Metrics"): their names, help and labels (``FAMILIES``),
the collector that builds them from the counters at scrape time, and the
HTTP server the daemon runs at ``--metrics-listen``.

Nothing is counted through prometheus_client on a hot path: the resolver
keeps plain integers per VM (and ``Histogram`` below, a few integers), the
kernel keeps its rule and device counters, the event log counts what it
wrote; the collector reads them all when Prometheus scrapes. Labels are
bounded: ``vm`` (one per VM), and small fixed sets (``rcode``, ``reason``,
``direction``, ``kind``, ``verdict``, ``decision``); never a destination
or a name.
"""

import bisect
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

try:
    from prometheus_client import generate_latest, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import CollectorRegistry
    HAS_PROMETHEUS = True
    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - the daemon and `vmsan metrics` say so when used
    HAS_PROMETHEUS = False
    IMPORT_ERROR = exc

from ..model import events as E
from ..model.errors import VmsanError
from ..model.records import BrokenRecord
from . import counters as C

SCRAPE_MIN_INTERVAL = 1.0       # kernel counters are read at most this often, whoever scrapes
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# name: (type, help, labels)
FAMILIES = {
    "vmsan_vms": ("gauge", "VMs in the state directory.", ()),
    "vmsan_bytes_total": ("counter", "Bytes through the VM's TAP: direction=sent by the guest, received by it.",
                          ("vm", "direction")),
    "vmsan_packets_total": ("counter", "Packets through the VM's TAP: direction=sent by the guest, received by it.",
                            ("vm", "direction")),
    "vmsan_dropped_packets_total": ("counter", "Packets of the guest the host dropped, by reason.", ("vm", "reason")),
    "vmsan_audit_passed_packets_total": (
        "counter", "Audit mode: packets the policy would have dropped, let through, by reason.", ("vm", "reason")),
    "vmsan_learned_addresses": ("gauge", "Addresses in the VM's learned set (from allowed DNS answers).", ("vm",)),
    "vmsan_dns_queries_total": ("counter", "DNS queries of the guest the resolver answered, by response code.",
                                ("vm", "rcode")),
    "vmsan_dns_dropped_queries_total": ("counter", "DNS queries of the guest left unanswered (far over budget).",
                                        ("vm",)),
    "vmsan_dns_upstream_latency_seconds": ("histogram", "Time from a query sent upstream to its answer.", ()),
    "vmsan_guard_decisions_total": ("counter", "Connections the name guard decided, by decision and reason.",
                                    ("vm", "decision", "reason")),
    "vmsan_events_total": ("counter", "Events written to the event log, by kind and verdict.",
                           ("vm", "kind", "verdict")),
    "vmsan_events_held_back_total": ("counter", "Events the event log's rate limits held back (all VMs).", ()),
}


class Histogram(object):
    """A Prometheus histogram as plain integers: ``observe`` costs a bisect
    and two additions (the resolver calls it once per upstream answer)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds=LATENCY_BUCKETS):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum, self.count = 0.0, 0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self):
        """[(le text, cumulative count)], +Inf last."""
        out, running = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


def require():
    if not HAS_PROMETHEUS:
        raise VmsanError("metrics need the Python library prometheus_client (%s); install the pinned requirements "
                         "(scripts/setup.sh, or pip install -r requirements.txt)" % IMPORT_ERROR)


def _family(name, labels=None):
    kind, text, label_names = FAMILIES[name]
    short = name[:-len("_total")] if kind == "counter" and name.endswith("_total") else name
    cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}[kind]
    return cls(short, text, labels=list(label_names if labels is None else labels))


class VmsanCollector(object):
    """Builds every family at scrape time. Sources, each optional:

    * the state directory (``store``): the VMs, and their kernel counters
      (read at most once per SCRAPE_MIN_INTERVAL, totals kept growing by a
      ``counters.Accumulator`` across chain rewrites);
    * ``events``: the EventLog (what it wrote and held back);
    * ``dns()``: the resolver's counters, a dict with ``rcodes`` {vm:
      {rcode: n}}, ``dropped`` {vm: n}, ``latency`` (a Histogram),
      ``learned`` {vm: n};
    * ``learned()``: {vm: n} when no resolver runs here (read from the kernel);
    * ``guard()``: {(vm, decision, reason): n}, the name guard's decisions.
    """

    def __init__(self, store, events=None, dns=None, guard=None, learned=None, clock=time.monotonic):
        self.store, self.events, self.dns, self.guard, self.learned = store, events, dns, guard, learned
        self.clock = clock
        self.totals = C.Accumulator()
        self._lock = threading.Lock()
        self._cached_at = None
        self._kernel = ({}, [])

    def _kernel_counters(self):
        with self._lock:
            now = self.clock()
            if self._cached_at is None or now - self._cached_at >= SCRAPE_MIN_INTERVAL:
                records = [r for r in self.store.scan() if not isinstance(r, BrokenRecord)]
                readings = C.read(records)
                self.totals.forget({r.id for r in records})
                totals = {}
                for vm, reading in readings.items():
                    values = {("sent", "bytes"): reading.sent_bytes, ("sent", "packets"): reading.sent_packets,
                              ("received", "bytes"): reading.received_bytes,
                              ("received", "packets"): reading.received_packets}
                    values.update({("dropped", r): n for r, n in reading.dropped.items()})
                    values.update({("would", r): n for r, n in reading.would_refuse.items()})
                    totals[vm] = {k: self.totals.add((vm,) + k, v) for k, v in values.items()}
                self._kernel = (totals, records)
                self._cached_at = now
            return self._kernel

    def describe(self):
        return []       # families are built at collect time only (no scrape at registration)

    def collect(self):
        totals, records = self._kernel_counters()
        vms = _family("vmsan_vms")
        vms.add_metric([], len(records))
        yield vms
        byte_f, packet_f = _family("vmsan_bytes_total"), _family("vmsan_packets_total")
        dropped_f, audit_f = _family("vmsan_dropped_packets_total"), _family("vmsan_audit_passed_packets_total")
        for vm, values in sorted(totals.items()):
            for direction in ("sent", "received"):
                byte_f.add_metric([vm, direction], values[(direction, "bytes")])
                packet_f.add_metric([vm, direction], values[(direction, "packets")])
            for reason in E.DROP_REASONS:
                dropped_f.add_metric([vm, reason], values.get(("dropped", reason), 0))
            for (what, reason), value in sorted(values.items()):
                if what == "would":
                    audit_f.add_metric([vm, reason], value)
        yield byte_f
        yield packet_f
        yield dropped_f
        yield audit_f
        yield from self._dns_families()
        guard_f = _family("vmsan_guard_decisions_total")
        for (vm, decision, reason), value in sorted((self.guard() if self.guard else {}).items()):
            guard_f.add_metric([vm, decision, reason], value)
        yield guard_f
        events_f, held_f = _family("vmsan_events_total"), _family("vmsan_events_held_back_total")
        if self.events is not None:
            for (vm, kind, verdict), value in sorted(self.events.by_kind.items()):
                if kind != E.SUPPRESSED:
                    events_f.add_metric([vm, kind, verdict], value)
            held_f.add_metric([], self.events.held)
        yield events_f
        yield held_f

    def _dns_families(self):
        stats = self.dns() if self.dns else {}
        queries_f, dropped_f = _family("vmsan_dns_queries_total"), _family("vmsan_dns_dropped_queries_total")
        for vm, rcodes in sorted(stats.get("rcodes", {}).items()):
            for rcode, value in sorted(rcodes.items()):
                queries_f.add_metric([vm, rcode], value)
        for vm, value in sorted(stats.get("dropped", {}).items()):
            dropped_f.add_metric([vm], value)
        latency_f = _family("vmsan_dns_upstream_latency_seconds")
        histogram = stats.get("latency")
        if histogram is not None:
            latency_f.add_metric([], histogram.buckets(), histogram.sum)
        learned_f = _family("vmsan_learned_addresses")
        learned = stats.get("learned") if "learned" in stats else (self.learned() if self.learned else {})
        for vm, value in sorted(learned.items()):
            learned_f.add_metric([vm], value)
        return [queries_f, dropped_f, latency_f, learned_f]


def registry_with(collector):
    require()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry):
    """The text Prometheus scrapes, as bytes."""
    return generate_latest(registry)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass            # a line per scrape is not the daemon's log's business


class MetricsServer(object):
    """prometheus_client's WSGI app for REGISTRY served at ADDRESS ((ip,
    port)) on a thread of its own: ``start()``, ``stop()``. (Its own
    ``start_http_server`` cannot be stopped in the versions Debian ships.)"""

    def __init__(self, registry, address):
        self.registry, self.address = registry, tuple(address)
        self.httpd = self.thread = None

    def start(self):
        try:
            self.httpd = make_server(self.address[0], self.address[1], make_wsgi_app(self.registry),
                                     server_class=_Server, handler_class=_Quiet)
        except OSError as exc:
            raise VmsanError("--metrics-listen %s:%d: cannot listen there: %s"
                             % (self.address[0], self.address[1], exc.strerror))
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="vmsan-metrics", daemon=True)
        self.thread.start()
        return self

    @property
    def port(self):
        return self.httpd.server_address[1] if self.httpd else None

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if self.thread is not None:
            self.thread.join(5.0)
            self.thread = None
