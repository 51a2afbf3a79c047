"""``vmsan daemon`` in a sandbox's host namespace, for the name guard's
tests and its benchmark: started as the product is (``sandbox.vmsan_spawn``,
upstream the sandbox's authoritative DNS), stopped on cleanup; its log, its
health answer (with the guard's counters) and its guard thread's CPU time."""

import os
import signal
import time

from ansible_collections.vmsan.network.plugins.module_utils.model import addressing as A
from ansible_collections.vmsan.network.plugins.module_utils.resolver import health

from sandbox import guard, procs

AUTH_DNS = "203.0.113.53"


class Daemon(object):
    def __init__(self, sandbox, *flags, command="daemon", wrap=()):
        self.sandbox, self.flags, self.command, self.wrap = sandbox, flags, command, wrap
        self.proc, self.runs = None, 0
        sandbox.host.track(self.stop)

    def start(self, timeout=30.0):
        self.runs += 1
        self.proc = self.sandbox.vmsan_spawn(self.command, "--upstream", AUTH_DNS, *self.flags,
                                             log_name="daemon-%d.log" % self.runs, wrap=self.wrap)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening on" in self.log(self.runs):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("vmsan %s did not start: %s" % (self.command, self.log()))

    def stop(self):
        """SIGTERM (what systemd sends), and wait for the process."""
        if self.proc is not None:
            procs.stop(self.proc, grace=10)

    def kill(self):
        """SIGKILL: a crash (nothing is flushed or closed by the daemon)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def log(self, run=None):
        """Every run's log so far (RUN: that run's only)."""
        text = ""
        for run in [run] if run else range(1, self.runs + 1):
            path = os.path.join(self.sandbox.home, "daemon-%d.log" % run)
            if os.path.exists(path):
                with open(path) as handle:
                    text += handle.read()
        return text

    def stats(self):
        """The counters of its health answer, asked from the host namespace
        (guard_accepted, guard_refused, guard_messages, guard_queues, ...)."""
        with guard.entered(self.sandbox.host.name):
            answer = health.probe((A.RESOLVER_IP, A.RESOLVER_PORT), timeout=2.0)
        assert answer.ok, answer.detail
        return answer.stats

    def wait_for(self, text, timeout=5.0):
        """Wait until TEXT appears in the log; whether it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.05)
        return False

    def guard_cpu(self):
        """(user + system, system) CPU seconds of its ``vmsan-guard`` thread (from /proc)."""
        task_dir = "/proc/%d/task" % self.proc.pid
        for tid in os.listdir(task_dir):
            try:
                with open(os.path.join(task_dir, tid, "comm")) as handle:
                    if handle.read().strip() != "vmsan-guard":
                        continue
                with open(os.path.join(task_dir, tid, "stat")) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tick = os.sysconf("SC_CLK_TCK")
            return (int(fields[11]) + int(fields[12])) / tick, int(fields[12]) / tick
        raise AssertionError("no vmsan-guard thread in process %d" % self.proc.pid)
