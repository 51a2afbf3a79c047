"""The resolver's sockets: one event loop (epoll, one thread) over the UDP
socket, the TCP listener and its connections, the upstream sockets, and a
wake-up eventfd for work that other threads hand back.

Nothing on the loop thread blocks: sockets are non-blocking, a TCP answer
that the guest does not read waits in that connection's buffer (bounded;
the connection is closed when it overflows or stays unread), and netlink
work goes to the learning thread. So one guest's socket can never stall
another guest's answers.

UDP (``UdpServer``): many datagrams per system call (recvmmsg, udp_batch).
For each: the VM by its source address (a dictionary lookup on the packed
address), its query bucket (beyond its budget: a header-only REFUSED, before
the query is read), then its cache of finished replies by the exact query
bytes; everything else goes to ``Resolver.handle``, at most
UDP_COSTLY_PER_TURN of one queue a turn (the rest waits in its line).

TCP (``TcpServer``): connections counted per VM (``Meter.tcp``) and in
total; a message must arrive whole within ``TCP_MESSAGE_TIMEOUT`` of its
first byte, an idle connection is closed after ``TCP_IDLE``, a message
longer than ``wire.MAX_QUERY`` gets FORMERR (from its header) and the
connection is closed.
"""

import collections
import errno
import heapq
import logging
import os
import select
import socket
import struct
import threading

from . import core, udp_batch, wire

log = logging.getLogger("vmsan.resolver")

TICK = 0.05                 # timers: retries, deadlines, state checks
UDP_QUEUES = 256            # UDP sockets, datagrams dealt out by source address
UDP_RCVBUF = 1 << 20        # per socket (the kernel doubles it)
UDP_BATCHES_PER_WAKE = 2    # of 64 datagrams, then the other sockets get their turn
UDP_PAUSE = 0.02            # a socket that gave a datagram beyond twice its VM's budget rests this long
UDP_COSTLY_PER_TURN = 8     # queries of one queue read and decided (not a cached reply, not REFUSED) per turn
TCP_MAX_CONNECTIONS = 1024  # host-wide
TCP_UNKNOWN_CONNECTIONS = 16     # from addresses of no VM (the host itself), together
TCP_MESSAGE_TIMEOUT = 3.0   # a message, from its first byte to its last
TCP_IDLE = 10.0             # no message and no answer due
TCP_WRITE_TIMEOUT = 5.0     # answers waiting while the guest reads nothing
TCP_OUT_MAX = 128 << 10     # bytes of answers waiting for a guest that does not read (two of the largest)
TCP_SNDBUF = 32 << 10       # the kernel's send buffer per connection (it doubles it): no autotuning to MBs
TCP_PIPELINE = 32           # answers a connection may have outstanding; then it is not read
TCP_READ = 16384

_EPOLLIN, _EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
_EPOLLERR = select.EPOLLERR | select.EPOLLHUP
_LEN = struct.Struct("!H")


COSTLY, DROPPED = object(), object()     # UdpServer: what a datagram needs beyond its bucket and cache


class Stop(BaseException):
    """Raised by the signal handler to end the loop (SIGTERM, SIGINT); a
    BaseException, so that no handler's ``except Exception`` keeps it."""


