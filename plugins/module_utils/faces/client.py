"""The ``vmsan`` command's entry point: hands the command to the host
daemon when one serves this state directory (the warm path: the
interpreter's start and ~2 ms of imports here, the work in a process that
has the core imported), otherwise runs it in this process (faces/cli.py).

Output, JSON and exit status are the same either way: the daemon runs the
same CLI code and sends back its stdout, stderr and exit status. The rules
(docs/cli.md, "The warm path"):

* only ``create``, ``network``, ``port``, ``list``, ``show`` and ``remove``
  go to the daemon (``--help`` never does); ``--no-daemon`` anywhere on the
  command line, or VMSAN_NO_DAEMON=1, keeps the command in-process;
* no socket, a socket nobody listens on, a daemon that declines (another
  namespace, other VMSAN_* settings, too busy, another protocol version):
  in-process, silently;
* a daemon that does not say "ready" within READY_TIMEOUT: in-process, with
  a warning (the daemon never starts a command it did not confirm);
* a daemon that goes silent (no frame for SILENCE_TIMEOUT) or dies after it
  started the command: ``list``, ``show`` and ``port list`` run again
  in-process; a command that changes something fails with exit 1 and says
  so, since it may have been carried out in part (the next command
  converges what it left);
* a user the daemon does not serve: exit 1 with the daemon's refusal (or
  the socket's EACCES); nothing runs.

This module imports only os, sys, time and the protocol (which uses the C
modules _socket and _struct): no pyroute2, no python-iptables, not even
socket or json.
"""

import errno
import os
import sys
import time

from ..daemon import protocol

WARM_COMMANDS = frozenset(("create", "network", "port", "list", "show", "remove"))
NO_DAEMON = "--no-daemon"
READY_TIMEOUT = 0.5      # seconds from connect() to "ready"
SILENCE_TIMEOUT = 1.0    # seconds without a frame once the command runs (heartbeats come every 0.2 s)

_GONE = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK, errno.ENOTDIR, errno.ECONNRESET, errno.EPIPE)


class Answer(object):
    def __init__(self, code, stdout="", stderr=""):
        self.code, self.stdout, self.stderr = code, stdout, stderr


def quiet_on_closed_pipe(fn):
    """FN()'s exit status; when stdout's reader went away (``vmsan list
    --json | head``), exit 1 without a traceback, and without a second
    BrokenPipeError when Python flushes stdout at exit."""
    try:
        status = fn()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


def main(argv=None):
    return quiet_on_closed_pipe(lambda: _main(argv))


def _main(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    forced = NO_DAEMON in argv
    argv = [a for a in argv if a != NO_DAEMON]
    if not forced and os.environ.get("VMSAN_NO_DAEMON") != "1" and warm_command(argv):
        try:
            answer = through_daemon(argv)
        except KeyboardInterrupt:       # before the daemon was told to go: nothing ran
            sys.stderr.write("vmsan: interrupted\n")
            return 1
        if answer is not None:
            sys.stdout.write(answer.stdout)
            sys.stdout.flush()
            sys.stderr.write(answer.stderr)
            sys.stderr.flush()
            return answer.code
    from .cli import main as in_process
    return in_process(argv)


def warm_command(argv):
    """Whether ARGV is a command the daemon serves."""
    if not argv or argv[0] not in WARM_COMMANDS:
        return False
    return not any(a in ("-h", "--help") for a in argv)


def read_only(argv):
    positional = [a for a in argv if not a.startswith("-")]
    return positional[:1] in (["list"], ["show"]) or positional[:2] == ["port", "list"]


def _warn(message):
    sys.stderr.write("vmsan: warning: %s; running in-process\n" % message)


def through_daemon(argv, path=None, environ=None):
    """The daemon's Answer for ARGV, or None: run it in-process."""
    path = path or protocol.socket_path(protocol.state_dir(environ))
    began = time.monotonic()
    sock = protocol.unix_socket()
    try:
        sock.settimeout(READY_TIMEOUT)
        name, dirfd = protocol.connectable(path)
        try:
            sock.connect(name)
        finally:
            if dirfd is not None:
                os.close(dirfd)
        server = protocol.peer_uid(sock)
        if server not in (0, os.geteuid()):
            # not a vmsan daemon (which runs as root): someone's socket in a
            # state directory they can write; never take its word
            _warn("the socket %s is served by uid %d, not root: ignoring it" % (path, server))
            sock.close()
            return None
        protocol.send(sock, {"type": "request", "v": protocol.VERSION, "ns": protocol.namespaces(),
                             "argv": argv, "env": protocol.env_of(environ)})
        sock.settimeout(max(0.01, READY_TIMEOUT - (time.monotonic() - began)))
        first = protocol.receive(sock)
    except TimeoutError:
        _warn("the vmsan daemon at %s did not answer within %.1f s" % (path, READY_TIMEOUT))
        sock.close()
        return None
    except PermissionError:
        sock.close()
        return Answer(1, stderr="vmsan: permission denied on the vmsan daemon's socket %s: vmsan commands need "
                                "root, or membership of the group the daemon grants (docs/cli.md)\n" % path)
    except OSError as exc:
        sock.close()
        if exc.errno not in _GONE:
            _warn("cannot reach the vmsan daemon at %s (%s)" % (path, exc.strerror or exc))
        return None
    except protocol.ProtocolError:
        sock.close()       # a daemon that closed on us (stopping): nothing ran
        return None
    try:
        return _after_first(sock, first, argv, path)
    finally:
        sock.close()


def _after_first(sock, first, argv, path):
    kind = first["type"]
    if kind == "refused":
        return Answer(1, stderr="vmsan: the vmsan daemon at %s refused this command: %s\n" % (path, first.get("message")))
    if kind != "ready":
        return None     # "decline" (or a type this client does not know): in-process
    try:
        protocol.send(sock, {"type": "go"})
        sock.settimeout(SILENCE_TIMEOUT)
        while True:
            message = protocol.receive(sock)
            if message["type"] == "done":
                return Answer(int(message.get("exit", 1)), message.get("stdout", ""), message.get("stderr", ""))
    except KeyboardInterrupt:
        return Answer(1, stderr="vmsan: interrupted; the vmsan daemon runs the command to its end\n")
    except (TimeoutError, protocol.ProtocolError, OSError, ValueError, TypeError) as exc:
        what = "went silent" if isinstance(exc, TimeoutError) else "stopped"
        if read_only(argv):
            _warn("the vmsan daemon at %s %s while it ran %r" % (path, what, argv[0]))
            return None
        return Answer(1, stderr="vmsan: the vmsan daemon at %s %s while it ran %r: the command may have been "
                                "carried out in part; 'vmsan list' and 'vmsan show VM' tell what is there, and the "
                                "next command converges it ('vmsan remove VM' removes a half-made VM)\n"
                                % (path, what, argv[0]))
