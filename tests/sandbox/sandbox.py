"""The sandbox: a throwaway host namespace, an internet namespace behind it,
guests attached to the product's TAPs, and the ``vmsan`` command run inside.

    with Sandbox() as sb:
        vm = sb.vmsan("create", "--id", sb.unique_id("web")).out
        guest = sb.add_guest(vm)
        assert guest.tcp("203.0.113.10", 9000).startswith("hello")

Everything made here is undone by ``close()`` (also on errors, Ctrl-C and
interpreter exit); a run killed outright is cleaned by ``cleanup.py``.
"""

import atexit
import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, NamedTuple

from . import registry
from .endpoint import Endpoint
from .guest import Guest
from .host import Host
from .internet import Internet
from .netns import Namespace, list_netns

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_live = set()
_live_lock = threading.Lock()


def default_vmsan_cmd():
    """``$VMSAN_CMD`` (shell words), else ``vmsan`` next to the running Python,
    else the repository's venv."""
    if os.environ.get("VMSAN_CMD"):
        return shlex.split(os.environ["VMSAN_CMD"])
    beside = os.path.join(os.path.dirname(sys.executable), "vmsan")
    if os.path.exists(beside):
        return [beside]
    return [os.path.join(REPO_ROOT, ".venv", "bin", "vmsan")]


class VmsanResult(NamedTuple):
    rc: int
    out: Any  # parsed JSON, or stdout text when it is not JSON
    err: str


class VmsanError(RuntimeError):
    def __init__(self, argv, result):
        self.result = result
        super().__init__(f"{' '.join(argv)} exited {result.rc}: {result.err.strip() or result.out}")


class Sandbox:
    """One sandbox. Attributes once started: ``prefix``, ``host`` (:class:`Host`),
    ``internet`` (:class:`Internet`), ``home`` (the VMSAN_HOME directory),
    ``guests``."""

    def __init__(self, vmsan_cmd=None, prefix=None):
        self.prefix = prefix or registry.new_prefix()
        self.vmsan_cmd = list(vmsan_cmd) if vmsan_cmd else default_vmsan_cmd()
        self.host = None
        self.internet = None
        self.home = None
        self.guests = []
        self._product_netns = set()
        self._stack = contextlib.ExitStack()
        self._started = False

    # -- life cycle ---------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        if os.geteuid() != 0:
            raise PermissionError("the network sandbox needs root")
        if self._started:
            return self
        self._started = True
        began = time.monotonic()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - began
        return self

    def _build(self):
        stack = self._stack
        registry.claim(self.prefix)
        stack.callback(registry.release, self.prefix)
        with _live_lock:
            _live.add(self)
        stack.callback(self._forget)

        self.home = tempfile.mkdtemp(prefix=f"{self.prefix}-home-")
        stack.callback(shutil.rmtree, self.home, ignore_errors=True)
        # Product namespaces go after everything that could hold them.
        stack.callback(self._delete_product_netns)

        self.host = self._new_namespace(Host, "host")
        self.internet = self._new_namespace(Internet, "inet")
        self.host.connect_uplink(self.internet)
        self.internet.start_servers()

    def _new_namespace(self, cls, suffix):
        ns = cls.create(f"{self.prefix}-{suffix}", self._stack)
        self._stack.callback(ns.delete)
        return ns

    def close(self):
        """Undo everything, newest first; safe to call more than once."""
        began = time.monotonic()
        self._stack.close()
        self.teardown_seconds = time.monotonic() - began

    def _forget(self):
        with _live_lock:
            _live.discard(self)

    def namespaces(self):
        """Names of the namespaces that exist now and belong to this sandbox."""
        product = self._product_netns | registry.product_netns_in_home(self.home)
        return [
            n for n in list_netns() if registry.prefix_of_netns(n) == self.prefix or n in product
        ]

    # -- extra namespaces and guests ---------------------------------------------

    def add_namespace(self, suffix):
        """Another namespace ``<prefix>-<suffix>`` (e.g. a fake VM namespace in
        self-tests), deleted on cleanup."""
        return self._new_namespace(Endpoint, suffix)

    def add_guest(self, vm):
        """Attach a guest to the VM described by ``vm`` (``vmsan create --json``)."""
        guest = Guest.attach(f"{self.prefix}-g{vm['slot']}", vm, self.host.path, self._stack)
        self.guests.append(guest)
        return guest

    def remove_guest(self, guest):
        guest.remove()
        self.guests.remove(guest)

    def unique_id(self, name="vm"):
        """A VM id that no other sandbox uses (the product's namespace for it
        is then ``vmsan-<prefix>-<name>``, which cleanup.py recognises)."""
        return f"{self.prefix}-{name}"

    # -- the product --------------------------------------------------------

    def vmsan_env(self, env=None):
        merged = dict(os.environ)
        merged.update(VMSAN_HOME=self.home, VMSAN_SANDBOX_ONLY="1")
        merged.update(env or {})
        return merged

    def vmsan(self, *args, json_out=True, check=True, env=None, timeout=120):
        """Run ``vmsan ARGS [--json]`` in the host namespace.

        Returns ``VmsanResult(rc, out, err)``, ``out`` parsed from JSON when it
        is JSON. With ``check`` a non-zero exit raises :class:`VmsanError`.
        """
        argv = [*self.vmsan_cmd, *map(str, args)]
        if json_out and "--json" not in argv:
            argv.append("--json")
        done = self.host.run(argv, env=self.vmsan_env(env), timeout=timeout)
        out = done.stdout
        if json_out:
            try:
                out = json.loads(done.stdout)
            except ValueError:
                pass
            self._product_netns.update(registry.product_netns_in(out))
        result = VmsanResult(done.returncode, out, done.stderr)
        if check and result.rc != 0:
            raise VmsanError(argv, result)
        return result

    def vmsan_spawn(self, *args, env=None, log_name=None, wrap=()):
        """Start a long-running ``vmsan ARGS`` (e.g. ``resolver``) in the host
        namespace, behind the argv WRAP if given (e.g. ``setpriv ... --``);
        stopped on cleanup. Its output goes to ``proc.log_path``."""
        log_path = os.path.join(self.home, log_name or f"{args[0] if args else 'vmsan'}.log")
        log = open(log_path, "ab")
        self._stack.callback(log.close)
        proc = self.host.spawn(
            [*wrap, *self.vmsan_cmd, *map(str, args)], env=self.vmsan_env(env), stdout=log, stderr=log
        )
        proc.log_path = log_path
        return proc

    def _delete_product_netns(self):
        """Remove namespaces that the product made for this sandbox's VMs and
        that are still there (a test that did not ``vmsan remove``)."""
        names = self._product_netns | registry.product_netns_in_home(self.home)
        for name in sorted(names):
            Namespace(name).delete()


@atexit.register
def _close_leftovers():
    """Interpreter exit (e.g. after Ctrl-C) still undoes live sandboxes."""
    with _live_lock:
        live = list(_live)
    for sandbox in live:
        with contextlib.suppress(Exception):
            sandbox.close()
