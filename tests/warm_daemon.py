"""The warm path's command server in a sandbox's host namespace, for the
integration tests and the benchmarks: started as its own process
(``python -m ...faces.warm``, the server ``vmsan daemon`` runs), stopped
on exit. Its log is DEBUG, so a test can tell which commands it served."""

import contextlib
import os
import subprocess
import sys
import time

MODULE = "ansible_collections.vmsan.network.plugins.module_utils.faces.warm"


class Served(object):
    def __init__(self, sandbox, proc, log_path):
        self.sandbox, self.proc, self.log_path = sandbox, proc, log_path
        self.socket = os.path.join(sandbox.home, "daemon.sock")

    def log(self):
        with open(self.log_path) as handle:
            return handle.read()

    def served(self):
        """The argv of each command it ran, in order."""
        import ast
        return [ast.literal_eval(line.split(" DEBUG command ", 1)[1].split(" of uid")[0])
                for line in self.log().splitlines() if " DEBUG command [" in line]

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def _listening(path):
    """Whether a server accepts connections on PATH (a socket file left by a
    killed server is there too, but refuses them)."""
    import socket
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


@contextlib.contextmanager
def command_server(sandbox, env=None, timeout=30.0):
    """A Served, once it accepts connections."""
    log_path = os.path.join(sandbox.home, "commands.log")
    log = open(log_path, "ab")
    proc = sandbox.host.spawn([sys.executable, "-m", MODULE, "--log-level", "debug"],
                              env=sandbox.vmsan_env(env), stdout=log, stderr=log)
    served = Served(sandbox, proc, log_path)
    try:
        end = time.monotonic() + timeout
        while not _listening(served.socket):
            if proc.poll() is not None:
                raise RuntimeError("the command server exited %s: %s" % (proc.returncode, served.log()[-2000:]))
            if time.monotonic() > end:
                raise RuntimeError("the command server did not start within %.0f s" % timeout)
            time.sleep(0.02)
        yield served
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