class Loop(object):
    """epoll with handlers by file descriptor, timers, and ``post`` (thread
    safe) for callables to run on the loop thread."""

    def __init__(self, clock):
        self.clock = clock
        self.ep = select.epoll()
        self.handlers = {}
        self.posted = collections.deque()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.add(self.wake_fd, _EPOLLIN, self._on_wake)
        self.timers = []        # [interval, due, fn]
        self.later_heap = []    # (due, sequence, fn)
        self._sequence = 0
        self._due = float("inf")    # the earliest timer: looked at once per wake-up, nothing more
        self.soon_calls = []        # after the sockets of one wake-up: run before the next
        self.stopping = threading.Event()

    def add(self, fd, events, handler):
        self.ep.register(fd, events)
        self.handlers[fd] = handler

    def modify(self, fd, events):
        self.ep.modify(fd, events)

    def remove(self, fd):
        if self.handlers.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def post(self, fn):
        self.posted.append(fn)
        try:
            os.eventfd_write(self.wake_fd, 1)
        except OSError:
            pass

    def every(self, interval, fn):
        due = self.clock() + interval
        self.timers.append([interval, due, fn])
        self._due = min(self._due, due)

    def soon(self, fn):
        """Run FN() once the handlers of this wake-up have run (loop thread
        only); what FN queues with ``soon`` runs after the next wake-up."""
        self.soon_calls.append(fn)

    def later(self, delay, fn):
        """Run FN() once, DELAY seconds from now (loop thread only)."""
        self._sequence += 1
        due = self.clock() + delay
        heapq.heappush(self.later_heap, (due, self._sequence, fn))
        self._due = min(self._due, due)

    def _on_wake(self, _events):
        try:
            os.eventfd_read(self.wake_fd)
        except OSError:
            pass
        posted = self.posted
        while posted:
            fn = posted.popleft()
            try:
                fn()
            except Exception as exc:
                log.exception("posted work failed: %s", exc)

    def run_once(self, timeout):
        handlers = self.handlers
        for fd, events in self.ep.poll(timeout):
            handler = handlers.get(fd)
            if handler is None:
                continue
            try:
                handler(events)
            except Exception as exc:
                log.exception("socket %d: %s", fd, exc)
        if self.soon_calls:
            calls, self.soon_calls = self.soon_calls, []
            for fn in calls:
                try:
                    fn()
                except Exception as exc:
                    log.exception("work after a wake-up: %s", exc)
        now = self.clock()
        if now >= self._due:
            self._run_timers(now)

    def _run_timers(self, now):
        while self.later_heap and self.later_heap[0][0] <= now:
            fn = heapq.heappop(self.later_heap)[2]
            try:
                fn()
            except Exception as exc:
                log.exception("timer: %s", exc)
        for timer in self.timers:
            if now >= timer[1]:
                timer[1] = now + timer[0]
                try:
                    timer[2](now)
                except Exception as exc:
                    log.exception("timer: %s", exc)
        self._due = min([t[1] for t in self.timers] + [e[0] for e in self.later_heap[:1]] or [now + TICK])

    def run(self):
        run_once, clock, stopping = self.run_once, self.clock, self.stopping
        while not stopping.is_set():
            run_once(0.0 if self.soon_calls else max(0.0, min(TICK, self._due - clock())))

    def close(self):
        self.stopping.set()
        self.ep.close()
        os.close(self.wake_fd)


def _refused_tails():
    """The header-only REFUSED reply without its id, by the query's RD and CD
    bits (as the two bytes of the query's flag word select them)."""
    return {(rd, cd): core.bare_reply(0, (wire.FLAG_RD if rd else 0) | (wire.FLAG_CD if cd else 0),
                                      core.REFUSED)[2:]
            for rd in (0, 1) for cd in (0, 1)} if core.HAS_DNSLIB else {}


def udp_queues(listen, count=UDP_QUEUES, rcvbuf=UDP_RCVBUF):
    """COUNT UDP sockets bound to LISTEN as one SO_REUSEPORT group whose
    datagrams the kernel deals out by source address (udp_batch.
    steer_by_source): a queue per VM for the first 255 slots, a queue per
    few VMs beyond. Where the kernel cannot, one socket for all. Bound with
    IP_FREEBIND: the address appears on the host's lo with the first VM;
    the resolver may start before that (at boot)."""
    socks = []
    try:
        for index in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if index == 0:
                    udp_batch.steer_by_source(sock, count)
            try:
                sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
            except OSError:
                pass
            sock.bind(listen)
    except OSError as exc:
        for sock in socks:
            sock.close()
        if count == 1 or exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        log.warning("one UDP queue for every VM (the kernel cannot deal datagrams out by source: %s)", exc)
        return udp_queues(listen, 1, rcvbuf * 4)
    return socks


