"""What the sandbox's servers say, and the log of who talked to them.

Each reply names the address the client reached and the address the client
came from (``hello <local-ip> <peer-ip>``), so a test sees at once whether its
traffic was masqueraded and which destination it really hit.
"""

import threading
import time
from dataclasses import dataclass

from .servers import TcpServer, UdpServer

STREAM_INTERVAL = 0.02  # seconds between two lines of the streaming server


@dataclass(frozen=True)
class Received:
    """One datagram, or one TCP connection, that reached a server."""

    src_ip: str
    src_port: int
    payload: bytes
    time: float
    proto: str
    dst_ip: str
    dst_port: int


class Recorder:
    def __init__(self):
        self._lock = threading.Lock()
        self._items = []

    def add(self, proto, peer, payload=b""):
        item = Received(
            peer.peer_ip,
            peer.peer_port,
            payload,
            time.time(),
            proto,
            peer.local_ip,
            peer.local_port,
        )
        with self._lock:
            self._items.append(item)

    def items(self, proto=None):
        with self._lock:
            return [i for i in self._items if proto is None or i.proto == proto]

    def clear(self):
        with self._lock:
            self._items.clear()


def line(label, peer):
    return f"{label} {peer.local_ip} {peer.peer_ip}\n".encode()


def greeting(label, recorder):
    """TCP: send one line on connect, then close."""

    def handle(conn, peer, stopping):
        recorder.add("tcp", peer)
        conn.sendall(line(label, peer))

    return handle


def http(recorder):
    """TCP: a minimal HTTP/1.0 server answering ``vmsan-ok <local-ip>``."""

    def handle(conn, peer, stopping):
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 16384:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        recorder.add("tcp", peer, head)
        body = f"vmsan-ok {peer.local_ip}\n".encode()
        conn.sendall(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    return handle


def stream(recorder, interval=STREAM_INTERVAL):
    """TCP: a line every ``interval`` until the client goes or the server stops."""

    def handle(conn, peer, stopping):
        recorder.add("tcp", peer)
        n = 0
        while not stopping.wait(interval):
            n += 1
            conn.sendall(f"tick {n} {peer.local_ip} {peer.peer_ip}\n".encode())

    return handle


def echo_line(label, recorder):
    """UDP: answer every datagram with one line, and log it."""

    def handle(data, peer):
        recorder.add("udp", peer, data)
        return line(label, peer)

    return handle


class Service:
    """A running server plus the log of what reached it."""

    def __init__(self, server, recorder):
        self.server = server
        self.recorder = recorder

    def received(self):
        return self.recorder.items()

    def close(self):
        self.server.close()


def serve_tcp_greeting(ns_name, addr, port, label):
    recorder = Recorder()
    server = TcpServer(ns_name, [(addr, port)], greeting(label, recorder), name=f"{label}-{port}")
    return Service(server.start(), recorder)


def serve_udp_echo(ns_name, addr, port, label):
    recorder = Recorder()
    server = UdpServer(ns_name, [(addr, port)], echo_line(label, recorder), name=f"{label}-{port}")
    return Service(server.start(), recorder)
