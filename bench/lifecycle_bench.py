#!/usr/bin/env python3
"""VM lifecycle benchmark: how long creating and removing a VM's network
takes, for N VMs made one after another inside a sandbox host namespace,
and how the N-th create compares with the first.

Modes (all measured in the same run, in the same sandbox):

* ``inproc``  vmsan's core in this process: ``Manager().ensure`` / ``remove``
              with the thread inside the sandbox host (``netns.entered``);
* ``cli``     the whole ``vmsan create`` / ``vmsan network`` / ``vmsan remove``
              command in-process (``--no-daemon``: a new Python process each
              time, run with nsenter in the sandbox host, imports and all);
* ``warm``    the same commands through the warm path: the host daemon's
              command server (faces/warm.py) runs in the sandbox host and
              each ``vmsan`` process hands it the command (docs/cli.md);
* ``shell``   baseline: the same setup as a sequence of ``ip``,
              ``iptables-legacy`` and ``sysctl`` processes, one command per
              step, as shell-based tools do it; the iptables rules are those a
              real vmsan VM has (read from its ``iptables-legacy-save``);
* ``cni``     baseline: Debian's CNI plugins (loopback, then the chain ptp +
              firewall + portmap with host-local IPAM) for one namespace each,
              run with CNI_COMMAND=ADD/DEL the way a container runtime does.

    sudo .venv/bin/python bench/lifecycle_bench.py                    # 1, 100, 1000 VMs
    sudo .venv/bin/python bench/lifecycle_bench.py --sizes 1,3 --modes inproc,shell
    sudo .venv/bin/python bench/lifecycle_bench.py --sizes 1,100 --modes cli,warm,cni

``vmsan network`` (a live policy change to deny-all, with every VM in place)
is measured for the modes that have it: inproc, cli and warm.

Everything is cleaned up at the end, also on Ctrl-C.
"""

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time

import common as C  # bench/, beside this script; sets VMSAN_SANDBOX_ONLY

vm_mod = C.core_module("manager")
netns = C.core_module("netns")
A = C.core_module("addressing")
DENY_ALL = C.core_module("inputs").policy("deny-all", None, None, None)

MODES = ("inproc", "cli", "warm", "shell", "cni")
LABELS = {
    "inproc": "vmsan in-process (Manager)",
    "cli": "vmsan CLI, in-process (--no-daemon)",
    "warm": "vmsan CLI, warm path (daemon)",
    "shell": "shell baseline (ip/iptables-legacy/sysctl)",
    "cni": "CNI baseline (ptp+firewall+portmap)",
}
CNI_DIR = "/usr/lib/cni"


class Measured(object):
    """Wall time and CPU time of each operation of one mode at one size.
    CPU time is this thread's plus that of the child processes it waited for,
    so it says what an operation costs even when the machine is busy."""

    def __init__(self):
        self.create, self.create_cpu, self.remove, self.remove_cpu = [], [], [], []
        self.network, self.network_cpu = [], []
        self.mem_before = self.mem_with_all = None
        self.cpu_elsewhere = lambda: 0.0    # CPU seconds spent by a process we do not wait for

    def all_created(self):
        """Called with all N VMs in place: what the machine has left."""
        self.mem_with_all = mem_available_mib()

    def time(self, wall, cpu, fn, *args):
        C.check_stop()
        t0, c0, k0, e0 = time.perf_counter(), time.thread_time(), C.children_cpu(), self.cpu_elsewhere()
        fn(*args)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0 + C.children_cpu() - k0 + self.cpu_elsewhere() - e0)


class Runner(object):
    """One mode: N creates one after another, then N removes."""

    def inside(self):
        """Where the calling thread runs the operations (default: stays)."""
        return contextlib.nullcontext()

    def run(self, n, measured):
        with self.inside():
            self.measuring(measured)
            for i in range(n):
                measured.time(measured.create, measured.create_cpu, self.create, i)
            measured.all_created()
            if self.network is not None:
                for i in range(n):
                    measured.time(measured.network, measured.network_cpu, self.network, i)
            for i in range(n):
                measured.time(measured.remove, measured.remove_cpu, self.remove, i)

    def measuring(self, measured):
        """Called inside ``inside()`` before the first operation."""

    # a live policy change of VM i (deny-all), where the mode has one
    network = None

    def create(self, i):
        raise NotImplementedError

    def remove(self, i):
        raise NotImplementedError


