"""The upstream side of the resolver: queries in flight, retries, the shared
cache of answers, and the hygiene of RFC 5452.

* Every upstream query leaves from a socket of its own, bound to a port
  drawn with ``secrets`` from the kernel's ephemeral range and connected to
  the upstream: the kernel then hands the socket only datagrams from the
  upstream's address and port, and the socket is closed once the query is
  answered or given up (a retry goes out on the same socket). Sockets are
  opened ahead of need (``SocketPool``, filled by the housekeeping thread),
  so a query does not wait for the system calls.
* Query ids come from ``secrets``; the name is spelled with random case
  ("0x20", draft-vixie-dnsext-dns0x20): an answer counts only if its id and
  its question section are byte for byte those of the query (the name in
  the case sent, type, class; ``wire.reply_matches``), and only then is it
  read with dnslib. An upstream that does not echo the case (every answer
  differs from its query only in case, ``CASE_FAILURES`` in a row) gets
  queries in lower case from then on, and a warning says so.
* Queries for the same name, type and class that arrive while one is in
  flight wait for that one (at most ``MAX_WAITERS``); at most
  ``MAX_PENDING`` queries are in flight in all (each holds a socket).
* A lost query is sent again after ``UPSTREAM_RETRY``; after
  ``UPSTREAM_GIVE_UP`` its guests get SERVFAIL. A truncated answer is asked
  again over TCP on a thread of its own (at most ``TCP_FALLBACKS`` at once).

Everything here runs on the loop thread, except the pool's filling and the
TCP fallbacks, whose results are posted back to it.
"""

import collections
import errno
import logging
import secrets
import select
import socket
import struct
import threading

from . import cache, core, wire

log = logging.getLogger("vmsan.resolver")

UPSTREAM_RETRY = 1.0        # resend a query upstream once after this long
UPSTREAM_GIVE_UP = 3.0      # then answer SERVFAIL
MAX_WAITERS = 256           # guests waiting for one upstream query
MAX_PENDING = 4096          # upstream queries in flight, all VMs together (one socket each)
# what ask() did with a query (falsy: nothing)
NOT_ASKED, JOINED, SENT = "", "joined", "sent"
POOL_SIZE = 64              # sockets opened ahead of need
TCP_FALLBACKS = 16
CASE_FAILURES = 8           # answers in a row that differ only in case: the upstream does not keep it
DEFAULT_PORT_RANGE = (32768, 60999)


def ephemeral_ports(path="/proc/sys/net/ipv4/ip_local_port_range"):
    """The kernel's ephemeral port range (read once, at start)."""
    try:
        with open(path) as handle:
            low, high = (int(x) for x in handle.read().split())
        if 1024 <= low < high <= 65535:
            return low, high
    except (OSError, ValueError):
        pass
    return DEFAULT_PORT_RANGE


