"""Shared pieces of the benchmarks in bench/: a sandbox to run in, commands
inside its namespaces, statistics and tables.

Benchmarks are run by hand (as root) and print numbers; they never assert on
time. Everything they change lives in a sandbox (tests/sandbox,
docs/testing.md): the product and the baselines run inside the sandbox's "host"
namespace or in namespaces named ``<prefix>-...`` that the sandbox's cleanup
(and ``python -m sandbox.cleanup``, after a killed run) recognises.
"""

import contextlib
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The core refuses to touch the machine's own namespace with this set; the
# vmsan processes the sandbox runs get it too.
os.environ["VMSAN_SANDBOX_ONLY"] = "1"

from sandbox import Sandbox  # noqa: E402  (the harness, installed by scripts/setup.sh)
from sandbox import guard  # noqa: E402

MODULE_UTILS = "ansible_collections.vmsan.network.plugins.module_utils"

# Where each core module the benchmarks drive lives: the layered packages,
# then the flat layout of 1.x (so a bench can drive an older checkout too).
CORE_MODULES = {
    "manager": ("lifecycle.manager", "vm"),
    "netns": ("kernel.netns", "netns"),
    "inputs": ("model.inputs", "inputs"),
    "addressing": ("model.addressing", "addressing"),
}


def core_module(name):
    """Import the core module NAME (a key of CORE_MODULES) from whichever
    layout the installed collection has."""
    import importlib
    new, old = CORE_MODULES[name]
    try:
        return importlib.import_module(MODULE_UTILS + "." + new)
    except ImportError:
        return importlib.import_module(MODULE_UTILS + "." + old)


# --------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------
def percentile(values, q):
    """Nearest-rank percentile (q in 0..100): a value that was measured, so
    the p99 of 100 samples is the 99th smallest, of 1 sample that sample."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def median(values):
    if not values:
        return float("nan")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def summary(values):
    """{n, median, p99, min, max} of a list of numbers."""
    return {"n": len(values), "median": median(values), "p99": percentile(values, 99),
            "min": min(values) if values else float("nan"), "max": max(values) if values else float("nan")}


def ratio(a, b):
    return a / b if b else float("nan")


def children_cpu():
    """CPU seconds (user + system) of the child processes waited for so far:
    what a subprocess cost, whatever else the machine was doing."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------
def ms(seconds):
    """Seconds -> milliseconds text with sensible precision."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    value = seconds * 1000.0
    return "%.2f" % value if value < 10 else "%.1f" % value if value < 1000 else "%.0f" % value


def gbit(bits_per_second):
    if bits_per_second is None or math.isnan(bits_per_second):
        return "-"
    return "%.2f" % (bits_per_second / 1e9)


def times(value):
    return "-" if value is None or math.isnan(value) else "%.2fx" % value


_NUMERIC = re.compile(r"^(-|[-+]?[0-9][0-9.,]*(x| ms| s)?|[0-9.]+-[0-9.]+)$")


def print_table(title, headers, rows, out=None):
    """A plain aligned table (Markdown-compatible, so it can be pasted into
    docs/performance.md as it is)."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    # numbers right-aligned, words left-aligned
    right = [bool(rows) and all(_NUMERIC.match(r[i]) for r in cells[1:]) for i in range(len(headers))]

    def line(row):
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)) + " |"

    if title:
        out.write("\n%s\n\n" % title)
    out.write(line(cells[0]) + "\n")
    out.write("|" + "|".join("-" * (w + 1) + ":" if r else ":" + "-" * (w + 1) for w, r in zip(widths, right)) + "|\n")
    for row in cells[1:]:
        out.write(line(row) + "\n")
    out.flush()


