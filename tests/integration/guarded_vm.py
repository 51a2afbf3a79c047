"""A guarded VM in a sandbox, for the name guard's experiment (phase 1) and
its benchmark: ``vmsan create`` makes the VM as usual; then the guard's rule
layout (plan/name_guard.py) is applied on top of its plan in its namespace
through the product's own adapter (kernel/iptables.py), and the guard's loop
(guard/loop.py) runs in a thread of this process with one queue socket in
the VM's namespace. Phase 2 moves both into the product (the firewall plan
and the host daemon); until then the pins come from the VM's learned set
(``refresh_pins``), the way a restarted daemon rebuilds them.

``mode``: "on" (rules and guard), "reader-off" (rules, no guard reading the
queue: held packets are dropped), "rules-off" (vmsan's rules as they are
today: the learned set accepted for every protocol and port). The
environment variable ``VMSAN_GUARD_TEST_MODE`` overrides it, to watch the
tests go red without the guard.
"""

import os
import subprocess
import threading
import time

from ansible_collections.vmsan.network.plugins.module_utils.guard import loop as guard_loop
from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables, netns
from ansible_collections.vmsan.network.plugins.module_utils.kernel import nfqueue
from ansible_collections.vmsan.network.plugins.module_utils.kernel.ipsets import SetManager
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import StateStore
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall, name_guard
from ansible_collections.vmsan.network.plugins.module_utils.resolver.pins import PinTable

from sandbox import procs

AUTH_DNS = "203.0.113.53"


class Resolver(object):
    """``vmsan resolver`` in the sandbox host namespace."""

    def __init__(self, sandbox, *flags):
        self.sandbox, self.flags, self.proc = sandbox, flags, None

    def start(self, timeout=15.0):
        self.proc = self.sandbox.vmsan_spawn("resolver", "--upstream", AUTH_DNS, *self.flags,
                                             log_name="resolver.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.proc.log_path) as handle:
                if "listening on" in handle.read():
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("resolver did not start")

    def stop(self):
        procs.stop(self.proc)


class GuardedVm(object):
    def __init__(self, sandbox, name, domains, cidrs=(), mode="on"):
        self.sandbox = sandbox
        self.mode = os.environ.get("VMSAN_GUARD_TEST_MODE", mode)
        flags = ["--allowed-domain", ",".join(domains)]
        if cidrs:
            flags += ["--allowed-cidr", ",".join(cidrs)]
        self.vm = sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out
        self.id, self.netns = self.vm["id"], self.vm["netns"]
        self.policy = inputs.policy(allowed_domains=list(domains), allowed_cidrs=list(cidrs))
        self.guest = sandbox.add_guest(self.vm)
        self.pins = PinTable()
        self.loop = self.ns_guard = self.thread = None
        self._stop = threading.Event()
        if self.mode != "rules-off":
            self.apply_rules()
        if self.mode == "on":
            self.start_guard()
        sandbox.host.track(self.stop_guard)

    @property
    def udp_ports(self):
        return guard_loop.VmView(self.id, self.vm["guest_ip"], self.policy.allowed_domains).policy.udp_ports

    def apply_rules(self):
        record = StateStore(self.sandbox.home).load(self.id)
        plan = firewall.vm_plan(record, self.policy)
        with netns.entered(self.netns):
            return iptables.apply(name_guard.guarded(plan, self.id, self.udp_ports), self.id)

    def start_guard(self):
        self._stop = threading.Event()
        self.loop = guard_loop.GuardLoop()
        with netns.entered(self.netns):
            sock = nfqueue.QueueSocket(name_guard.QUEUE_NUM, name_guard.LOG_GROUP)
        view = guard_loop.VmView(self.id, self.vm["guest_ip"], self.policy.allowed_domains)
        self.ns_guard = guard_loop.NamespaceGuard(self.netns, sock, [view], self.pins)
        self.loop.add(self.ns_guard)
        self.refresh_pins()
        self.thread = threading.Thread(target=self.loop.run, args=(self._stop,), name="guard", daemon=True)
        self.thread.start()

    def stop_guard(self):
        """Stop reading the queue and close its socket (what a stopped daemon
        leaves: the rules, and no reader)."""
        if self.thread is None:
            return
        self._stop.set()
        self.thread.join(5)
        self.thread = None
        self.loop.remove(self.ns_guard)
        self.ns_guard.sock.close()
        self.loop.close()

    def learned(self):
        """The VM's learned set: [{address, timeout, comment}]."""
        with netns.entered(self.netns):
            with SetManager() as sets:
                return sets.members(firewall.set_name(self.id, "dns"))

    def refresh_pins(self):
        """Pin what the VM's learned set holds now: what a restarted daemon
        can rebuild (one name per address, the set entry's comment)."""
        return self.pins.rebuild(self.id, self.learned(), time.monotonic())

    def resolve(self, name):
        """The guest asks the host resolver for NAME; returns the answer's
        first address. Every address of the answer is pinned to NAME with its
        set entry's expiry: what the resolver will do itself in phase 2 (the
        set's comment holds only the latest name an address was added for,
        and the resolver does not re-add a fresh entry for a second name)."""
        rcode, values = self.guest.dig(name, self.guest.dns_server)[:2]
        assert rcode == "NOERROR" and values, (name, rcode, values)
        now = time.monotonic()
        left = {m["address"]: m["timeout"] for m in self.learned()}
        for address in values:
            assert address in left, (name, address, left)
            self.pins.pin(self.id, address, [name.lower()], now + left[address])
        return values[0]

    def counters(self):
        return self.ns_guard.counters if self.ns_guard is not None else guard_loop.Counters()

    def iptables_save(self):
        return subprocess.run(["nsenter", "--net=/run/netns/" + self.netns, "iptables-legacy-save", "-t", "filter"],
                              capture_output=True, text=True, check=True).stdout