class SocketPool(object):
    """UDP sockets bound to random ports and connected to ADDRESS, each for
    one query. ``take()`` runs on the loop thread, ``fill()`` on another;
    a deque's append and popleft need no lock."""

    def __init__(self, address, ports=None, size=POOL_SIZE):
        self.address, self.size = address, size
        self.ports = ports or ephemeral_ports()
        self._ready = collections.deque()

    def open(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            low, high = self.ports
            for _attempt in range(8):
                try:
                    sock.bind(("0.0.0.0", low + secrets.randbelow(high - low + 1)))
                    break
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
            else:
                sock.bind(("0.0.0.0", 0))       # the kernel draws one too
            sock.connect(self.address)
        except Exception:
            sock.close()
            raise
        return sock

    def take(self):
        try:
            return self._ready.popleft()
        except IndexError:
            return self.open()

    def fill(self):
        while len(self._ready) < self.size:
            self._ready.append(self.open())

    def close(self):
        while self._ready:
            self._ready.popleft().close()


class Pending(object):
    __slots__ = ("key", "q", "qid", "wire", "question", "sock", "fd", "sent", "retried", "waiters", "done")

    def __init__(self, key, q, qid, wire_bytes, sock, sent):
        self.key, self.q, self.qid, self.wire, self.sock, self.sent = key, q, qid, wire_bytes, sock, sent
        self.question = wire_bytes[12:12 + len(q.question_wire)]
        self.fd = sock.fileno()
        self.retried = self.done = False
        self.waiters = []


class Upstream(object):
    """ON_DONE(pending, reply) runs on the loop thread for every query that
    ends: REPLY is a dnslib DNSRecord from core.parse_reply, or None (no
    answer, or one that could not be read)."""

    def __init__(self, address, loop, clock, on_done, notices, pool=None, case_randomisation=True):
        self.address, self.loop, self.clock, self.on_done = address, loop, clock, on_done
        self.notices = notices
        self.pool = pool or SocketPool(address)
        self.case_randomisation = case_randomisation
        self.answers = cache.AnswerCache()
        self.pending_by_key = {}
        self.by_fd = {}
        self.stats = collections.Counter()
        self._case_failures = 0
        self._tcp_slots = threading.BoundedSemaphore(TCP_FALLBACKS)
        self._turns = collections.OrderedDict()     # VM (its meter) -> answers that arrived, in turn
        self._turn_due = False

    def in_flight(self):
        return len(self.by_fd)

    def ask(self, q, waiter, now):
        """Send Q upstream (or join the query for it in flight) for WAITER:
        SENT or JOINED; NOT_ASKED when no more can be in flight (the caller
        answers SERVFAIL)."""
        key = q.cache_key()
        pending = self.pending_by_key.get(key)
        if pending is not None:
            if len(pending.waiters) >= MAX_WAITERS:
                return NOT_ASKED
            pending.waiters.append(waiter)
            return JOINED
        if len(self.by_fd) >= MAX_PENDING:
            return NOT_ASKED
        try:
            sock = self.pool.take()
        except OSError as exc:
            self._warn("socket", "cannot open a socket for an upstream query: %s" % exc, now)
            return NOT_ASKED
        spelling = secrets.token_bytes(len(q.question_wire) - 4) if self.case_randomisation else None
        qid = secrets.randbits(16)
        pending = Pending(key, q, qid, core.upstream_query(qid, q, spelling), sock, now)
        pending.waiters.append(waiter)
        self.pending_by_key[key] = pending
        self.by_fd[pending.fd] = pending
        self.loop.add(pending.fd, select.EPOLLIN, lambda _events, p=pending: self._readable(p))
        self._send(pending)
        self.stats["upstream"] += 1
        return SENT

    def _send(self, pending):
        try:
            pending.sock.send(pending.wire)
        except OSError as exc:
            self._warn("send", "cannot send to upstream %s:%d: %s" % (self.address + (exc,)), self.clock())

    def _warn(self, kind, text, now):
        if self.notices.note(("upstream", kind), None, now) is not None:
            log.warning("%s", text)

    def _readable(self, pending):
        for _datagram in range(16):
            if pending.done:
                return
            try:
                data = pending.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:          # ICMP: the upstream's port is closed; the retry or the timeout decides
                self._warn("recv", "upstream %s:%d: %s" % (self.address + (exc,)), self.clock())
                return
            if not wire.reply_matches(data, pending.qid, pending.question):
                self.stats["ignored"] += 1
                if self._differs_in_case_only(data, pending):
                    self._case_failure()
                continue
            self._case_failures = 0
            self._take(pending)
            self._arrived(pending, data)
            return

    def _arrived(self, pending, data):
        """An answer arrived: it waits, with the others of its VM, for its
        turn (``_serve_turns``): one answer per VM per turn of the loop, so
        a VM whose answers are expensive (64 records each) is served after
        every other VM's answer of the same moment, not before them all."""
        key = pending.waiters[0][4] if pending.waiters else None       # the meter of the VM that asked first
        queue = self._turns.get(key)
        if queue is None:
            queue = self._turns[key] = collections.deque()
        queue.append((pending, data))
        if not self._turn_due:
            self._turn_due = True
            self.loop.soon(self._serve_turns)

    def _serve_turns(self):
        self._turn_due = False
        for key in list(self._turns):
            queue = self._turns[key]
            pending, data = queue.popleft()
            if not queue:
                del self._turns[key]
            try:
                reply = core.parse_reply(data, len(pending.question))
            except core.BadReply as exc:
                log.warning("unreadable upstream answer for %s: %s", pending.q.name, exc)
                self.on_done(pending, None)
                continue
            if reply.header.tc:
                self._fall_back_to_tcp(pending)
                continue
            try:
                self.on_done(pending, reply)
            except Exception as exc:
                log.exception("answer for %s: %s", pending.q.name, exc)
        if self._turns and not self._turn_due:
            self._turn_due = True
            self.loop.soon(self._serve_turns)       # the rest after the loop looked at the sockets again

    def _differs_in_case_only(self, data, pending):
        question = pending.question
        if not self.case_randomisation or len(data) < 12 + len(question) or wire.reply_id(data) != pending.qid:
            return False
        got = data[12:12 + len(question)]
        return got != question and got[:-4].lower() == question[:-4].lower() and got[-4:] == question[-4:]

    def _case_failure(self):
        self._case_failures += 1
        if self._case_failures >= CASE_FAILURES and self.case_randomisation:
            self.case_randomisation = False
            log.warning("upstream %s:%d does not keep the case of query names: sending them in lower case "
                        "from now on (answers are still checked by port, id and question)", *self.address)

    def _take(self, pending):
        """PENDING is over: its socket closed, it is no longer in flight."""
        if pending.done:
            return
        pending.done = True
        if self.pending_by_key.get(pending.key) is pending:
            del self.pending_by_key[pending.key]
        self.by_fd.pop(pending.fd, None)
        self.loop.remove(pending.fd)
        pending.sock.close()

    def retry_or_fail(self, now):
        for pending in list(self.by_fd.values()):
            age = now - pending.sent
            if age >= UPSTREAM_GIVE_UP:
                self._take(pending)
                self._warn("timeout", "upstream %s:%d did not answer for %s" % (self.address + (pending.q.name,)),
                           now)
                self.stats["timeouts"] += 1
                self.on_done(pending, None)
            elif age >= UPSTREAM_RETRY and not pending.retried:
                pending.retried = True
                self._send(pending)

    def _fall_back_to_tcp(self, pending):
        if not self._tcp_slots.acquire(blocking=False):
            self.on_done(pending, None)
            return
        threading.Thread(target=self._tcp_query, args=(pending,), name="upstream-tcp", daemon=True).start()

    def _tcp_query(self, pending):
        """The upstream answer did not fit in UDP: ask again over TCP (its
        own thread; the result goes back to the loop)."""
        reply = None
        try:
            with socket.create_connection(self.address, timeout=UPSTREAM_GIVE_UP) as conn:
                conn.sendall(struct.pack("!H", len(pending.wire)) + pending.wire)
                size = struct.unpack("!H", _recv_exact(conn, 2))[0]
                data = _recv_exact(conn, size)
            if not wire.reply_matches(data, pending.qid, pending.question):
                raise core.BadReply("the answer is not for the question asked")
            reply = core.parse_reply(data, len(pending.question))
        except Exception as exc:
            log.warning("upstream TCP query for %s failed: %s", pending.q.name, exc)
            reply = None
        finally:
            self._tcp_slots.release()
        self.loop.post(lambda: self.on_done(pending, reply))

    def close(self):
        for pending in list(self.by_fd.values()):
            self._take(pending)
        self.pool.close()


def _recv_exact(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError(errno.ECONNRESET, "the upstream closed the connection")
        data += chunk
    return data
