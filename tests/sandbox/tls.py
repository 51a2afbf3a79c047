"""A TLS server in the sandbox's internet that serves several names on one
address, for the name guard's tests: a certificate per name (self-signed,
made with the ``openssl`` command when the server starts), chosen by the
client's SNI; DNS records for the names.

    site = sandbox.tls.TlsSite.start(sb.internet)        # a.test b.test c.test on 203.0.113.10, d.test on .11
    guest.run(["curl", "--cacert", site.ca_file, "--resolve", "a.test:8443:203.0.113.10", "https://a.test:8443/"])
    site.handshakes()    # [Handshake(sni, local_ip, peer_ip)] that completed

After the handshake it reads one HTTP/1.x request and answers
``tls <sni> <local-ip>`` (HTTP/1.1, Connection: close); the path ``/echo``
instead echoes what the client sends, line by line, until it closes (a flow
that stays open). Port 8443: the internet's port 443 is the DoH-looking
greeting (docs/testing.md).
"""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass

from . import topology as t
from .servers import TcpServer

PORT = 8443
SHARED = t.WEB_A        # a.test, b.test, c.test
OTHER = t.WEB_B         # d.test
NAMES = {"a.test": SHARED, "b.test": SHARED, "c.test": SHARED, "d.test": OTHER}


@dataclass(frozen=True)
class Handshake:
    sni: str
    local_ip: str
    peer_ip: str


def client_hello(server_hostname="a.test", alpn=None):
    """The bytes a TLS client (OpenSSL, through Python's ssl) sends first:
    its ClientHello records, with SNI SERVER_HOSTNAME (None: no SNI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def make_certificate(directory, name):
    """(cert path, key path) of a new self-signed P-256 certificate for NAME."""
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=" + name, "-addext", "subjectAltName=DNS:" + name,
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=30)
    return cert, key


class TlsSite:
    def __init__(self, internet, names=None, port=PORT):
        self.internet, self.port = internet, port
        self.names = dict(NAMES if names is None else names)
        self.directory = tempfile.mkdtemp(prefix="vst-tls-")
        self.ca_file = os.path.join(self.directory, "ca.pem")
        self._contexts = {}
        self._lock = threading.Lock()
        self._handshakes = []
        self.server = None

    @classmethod
    def start(cls, internet, names=None, port=PORT):
        site = cls(internet, names, port)
        internet.track(site.close)
        site._start()
        return site

    def _start(self):
        bundle = []
        for name in self.names:
            cert, key = make_certificate(self.directory, name)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self._contexts[name] = ctx
            bundle.append(open(cert).read())
        with open(self.ca_file, "w") as out:
            out.write("".join(bundle))
        self._default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        first = next(iter(self.names))
        self._default.load_cert_chain(*[os.path.join(self.directory, first + ext) for ext in (".pem", ".key")])
        self._default.sni_callback = self._pick
        for name, address in self.names.items():
            self.internet.dns.set(name, "A", [address])
        self.server = TcpServer(self.internet.name, [("0.0.0.0", self.port)], self._serve, name="inet-tls")
        self.server.start()

    def _pick(self, sslobj, name, _ctx):
        sslobj.sni = name
        ctx = self._contexts.get(name or "")
        if ctx is not None:
            sslobj.context = ctx

    def _serve(self, conn, peer, stopping):
        tls = self._default.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        tls.settimeout(5)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError):
            return
        sni = getattr(tls, "sni", None)
        with self._lock:
            self._handshakes.append(Handshake(sni, peer.local_ip, peer.peer_ip))
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 16384:
            chunk = tls.recv(4096)
            if not chunk:
                return
            head += chunk
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
        if path == b"/echo":
            tls.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                tls.sendall(rest)
            while not stopping.is_set():
                chunk = tls.recv(4096)
                if not chunk:
                    break
                tls.sendall(chunk)
            return
        body = ("tls %s %s\n" % (sni, peer.local_ip)).encode()
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        try:
            tls.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass

    def handshakes(self):
        with self._lock:
            return list(self._handshakes)

    def clear(self):
        with self._lock:
            self._handshakes.clear()

    def close(self):
        if self.server is not None:
            self.server.close()
            self.server = None
        shutil.rmtree(self.directory, ignore_errors=True)