class UdpServer(object):
    """The UDP sockets of ``udp_queues``, each read in its turn: at most
    UDP_BATCHES_PER_WAKE batches of one socket before the loop looks at the
    others again, so a VM whose queue is full waits for its own datagrams,
    not another VM."""

    def __init__(self, socks, loop, resolver):
        self.socks, self.loop, self.resolver = list(socks), loop, resolver
        self.batch = udp_batch.BatchSocket(self.socks[0]) if udp_batch.AVAILABLE else None
        self.refused = _refused_tails()
        self.paused = set()
        for sock in self.socks:
            sock.setblocking(False)
            handler = self.batched_reader(sock) if self.batch else \
                (lambda _events, sock=sock: self.on_readable_simple(sock))
            loop.add(sock.fileno(), _EPOLLIN, handler)

    def pause(self, sock):
        """SOCK's datagrams were beyond their VM's budgets (not even
        REFUSED): leave its queue to the kernel for UDP_PAUSE (what does not
        fit is dropped there, at no cost to this loop) instead of reading a
        flood to drop it."""
        fd = sock.fileno()
        if fd in self.paused:
            return
        self.paused.add(fd)
        self.resolver.stats["udp_pauses"] += 1
        self.loop.modify(fd, 0)

        def resume():
            self.paused.discard(fd)
            try:
                self.loop.modify(fd, _EPOLLIN)
            except (OSError, ValueError):
                pass
        self.loop.later(UDP_PAUSE, resume)

    @property
    def sock(self):
        return self.socks[0]

    def over_budget(self, data):
        """The reply to a query over its VM's budget (or None: not a query)."""
        if len(data) < 12 or data[2] & 0x80:
            return None
        return data[:2] + self.refused[(data[2] & 0x01, 1 if data[3] & 0x10 else 0)]

    def batched_reader(self, sock):
        """The epoll handler of SOCK: up to UDP_BATCHES_PER_WAKE recvmmsg
        batches, each datagram looked at in turn, the replies of a batch
        sent with one sendmmsg. At most UDP_COSTLY_PER_TURN of them go on to
        ``Resolver.handle`` (read, decided, sent upstream) in one turn; the
        rest of the batch waits in SOCK's own line for its next turn, after
        the other queues' (deficit round robin with a quantum of that many
        queries: a cheap answer costs next to nothing, a handled query ten
        times more). (A closure with every name it uses bound once: with one
        query at a time, what a wake-up costs is latency.)"""
        batch, resolver, over_budget, loop = self.batch, self.resolver, self.over_budget, self.loop
        use, recv, data_of, key_of, queue, flush, address_of = (batch.use, batch.recv, batch.data, batch.key,
                                                                batch.queue, batch.flush, batch.address)
        handle, clock, registry, stats = resolver.handle, resolver.clock, resolver.registry, resolver.stats
        note_over_budget, sendto, size = resolver.note_over_budget, sock.sendto, batch.batch
        refused_code = core.REFUSED
        # With a queue per VM (udp_queues), a datagram dropped for being beyond twice
        # its VM's budget says that the queue holds a flood: it rests at once (what
        # it holds would be REFUSED no faster after the pause: that bucket fills at
        # the same rate meanwhile). One queue for all rests only when all it gave was.
        queues_per_vm = len(self.socks) > 1
        # (vm key, data, (ip, port)) received in a turn that had used its quantum:
        # copied out of the shared batch buffers, answered with sendto
        line = collections.deque()

        def cheap(state, data, now):
            """The reply to DATA of STATE's VM when no more than its bucket and
            its cache of finished replies are needed: bytes; DROPPED (beyond
            twice its budget: no reply); COSTLY (for ``handle``)."""
            meter = state.meter
            if not meter.bucket.take(now):
                if note_over_budget(meter, now):
                    refused = over_budget(data)
                    if refused is not None:
                        meter.rcodes[refused_code] += 1
                        return refused
                return DROPPED
            hot = state.hot.get(data[2:])
            if hot is not None and now < hot.fresh_until:
                tail = hot.tail
                meter.rcodes[tail[1] & 0x0F] += 1
                stats["hot"] += 1
                return data[:2] + tail
            return COSTLY

        def costly(data, address, state):
            try:
                handle(data, address[0], _udp_reply(sendto, address), False, state, state is not None)
            except Exception as exc:
                log.exception("query from %s failed: %s", address[0], exc)

        def serve_line():
            """SOCK's next turn at the datagrams of its line (each one charged
            to its VM's bucket when it was received, and found costly)."""
            now = clock()
            if now >= resolver.next_check:
                resolver.maybe_check_state(now)
            vms = registry.vms_raw
            for _query in range(min(len(line), UDP_COSTLY_PER_TURN)):
                key, data, address = line.popleft()
                costly(data, address, vms.get(key))
            if line:
                loop.soon(serve_line)       # after the next wake-up's handlers: the others' turn first

        def next_turn():
            # queued from this wake-up's handlers, soon calls run in this wake-up: one
            # step more makes the line's turn come after the next poll's handlers
            loop.soon(serve_line)

        def on_readable(_events):
            if line:
                return              # this turn goes to serve_line (queued with loop.soon)
            use(sock)
            handled = 0
            for _round in range(UDP_BATCHES_PER_WAKE):
                try:
                    count = recv()
                except OSError:
                    return
                if not count:
                    return
                now = clock()
                if now >= resolver.next_check:
                    resolver.maybe_check_state(now)
                vms = registry.vms_raw
                dropped = 0
                for i in range(count):
                    key = key_of(i)
                    state = vms.get(key)
                    data = data_of(i)
                    if state is not None:
                        answer = cheap(state, data, now)
                        if answer is DROPPED:
                            dropped += 1
                            continue
                        if answer is not COSTLY:
                            queue(i, answer)
                            continue
                    if handled == UDP_COSTLY_PER_TURN:
                        line.append((key, data, address_of(i)))
                        continue
                    handled += 1
                    costly(data, address_of(i), state)
                flush()
                stats["queries"] += count
                rest = dropped == count or (dropped and queues_per_vm)
                if line:
                    loop.soon(next_turn)
                if rest:
                    self.pause(sock)
                if line or rest:
                    return
                if count < size:
                    return          # drained (most likely): epoll says when more comes, no recvmmsg to find out
        return on_readable

    def on_readable_simple(self, sock):
        resolver = self.resolver
        recvfrom, sendto = sock.recvfrom, sock.sendto
        dropped = 0
        for _round in range(UDP_BATCHES_PER_WAKE * 64):
            if dropped >= 64:
                self.pause(sock)
                return
            try:
                data, address = recvfrom(udp_batch.RECV_SIZE)
            except OSError:
                return
            now = resolver.clock()
            resolver.maybe_check_state(now)
            resolver.stats["queries"] += 1
            state = resolver.registry.get(address[0])
            if state is not None:
                if not state.meter.bucket.take(now):
                    refused = self.over_budget(data) if resolver.note_over_budget(state.meter, now) else None
                    if refused is not None:
                        _udp_reply(sendto, address)(refused)
                        state.meter.rcodes[core.REFUSED] += 1
                    else:
                        dropped += 1
                    continue
                dropped = 0
                hot = state.hot.get(data[2:])
                if hot is not None and now < hot.fresh_until:
                    resolver.stats["hot"] += 1
                    _udp_reply(sendto, address)(data[:2] + hot.tail)
                    state.meter.rcodes[hot.tail[1] & 0x0F] += 1
                    continue
            try:
                resolver.handle(data, address[0], _udp_reply(sendto, address), False, state, state is not None)
            except Exception as exc:
                log.exception("query from %s failed: %s", address[0], exc)


