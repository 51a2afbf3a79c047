"""Sandbox "machines" for Ansible runs: each is a throwaway host network
namespace (with its own fake internet behind it, docs/testing.md) that
Ansible reaches with a local connection whose Python interpreter is a wrapper
running inside that namespace.

Molecule's create, verify and destroy steps, scripts/ansible-checks.sh, the
Ansible integration tests and the benchmark all use it:

    python -m sandbox.machines start DIR [--hosts N]   # build N machines, keep them (daemon)
    python -m sandbox.machines stop DIR                # tear everything down
    python -m sandbox.machines probe DIR --host H --vm ID --expect tcp:203.0.113.10:9000=open ...

``start`` writes DIR/inventory.yml (group ``vmsan_hosts``), DIR/sandbox.json
and one interpreter wrapper per machine. The machines live as long as the
keeper process (their internet's servers are its threads); ``stop`` ends it.

In-process users (pytest) call ``build_machines`` and ``write_inventory``.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from . import topology
from .endpoint import Endpoint
from .guest import Guest
from .netns import Namespace, list_netns
from .sandbox import REPO_ROOT, Sandbox

PYTHON = sys.executable
STATE_FILE = "sandbox.json"
READY_TIMEOUT = 60

# Role settings that keep a run inside the sandbox: every file the roles
# would write on a real host goes under the machine's own directory, and
# nothing is downloaded (the libraries are in the venv that runs the modules).
SANDBOX_GROUP_VARS = {
    "ansible_connection": "local",
    "ansible_become": False,             # already root, and no sudo here
    "vmsan_host_python_libs": "none",
    "vmsan_host_apt_update_cache": False,
    # a unit on the real machine would run in its root namespace
    "vmsan_host_manage_service": False,
}


def interpreter_wrapper(path, netns, home, python=PYTHON):
    """A "python" that runs the real one inside NETNS with the sandbox guard on."""
    with open(path, "w") as handle:
        handle.write(
            "#!/bin/sh\n"
            "# vmsan sandbox machine: Ansible modules run inside network namespace %s\n"
            "VMSAN_SANDBOX_ONLY=1; export VMSAN_SANDBOX_ONLY\n"
            "VMSAN_HOME=%s; export VMSAN_HOME\n"
            "exec nsenter --net=/run/netns/%s -- %s \"$@\"\n" % (netns, home, netns, python))
    os.chmod(path, 0o755)
    return path


def machine_facts(name, sandbox, workdir):
    """What an inventory needs to know of one sandbox machine."""
    root = os.path.join(workdir, name)
    os.makedirs(root, exist_ok=True)
    python = interpreter_wrapper(os.path.join(workdir, "python-%s" % name), sandbox.host.name, sandbox.home)
    return {
        "name": name,
        "prefix": sandbox.prefix,
        "netns": sandbox.host.name,
        "internet": sandbox.internet.name,
        "home": sandbox.home,
        "root": root,
        "python": python,
    }


def host_vars(machine):
    root = machine["root"]
    return {
        "ansible_python_interpreter": machine["python"],
        "vmsan_sandbox_prefix": machine["prefix"],
        "vmsan_sandbox_netns": machine["netns"],
        "vmsan_host_state_dir": machine["home"],
        "vmsan_vms_state_dir": machine["home"],
        "vmsan_host_prefix": os.path.join(root, "opt"),
        "vmsan_host_sysctl_file": os.path.join(root, "sysctl.d", "60-vmsan.conf"),
        "vmsan_host_python": PYTHON,
        "vmsan_vms_python": machine["python"],
    }


def inventory(machines, group="vmsan_hosts", extra_group_vars=None, per_host=None, subgroups=None):
    """An inventory (dict) with the machines in GROUP. PER_HOST(machine) may
    add host variables (e.g. each machine's VM list); SUBGROUPS ({name:
    {"hosts": [names], "vars": {...}}}) become children of GROUP."""
    hosts = {}
    for machine in machines:
        hv = host_vars(machine)
        if per_host:
            hv.update(per_host(machine))
        hosts[machine["name"]] = hv
    group_vars = dict(SANDBOX_GROUP_VARS)
    group_vars.update(extra_group_vars or {})
    top = {"hosts": hosts}
    if subgroups:
        top["children"] = {name: {"hosts": {h: {} for h in sub["hosts"]}, "vars": dict(sub.get("vars", {}))}
                           for name, sub in subgroups.items()}
    return {"all": {"vars": group_vars, "children": {group: top}}}


def write_inventory(path, data):
    import yaml
    with open(path, "w") as handle:
        handle.write("---\n# written by sandbox.machines: sandbox machines, not real hosts\n")
        yaml.safe_dump(data, handle, default_flow_style=False, sort_keys=True)
    return path


def start_machines(count, workdir, stack):
    """COUNT started sandboxes h1..hCOUNT, each closed by STACK; returns
    [(facts, Sandbox)]."""
    started = []
    for index in range(1, count + 1):
        sandbox = stack.enter_context(Sandbox())
        stack.callback(remove_prefixed_netns, sandbox.prefix)
        started.append((machine_facts("h%d" % index, sandbox, workdir), sandbox))
    return started


def build_machines(count, workdir, stack):
    """Like start_machines, the facts only."""
    return [facts for facts, sandbox in start_machines(count, workdir, stack)]


def remove_prefixed_netns(prefix):
    """Namespaces of a sandbox that someone else made (a probe's guest, a VM
    that a failed run left): removed after the sandbox itself."""
    for name in list_netns():
        if name.startswith(prefix + "-") or name.startswith("vmsan-%s-" % prefix):
            Namespace(name).delete()


# --------------------------------------------------------------------------
# running Ansible against the machines
# --------------------------------------------------------------------------
VENV_BIN = os.path.dirname(PYTHON)


def ansible_env(**extra):
    """Environment for ansible-playbook and ansible: the venv's tools, no
    colours, pipelining (modules arrive on the interpreter's stdin)."""
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.update(ANSIBLE_PIPELINING="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_HOST_KEY_CHECKING="0")
    for name in ("VMSAN_HOME", "VMSAN_SANDBOX_ONLY"):   # the wrappers set them per machine
        env.pop(name, None)
    env.update(extra)
    return env


def run_playbook(playbook, inventory_path, *args, env=None, timeout=1800):
    """ansible-playbook; returns the CompletedProcess (text, stderr merged)."""
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory_path, *map(str, args), playbook]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env or ansible_env(), timeout=timeout, check=False, cwd=REPO_ROOT)