def note(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def progress(text):
    """Progress goes to stderr, so stdout holds only results."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------
def _first_line_with(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def load_average():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def code_version():
    """The commit and a digest of the core's sources: the product changes
    under a long run on a shared checkout, so each result names its code."""
    import hashlib
    done = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    commit = done.stdout.strip() if done.returncode == 0 else "?"
    core = os.path.join(REPO, "plugins", "module_utils")
    digest = hashlib.sha256()
    # every layer's package (the core is one folder per layer)
    for folder, dirs, files in sorted(os.walk(core)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    digest.update(os.path.relpath(path, core).encode() + b"\0" + f.read())
    return "commit %s, core sources %s" % (commit, digest.hexdigest()[:12])


def machine_info():
    """What the numbers were measured on (printed at the top of every run)."""
    mem_kib = _first_line_with("/proc/meminfo", "MemTotal").split()[0]
    versions = []
    for module in ("pyroute2", "iptc"):
        try:
            from importlib import metadata
            dist = {"iptc": "python-iptables"}.get(module, module)
            versions.append("%s %s" % (dist, metadata.version(dist)))
        except Exception:
            pass
    return {
        "cpu": _first_line_with("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem_kib) / 1024.0 / 1024.0, 1) if mem_kib.isdigit() else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": ", ".join(versions),
        "load_average": load_average(),
        "code": code_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def print_machine(extra=None):
    info = machine_info()
    info.update(extra or {})
    note("# machine: %(cpu)s, %(cpus)s CPUs, %(memory_gib)s GiB, kernel %(kernel)s, Python %(python)s" % info)
    note("# libraries: %(libraries)s; load average at start: %(load_average)s; %(date)s" % info)
    note("# code: %(code)s" % info)
    note("# shared machine: other engineers' tests may run at the same time; see the load average")
    return info


# --------------------------------------------------------------------------
# the sandbox
# --------------------------------------------------------------------------
_stop = {"signal": None}


def _raise_interrupt(signum, frame):
    _stop["signal"] = signum
    raise KeyboardInterrupt("signal %d" % signum)


def check_stop():
    """Raise KeyboardInterrupt if Ctrl-C or SIGTERM came. The handler raises
    at once, but an exception raised while Python runs a finalizer or a
    weakref callback is printed and dropped; loops call this between
    operations so such a signal still stops the run."""
    if _stop["signal"] is not None:
        raise KeyboardInterrupt("signal %d" % _stop["signal"])


def require_root():
    if os.geteuid() != 0:
        sys.stderr.write("the benchmarks build network namespaces: run them as root\n")
        sys.exit(2)


@contextlib.contextmanager
def bench_sandbox():
    """A started Sandbox; closed on exit, on Ctrl-C and on SIGTERM (turned
    into KeyboardInterrupt so every ``with``/``finally`` in between runs)."""
    require_root()
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    sandbox = Sandbox()
    try:
        sandbox.start()
        yield sandbox
    finally:
        # A second Ctrl-C or SIGTERM must not abort the cleanup half-way.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        try:
            sandbox.close()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def ns_path(name):
    return guard.netns_path(name)


def nsenter(name, argv):
    """argv run in namespace NAME alone (never ``ip netns exec``: docs/contract.md, "Test topology")."""
    return ["nsenter", "--net=%s" % ns_path(name), "--"] + [str(a) for a in argv]


class CommandFailed(RuntimeError):
    pass


def run_in(name, argv, input=None, env=None, check=True):
    """Run ARGV inside namespace NAME; returns the CompletedProcess (text)."""
    done = subprocess.run(nsenter(name, argv), input=input, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise CommandFailed("%s (in %s) exited %d: %s" % (" ".join(map(str, argv)), name, done.returncode,
                                                           (done.stderr or done.stdout).strip()))
    return done


class NamespaceTracker(object):
    """Namespaces a baseline made itself: deleted at the end (also after an
    error or Ctrl-C) if the benchmark did not delete them already. Names
    start with the sandbox prefix, so cleanup.py finds them after a kill."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.names = set()
        sandbox.host.track(self.close)   # runs before the host namespace goes

    def name(self, suffix):
        return "%s-%s" % (self.sandbox.prefix, suffix)

    def add(self, name):
        self.names.add(name)

    def discard(self, name):
        self.names.discard(name)

    def close(self):
        # Also the product's namespaces of this sandbox's VM ids: a create
        # that failed part-way prints no JSON, so the sandbox never hears of
        # its namespace, and a rollback that failed too may leave it.
        product = "vmsan-%s-" % self.sandbox.prefix
        leftovers = [n for n in os.listdir(guard.NETNS_RUN_DIR) if n.startswith(product)] \
            if os.path.isdir(guard.NETNS_RUN_DIR) else []
        for name in sorted(self.names | set(leftovers)):
            if os.path.exists(ns_path(name)):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.names.clear()


# --------------------------------------------------------------------------
# the kernel's asynchronous clean-up
# --------------------------------------------------------------------------
def live_net_namespaces():
    """Network namespaces the kernel still holds (freed or not by name):
    active objects of the net_namespace slab; None if unreadable."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def wait_for_kernel(baseline, timeout=60.0, slack=20):
    """Deleted namespaces are freed by a kernel worker after ``ip netns del``
    returns. Wait until the count is back near BASELINE (other engineers'
    sandboxes come and go, hence the slack) so the next phase does not pay
    for this one's clean-up. Returns the seconds waited."""
    began = time.monotonic()
    if baseline is None:
        return 0.0
    while time.monotonic() - began < timeout:
        now = live_net_namespaces()
        if now is None or now <= baseline + slack:
            break
        time.sleep(0.1)
    return time.monotonic() - began


def print_end(info, began):
    """Closing lines: load average, duration, and a warning if the core
    changed during the run (the in-process modes kept the code they imported
    at the start, new processes got the new one)."""
    note("\n# load average at the end: %s; total %.0f s" % (load_average(), time.monotonic() - began))
    now = code_version()
    if now.split("core sources ")[-1] != str(info.get("code")).split("core sources ")[-1]:
        note("# WARNING: the core changed during the run (%s at the start, %s at the end): in-process and "
             "command numbers may come from different versions" % (info.get("code"), now))


def run_main(main):
    """Exit status of MAIN; Ctrl-C or SIGTERM (after the sandbox cleaned up)
    gives 130 and one line instead of a traceback."""
    try:
        return main()
    except KeyboardInterrupt:
        progress("interrupted; everything the benchmark made has been removed")
        return 130


def write_json(path, data):
    if not path:
        return
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    progress("raw results written to %s" % path)


def parse_sizes(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit("--sizes: comma-separated whole numbers, e.g. 1,100,1000")
    if not sizes or any(s < 1 for s in sizes):
        raise SystemExit("--sizes: comma-separated whole numbers >= 1, e.g. 1,100,1000")
    return sizes
