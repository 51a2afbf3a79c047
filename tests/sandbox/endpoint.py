"""A sandbox namespace that tests act from: probes, servers, background
processes and sniffers, all stopped when the sandbox closes."""

import contextlib

from . import procs, services
from .netns import Namespace
from .packets import any_frame
from .probes import Probes
from .sniffer import Sniffer


class Endpoint(Probes, Namespace):
    """A namespace owned by a sandbox.

    ``cleanups`` is the sandbox's ExitStack: whatever is started here is
    registered on it, so it stops before the namespaces go away.
    """

    label = "endpoint"  # first word of the lines that serve_tcp/serve_udp send

    def __init__(self, name, cleanups: contextlib.ExitStack):
        super().__init__(name)
        self._cleanups = cleanups

    def track(self, closer):
        """Call ``closer()`` when the sandbox closes."""
        self._cleanups.callback(closer)

    def spawn(self, argv, env=None, **kw):
        """Background process in this namespace; stopped on sandbox cleanup."""
        proc = super().spawn(argv, env=env, **kw)
        self.track(lambda: procs.stop(proc))
        return proc

    def serve_tcp(self, addr, port, label=None):
        """TCP server here that sends ``<label> <local-ip> <peer-ip>\\n`` and
        closes; ``.received()`` lists who connected. Stops on cleanup."""
        service = services.serve_tcp_greeting(self.name, addr, port, label or self.label)
        self.track(service.close)
        return service

    def serve_udp(self, addr, port, label=None):
        """UDP server here answering each datagram with one line and logging it."""
        service = services.serve_udp_echo(self.name, addr, port, label or self.label)
        self.track(service.close)
        return service

    def sniff(self, ifname, predicate=None, keep=100):
        """A started :class:`Sniffer` on ``ifname`` here; stops on cleanup."""
        sniffer = Sniffer(self.name, ifname, predicate or any_frame, keep=keep)
        sniffer.start()
        self.track(sniffer.stop)
        return sniffer