def _udp_reply(sendto, address):
    def reply(payload):
        try:
            sendto(payload, address)
        except OSError:
            pass            # a full send buffer drops the reply, as a lost datagram would be
    return reply


class TcpServer(object):
    def __init__(self, sock, loop, resolver, max_connections=TCP_MAX_CONNECTIONS):
        self.sock, self.loop, self.resolver = sock, loop, resolver
        self.max_connections = max_connections
        self.conns = {}         # fd -> Connection
        self.rejected = 0
        sock.setblocking(False)
        loop.add(sock.fileno(), _EPOLLIN, self.on_accept)

    def on_accept(self, _events):
        resolver = self.resolver
        for _round in range(64):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:      # e.g. out of file descriptors: try again at the next wake-up
                resolver.note_host_problem("accept", "cannot accept TCP connections: %s" % exc)
                return
            state = resolver.registry.get(peer[0])
            meter = state.meter if state is not None else resolver.unknown
            limit = meter.budget.tcp_connections if state is not None else TCP_UNKNOWN_CONNECTIONS
            if len(self.conns) >= self.max_connections or meter.tcp >= limit:
                self.rejected += 1
                resolver.note_tcp_refused(meter, limit, len(self.conns) >= self.max_connections)
                conn.close()
                continue
            meter.tcp += 1
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TCP_SNDBUF)
            except OSError:
                pass
            connection = Connection(self, conn, peer[0], meter)
            self.conns[connection.fd] = connection
            self.loop.add(connection.fd, _EPOLLIN, connection.on_event)

    def tick(self, now):
        for connection in list(self.conns.values()):
            connection.check(now)

    def close_all(self):
        for connection in list(self.conns.values()):
            connection.close()


