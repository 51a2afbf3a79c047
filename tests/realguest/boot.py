"""Boot the real Linux guest under QEMU (microvm, TCG) on a TAP inside a network namespace.

    run = boot_guest("vmsan-vm1", "fhvm0", "02:fc:00:00:00:02",
                     "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1",
                     ["tcp:172.16.0.1:9000", "dns:a.example.test"])
    assert run.result(0).ok

``boot_guest`` blocks until the guest powered off and returns a ``GuestRun``. The
background variant ``start_guest`` returns a ``GuestProcess`` at once; use it for
``listen:`` probes: ``wait_ready()`` returns when the guest printed ``VMSAN-READY``,
then the test connects from outside, then ``wait()`` returns the ``GuestRun``.

Both raise ``GuestError`` (carrying the serial log) when the guest did not print a
result line for every probe (timeout, kernel panic, QEMU error), unless ``check=False``:
so a probe that reports ``fail`` really ran and failed.

QEMU runs as ``nsenter --net=/run/netns/<netns> qemu-system-x86_64 ...``, in its own
process group; it is killed on timeout, on error and when the ``GuestProcess`` context
ends. Nothing here touches the caller's network namespace.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    from . import build as _build
except ImportError:  # run as a script: python tests/realguest/boot.py
    import build as _build  # type: ignore[no-redef]

# microvm under TCG hangs in TSC calibration unless the kernel is told the frequency
# (tsc_early_khz). TCG's guest TSC counts at the host's TSC rate, so telling the guest
# the host's frequency keeps guest seconds (probe timeouts, listen durations) real.
FALLBACK_TSC_KHZ = 2000000


def host_tsc_khz() -> int:
    """The host's TSC frequency in kHz (VMSAN_REALGUEST_TSC_KHZ overrides)."""
    env = os.environ.get("VMSAN_REALGUEST_TSC_KHZ")
    if env and env.isdigit():
        return int(env)
    for path in ("/sys/devices/system/cpu/cpu0/tsc_freq_khz",):
        try:
            return int(Path(path).read_text().strip())
        except (OSError, ValueError):
            pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("cpu MHz"):
                    khz = int(float(line.split(":", 1)[1]) * 1000)
                    if 500_000 <= khz <= 10_000_000:
                        return khz
                    break
    except (OSError, ValueError):
        pass
    return FALLBACK_TSC_KHZ


# What the guest kernel always gets, before the caller's boot_args. ("quiet": kernel
# messages would interleave with the probe lines; the guest lowers printk further.)
BASE_APPEND = "console=ttyS0 quiet panic=-1 pci=off random.trust_cpu=on tsc_early_khz={tsc}"
# Measured (docs/real-guest.md): rtc=off costs ~1.5 s (the kernel waits for the CMOS
# clock); pit/pic/option ROMs off save ~0.1 s.
MACHINE = "microvm,pit=off,pic=off,x-option-roms=off"

_PROBE_RE = re.compile(r"VMSAN-PROBE (\d+) (\S+) (ok|fail)(?: (.*))?$")
_READY_RE = re.compile(r"VMSAN-READY (\d+) (\S+)")
_NET_RE = re.compile(r"VMSAN-NET (ok|fail)(?: (.*))?$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_SPEC_RE = re.compile(r'^[a-z0-9]+:[^\s,"]*$')
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


# (test id, boot-to-result, wall seconds) of every guest this process ran: the realguest
# conftest prints them at the end of a pytest run.
BOOTS: list = []


class GuestError(RuntimeError):
    """The guest did not deliver all results; ``.log`` has the serial console."""

    def __init__(self, msg: str, log: str = "", run: "GuestRun | None" = None):
        tail = "\n".join(log.splitlines()[-40:])
        super().__init__(f"{msg}\n--- serial log (tail) ---\n{tail}" if log else msg)
        self.log = log
        self.run = run


@dataclass
class ProbeResult:
    index: int
    spec: str
    ok: bool
    detail: str
    at: float  # seconds since QEMU started

    def __str__(self) -> str:
        return f"#{self.index} {self.spec} {'ok' if self.ok else 'fail'} {self.detail} (at {self.at:.2f}s)"