# --------------------------------------------------------------------------
# the product
# --------------------------------------------------------------------------
class InProcess(Runner):
    """``Manager().ensure`` / ``remove`` with the calling thread in the
    sandbox host namespace (entered once for the whole run, as a long-lived
    agent would be)."""

    def __init__(self, sandbox, tracker):
        self.sandbox = sandbox
        self.manager = vm_mod.Manager(state_dir=sandbox.home)

    def vm_id(self, i):
        return self.sandbox.unique_id("i%d" % i)

    def inside(self):
        return netns.entered(self.sandbox.host.name)

    def create(self, i):
        self.manager.ensure(self.vm_id(i), must_be_new=True)

    def network(self, i):
        self.manager.update(self.vm_id(i), policy=DENY_ALL)

    def remove(self, i):
        self.manager.remove(self.vm_id(i))


class Cli(Runner):
    """The whole ``vmsan create --id ID --json`` / ``vmsan network ID
    --network-policy deny-all --json`` / ``vmsan remove ID --json`` in-process
    (nsenter, interpreter start, imports, the work, JSON output)."""

    FLAGS = ("--no-daemon",)
    PREFIX = "c"

    def __init__(self, sandbox, tracker):
        self.sandbox = sandbox

    def vm_id(self, i):
        return self.sandbox.unique_id("%s%d" % (self.PREFIX, i))

    def create(self, i):
        self.sandbox.vmsan("create", "--id", self.vm_id(i), *self.FLAGS)

    def network(self, i):
        self.sandbox.vmsan("network", self.vm_id(i), "--network-policy", "deny-all", *self.FLAGS)

    def remove(self, i):
        self.sandbox.vmsan("remove", self.vm_id(i), *self.FLAGS)


class Warm(Cli):
    """The same commands through the warm path: the command server runs in
    the sandbox host for the whole mode (started before the first command,
    its imports already done); its CPU time counts with each command's."""

    FLAGS = ()
    PREFIX = "w"

    @contextlib.contextmanager
    def inside(self):
        from warm_daemon import command_server
        with command_server(self.sandbox) as served:
            self.served = served
            yield

    def measuring(self, measured):
        pid = self.served.proc.pid     # nsenter execs: this is the server itself
        measured.cpu_elsewhere = lambda: process_cpu(pid)