class Connection(object):
    """One guest's TCP connection (RFC 1035 4.2.2 framing, RFC 7766
    pipelining); everything happens on the loop thread."""

    __slots__ = ("server", "sock", "fd", "ip", "meter", "inbuf", "outbuf", "waiting", "msg_started",
                 "last_active", "out_since", "closed", "read_closed", "reading", "closing", "events")

    def __init__(self, server, sock, ip, meter):
        self.server, self.sock, self.ip, self.meter = server, sock, ip, meter
        sock.setblocking(False)
        self.fd = sock.fileno()
        self.inbuf, self.outbuf = bytearray(), bytearray()
        self.waiting = 0
        self.msg_started = self.out_since = None
        self.last_active = server.resolver.clock()
        self.closed = self.read_closed = self.closing = False
        self.reading = True
        self.events = _EPOLLIN

    def on_event(self, events):
        if events & _EPOLLOUT:
            self.flush()
        if self.closed:
            return
        if events & _EPOLLIN:
            self.read()
        elif events & _EPOLLERR:
            self.close()

    def read(self):
        try:
            data = self.sock.recv(TCP_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.read_closed = True         # the guest may close its side right after asking: answer first
            self.reading = False
            self._update_events()
            self._close_if_done()
            return
        self.inbuf += data
        self.process()

    def process(self):
        resolver = self.server.resolver
        now = resolver.clock()
        self.last_active = now
        inbuf = self.inbuf
        while len(inbuf) >= 2 and not self.closing:
            size = (inbuf[0] << 8) | inbuf[1]
            if size > wire.MAX_QUERY:
                if len(inbuf) < 14:
                    break               # its header tells whom to answer
                header = bytes(inbuf[2:14])
                inbuf.clear()
                self.closing = True     # the rest of it is not read
                self.reading = False
                resolver.note_malformed(self.meter, "%d-byte TCP message" % size, now)
                flags = (header[2] << 8) | header[3]
                if not flags & wire.FLAG_QR:
                    self.send(core.bare_reply((header[0] << 8) | header[1], flags, core.FORMERR))
                break
            if len(inbuf) < 2 + size:
                break
            message = bytes(inbuf[2:2 + size])
            del inbuf[:2 + size]
            self.waiting += 1
            try:
                answered = resolver.handle(message, self.ip, self.reply, True)
            except Exception as exc:
                log.exception("TCP query from %s failed: %s", self.ip, exc)
                answered = False
            if not answered:
                self.waiting -= 1
            if self.waiting >= TCP_PIPELINE:
                self.reading = False
                break
        self.msg_started = (self.msg_started or now) if inbuf else None
        self._update_events()
        self._close_if_done()

    def reply(self, payload):
        self.waiting -= 1
        if self.closed:
            return
        self.send(payload)
        if not self.reading and not self.read_closed and not self.closing and self.waiting < TCP_PIPELINE:
            self.reading = True
            if self.inbuf:
                self.process()
                return
            self._update_events()
        self._close_if_done()

    def send(self, payload):
        self.outbuf += _LEN.pack(len(payload)) + payload
        self.flush()

    def flush(self):
        if self.closed or not self.outbuf:
            return
        sent = 0
        try:
            sent = self.sock.send(self.outbuf)
            del self.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()
            return
        if len(self.outbuf) > TCP_OUT_MAX:
            self.server.resolver.note_tcp_unread(self.meter, self.ip)
            self.close()
            return
        if self.outbuf:
            if self.out_since is None or sent:      # the timer runs while the guest reads nothing at all
                self.out_since = self.server.resolver.clock()
        else:
            self.out_since = None
        self._update_events()
        self._close_if_done()

    def _update_events(self):
        if self.closed:
            return
        events = (_EPOLLIN if self.reading else 0) | (_EPOLLOUT if self.outbuf else 0)
        if events != self.events:
            self.events = events
            try:
                self.server.loop.modify(self.fd, events)
            except OSError:
                self.close()

    def _close_if_done(self):
        if (self.read_closed or self.closing) and not self.waiting and not self.outbuf:
            self.close()

    def check(self, now):
        if self.closed:
            return
        if self.msg_started is not None and now - self.msg_started > TCP_MESSAGE_TIMEOUT:
            self.close()
        elif self.out_since is not None and now - self.out_since > TCP_WRITE_TIMEOUT:
            self.server.resolver.note_tcp_unread(self.meter, self.ip)
            self.close()
        elif not self.waiting and not self.outbuf and not self.inbuf and now - self.last_active > TCP_IDLE:
            self.close()
        elif self.closing and now - self.last_active > TCP_MESSAGE_TIMEOUT:
            self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.server.loop.remove(self.fd)
        self.server.conns.pop(self.fd, None)
        self.meter.tcp -= 1
        try:
            self.sock.close()
        except OSError:
            pass
        self.inbuf = self.outbuf = bytearray()