@dataclass
class GuestRun:
    probes: list  # the probe specs asked for
    results: list  # ProbeResult, in index order, only those the guest printed
    log: str  # the whole serial console (and QEMU's stderr)
    boot_to_result: float | None  # seconds from QEMU start to the last probe line
    exit_code: int | None  # QEMU's exit code (None if it had to be killed)
    timed_out: bool
    net_ok: bool | None  # the guest's VMSAN-NET line: did ip= configure cleanly
    net_detail: str
    ready_at: list = field(default_factory=list)  # times of VMSAN-READY lines
    done: bool = False  # the guest printed VMSAN-DONE
    command: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.probes)

    @property
    def all_ok(self) -> bool:
        """The guest's network came up from ip= without error and every probe passed."""
        return bool(self.net_ok) and self.complete and all(r.ok for r in self.results)

    def result(self, key) -> ProbeResult:
        """Result by index or by spec (the first probe with that spec)."""
        for r in self.results:
            if r.index == key or r.spec == key:
                return r
        raise GuestError(f"no result for probe {key!r}", self.log, self)

    def ok(self, key) -> bool:
        return self.result(key).ok

    def summary(self) -> str:
        t = f"{self.boot_to_result:.2f}s" if self.boot_to_result is not None else "n/a"
        lines = [f"boot-to-result {t}, net {'ok' if self.net_ok else 'FAIL'} {self.net_detail}"]
        lines += [f"  {r}" for r in self.results]
        return "\n".join(lines)


def _same_netns(path: str) -> bool:
    """True if *path* is this process's own network namespace, or PID 1's (where readable)."""
    target = os.stat(path)
    for ref in ("/proc/self/ns/net", "/proc/1/ns/net"):
        try:
            st = os.stat(ref)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def design_boot_args(slot: int, device: str = "eth0") -> str:
    """The ``ip=`` argument docs/contract.md ("Addressing") prescribes for *slot* (0..254)."""
    if not 0 <= slot <= 254:
        raise ValueError("design_boot_args covers slots 0..254")
    return f"ip=172.16.{slot}.2::172.16.{slot}.1:255.255.255.252::{device}:off:172.16.{slot}.1"


def _netns_path(netns: str) -> str:
    path = netns if "/" in netns else f"/run/netns/{netns}"
    if not os.path.exists(path):
        raise GuestError(f"network namespace {netns!r} not found ({path})")
    # Refuse the root namespace: the guest must live in a namespace a test made.
    if _same_netns(path):
        raise GuestError(f"{netns!r} is this process's own network namespace (root?); refusing to boot a guest there")
    return path