def process_cpu(pid):
    """User + system CPU seconds of process PID so far."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# baseline 1: shell commands
# --------------------------------------------------------------------------
def rule_template(sandbox):
    """The iptables rules of one real vmsan VM (allow-all, netns mode) as
    they are in the kernel: its namespace's ``iptables-legacy-save``, turned
    into one ``iptables-legacy`` command line per chain, policy and rule.
    Returns (commands as token lists, the VM's facts)."""
    manager = vm_mod.Manager(state_dir=sandbox.home)
    vm_id = sandbox.unique_id("tmpl")
    with netns.entered(sandbox.host.name):
        vm = manager.ensure(vm_id, must_be_new=True).vm
        try:
            saved = C.run_in(vm["netns"], ["iptables-legacy-save"]).stdout
        finally:
            manager.remove(vm_id)
    commands, table = [], None
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            if policy == "-":
                commands.append(["-t", table, "-N", chain])
            elif policy != "ACCEPT":
                commands.append(["-t", table, "-P", chain, policy])
        elif line.startswith("-A "):
            commands.append(["-t", table] + shlex.split(line))
    return commands, vm


def count_template(commands):
    kinds = {"-N": 0, "-P": 0, "-A": 0}
    for cmd in commands:
        kinds[cmd[2]] += 1
    return kinds


class Shell(Runner):
    """One process per step, each entered into its namespace with nsenter:
    what a shell script (or a tool that shells out) does for a VM in its own
    namespace. Names differ from the product's so nothing collides."""

    def __init__(self, sandbox, tracker, template):
        self.sandbox, self.tracker = sandbox, tracker
        self.template, self.template_vm = template
        self.host = sandbox.host.name

    def names(self, i):
        return {"ns": self.tracker.name("s%d" % i), "host_veth": "bh%d" % i, "vm_veth": "bg%d" % i,
                "id": self.sandbox.unique_id("s%d" % i)}

    def rules_for(self, i):
        """The template's commands with the template VM's identity (id, TAP,
        addresses, MAC) replaced by VM i's."""
        tvm, names = self.template_vm, self.names(i)
        tokens = {
            tvm["tap"]: A.tap_name(i),
            tvm["guest_ip"] + "/32": A.guest_ip(i) + "/32",
            tvm["host_ip"] + "/32": A.host_ip(i) + "/32",
            tvm["mac"].lower(): A.guest_mac(i),
        }
        out = []
        for cmd in self.template:
            out.append([tokens.get(t.lower() if ":" in t else t, t).replace(tvm["id"], names["id"]) for t in cmd])
        return out

    def create(self, i):
        n = self.names(i)
        ns, hv, gv, tap = n["ns"], n["host_veth"], n["vm_veth"], A.tap_name(i)
        th, tv = A.transit(i)
        host = self.host
        self.tracker.add(ns)
        C.run_in(host, ["ip", "netns", "add", ns])
        C.run_in(host, ["ip", "link", "add", hv, "type", "veth", "peer", "name", gv, "netns", ns])
        C.run_in(host, ["sysctl", "-q", "-w", "net.ipv6.conf.%s.disable_ipv6=1" % hv])
        C.run_in(host, ["ip", "addr", "add", th + "/30", "dev", hv])
        C.run_in(host, ["ip", "link", "set", hv, "up"])
        C.run_in(host, ["ip", "route", "add", str(A.subnet(i)), "via", tv, "dev", hv])
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6", "net.ipv4.ip_forward"):
            C.run_in(ns, ["sysctl", "-q", "-w", key + "=1"])
        C.run_in(ns, ["ip", "link", "set", "lo", "up"])
        C.run_in(ns, ["ip", "addr", "add", tv + "/30", "dev", gv])
        C.run_in(ns, ["ip", "link", "set", gv, "up"])
        C.run_in(ns, ["ip", "route", "add", "default", "via", th, "dev", gv])
        C.run_in(ns, ["ip", "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])
        C.run_in(ns, ["ip", "addr", "add", A.host_ip(i) + "/30", "dev", tap])
        C.run_in(ns, ["ip", "link", "set", tap, "up"])
        for rule in self.rules_for(i):
            C.run_in(ns, ["iptables-legacy"] + rule)

    def remove(self, i):
        n = self.names(i)
        C.run_in(self.host, ["ip", "link", "del", n["host_veth"]])
        C.run_in(self.host, ["ip", "netns", "del", n["ns"]])
        self.tracker.discard(n["ns"])

    # 16 ip/sysctl processes per create (counted above), 2 per remove
    SETUP_COMMANDS = 16
    REMOVE_COMMANDS = 2


# --------------------------------------------------------------------------
# baseline 2: CNI plugins
# --------------------------------------------------------------------------
class Cni(Runner):
    """A minimal CNI runtime: for each namespace, ``loopback`` (as container
    runtimes run it for every pod), then the conflist's plugins in order
    with each one's result as the next one's prevResult; DEL in reverse.
    Plugins run in the sandbox host namespace; the firewall and ptp's ipMasq
    use iptables-legacy (a PATH of symlinks), the same backend as vmsan."""

    CNI_VERSION = "1.0.0"
    NETWORK = "vmsanbench"

    def __init__(self, sandbox, tracker):
        self.sandbox, self.tracker = sandbox, tracker
        self.host = sandbox.host.name
        self.tmp = tempfile.mkdtemp(prefix="%s-cni-" % sandbox.prefix)
        sandbox.host.track(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir)
        for tool in ("iptables", "ip6tables"):
            for suffix in ("", "-save", "-restore"):
                os.symlink("/usr/sbin/%s-legacy%s" % (tool, suffix), os.path.join(bindir, tool + suffix))
        self.path = bindir + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        self.conflist = {
            "cniVersion": self.CNI_VERSION, "name": self.NETWORK,
            "plugins": [
                {"type": "ptp", "ipMasq": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(self.tmp, "ipam")}},
                {"type": "firewall", "backend": "iptables"},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        }
        with open(os.path.join(self.tmp, "%s.conflist" % self.NETWORK), "w") as f:
            json.dump(self.conflist, f, indent=2)
        self.results = {}

    @staticmethod
    def available():
        return all(os.access(os.path.join(CNI_DIR, p), os.X_OK) for p in ("ptp", "firewall", "portmap",
                                                                          "host-local", "loopback"))

    def _exec(self, command, plugin, i, config):
        ns = self.tracker.name("n%d" % i)
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID="bench%d" % i, CNI_NETNS=C.ns_path(ns),
                   CNI_IFNAME="eth0", CNI_PATH=CNI_DIR, PATH=self.path)
        if plugin == "loopback":
            env["CNI_IFNAME"] = "lo"
        done = C.run_in(self.host, [os.path.join(CNI_DIR, plugin)], input=json.dumps(config), env=env)
        return json.loads(done.stdout) if done.stdout.strip() else None

    def _config(self, plugin_conf, prev):
        conf = dict(plugin_conf, name=self.NETWORK, cniVersion=self.CNI_VERSION)
        if prev is not None:
            conf["prevResult"] = prev
        if plugin_conf.get("capabilities", {}).get("portMappings"):
            conf["runtimeConfig"] = {"portMappings": []}    # a VM without published ports
        return conf

    def create(self, i):
        ns = self.tracker.name("n%d" % i)
        self.tracker.add(ns)
        C.run_in(self.host, ["ip", "netns", "add", ns])
        self._exec("ADD", "loopback", i, {"cniVersion": self.CNI_VERSION, "name": "lo", "type": "loopback"})
        prev = None
        for plugin in self.conflist["plugins"]:
            prev = self._exec("ADD", plugin["type"], i, self._config(plugin, prev))
        self.results[i] = prev

    def remove(self, i):
        ns = self.tracker.name("n%d" % i)
        prev = self.results.pop(i, None)
        for plugin in reversed(self.conflist["plugins"]):
            self._exec("DEL", plugin["type"], i, self._config(plugin, prev))
        self._exec("DEL", "loopback", i, {"cniVersion": self.CNI_VERSION, "name": "lo", "type": "loopback"})
        C.run_in(self.host, ["ip", "netns", "del", ns])
        self.tracker.discard(ns)


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------
def edge_medians(values, k=10):
    """Median of the first K and of the last K values (K = a tenth at most),
    a steadier view of "the N-th against the first" than two single samples."""
    k = max(1, min(k, len(values) // 10 or 1))
    return C.median(values[:k]), C.median(values[-k:]), k


def create_row(mode, n, m):
    s, cpu = C.summary(m.create), C.median(m.create_cpu)
    first10, last10, k = edge_medians(m.create)
    memory = "-" if m.mem_with_all is None else "%.0f" % (m.mem_before - m.mem_with_all)
    return [LABELS[mode], n, C.ms(s["median"]), C.ms(s["p99"]), C.ms(cpu), C.ms(m.create[0]), C.ms(m.create[-1]),
            C.times(C.ratio(m.create[-1], m.create[0])), "%s / %s (k=%d)" % (C.ms(first10), C.ms(last10), k),
            C.times(C.ratio(last10, first10)), memory]


def remove_row(mode, n, m):
    s, cpu = C.summary(m.remove), C.median(m.remove_cpu)
    first10, last10, k = edge_medians(m.remove)
    return [LABELS[mode], n, C.ms(s["median"]), C.ms(s["p99"]), C.ms(cpu), C.ms(m.remove[0]), C.ms(m.remove[-1]),
            "%s / %s (k=%d)" % (C.ms(first10), C.ms(last10), k)]


CREATE_HEADERS = ["create", "N", "median ms", "p99 ms", "cpu median ms", "1st ms", "N-th ms", "N-th/1st",
                  "first k / last k median ms", "last/first", "MiB with all N"]
REMOVE_HEADERS = ["remove", "N", "median ms", "p99 ms", "cpu median ms", "1st ms", "N-th ms",
                  "first k / last k median ms"]
NETWORK_HEADERS = ["network (to deny-all)", "N", "median ms", "p99 ms", "cpu median ms", "1st ms", "N-th ms"]


def network_row(mode, n, m):
    s = C.summary(m.network)
    return [LABELS[mode], n, C.ms(s["median"]), C.ms(s["p99"]), C.ms(C.median(m.network_cpu)), C.ms(m.network[0]),
            C.ms(m.network[-1])]


def mem_available_mib():
    value = C._first_line_with("/proc/meminfo", "MemAvailable").split()[0]
    return int(value) / 1024.0 if value.isdigit() else float("nan")


def profile_inproc(sandbox, n, top, k=20, sort="cumulative"):
    """cProfile of K in-process creates and K removes with N VMs in place
    (the creates of VMs N-K+1..N, the removes of the same), after the
    measured runs: the profiler slows everything down."""
    import cProfile
    import pstats
    k = min(k, n)
    manager = vm_mod.Manager(state_dir=sandbox.home)
    ids = [sandbox.unique_id("p%d" % i) for i in range(n)]
    creating, removing = cProfile.Profile(), cProfile.Profile()
    C.progress("profile: %d VMs, the last %d creates and their removes profiled ..." % (n, k))
    with netns.entered(sandbox.host.name):
        for i, vm_id in enumerate(ids):
            C.check_stop()
            profiled = i >= n - k
            if profiled:
                creating.enable()
            manager.ensure(vm_id, must_be_new=True)
            if profiled:
                creating.disable()
        for i, vm_id in enumerate(reversed(ids)):
            C.check_stop()
            profiled = i < k
            if profiled:
                removing.enable()
            manager.remove(vm_id)
            if profiled:
                removing.disable()
    for title, prof in (("creates", creating), ("removes", removing)):
        C.note("\n## cProfile of %d in-process %s with %d VMs in place (%s, top %d)\n" % (k, title, n, sort, top))
        stats = pstats.Stats(prof, stream=sys.stdout)
        stats.strip_dirs().sort_stats(sort).print_stats(top)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,1000", help="numbers of VMs, comma-separated (default 1,100,1000)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of %s" % ",".join(MODES))
    parser.add_argument("--json", metavar="PATH", help="also write every measured time to PATH")
    parser.add_argument("--profile", type=int, metavar="N", default=0,
                        help="afterwards, create N VMs in-process and cProfile the last 20 creates and the first "
                             "20 removes (the top functions are printed)")
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile (default 25)")
    parser.add_argument("--sort", default="cumulative", choices=("cumulative", "tottime", "ncalls"),
                        help="order of the --profile table (default cumulative; tottime shows where the time "
                             "is spent, system calls included)")
    args = parser.parse_args(argv)
    sizes = C.parse_sizes(args.sizes)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error("--modes: unknown %s (choose from %s)" % (",".join(unknown), ",".join(MODES)))
    if "cni" in modes and not Cni.available():
        C.progress("CNI plugins not found in %s (apt-get install containernetworking-plugins): skipping cni" % CNI_DIR)
        modes.remove("cni")

    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        # a host caches the core's bytecode after the first run; without it
        # every vmsan process compiles ~30 modules (~25 ms)
        C.note("# PYTHONDONTWRITEBYTECODE was set: dropped for the vmsan processes (bytecode cached, as on a host)")
    info = C.print_machine()
    results = {"machine": info, "sizes": sizes, "modes": modes, "runs": []}
    began = time.monotonic()
    with C.bench_sandbox() as sandbox:
        tracker = C.NamespaceTracker(sandbox)
        kernel_baseline = C.live_net_namespaces()
        template = rule_template(sandbox) if "shell" in modes else None
        if template:
            kinds = count_template(template[0])
            C.note("# shell baseline: %d iptables-legacy calls per VM, as a real vmsan VM has them "
                   "(%d rules, %d chains, %d policies), plus %d ip/sysctl calls; remove: %d calls"
                   % (len(template[0]), kinds["-A"], kinds["-N"], kinds["-P"], Shell.SETUP_COMMANDS,
                      Shell.REMOVE_COMMANDS))
        C.note("# sandbox %s; VMs are created one after another, then removed one after another" % sandbox.prefix)
        try:
            for n in sizes:
                rows_create, rows_remove, rows_network = [], [], []
                try:
                    for mode in modes:
                        measured = Measured()
                        run_mode(sandbox, tracker, template, mode, n, measured, kernel_baseline, results)
                        rows_create.append(create_row(mode, n, measured))
                        rows_remove.append(remove_row(mode, n, measured))
                        if measured.network:
                            rows_network.append(network_row(mode, n, measured))
                except KeyboardInterrupt:
                    # what was measured before the interruption is still worth printing
                    if measured.create:
                        C.note("# interrupted: the last row has %d creates and %d removes, not %d"
                               % (len(measured.create), len(measured.remove), n))
                        rows_create.append(create_row(mode, len(measured.create), measured))
                        if measured.remove:
                            rows_remove.append(remove_row(mode, len(measured.remove), measured))
                    raise
                finally:
                    C.print_table("## N = %d: create (wall time per VM)" % n, CREATE_HEADERS, rows_create)
                    if rows_network:
                        C.print_table("## N = %d: live policy change (wall time per VM)" % n, NETWORK_HEADERS,
                                      rows_network)
                    if rows_remove:
                        C.print_table("## N = %d: remove (wall time per VM)" % n, REMOVE_HEADERS, rows_remove)
            print_comparison(results)
            print_command_targets(results)
            if args.profile:
                profile_inproc(sandbox, args.profile, args.top, sort=args.sort)
        finally:
            C.print_end(info, began)
            C.write_json(args.json, results)
    return 0


def run_mode(sandbox, tracker, template, mode, n, measured, kernel_baseline, results):
    """N creates then N removes in MODE, into MEASURED; the raw numbers are
    appended to RESULTS (also when interrupted)."""
    runner = {"inproc": InProcess, "cli": Cli, "warm": Warm, "cni": Cni}.get(mode)
    runner = runner(sandbox, tracker) if runner else Shell(sandbox, tracker, template)
    measured.mem_before = mem_available_mib()
    entry = {"mode": mode, "n": n, "create": measured.create, "create_cpu": measured.create_cpu,
             "remove": measured.remove, "remove_cpu": measured.remove_cpu,
             "network": measured.network, "network_cpu": measured.network_cpu,
             "mem_available_mib_before": measured.mem_before}
    results["runs"].append(entry)
    C.progress("%s: %d VMs ..." % (mode, n))
    t0 = time.monotonic()
    runner.run(n, measured)
    entry["seconds"] = time.monotonic() - t0
    entry["mem_available_mib_with_all"] = measured.mem_with_all
    entry["kernel_drain_seconds"] = C.wait_for_kernel(kernel_baseline)
    C.progress("%s: %d VMs done in %.1f s (+%.1f s until the kernel freed the namespaces)"
               % (mode, n, entry["seconds"], entry["kernel_drain_seconds"]))


def print_comparison(results):
    """The targets and the baselines side by side, per size."""
    by = {(r["mode"], r["n"]): r for r in results["runs"]}
    rows = []
    for n in results["sizes"]:
        mine = by.get(("inproc", n))
        if not mine:
            continue
        med = C.median(mine["create"])
        row = [n, C.ms(med), "yes" if med <= 0.010 else "no"]
        ratio = C.ratio(mine["create"][-1], mine["create"][0])
        first, last, _ = edge_medians(mine["create"])
        row += [C.times(ratio), C.times(C.ratio(last, first)), "yes" if C.ratio(last, first) <= 2 else "no"]
        for other in ("cli", "shell", "cni"):
            theirs = by.get((other, n))
            row.append(C.times(C.ratio(C.median(theirs["create"]), med)) if theirs else "-")
        rows.append(row)
    if rows:
        C.print_table("## targets (in-process create median <= 10 ms; N-th no slower than twice the first) "
                      "and create median of the others relative to in-process",
                      ["N", "in-process create median ms", "<= 10 ms", "N-th/1st", "last k/first k", "<= 2x",
                       "cli / in-process", "shell / in-process", "cni / in-process"], rows)


def print_command_targets(results):
    """The whole commands' targets (issue 14), per size: with the warm path
    create <= 40 ms and <= 0.5x the CNI chain's, network <= 30 ms; without it
    <= 250 ms; in-process remove no slower than the shell way's."""
    by = {(r["mode"], r["n"]): r for r in results["runs"]}

    def med(mode, n, op):
        run = by.get((mode, n))
        return C.median(run[op]) if run and run.get(op) else float("nan")

    def verdict(value, limit):
        return "-" if value != value or limit != limit else ("yes" if value <= limit else "no")

    rows = []
    for n in results["sizes"]:
        warm_c, warm_n, cni_c = med("warm", n, "create"), med("warm", n, "network"), med("cni", n, "create")
        cli_c, cli_n = med("cli", n, "create"), med("cli", n, "network")
        in_r, sh_r = med("inproc", n, "remove"), med("shell", n, "remove")
        if all(v != v for v in (warm_c, cli_c, in_r)):
            continue
        rows.append([n, C.ms(warm_c), verdict(warm_c, 0.040), C.times(C.ratio(warm_c, cni_c)),
                     verdict(C.ratio(warm_c, cni_c), 0.5), C.ms(warm_n), verdict(warm_n, 0.030),
                     C.ms(cli_c), verdict(cli_c, 0.250), C.ms(cli_n), verdict(cli_n, 0.250),
                     C.ms(in_r), C.ms(sh_r), verdict(in_r, sh_r)])
    if rows:
        C.print_table("## targets of the whole commands (medians): warm create <= 40 ms and <= 0.5x CNI, warm network "
                      "<= 30 ms, in-process (--no-daemon) create and network <= 250 ms, in-process remove <= shell",
                      ["N", "warm create ms", "<= 40", "warm / cni", "<= 0.5x", "warm network ms", "<= 30",
                       "cli create ms", "<= 250", "cli network ms", "<= 250", "in-process remove ms",
                       "shell remove ms", "<= shell"], rows)


if __name__ == "__main__":
    sys.exit(C.run_main(main))
