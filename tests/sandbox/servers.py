"""Small TCP and UDP servers that run as threads of the test process.

A server's sockets are created while the constructing thread is inside the
target namespace; a socket stays in the namespace it was made in, so the
serving threads need no namespace switching of their own. ``close()`` stops
the threads and closes every socket: an open socket would keep its namespace
(and the links in it) alive after ``ip netns del``.
"""

import errno
import selectors
import socket
import threading
import time
from dataclasses import dataclass

from .guard import entered


@dataclass(frozen=True)
class Peer:
    """The two ends of a connection or datagram, as seen by the server."""

    local_ip: str
    local_port: int
    peer_ip: str
    peer_port: int


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _bind_when_ready(sock, addr, port, wait=2.0):
    """sock.bind, waiting while the kernel has not made the address usable
    yet (EADDRNOTAVAIL right after ``ip addr add`` was seen under load, once in
    some hundred sandboxes): the harness's own setup, never the product's."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return sock.bind((addr, port))
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _bind(ns_name, kind, binds):
    socks = []
    with entered(ns_name):
        try:
            for addr, port in binds:
                sock = socket.socket(_family(addr), kind)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if _family(addr) == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                _bind_when_ready(sock, addr, port)
                if kind == socket.SOCK_STREAM:
                    sock.listen(128)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
    return socks


class _SelectLoop:
    """One thread waiting on a set of sockets, woken by ``close()``."""

    def __init__(self, name, socks):
        self.name = name
        self._socks = socks
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @property
    def stopping(self):
        return self._stop

    def start(self):
        self._thread.start()
        return self

    def _loop(self):
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        for sock in self._socks:
            sel.register(sock, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select():
                    if key.fileobj is not self._wake_r:
                        self._ready(key.fileobj)
        finally:
            sel.close()

    def _ready(self, sock):
        raise NotImplementedError

    def close(self):
        self._stop.set()
        self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in self._socks:
            sock.close()
        self._wake_r.close()
        self._wake_w.close()


class UdpServer(_SelectLoop):
    """``handler(data: bytes, peer: Peer) -> bytes | None``; a reply goes back
    from the address the datagram came to (one socket per address, so the
    source of the reply is right without IP_PKTINFO)."""

    def __init__(self, ns_name, binds, handler, name="udp"):
        super().__init__(name, _bind(ns_name, socket.SOCK_DGRAM, binds))
        self._handler = handler

    def _ready(self, sock):
        try:
            data, src = sock.recvfrom(65535)
        except OSError:
            return
        local = sock.getsockname()
        reply = self._handler(data, Peer(local[0], local[1], src[0], src[1]))
        if reply:
            try:
                sock.sendto(reply, src)
            except OSError:
                pass


class TcpServer(_SelectLoop):
    """``handler(conn: socket, peer: Peer, stopping: Event)`` runs in a thread
    per connection; the connection is closed when it returns."""

    def __init__(self, ns_name, binds, handler, name="tcp", conn_timeout=5.0):
        super().__init__(name, _bind(ns_name, socket.SOCK_STREAM, binds))
        self._handler = handler
        self._conn_timeout = conn_timeout
        self._lock = threading.Lock()
        self._conns = {}

    def _ready(self, listener):
        try:
            conn, src = listener.accept()
        except OSError:
            return
        conn.settimeout(self._conn_timeout)
        local = conn.getsockname()
        peer = Peer(local[0], local[1], src[0], src[1])
        thread = threading.Thread(
            target=self._serve, args=(conn, peer), name=f"{self.name}-conn", daemon=True
        )
        with self._lock:
            self._conns[thread] = conn
        thread.start()

    def _serve(self, conn, peer):
        try:
            self._handler(conn, peer, self.stopping)
        except OSError:
            pass  # the client went away; nothing to report
        finally:
            try:
                conn.close()
            finally:
                with self._lock:
                    self._conns.pop(threading.current_thread(), None)

    def close(self):
        super().close()
        with self._lock:
            pending = dict(self._conns)
        for thread, conn in pending.items():
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv
            except OSError:
                pass
            thread.join(2)
            conn.close()