def recap(output):
    """{host: {"ok": n, "changed": n, "failed": n, ...}} from a play recap."""
    found = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match and "=" in match.group(2):
            found[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return found


def run_module(inventory_path, host, module, args, check_mode=False, diff=False, env=None, timeout=300,
               extra_vars=None):
    """One module run with the ad-hoc ``ansible`` command; returns (result
    dict, output text). The result is what the module returned."""
    with tempfile.TemporaryDirectory(prefix="vmsan-tree-") as tree:
        argv = [os.path.join(VENV_BIN, "ansible"), "-i", inventory_path, host, "-m", module,
                "-a", json.dumps(args), "--tree", tree]
        if check_mode:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env or ansible_env(), timeout=timeout, check=False, cwd=REPO_ROOT)
        try:
            with open(os.path.join(tree, host)) as handle:
                result = json.load(handle)
        except (OSError, ValueError):
            result = {"msg": "no result", "output": done.stdout}
    # The tree file holds what the module returned; whether the task failed
    # is Ansible's verdict, which the exit status carries.
    result["failed"] = done.returncode != 0
    return result, done.stdout


# --------------------------------------------------------------------------
# keeper daemon
# --------------------------------------------------------------------------
def _serve(workdir, count):
    """The keeper: build the machines, publish them, wait for SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        machines = build_machines(count, workdir, stack)
        write_inventory(os.path.join(workdir, "inventory.yml"), inventory(machines))
        state = {"pid": os.getpid(), "machines": machines}
        tmp = os.path.join(workdir, STATE_FILE + ".tmp")
        with open(tmp, "w") as handle:
            json.dump(state, handle, indent=2)
        os.rename(tmp, os.path.join(workdir, STATE_FILE))
        while not stop.wait(1.0):
            pass
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(workdir, STATE_FILE))
    return 0


def start(workdir, count):
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(os.path.join(workdir, STATE_FILE)):
        stop(workdir)
    log = open(os.path.join(workdir, "keeper.log"), "ab")
    proc = subprocess.Popen([PYTHON, "-m", "sandbox.machines", "_serve", workdir, "--hosts", str(count)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                            close_fds=True)
    log.close()
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(workdir, STATE_FILE)):
            print(json.dumps(load(workdir), indent=2))
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    with open(os.path.join(workdir, "keeper.log")) as handle:
        sys.stderr.write(handle.read()[-4000:])
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)
    sys.stderr.write("sandbox keeper did not come up\n")
    return 1


def load(workdir):
    with open(os.path.join(workdir, STATE_FILE)) as handle:
        return json.load(handle)


def stop(workdir, timeout=60):
    try:
        state = load(workdir)
    except FileNotFoundError:
        return 0
    pid = state["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if os.path.exists("/proc/%d" % pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for machine in state["machines"]:
        remove_prefixed_netns(machine["prefix"])
        # what the roles wrote for the machine: the next start begins clean
        shutil.rmtree(machine["root"], ignore_errors=True)
        shutil.rmtree(machine["home"], ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(machine["python"])
    for name in (STATE_FILE, "inventory.yml"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(workdir, name))
    return 0


# --------------------------------------------------------------------------
# probes from a guest
# --------------------------------------------------------------------------
def vm_facts(machine, vm_id):
    """The facts of VM_ID as the core reports them, from the machine's state."""
    from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import StateStore
    from ansible_collections.vmsan.network.plugins.module_utils.model.facts import facts
    return facts(StateStore(machine["home"]).load(vm_id))


