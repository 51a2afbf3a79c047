"""A named network namespace (``/run/netns/NAME``) and the ways to act inside it."""

import json
import os

from . import guard, procs


class CommandError(RuntimeError):
    def __init__(self, argv, result):
        self.argv = argv
        self.result = result
        super().__init__(
            f"{' '.join(map(str, argv))} exited {result.returncode}: "
            f"{(result.stderr or '').strip() or (result.stdout or '').strip()}"
        )


def list_netns():
    try:
        return sorted(os.listdir(guard.NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def add_netns(name):
    """``ip netns add NAME``: a new, empty namespace bound at /run/netns/NAME."""
    argv = ["ip", "netns", "add", name]
    result = procs.run(argv, timeout=10)
    if result.returncode != 0:
        raise CommandError(argv, result)


def _netns_inode_of_pid(pid):
    try:
        return guard.netns_inode(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class Namespace:
    """One network namespace known by name.

    Commands run through ``nsenter --net`` (network namespace only); in-process
    code uses ``entered()``.
    """

    def __init__(self, name):
        self.name = name
        self.path = guard.netns_path(name)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"

    @classmethod
    def create(cls, name, *args, **kwargs):
        ns = cls(name, *args, **kwargs)
        add_netns(name)
        try:
            ns.ip("link set lo up")
        except BaseException:
            ns.delete()
            raise
        return ns

    def exists(self):
        return os.path.exists(self.path)

    def inode(self):
        return guard.netns_inode(self.path)

    # -- commands ---------------------------------------------------------

    def run(self, argv, timeout=10, check=False, input=None, env=None):
        """Run ``argv`` inside this namespace; returns a CompletedProcess (text)."""
        full = procs.nsenter_argv(self.path, argv)
        result = procs.run(full, timeout=timeout, input=input, env=env)
        if check and result.returncode != 0:
            raise CommandError(argv, result)
        return result

    def spawn(self, argv, env=None, **kw):
        """Start ``argv`` in the background inside this namespace (a Popen)."""
        return procs.spawn(procs.nsenter_argv(self.path, argv), env=env, **kw)

    def ip(self, *lines):
        """Apply ``ip`` commands (batch syntax, without the leading ``ip``)."""
        self.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", check=True)

    def ip_json(self, *args):
        out = self.run(["ip", "-json", *args], check=True).stdout
        return json.loads(out) if out.strip() else []

    def sysctl(self, key, value=None):
        """Read (or write, with ``value``) a sysctl of this namespace."""
        if value is None:
            return self.run(["sysctl", "-n", key], check=True).stdout.strip()
        self.run(["sysctl", "-q", "-w", f"{key}={value}"], check=True)
        return str(value)

    def entered(self):
        """Context manager: the calling thread is inside this namespace."""
        return guard.entered(self.name)

    # -- teardown ---------------------------------------------------------

    def pids(self):
        """Processes whose main thread lives in this namespace (never ourselves)."""
        try:
            mine = self.inode()
        except FileNotFoundError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                if _netns_inode_of_pid(entry) == mine:
                    found.append(int(entry))
        return found

    def delete(self):
        """Stop whatever still runs in the namespace, then remove its name.

        The kernel frees the namespace (and the links in it) once nothing holds
        it any more: no process, no open socket or TAP file. Callers close
        those first.
        """
        if not self.exists():
            return
        for pid in self.pids():
            procs.kill_pid(pid)
        argv = ["ip", "netns", "del", self.name]
        result = procs.run(argv, timeout=10)
        if result.returncode != 0 and self.exists():
            raise CommandError(argv, result)
