"""Throwaway network namespaces for the real-guest tests (test code only).

``ScratchNetns`` creates ``/run/netns/<name>``, runs commands in it with
``nsenter --net=`` (never ``ip netns exec``), starts helper processes there, and on
exit kills them, deletes every link it made and the namespace itself, also when the
test failed. Nothing here touches the root network namespace.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

_counter = itertools.count()

# A TCP server that answers every connection with a payload line and closes.
PAYLOAD_SERVER = textwrap.dedent(r"""
    import os, signal
    signal.alarm(int(os.environ.get("RG_SERVER_LIFETIME", "600")))  # never outlive a test run by much
    import socket, sys
    host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    print("LISTENING", flush=True)
    while True:
        c, peer = s.accept()
        try:
            c.sendall(payload + b" to " + peer[0].encode() + b"\n")
        finally:
            c.close()
    """)

# A TCP server that accepts and sends nothing (a probe must call that a failure).
SILENT_SERVER = textwrap.dedent(r"""
    import os, signal
    signal.alarm(int(os.environ.get("RG_SERVER_LIFETIME", "600")))  # never outlive a test run by much
    import socket, sys, threading, time
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(16)
    print("LISTENING", flush=True)
    held = []
    while True:
        c, _ = s.accept()
        held.append(c)  # keep it open, say nothing
    """)

# An authoritative-only DNS server for A records: NAME=IP arguments; NAME=REFUSED
# answers REFUSED; other names get NXDOMAIN; other types an empty answer.
DNS_SERVER = textwrap.dedent(r"""
    import os, signal
    signal.alarm(int(os.environ.get("RG_SERVER_LIFETIME", "600")))  # never outlive a test run by much
    import socket, struct, sys
    host = sys.argv[1]
    records = dict(a.lower().split("=", 1) for a in sys.argv[2:])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 53))
    print("LISTENING", flush=True)
    while True:
        q, peer = s.recvfrom(4096)
        try:
            qid, flags, qdcount = struct.unpack("!HHH", q[:6])
            i, labels = 12, []
            while q[i]:
                n = q[i]
                labels.append(q[i + 1 : i + 1 + n].decode("ascii").lower())
                i += 1 + n
            qtype = struct.unpack("!H", q[i + 1 : i + 3])[0]
            question = q[12 : i + 5]
        except (struct.error, IndexError, UnicodeDecodeError):
            continue
        value = records.get(".".join(labels))
        rcode, answer = 0, b""
        if value is None:
            rcode = 3
        elif value == "refused":
            rcode = 5
        elif qtype == 1:
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(value)
        flags = 0x8000 | 0x0400 | (flags & 0x0100) | rcode
        s.sendto(struct.pack("!HHHHHH", qid, flags, 1, 1 if answer else 0, 0, 0) + question + answer, peer)
    """)

# An HTTP server that answers GET with the Host header and path it saw.
HTTP_SERVER = textwrap.dedent(r"""
    import os, signal
    signal.alarm(int(os.environ.get("RG_SERVER_LIFETIME", "600")))  # never outlive a test run by much
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            status = 404 if self.path.startswith("/missing") else 200
            body = f"HTTP-OK host={self.headers.get('Host')} path={self.path}\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    srv = HTTPServer((sys.argv[1], int(sys.argv[2])), H)
    print("LISTENING", flush=True)
    srv.serve_forever()
    """)

# Connect, read until EOF or timeout, print what was read (repr) and exit 0 if non-empty.
TCP_CLIENT = textwrap.dedent(r"""
    import socket, sys, time
    host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    end = time.monotonic() + timeout
    data = b""
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        while time.monotonic() < end:
            s.settimeout(max(0.05, end - time.monotonic()))
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        print("ERROR", exc)
        sys.exit(2)
    sys.stdout.write(data.decode("utf-8", "replace"))
    sys.exit(0 if data else 1)
    """)


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


def _check_not_root(path: str) -> None:
    if _same_netns(path):
        raise RuntimeError(f"{path} is the root network namespace")


STALE_RE = re.compile(r"^(rgself|rgtest|rgmeasure)-(\d+)-\d+$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list:
    """Remove namespaces an earlier, killed test run of this fixture left behind.

    Only names this module makes (``<prefix>-<pid>-<n>``) whose creating process is
    gone; the processes still inside them are ours (servers of that run): killed.
    """
    removed = []
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = STALE_RE.match(name)
        if not m or _pid_alive(int(m.group(2))):
            continue
        pids = subprocess.run(["ip", "netns", "pids", name], stdout=subprocess.PIPE, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
        removed.append(name)
    return removed


class ScratchNetns:
    def __init__(self, prefix: str = "rgtest"):
        self.name = f"{prefix}-{os.getpid()}-{next(_counter)}"
        self.path = f"/run/netns/{self.name}"
        self.procs: list = []
        self.links: list = []

    # -- lifecycle ----------------------------------------------------------------
    def __enter__(self) -> "ScratchNetns":
        remove_stale()
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            _check_not_root(self.path)
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        if os.path.exists(self.path):
            # Delete our links explicitly first, so none can end up anywhere else.
            for link in reversed(self.links):
                subprocess.run(
                    ["nsenter", f"--net={self.path}", "ip", "link", "del", "dev", link],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)
        self.links.clear()

    # -- commands -----------------------------------------------------------------
    def cmd(self, *args) -> list:
        return ["nsenter", f"--net={self.path}", "--", *map(str, args)]

    def run(self, *args, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            self.cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed in {self.name}: {proc.stderr.strip()}")
        return proc

    def popen(self, *args, **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.cmd(*args), start_new_session=True, **kw)
        self.procs.append(p)
        return p

    # -- building blocks ----------------------------------------------------------
    def add_tap(self, name: str, cidr: str, vnet_hdr: bool = True) -> None:
        args = ["ip", "tuntap", "add", "dev", name, "mode", "tap"]
        if vnet_hdr:
            args.append("vnet_hdr")
        self.run(*args)
        self.links.append(name)
        self.run("ip", "addr", "add", cidr, "dev", name)
        self.run("ip", "link", "set", name, "up")

    def add_local_address(self, cidr: str) -> None:
        """An extra address of this namespace (on lo): a target behind the gateway."""
        self.run("ip", "addr", "add", cidr, "dev", "lo")

    def _server(self, script: str, *args, timeout: float = 10) -> subprocess.Popen:
        p = self.popen(sys.executable, "-c", script, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        end = time.monotonic() + timeout
        line = b""
        while time.monotonic() < end and p.poll() is None:
            line = p.stdout.readline()
            if line.strip() == b"LISTENING":
                return p
        raise RuntimeError(f"server {args} did not start: {line!r} {p.stderr.read()!r}")

    def payload_server(self, host: str, port: int, payload: str) -> subprocess.Popen:
        """TCP: every connection gets one line ``<payload> to <peer-ip>``, then the close."""
        return self._server(PAYLOAD_SERVER, host, port, payload)

    def silent_server(self, host: str, port: int) -> subprocess.Popen:
        return self._server(SILENT_SERVER, host, port)

    def dns_server(self, host: str, records: dict) -> subprocess.Popen:
        return self._server(DNS_SERVER, host, *(f"{k}={v}" for k, v in records.items()))

    def http_server(self, host: str, port: int = 80) -> subprocess.Popen:
        return self._server(HTTP_SERVER, host, port)

    def tcp_read(self, host: str, port: int, timeout: float = 3) -> tuple:
        """(ok, text): connect from this namespace and read until the peer closes."""
        proc = self.run(sys.executable, "-c", TCP_CLIENT, host, port, timeout, check=False, timeout=timeout + 10)
        return proc.returncode == 0, proc.stdout
