"""Count the frames that cross an interface, to prove that something did NOT
leave (for example: nothing from the guest on the host's uplink)."""

import socket
import threading
import time

from .guard import entered
from .packets import ETH_P_ALL, Frame, any_frame

PACKET_OUTGOING = 4


class Sniffer:
    """Counts frames on ``ifname`` in namespace ``ns_name`` that match ``predicate``.

    ``predicate`` takes a :class:`sandbox.packets.Frame`. Both directions are
    seen (``frame.outgoing`` tells which). Use as a context manager, or
    ``start()``/``stop()``.
    """

    def __init__(self, ns_name, ifname, predicate=any_frame, keep=100):
        self.ns_name = ns_name
        self.ifname = ifname
        self.predicate = predicate
        self.keep = keep
        self.frames = []
        self.count = 0
        self._lock = threading.Lock()
        self._sock = None
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        with entered(self.ns_name):
            # Protocol 0 at creation receives nothing; bind() then selects the
            # interface, so no frame of another interface slips in before it.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                sock.bind((self.ifname, ETH_P_ALL))
            except BaseException:
                sock.close()
                raise
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._loop, name=f"sniff-{self.ifname}", daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            try:
                raw, addr = self._sock.recvfrom(262144)
            except socket.timeout:
                continue
            except OSError:
                return
            frame = Frame(raw, outgoing=addr[2] == PACKET_OUTGOING)
            try:
                matched = self.predicate(frame)
            except (IndexError, ValueError, OSError):
                matched = False  # a runt frame is not what the predicate looks for
            if matched:
                with self._lock:
                    self.count += 1
                    if len(self.frames) < self.keep:
                        self.frames.append(frame)

    def wait_for(self, n=1, timeout=1.0):
        """True as soon as ``n`` matching frames were seen, False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count >= n:
                return True
            time.sleep(0.01)
        return self.count >= n

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
