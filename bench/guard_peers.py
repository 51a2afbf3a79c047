#!/usr/bin/env python3
"""The processes bench/guard_bench.py runs in the sandbox's namespaces, each
its own process (so the guard's thread in the benchmark does not share a
GIL with them):

    guard_peers.py serve CERT KEY                     # internet: TLS on 8443, a cheap responder on 8444
    guard_peers.py latency CAFILE NAME IP,IP N        # guest: TLS connection setup times, interleaved
    guard_peers.py rate HELLO_FILE IP SECONDS CONC    # guest: cheap connections per second

``latency`` prints {ip: [seconds, ...]} (connect + TLS handshake, the
certificate checked); ``rate`` prints {"done": n, "failed": n, "seconds": s}.
A cheap connection is a ClientHello (bytes made by OpenSSL, SNI a.test),
the responder's two-byte answer, and a close.
"""

import json
import selectors
import socket
import ssl
import sys
import threading
import time

TLS_PORT = 8443
CHEAP_PORT = 8444


def serve(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def tls_conn(conn):
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    def tls_loop(listener):
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=tls_conn, args=(conn,), daemon=True).start()

    def listener(port):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(1024)
        return sock

    threading.Thread(target=tls_loop, args=(listener(TLS_PORT),), daemon=True).start()
    cheap = listener(CHEAP_PORT)
    cheap.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(cheap, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is cheap:
                try:
                    conn, _ = cheap.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
                if data:
                    conn.send(b"ok")
            except OSError:
                pass
            sel.unregister(conn)
            conn.close()


def latency(cafile, name, ips, count):
    ctx = ssl.create_default_context(cafile=cafile)
    times = {ip: [] for ip in ips}
    for _ in range(count):
        for ip in ips:
            began = time.perf_counter()
            sock = socket.create_connection((ip, TLS_PORT), timeout=5)
            tls = ctx.wrap_socket(sock, server_hostname=name)
            times[ip].append(time.perf_counter() - began)
            tls.close()
    print(json.dumps(times))


def rate(hello_file, ip, seconds, concurrency):
    hello = open(hello_file, "rb").read()
    sel = selectors.DefaultSelector()
    done = failed = 0
    deadline = time.monotonic() + seconds

    def start():
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        try:
            sock.connect((ip, CHEAP_PORT))
        except BlockingIOError:
            pass
        sel.register(sock, selectors.EVENT_WRITE, [time.monotonic()])

    for _ in range(concurrency):
        start()
    while time.monotonic() < deadline:
        for key, events in sel.select(0.5):
            sock = key.fileobj
            if events & selectors.EVENT_WRITE:
                try:
                    sock.send(hello)
                    sel.modify(sock, selectors.EVENT_READ, key.data)
                    continue
                except OSError:
                    ok = False
            else:
                try:
                    ok = sock.recv(16) == b"ok"
                except OSError:
                    ok = False
            sel.unregister(sock)
            sock.close()
            if ok:
                done += 1
            else:
                failed += 1
            start()
        now = time.monotonic()
        for key in list(sel.get_map().values()):        # a connection stuck for 2 s counts as failed
            if now - key.data[0] > 2.0:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                failed += 1
                start()
    print(json.dumps({"done": done, "failed": failed, "seconds": seconds}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(*args)
    elif cmd == "latency":
        latency(args[0], args[1], args[2].split(","), int(args[3]))
    elif cmd == "rate":
        rate(args[0], args[1], float(args[2]), int(args[3]))
    else:
        sys.exit("unknown command %r" % cmd)
