"""The host daemon's command server: ``vmsan`` commands run in a process
that has the core imported already (docs/cli.md, "The warm path").

It listens on ``$VMSAN_HOME/daemon.sock`` (protocol.py), so every state
directory has its own server, and holds ``$VMSAN_HOME/daemon.lock`` while
it runs, so a state directory has one at most. Who may connect:

* root, always;
* with ``group``, also the members of that group (primary or
  supplementary): the socket is made ``root:GROUP 0660`` and the state
  directory group-traversable. A member can then do whatever root can do
  with ``vmsan`` (like the docker group);
* anyone else is refused (SO_PEERCRED), also if the socket's mode was
  opened by hand, and the command never runs.

A command runs only if the client is in the daemon's network and mount
namespaces and has the daemon's VMSAN_* environment (protocol.ENV_KEYS);
otherwise the daemon declines and the client runs it in-process, where it
has the effect the caller expects.

Each command runs in its own thread through ``executor(argv, stdout,
stderr, env) -> exit status`` (the CLI's), with the same state lock as
in-process callers, so both can run at once. Nothing a command does can
stop the daemon's other threads (DNS, other commands): an exception
becomes exit 1 with its traceback on the command's stderr; a command that
overruns its deadline is reported failed to its client while its thread
runs on (a thread cannot be killed; it keeps the state lock until it
returns, as a stuck process would).
"""

import errno
import fcntl
import grp
import io
import logging
import os
import socket
import stat
import struct
import threading
import time
import traceback

from . import protocol
from ..model.errors import VmsanError

log = logging.getLogger("vmsan.daemon.commands")

DEADLINE = 120.0         # seconds a command may run before its client is told it failed
REQUEST_TIMEOUT = 5.0    # seconds a connected client has to send its request and its "go"
STOP_GRACE = 10.0        # seconds stop() waits for the commands under way
MAX_COMMANDS = 32        # commands under way at once; more are declined (run in-process)
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