def _check_tap(nspath: str, tap: str) -> None:
    proc = subprocess.run(
        ["nsenter", f"--net={nspath}", "ip", "-o", "link", "show", "dev", tap],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise GuestError(f"TAP {tap!r} does not exist in {nspath}: {proc.stdout.strip()}")


def _normalise_probes(probes) -> list:
    if probes is None:
        return []
    if isinstance(probes, str):
        probes = [p for p in probes.split(",") if p]
    out = []
    for p in probes:
        if not isinstance(p, str) or not _SPEC_RE.match(p):
            raise ValueError(f"bad probe spec {p!r}: KIND:ARGS without whitespace, commas or double quotes")
        out.append(p)
    return out


def qemu_command(
    artifacts,
    nspath: str,
    tap: str,
    mac: str,
    boot_args: str,
    probes: list,
    probe_timeout: int = 3,
    tsc_khz: int | None = None,
    vnet_hdr: bool = True,
    qemu: str = "qemu-system-x86_64",
) -> list:
    if not _MAC_RE.match(mac):
        raise ValueError(f"bad MAC {mac!r}")
    if not _IFNAME_RE.match(tap):
        raise ValueError(f"bad TAP name {tap!r}")
    if any(c in boot_args for c in "\n\0"):
        raise ValueError("boot_args must be one line")
    append = BASE_APPEND.format(tsc=tsc_khz or host_tsc_khz())
    if boot_args.strip():
        append += " " + boot_args.strip()
    append += f" vmsan.timeout={int(probe_timeout)}"
    if probes:
        append += " vmsan.probes=" + ",".join(probes)
    if len(append) >= 2048:
        raise ValueError(f"kernel command line too long ({len(append)} >= 2048)")
    return [
        "nsenter",
        f"--net={nspath}",
        "--",
        qemu,
        "-M", MACHINE,
        "-accel", "tcg",
        "-cpu", "max",
        "-smp", "1",
        "-m", "256",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(artifacts.vmlinux),
        "-initrd", str(artifacts.initramfs),
        "-append", append,
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no,vnet_hdr={'on' if vnet_hdr else 'off'}",
        "-device", f"virtio-net-device,netdev=n0,mac={mac}",
    ]  # fmt: skip


class GuestProcess:
    """A running guest. Use as a context manager: leaving it kills QEMU if still alive."""

    def __init__(self, cmd: list, probes: list, timeout: float, check: bool, verbose: bool):
        # A last line of defence: even if this Python process dies without cleaning
        # up, coreutils' timeout kills QEMU a little after the deadline.
        cmd = ["timeout", "-s", "KILL", str(int(timeout) + 15), *cmd]
        self.cmd = cmd
        self.probes = probes
        self.timeout = timeout
        self.check = check
        self.verbose = verbose
        self._lines: list = []
        self._results: dict = {}
        self._ready: list = []
        self._net = None
        self._done = False
        self._cond = threading.Condition()
        self._timed_out = False
        self._run = None
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="realguest-serial", daemon=True)
        self._reader.start()

    # -- serial console -----------------------------------------------------------
    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            now = time.monotonic() - self.started
            with self._cond:
                self._lines.append(line)
                m = _PROBE_RE.search(line)
                if m:
                    idx = int(m.group(1))
                    self._results[idx] = ProbeResult(idx, m.group(2), m.group(3) == "ok", m.group(4) or "", now)
                elif _READY_RE.search(line):
                    self._ready.append(now)
                elif _NET_RE.search(line):
                    m = _NET_RE.search(line)
                    self._net = (m.group(1) == "ok", m.group(2) or "")
                elif "VMSAN-DONE" in line:
                    self._done = True
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    # -- waiting ------------------------------------------------------------------
    def wait_ready(self, timeout: float | None = None, count: int = 1) -> float:
        """Block until the guest printed ``count`` VMSAN-READY lines; seconds since start."""
        end = min(self.deadline, time.monotonic() + timeout) if timeout else self.deadline
        with self._cond:
            while len(self._ready) < count:
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    break
                self._cond.wait(min(left, 0.2))
            if len(self._ready) >= count:
                return self._ready[count - 1]
        self.kill()
        raise GuestError("guest never printed VMSAN-READY", self.log)

    def wait(self) -> GuestRun:
        """Wait for the guest to finish (or the deadline) and return its results."""
        if self._run is not None:
            return self._run
        try:
            done_at = None
            while True:
                if self.proc.poll() is not None:
                    break
                now = time.monotonic()
                if now >= self.deadline:
                    self._timed_out = True
                    break
                with self._cond:
                    if self._done and done_at is None:
                        done_at = now
                if done_at is not None and now - done_at > 5:
                    break  # powered off but QEMU lingers: kill it below
                try:
                    self.proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            self.kill()
        self._reader.join(timeout=5)
        self._run = self._make_run()
        BOOTS.append((os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0], self._run.boot_to_result,
                      time.monotonic() - self.started))
        if self.verbose:
            print(f"[realguest] {self._run.summary()}", file=sys.stderr if self.verbose == "stderr" else sys.stdout)
        if self.check and not self._run.complete:
            why = "timed out" if self._timed_out else f"QEMU exited with {self.proc.returncode}"
            missing = [i for i in range(len(self.probes)) if i not in self._results]
            raise GuestError(
                f"guest {why} before reporting probes {missing} ({' '.join(map(shlex.quote, self.cmd))})",
                self._run.log,
                self._run,
            )
        return self._run

    def _make_run(self) -> GuestRun:
        with self._cond:
            results = [self._results[i] for i in sorted(self._results)]
            net = self._net
            lines = list(self._lines)
        last = max((r.at for r in results), default=None)
        return GuestRun(
            probes=list(self.probes),
            results=results,
            log="\n".join(lines),
            boot_to_result=last,
            exit_code=None if self._timed_out else self.proc.returncode,
            timed_out=self._timed_out,
            net_ok=None if net is None else net[0],
            net_detail="" if net is None else net[1],
            ready_at=list(self._ready),
            done=self._done,
            command=list(self.cmd),
        )

    # -- teardown -----------------------------------------------------------------
    def kill(self) -> None:
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=3)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.proc.poll() is None:
            self.proc.wait()

    def __enter__(self) -> "GuestProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        self._reader.join(timeout=5)
        if self.proc.stdout and not self._reader.is_alive():
            self.proc.stdout.close()