def run_expectation(guest, inet, text):
    """One ``KIND:ARGS=open|closed`` check; returns (ok, detail).

    tcp:IP:PORT, udp:IP:PORT, ping:IP from the guest; publish:HOSTPORT:GUESTPORT
    from the internet to the host's uplink address, with a server in the guest.
    """
    what, want = text.rsplit("=", 1)
    kind, rest = what.split(":", 1)
    if kind == "tcp":
        ip, port = rest.rsplit(":", 1)
        got = guest.tcp(ip, int(port))
    elif kind == "udp":
        ip, port = rest.rsplit(":", 1)
        got = guest.udp(ip, int(port))
    elif kind == "ping":
        got = guest.ping(rest) or None
    elif kind == "publish":
        host_port, guest_port = rest.split(":")
        guest.serve_tcp("0.0.0.0", int(guest_port), label="guest")
        got = inet.tcp(topology.HOST_UPLINK_IP, int(host_port))
    else:
        raise SystemExit("unknown probe kind %r in %r" % (kind, text))
    is_open = bool(got)
    return is_open == (want == "open"), "%s -> %s" % (what, repr(got) if got else "no answer")


def probe(workdir, host, vm_id, expectations):
    state = load(workdir)
    machine = next(m for m in state["machines"] if m["name"] == host)
    vm = vm_facts(machine, vm_id)
    results = []
    with contextlib.ExitStack() as stack:
        guest = Guest.attach("%s-g%d" % (machine["prefix"], vm["slot"]), vm, "/run/netns/" + machine["netns"],
                             stack)
        inet = Endpoint(machine["internet"], stack)
        for text in expectations:
            ok, detail = run_expectation(guest, inet, text)
            results.append({"expect": text, "ok": ok, "detail": detail})
    print(json.dumps({"vm": vm_id, "host": host, "results": results}, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "_serve"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("--hosts", type=int, default=1)
    p = sub.add_parser("stop")
    p.add_argument("dir")
    p = sub.add_parser("probe")
    p.add_argument("dir")
    p.add_argument("--host", default="h1")
    p.add_argument("--vm", required=True)
    p.add_argument("--expect", action="append", default=[], help="KIND:ARGS=open|closed")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it creates network namespaces)")
    workdir = os.path.abspath(args.dir)
    if args.command == "start":
        return start(workdir, args.hosts)
    if args.command == "_serve":
        return _serve(workdir, args.hosts)
    if args.command == "stop":
        return stop(workdir)
    return probe(workdir, args.host, args.vm, args.expect)


if __name__ == "__main__":
    sys.exit(main())
