"""The daemon's side of the warm path, in the faces layer: the executor the
command server (daemon/commands.py) runs each command with, and the server
started with the core imported.

``serving()`` is what the host daemon's entry point (``vmsan daemon``)
wraps around its DNS loop; ``main()`` runs the command server alone (the
tests and the benchmarks use it).

The executor is ``cli.run(argv, stdout, stderr, env)``: it writes only to
the streams it is given, so commands in parallel threads never share one
and nothing reaches the daemon's own stdout or stderr (DNS's log).
"""

import contextlib
import os
import sys
import threading

from . import cli
from ..daemon.commands import CommandServer

# Modules a command would import on its first use: imported when the server
# starts, so that no command pays for them.
PRELOAD = ("lifecycle.manager", "lifecycle.converge", "lifecycle.policy", "lifecycle.ports", "kernel.tc",
           "kernel.ipsets", "faces.show")


def _state_lock():
    from ..lifecycle.state import StateStore
    return StateStore().locked()


def run(argv, stdout, stderr, env=None):
    """Run one vmsan command (ARGV without the program name) with its output
    on STDOUT and STDERR; returns its exit status. ENV: the client's VMSAN_*
    settings, which the command server made sure are this process's own."""
    # show reads the kernel's tables through python-iptables, whose
    # extension registry and parser state are process-wide: in the daemon it
    # waits for the state lock, which every command that writes rules holds.
    serialised = _state_lock() if argv[:1] == ["show"] else contextlib.nullcontext()
    with serialised:
        # the daemon's environment, with the client's VMSAN_* settings
        return cli.run(argv, stdout, stderr, dict(os.environ, **(env or {})))


def preload():
    """Import what commands would import on first use, and build the CLI's
    argument parser (cli.build_parser keeps it for the process's life), so
    that no command pays for them."""
    cli.build_parser()
    import importlib
    base = __package__.rsplit(".", 1)[0]
    for name in PRELOAD:
        importlib.import_module(base + "." + name)
    # the libraries' sockets, imported lazily by the adapters
    from ..kernel.third_party import pyroute2_submodules
    pyroute2_submodules()
    import pyroute2.conntrack  # noqa: F401
    import pyroute2.ipset  # noqa: F401
    import pyroute2.iproute.linux  # noqa: F401


def serving(state_dir=None, group=None, executor=run):
    """The command server, started (use as ``with serving(): ...``). A
    daemon serves one state directory: STATE_DIR, if given, becomes this
    process's VMSAN_HOME, which its commands read."""
    if state_dir:
        os.environ["VMSAN_HOME"] = os.path.abspath(state_dir)
    preload()
    return CommandServer(executor, state_dir=state_dir, group=group).start()


def main(argv=None):
    """``python -m ...faces.warm [--socket-group GROUP]``: the command server
    alone, in the foreground, until SIGTERM or SIGINT."""
    import argparse
    import logging
    import signal
    parser = argparse.ArgumentParser(prog="vmsan-commands", description="the vmsan command server alone")
    parser.add_argument("--socket-group", metavar="GROUP", help="also serve the members of GROUP")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="debug also logs every command served")
    args = parser.parse_args(argv)
    # the libraries' own debug logs (pyroute2 logs every message) stay out
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("vmsan").setLevel(args.log_level.upper())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from ..model.errors import VmsanError
    try:
        server = serving(group=args.socket_group)
    except VmsanError as exc:
        sys.stderr.write("vmsan: %s\n" % exc)
        return 1
    with server:
        sys.stderr.write("vmsan: serving commands on %s\n" % server.path)
        sys.stderr.flush()
        while not stop.wait(3600):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