def start_guest(
    netns: str,
    tap: str,
    mac: str,
    boot_args: str,
    probes=(),
    timeout: float = 60,
    *,
    probe_timeout: int = 3,
    check: bool = True,
    verbose=True,
    artifacts=None,
    require_tap: bool = True,
    vnet_hdr: bool = True,
) -> GuestProcess:
    """Start QEMU in the background and return at once (see ``GuestProcess``)."""
    probes = _normalise_probes(probes)
    nspath = _netns_path(netns)
    if require_tap:
        _check_tap(nspath, tap)
    if artifacts is None:
        artifacts = _build.build()
    qemu = _build.ensure_host_tools(install=False)
    cmd = qemu_command(
        artifacts, nspath, tap, mac, boot_args, probes, probe_timeout=probe_timeout, vnet_hdr=vnet_hdr, qemu=qemu
    )
    return GuestProcess(cmd, probes, timeout, check, verbose)


def boot_guest(netns: str, tap: str, mac: str, boot_args: str, probes=(), timeout: float = 60, **kw) -> GuestRun:
    """Boot the guest, run the probes, return when it powered off (or was killed).

    ``probes``: list of specs (or one comma-separated string), see docs/real-guest.md.
    Prints ``[realguest] boot-to-result X.XXs ...`` with the per-probe results.
    """
    with start_guest(netns, tap, mac, boot_args, probes, timeout, **kw) as guest:
        return guest.wait()


def _vm_target(vm: dict, host_netns: str | None) -> tuple:
    netns = vm.get("netns") or host_netns
    if not netns:
        raise GuestError("the VM has no netns (--no-netns): pass host_netns= (where its TAP lives)")
    for key in ("tap", "mac", "boot_args"):
        if not vm.get(key):
            raise GuestError(f"the VM dict has no {key!r} (expected `vmsan create --json` output)")
    return netns, vm["tap"], vm["mac"], vm["boot_args"]


def start_vm(vm: dict, probes=(), timeout: float = 60, host_netns: str | None = None, **kw) -> GuestProcess:
    """``start_guest`` for the dict ``vmsan create --json`` prints (netns, tap, mac, boot_args)."""
    return start_guest(*_vm_target(vm, host_netns), probes, timeout, **kw)


def boot_vm(vm: dict, probes=(), timeout: float = 60, host_netns: str | None = None, **kw) -> GuestRun:
    """``boot_guest`` for the dict ``vmsan create --json`` prints (netns, tap, mac, boot_args).

    With ``--no-netns`` the VM's ``netns`` is empty and its TAP lives where vmsan ran:
    pass that namespace (name or path) as ``host_netns``.
    """
    return boot_guest(*_vm_target(vm, host_netns), probes, timeout, **kw)


__all__ = [
    "boot_vm",
    "start_vm",
    "GuestError",
    "GuestProcess",
    "GuestRun",
    "ProbeResult",
    "boot_guest",
    "design_boot_args",
    "host_tsc_khz",
    "qemu_command",
    "start_guest",
]

if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    ap = argparse.ArgumentParser(description="boot the vmsan real guest once")
    ap.add_argument("netns")
    ap.add_argument("tap")
    ap.add_argument("mac")
    ap.add_argument("boot_args")
    ap.add_argument("probes", nargs="?", default="")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    r = boot_guest(a.netns, a.tap, a.mac, a.boot_args, a.probes, a.timeout, check=False)
    sys.exit(0 if r.all_ok else 1)