class Peer(object):
    """Who is at the other end of a connection (SO_PEERCRED, SO_PEERGROUPS)."""

    def __init__(self, conn):
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        self.pid, self.uid, self.gid = struct.unpack("3i", creds)
        self.groups = self._groups(conn)

    def _groups(self, conn):
        try:
            raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 4096)
            return set(struct.unpack("%dI" % (len(raw) // 4), raw))
        except OSError:
            pass
        try:
            with open("/proc/%d/status" % self.pid) as handle:
                for line in handle:
                    if line.startswith("Groups:"):
                        return {int(g) for g in line.split()[1:]}
        except (OSError, ValueError):
            pass
        return set()

    def namespace(self, kind):
        try:
            return os.stat("/proc/%d/ns/%s" % (self.pid, kind)).st_ino
        except OSError:
            return None


def _group_id(group):
    if group is None:
        return None
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise VmsanError("socket group %r does not exist" % group)


class CommandServer(object):
    """``start()`` binds and serves on a thread of its own; ``stop()`` (or
    leaving a ``with`` block) stops accepting, waits for the commands under
    way (STOP_GRACE) and removes the socket."""

    def __init__(self, executor, state_dir=None, group=None, deadline=DEADLINE, max_commands=MAX_COMMANDS):
        self.executor = executor
        self.home = os.path.abspath(state_dir or protocol.state_dir())
        self.path = protocol.socket_path(self.home)
        self.gid = _group_id(group)
        self.deadline = deadline
        self._slots = threading.BoundedSemaphore(max_commands)
        self._under_way = set()
        self._guard = threading.Lock()
        self._listener = None
        self._lock_fd = None
        self._thread = None
        self._stopping = threading.Event()
        self._socket_ino = None

    # -- life cycle -----------------------------------------------------------
    def __enter__(self):
        return self if self._listener is not None else self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        os.makedirs(self.home, mode=0o750, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.home, protocol.LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise VmsanError("another vmsan daemon serves %s (it holds %s)"
                             % (self.home, os.path.join(self.home, protocol.LOCK_NAME)))
        try:
            self._bind()
        except BaseException:
            self._release()
            raise
        # what a client must share with the daemon to be served (see above)
        self._netns = os.stat("/proc/thread-self/ns/net").st_ino
        self._mntns = os.stat("/proc/thread-self/ns/mnt").st_ino
        self._env = protocol.env_of(dict(os.environ, VMSAN_HOME=self.home))
        self._thread = threading.Thread(target=self._accept_loop, name="vmsan-commands", daemon=True)
        self._thread.start()
        log.info("serving vmsan commands on %s (%s)", self.path,
                 "root only" if self.gid is None else "root and group %d" % self.gid)
        return self

    def _bind(self):
        # A socket left by a daemon that died: we hold the lock, so it is stale.
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        name, dirfd = protocol.connectable(self.path)
        try:
            listener.bind(name)
            # mode and owner before listen(): until then a connect is refused
            if self.gid is None:
                os.chmod(self.path, 0o600)
            else:
                os.chown(self.path, 0, self.gid)
                os.chmod(self.path, 0o660)
                self._grant_directory()
            listener.listen(64)
        except BaseException:
            listener.close()
            raise
        finally:
            if dirfd is not None:
                os.close(dirfd)
        self._socket_ino = os.lstat(self.path).st_ino
        self._listener = listener

    def _grant_directory(self):
        """The group must be able to reach the socket: the state directory
        becomes root:GROUP and group-searchable (its files keep their modes)."""
        st = os.stat(self.home)
        if st.st_gid != self.gid:
            os.chown(self.home, -1, self.gid)
        if not st.st_mode & stat.S_IXGRP:
            os.chmod(self.home, stat.S_IMODE(st.st_mode) | stat.S_IXGRP)

    def stop(self):
        if self._listener is None:
            return
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes accept()
        except OSError:
            pass
        self._listener.close()
        if self._thread is not None:
            self._thread.join(5)
        end = time.monotonic() + STOP_GRACE
        while time.monotonic() < end:
            with self._guard:
                if not self._under_way:
                    break
            time.sleep(0.02)
        try:
            if os.lstat(self.path).st_ino == self._socket_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._listener = None
        self._release()
        log.info("stopped serving vmsan commands on %s", self.path)

    def _release(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- connections ----------------------------------------------------------
    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                conn, _unused = self._listener.accept()
            except OSError as exc:
                if self._stopping.is_set() or exc.errno in (errno.EBADF, errno.EINVAL):
                    return              # stopped, or the listener is gone
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.05)     # out of descriptors: let commands finish
                continue
            threading.Thread(target=self._connection, args=(conn,), name="vmsan-command", daemon=True).start()

    def _connection(self, conn):
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            self._converse(conn)
        except (protocol.ProtocolError, socket.timeout, OSError) as exc:
            log.debug("command connection ended: %s", exc)
        except Exception:
            log.exception("command connection failed")
        finally:
            conn.close()

    def _converse(self, conn):
        peer = Peer(conn)
        refusal = self._refusal(peer)
        if refusal:
            # before reading anything of theirs; what they sent is read and
            # dropped (a little, briefly), so that their side sees the answer
            # instead of a broken pipe
            log.warning("refused a command from uid %d (pid %d): %s", peer.uid, peer.pid, refusal)
            protocol.send(conn, {"type": "refused", "message": refusal})
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(1.0)
            for _unused in range(16):
                if not conn.recv(4096):
                    break
            return
        request = protocol.receive(conn, limit=protocol.MAX_REQUEST)
        reason = self._decline_reason(peer, request)
        if reason is None and not self._slots.acquire(blocking=False):
            reason = "%d commands under way" % MAX_COMMANDS
        if reason:
            log.debug("declined a command from pid %d: %s", peer.pid, reason)
            protocol.send(conn, {"type": "decline", "reason": reason})
            return
        try:
            protocol.send(conn, {"type": "ready"})
            if protocol.receive(conn, limit=protocol.MAX_REQUEST).get("type") != "go":
                return          # the client gave up: nothing ran
            self._run(conn, peer, [str(a) for a in request["argv"]], dict(request.get("env") or {}))
        finally:
            self._slots.release()

    def _refusal(self, peer):
        if peer.uid == 0:
            return None
        if self.gid is not None and (peer.gid == self.gid or self.gid in peer.groups):
            return None
        if self.gid is None:
            return "uid %d is not root; the daemon at %s serves root only" % (peer.uid, self.path)
        return "uid %d is neither root nor in group %d; the daemon at %s serves those only" % (
            peer.uid, self.gid, self.path)

    def _decline_reason(self, peer, request):
        if request.get("type") != "request" or request.get("v") != protocol.VERSION:
            return "protocol version %r, the daemon speaks %d" % (request.get("v"), protocol.VERSION)
        if not isinstance(request.get("argv"), list) or not request["argv"]:
            return "no command"
        # Where the client is: what it says, checked against /proc where the
        # daemon may read the peer's (with fewer capabilities than a root
        # client it may not: ptrace rules). Its word is enough: a client
        # that lied would only have its command run here, where it is
        # allowed to run commands anyway.
        claimed = request.get("ns") or {}
        seen = {kind: peer.namespace(kind) for kind in ("net", "mnt")}
        for kind, mine in (("net", self._netns), ("mnt", self._mntns)):
            if claimed.get(kind) != mine or seen[kind] not in (None, mine):
                return "the client is in another network or mount namespace"
        env = dict(request.get("env") or {})
        if env.get("VMSAN_HOME"):
            env["VMSAN_HOME"] = os.path.realpath(env["VMSAN_HOME"])
        mine = dict(self._env, VMSAN_HOME=os.path.realpath(self._env["VMSAN_HOME"]))
        if env != mine:
            differ = sorted(k for k in set(env) | set(mine) if env.get(k) != mine.get(k))
            return "the client's %s differ from the daemon's" % ", ".join(differ)
        return None

    # -- one command ------------------------------------------------------------
    def _run(self, conn, peer, argv, env):
        stdout, stderr = io.StringIO(), io.StringIO()
        outcome = {}
        finished = threading.Event()
        began = time.monotonic()

        def work():
            try:
                if os.stat("/proc/thread-self/ns/net").st_ino != self._netns:
                    raise VmsanError("the daemon's command thread is in another network namespace")
                outcome["exit"] = self.executor(argv, stdout, stderr, env)
            except SystemExit as exc:
                outcome["exit"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    stderr.write("%s\n" % exc.code)
            except BaseException:
                stderr.write(traceback.format_exc())
                outcome["exit"] = 1
            finally:
                finished.set()
                with self._guard:
                    self._under_way.discard(worker)

        worker = threading.Thread(target=work, name="vmsan-command-%s" % argv[0], daemon=True)
        with self._guard:
            self._under_way.add(worker)
        worker.start()
        listening = True
        while not finished.wait(protocol.HEARTBEAT):
            if time.monotonic() - began > self.deadline:
                log.error("command %r of uid %d overran its deadline of %g s; its thread runs on",
                          argv, peer.uid, self.deadline)
                protocol.send(conn, {"type": "done", "exit": 1, "stdout": "", "stderr":
                                     "vmsan: the daemon did not finish %r within %g s; it may still be running "
                                     "(see the daemon's log; the next command converges what it leaves)\n"
                                     % (argv[0], self.deadline)})
                return
            if listening:
                try:
                    protocol.send(conn, {"type": "running"})
                except OSError:
                    # the client went away (interrupted): the command runs to its end
                    listening = False
        code = outcome.get("exit")
        code = code if isinstance(code, int) else 1
        log.debug("command %r of uid %d: exit %d in %.1f ms", argv, peer.uid, code, (time.monotonic() - began) * 1e3)
        if listening:
            protocol.send(conn, {"type": "done", "exit": code, "stdout": stdout.getvalue(),
                                 "stderr": stderr.getvalue()})
