"""The warm command path's wire protocol (docs/cli.md, "The warm path").

A ``vmsan`` process (the client, faces/client.py) hands its command to the
host daemon (daemon/commands.py) over a Unix stream socket in the state
directory, so each state directory (a host, a sandbox, a parallel test) has
its own. Every message is a frame: 4 bytes of big-endian length, then the
message's fields, each 4 bytes of length and that many bytes of UTF-8; the
first field is the message's type:

    client                                  daemon
    request  VERSION NETNS MNTNS ARGC ARGV... KEY=VALUE... ->
                                            <- ready             (will run it)
                                               decline REASON    (run it yourself)
                                               refused MESSAGE   (not for this user)
    go                                      ->
                                            <- running           (every HEARTBEAT s)
                                            <- done EXIT STDOUT STDERR

The daemon starts the command only after ``go``: a client that gave up
waiting for ``ready`` (and runs the command in-process) closes the
connection instead, so a command never runs twice.

This module is imported by the client, which must stay cheap: it uses the
C modules ``_socket`` and ``_struct`` and ``os`` only (``socket`` and ``json``
would add ~8 ms to every command).
"""

import os
import _socket
import _struct

VERSION = 1
SOCKET_NAME = "daemon.sock"
LOCK_NAME = "daemon.lock"
# As lifecycle/state.py's home() (the client does not import it: its
# imports cost ~15 ms); tests/unit/test_warm_protocol.py keeps them equal.
DEFAULT_HOME = "/var/lib/vmsan"

# The environment that decides what a command does. The daemon runs a
# command only if the client's values are its own (otherwise the client
# runs it in-process): VMSAN_HOME names the state directory,
# VMSAN_SANDBOX_ONLY arms the root-namespace guard, VMSAN_FAIL_AT injects
# failures into one process.
ENV_KEYS = ("VMSAN_HOME", "VMSAN_SANDBOX_ONLY", "VMSAN_FAIL_AT")

HEARTBEAT = 0.2          # seconds between "running" frames
MAX_FRAME = 16 << 20     # a frame larger than this is a protocol error
MAX_REQUEST = 1 << 20    # what the daemon reads of a client's request at most
_LENGTH = _struct.Struct(">I")

# the fields after the type, by type
KINDS = ("request", "ready", "decline", "refused", "go", "running", "done")


class ProtocolError(Exception):
    """The other side sent something that is not this protocol, or closed."""


def state_dir(env=None):
    env = os.environ if env is None else env
    return env.get("VMSAN_HOME") or DEFAULT_HOME


def socket_path(home=None):
    return os.path.join(home or state_dir(), SOCKET_NAME)


def env_of(environ=None):
    """The ENV_KEYS part of ENVIRON (default: this process's), state
    directory made absolute so that two spellings of one directory agree."""
    environ = os.environ if environ is None else environ
    out = {key: environ[key] for key in ENV_KEYS if environ.get(key)}
    out["VMSAN_HOME"] = os.path.abspath(state_dir(environ))
    return out


def connectable(path):
    """A name connect() and bind() accept: sun_path holds 107 bytes, so a
    longer path is reached through /proc/self/fd of its directory (the
    caller closes the returned fd, if any)."""
    if len(os.fsencode(path)) < 108:
        return path, None
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return "/proc/self/fd/%d/%s" % (fd, os.path.basename(path)), fd


def encode(message):
    """A message (a dict with a ``type``) as its frame."""
    kind = message["type"]
    if kind == "request":
        env = message.get("env") or {}
        ns = message.get("ns") or {}
        fields = [str(message["v"]), str(ns.get("net", 0)), str(ns.get("mnt", 0)), str(len(message["argv"]))] + \
            list(message["argv"]) + ["%s=%s" % item for item in sorted(env.items())]
    elif kind == "decline":
        fields = [message["reason"]]
    elif kind == "refused":
        fields = [message["message"]]
    elif kind == "done":
        fields = [str(int(message["exit"])), message["stdout"], message["stderr"]]
    elif kind in KINDS:
        fields = []
    else:
        raise ValueError("no message type %r" % kind)
    body = b"".join(_LENGTH.pack(len(f)) + f for f in [f.encode("utf-8") for f in [kind] + fields])
    return _LENGTH.pack(len(body)) + body


def decode(body):
    """The message a frame's body holds (see encode)."""
    fields, at = [], 0
    while at < len(body):
        if at + 4 > len(body):
            raise ProtocolError("truncated field")
        (n,) = _LENGTH.unpack_from(body, at)
        if at + 4 + n > len(body):
            raise ProtocolError("truncated field")
        fields.append(body[at + 4:at + 4 + n].decode("utf-8", "replace"))
        at += 4 + n
    if not fields or fields[0] not in KINDS:
        raise ProtocolError("not a message of this protocol")
    kind, rest = fields[0], fields[1:]
    try:
        if kind == "request":
            argc = int(rest[3])
            argv, pairs = rest[4:4 + argc], rest[4 + argc:]
            if len(argv) != argc:
                raise ValueError("argc")
            return {"type": kind, "v": int(rest[0]), "ns": {"net": int(rest[1]), "mnt": int(rest[2])},
                    "argv": argv, "env": dict(p.split("=", 1) for p in pairs)}
        if kind == "decline":
            return {"type": kind, "reason": rest[0]}
        if kind == "refused":
            return {"type": kind, "message": rest[0]}
        if kind == "done":
            return {"type": kind, "exit": int(rest[0]), "stdout": rest[1], "stderr": rest[2]}
    except (IndexError, ValueError):
        raise ProtocolError("malformed %s message" % kind)
    return {"type": kind}


def send(sock, message):
    sock.sendall(encode(message))


def _read_exactly(sock, n):
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(sock, limit=MAX_FRAME):
    """The next message (a dict with a ``type``). Raises ProtocolError on a
    closed connection or a frame larger than LIMIT or malformed,
    TimeoutError (socket.timeout) when the socket's timeout passes."""
    (length,) = _LENGTH.unpack(_read_exactly(sock, _LENGTH.size))
    if length > limit:
        raise ProtocolError("frame of %d bytes (at most %d)" % (length, limit))
    return decode(_read_exactly(sock, length))


def namespaces():
    """{"net": inode, "mnt": inode} of the calling thread's network and mount
    namespaces: the client says where it is (see commands.py for why the
    daemon may take its word)."""
    return {kind: os.stat("/proc/thread-self/ns/" + kind).st_ino for kind in ("net", "mnt")}


def peer_uid(sock):
    """The uid of the process at the other end of a connected Unix socket."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return _struct.unpack("3i", creds)[1]


def unix_socket():
    return _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
