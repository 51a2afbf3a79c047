"""The host DNS resolver (``vmsan resolver``): sockets, threads, the state
directory and the VMs' address sets. Every decision is resolver_core's.

Threads:

* the main thread serves UDP: a cached answer costs one dictionary lookup and
  one send (the "hot" cache holds the finished reply per VM and query bytes);
* one thread reads upstream replies and answers the guests waiting for them
  (queries for the same name are sent upstream once);
* one thread accepts TCP connections, one thread per connection reads them;
* one housekeeping thread retries or fails lost upstream queries, notices
  state changes when no query comes, expires the cache and refreshes the
  host's own addresses.

A VM is known by the source address of its queries (the VM's anti-spoofing
rules make that trustworthy). Its state file says its policy; the state
directory is looked at (one stat) at most every millisecond while queries
come, and every 50 ms anyway, and changed files are read again. An address
in an allowed answer is added to the VM's ``dns`` set before the guest gets
the answer, so the guest never sees an address the firewall would drop.
"""

import logging
import os
import random
import resource
import signal
import socket
import struct
import sys
import threading
import time

from ..model import addressing as A
from ..plan import firewall as fp
from ..kernel import netns as ns
from . import core
from . import udp_batch as resolver_udp
from ..model.errors import NotFoundError, VmsanError
from ..kernel.ipset_wire import IpsetSocket, is_missing_set
from ..kernel.ipsets import SetManager
from ..lifecycle.state import StateStore

log = logging.getLogger("vmsan.resolver")

UPSTREAM_RETRY = 1.0        # resend a query upstream once after this long
UPSTREAM_GIVE_UP = 3.0      # then answer SERVFAIL
STATE_CHECK_MIN = 0.001     # at most one stat of the state directory per ms
HOUSEKEEPING = 0.05
HOST_ADDRESS_REFRESH = 5.0
FRESH_MTIME_NS = 30 * 1000 * 1000    # see check_state
FRESH_RECHECK = 0.005
TCP_IDLE = 10.0
TCP_MAX_CONNECTIONS = 256
MAX_WAITERS = 256
MAX_HOT_PER_VM = 20000
MAX_ANSWERS = 100000


class _Stop(Exception):
    pass


# --------------------------------------------------------------------------
# learning into a VM's set
# --------------------------------------------------------------------------
def _netns_inode(name):
    if name is None:
        return None
    try:
        return os.stat(ns.path(name)).st_ino
    except OSError:
        return None


class Learner(object):
    """Adds addresses to one VM's ``dns`` set over one netlink socket that
    lives in the namespace holding the VM's TAP (opened on first use,
    reopened when that namespace is no longer the one it was opened in)."""

    def __init__(self, vm_id, netns_name):
        self.vm_id, self.netns = vm_id, netns_name
        self.set_name = fp.set_name(vm_id, "dns")
        self._sock = None
        self._inode = None
        self._lock = threading.Lock()

    def _open(self):
        with ns.entered(self.netns):
            self._sock = IpsetSocket()
        self._inode = _netns_inode(self.netns)

    def close(self):
        with self._lock:
            self._close()

    def _close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def still_valid(self):
        """False once the namespace the socket lives in is gone or replaced
        (an open socket would keep a removed VM's namespace alive)."""
        return self._sock is None or self.netns is None or _netns_inode(self.netns) == self._inode

    def release_if_stale(self):
        with self._lock:
            if not self.still_valid():
                self._close()

    def add(self, address, timeout, comment):
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._sock is None or not self.still_valid():
                        self._close()
                        self._open()
                    self._sock.add(self.set_name, address, timeout, comment)
                    return True
                except (OSError, VmsanError) as exc:
                    self._close()
                    if attempt:
                        why = "its address set does not exist" if is_missing_set(exc) else str(exc)
                        log.warning("cannot learn %s for VM %s (%s): %s", address, self.vm_id, comment, why)
        return False

    def prune(self, vm):
        """Forget learned addresses whose name VM's policy no longer allows
        (the CLI prunes too, with the same pruner; this catches what an
        answer in flight learned under the old policy while the change was
        being made)."""
        with self._lock:
            with ns.entered(self.netns):
                with SetManager() as sets:
                    return sets.prune_learned(self.set_name, vm.matcher.allowed)[0]


class VmState(object):
    """A VM's policy plus what the resolver keeps for it; replaced whole when
    the policy changes, so nothing cached under the old policy survives."""

    __slots__ = ("policy", "sig", "learner", "hot_udp", "hot_tcp", "learned")

    def __init__(self, policy, sig, learner):
        self.policy, self.sig, self.learner = policy, sig, learner
        self.hot_udp, self.hot_tcp = {}, {}
        self.learned = {}       # address -> monotonic time its set entry runs out


class Pending(object):
    __slots__ = ("key", "q", "qid", "wire", "sent", "retried", "waiters")

    def __init__(self, key, q, qid, wire, sent):
        self.key, self.q, self.qid, self.wire, self.sent = key, q, qid, wire, sent
        self.retried = False
        self.waiters = []       # (guest ip, query bytes, question, tcp, reply)


# --------------------------------------------------------------------------
# the resolver
# --------------------------------------------------------------------------
class Resolver(object):
    def __init__(self, cfg, upstream, store=None, clock=time.monotonic):
        self.cfg = cfg
        self.upstream = upstream
        self.store = store or StateStore()
        self.clock = clock
        self.vms = {}               # guest ip -> VmState (replaced whole on reload)
        self.vms_raw = {}           # the same, keyed by the packed address
        self._by_id = {}
        self._learners = {}         # VM identity -> Learner
        self.answers = {}           # (qname key, qtype, qclass) -> core.Answer
        self.pending = {}           # upstream id -> Pending
        self.pending_by_key = {}
        self.lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.rebinding = core.Rebinding()
        self.refusals = core.RefusalLog()
        self.notices = core.RefusalLog(interval=60.0)
        self._dir_sig = ()
        self._recheck_at = 0.0
        self._next_check = 0.0
        self._host_refreshed = -HOST_ADDRESS_REFRESH
        self._reload_requested = False
        self._stopping = threading.Event()
        self.udp = self.tcp = self.up = None

    # -- state ------------------------------------------------------------------
    def request_reload(self):
        """SIGHUP: re-read every state file and forget every cached answer
        and learned-address record (e.g. after an operator flushed a set)."""
        self._reload_requested = True

    def forget_caches(self):
        with self.lock:
            self.answers.clear()
        for state in list(self._by_id.values()):
            state.hot_udp.clear()
            state.hot_tcp.clear()
            state.learned.clear()
        log.info("reload: caches dropped, state re-read")

    def check_state(self, force=False):
        """Re-read changed state files if the state directory changed.

        A directory's mtime comes from the kernel's coarse clock (one tick,
        up to 10 ms), so a second change within the tick of the first leaves
        it as it was: while the mtime is younger than FRESH_MTIME_NS, the
        files are looked at again every FRESH_RECHECK seconds."""
        try:
            st = os.stat(self.store.vms_dir)
            sig = (st.st_ino, st.st_mtime_ns)
            fresh = time.time_ns() - st.st_mtime_ns < FRESH_MTIME_NS
        except OSError:
            sig, fresh = None, False
        if sig == self._dir_sig and not force:
            if not self._recheck_at or time.monotonic() < self._recheck_at:
                return False
        if not self.state_lock.acquire(blocking=False):
            return False
        try:
            self._reload()
            self._dir_sig = sig
            self._recheck_at = time.monotonic() + FRESH_RECHECK if fresh else 0.0
        finally:
            self.state_lock.release()
        return True

    def _reload(self):
        by_id, to_prune = {}, []
        for vm_id in self.store.ids():
            path = self.store.path(vm_id)
            try:
                st = os.stat(path)
            except OSError:
                continue
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            old = self._by_id.get(vm_id)
            if old is not None and old.sig == sig:
                by_id[vm_id] = old
                continue
            try:
                policy = core.VmPolicy(self.store.load(vm_id))
            except NotFoundError:
                continue
            except Exception as exc:    # a corrupt file: that VM's queries are refused
                log.error("cannot read the state of VM %s: %s (its queries are refused)", vm_id, exc)
                continue
            if old is not None and old.policy.identity == policy.identity \
                    and old.policy.policy_key == policy.policy_key:
                old.sig = sig
                by_id[vm_id] = old
                continue
            learner = self._learners.get(policy.identity)
            if learner is None:
                learner = self._learners[policy.identity] = Learner(policy.vm_id, policy.netns)
            state = VmState(policy, sig, learner)
            by_id[vm_id] = state
            if old is None:
                log.info("VM %s (%s): policy %s", vm_id, policy.guest_ip, policy.mode)
            else:
                log.info("VM %s (%s): policy now %s%s", vm_id, policy.guest_ip, policy.mode,
                         "" if old.policy.identity == policy.identity else " (VM recreated)")
            if policy.learns:
                to_prune.append(state)
        identities = {s.policy.identity for s in by_id.values()}
        for identity in [i for i in self._learners if i not in identities]:
            self._learners.pop(identity).close()
        self._by_id = by_id
        self.vms = {s.policy.guest_ip: s for s in by_id.values()}
        self.vms_raw = {socket.inet_aton(ip): s for ip, s in self.vms.items()}
        for state in to_prune:
            self._prune(state)

    def _prune(self, state):
        if state.policy.netns is not None and not ns.exists(state.policy.netns):
            return
        try:
            for address, name in state.learner.prune(state.policy):
                log.info("VM %s: forgot %s (learned for %s, no longer allowed)", state.policy.vm_id, address, name)
        except Exception as exc:
            log.warning("VM %s: cannot prune its learned addresses: %s", state.policy.vm_id, exc)

    def refresh_host_addresses(self, now):
        """The host's own addresses, for the rebinding filter."""
        self._host_refreshed = now
        try:
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                found = {m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(family=2)}
        except Exception as exc:
            log.warning("cannot read the host's addresses: %s", exc)
            return
        found.discard(None)
        if found != self.rebinding.host_addresses():
            self.rebinding = core.Rebinding(found)

    # -- queries ------------------------------------------------------------------
    def handle(self, data, ip, reply, tcp):
        """Answer the query DATA from guest address IP: now through REPLY, or
        later when upstream has answered. Returns False if it is dropped."""
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + STATE_CHECK_MIN
            self.check_state()
        state = self.vms.get(ip)
        if state is not None:
            hot = (state.hot_tcp if tcp else state.hot_udp).get(data[2:])
            if hot is not None and now < hot.expires:
                reply(data[:2] + hot.at(now))
                return True
        try:
            q = core.parse_query(data)
        except core.BadQuery as bad:
            reply(core.error_reply(bad))
            return True
        if q is None:
            return False
        if state is None:
            if self.notices.note(ip, None, now) is not None:
                log.warning("refused a query from %s: no VM has that address", ip)
            reply(core.short_reply(q, core.REFUSED))
            return True
        action, _pattern = state.policy.decide(q)
        if action != core.FORWARD:
            self._refuse(state, data, q, action, reply, now)
            return True
        with self.lock:
            answer = self.answers.get(q.cache_key())
        if answer is not None and now < answer.expires:
            self._answer(state, data, q, tcp, answer, reply, now)
            return True
        self._forward(ip, data, q, tcp, reply, now)
        return True

    def _refuse(self, state, data, q, action, reply, now):
        if action == core.REFUSE:
            reply(core.short_reply(q, core.REFUSED))
            return
        held = self.refusals.note(state.policy.vm_id, q.name, now)
        if held is not None:
            log.info("refused %s for VM %s: not in its allowed domains%s", q.name or repr(str(q.question.qname)),
                     state.policy.vm_id, " (and %d more times)" % held if held else "")
        reply(core.short_reply(q, core.NXDOMAIN))

    def _answer(self, state, data, q, tcp, answer, reply, now):
        view = core.guest_view(answer, q, state.policy, self.rebinding, int(now - answer.fetched))
        if view.removed and self.notices.note(state.policy.vm_id, ("rebinding", q.name), now) is not None:
            log.warning("VM %s: removed %s from the answer for %s (rebinding protection)",
                        state.policy.vm_id, ", ".join(view.removed), q.name)
        if view.learn and state.policy.learns:
            self._learn(state, view.learn, q.name, now)
        if view.rcode == core.SERVFAIL:
            reply(core.short_reply(q, core.SERVFAIL))
            return
        rendered = core.render(q, view, 65535 if tcp else core.udp_limit(q), now, answer.expires)
        if answer.expires > now:
            hot = state.hot_tcp if tcp else state.hot_udp
            if len(hot) >= MAX_HOT_PER_VM:
                hot.clear()
            hot[data[2:]] = rendered
        reply(data[:2] + rendered.tail)

    def _learn(self, state, pairs, name, now):
        slack = self.cfg.grace / 2.0
        for address, ttl in pairs:
            timeout = core.learn_timeout(ttl, self.cfg)
            until = now + timeout
            known = state.learned.get(address)
            if known is not None and known >= until - slack:
                continue        # still in the set for long enough
            if state.learner.add(address, timeout, name):
                state.learned[address] = until

    # -- upstream -----------------------------------------------------------------
    def _forward(self, ip, data, q, tcp, reply, now):
        key = q.cache_key()
        waiter = (ip, data, q, tcp, reply)
        with self.lock:
            pending = self.pending_by_key.get(key)
            if pending is not None:
                if len(pending.waiters) < MAX_WAITERS:
                    pending.waiters.append(waiter)
                return
            qid = random.getrandbits(16)
            while qid in self.pending:
                qid = random.getrandbits(16)
            pending = Pending(key, q, qid, core.upstream_query(qid, q), now)
            pending.waiters.append(waiter)
            self.pending[qid] = pending
            self.pending_by_key[key] = pending
        self._send_upstream(pending)

    def _send_upstream(self, pending):
        try:
            self.up.send(pending.wire)
        except OSError as exc:
            if self.notices.note("upstream", str(exc), self.clock()) is not None:
                log.warning("cannot send to upstream %s:%d: %s", self.upstream[0], self.upstream[1], exc)

    def _take(self, pending):
        with self.lock:
            if self.pending.get(pending.qid) is pending:
                del self.pending[pending.qid]
            if self.pending_by_key.get(pending.key) is pending:
                del self.pending_by_key[pending.key]

    def _serve_upstream(self):
        while not self._stopping.is_set():
            try:
                wire = self.up.recv(65535)
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)    # e.g. ICMP unreachable from a down upstream
                continue
            try:
                self.upstream_datagram(wire)
            except Exception as exc:
                log.exception("upstream answer: %s", exc)

    def upstream_datagram(self, wire):
        """One datagram from the upstream server (read with dnslib)."""
        error = None
        try:
            reply = core.parse_reply(wire)
            header, questions = reply.header, reply.questions
        except core.BadReply as exc:        # still answers its query if header and question are there
            reply, error, header, questions = None, exc, exc.header, exc.questions
        if header is None or not header.qr:
            return
        with self.lock:
            pending = self.pending.get(header.id)
        if pending is None or not core.answers_question(questions, pending.q):
            return                  # not the answer to what we asked
        self._take(pending)
        if header.tc:
            threading.Thread(target=self._upstream_tcp, args=(pending,), daemon=True).start()
            return
        if error is not None:
            log.warning("unreadable upstream answer for %s: %s", pending.q.name, error)
        self._complete(pending, reply)

    def _upstream_tcp(self, pending):
        """The upstream answer did not fit in UDP: ask again over TCP."""
        reply = None
        try:
            with socket.create_connection(self.upstream, timeout=UPSTREAM_GIVE_UP) as conn:
                conn.sendall(struct.pack("!H", len(pending.wire)) + pending.wire)
                size = struct.unpack("!H", _recv_exact(conn, 2))[0]
                reply = core.parse_reply(_recv_exact(conn, size))
            if not core.answers_question(reply.questions, pending.q):
                raise core.BadReply("the answer is not for the question asked")
        except Exception as exc:
            log.warning("upstream TCP query for %s failed: %s", pending.q.name, exc)
            reply = None
        self._complete(pending, reply)

    def _complete(self, pending, reply):
        """Cache the upstream answer (a DNSRecord from core.parse_reply, or
        None when there is none) and give it to everyone who waited, each
        under the policy its VM has now."""
        now = self.clock()
        answer = None
        if reply is not None:
            try:
                answer = core.answer_from_reply(reply, now)
            except Exception as exc:
                log.warning("unreadable upstream answer for %s: %s", pending.q.name, exc)
        if answer is not None:
            if answer.expires > now:
                with self.lock:
                    if len(self.answers) >= MAX_ANSWERS:
                        self._expire_answers(now, force=True)
                    self.answers[pending.key] = answer
        for ip, data, q, tcp, reply_fn in pending.waiters:
            try:
                state = self.vms.get(ip)
                if state is None:
                    reply_fn(core.short_reply(q, core.REFUSED))
                    continue
                action, _unused = state.policy.decide(q)
                if action != core.FORWARD:
                    self._refuse(state, data, q, action, reply_fn, now)
                elif answer is None:
                    reply_fn(core.short_reply(q, core.SERVFAIL))
                else:
                    self._answer(state, data, q, tcp, answer, reply_fn, now)
            except Exception as exc:       # one bad waiter must not starve the others
                log.error("answering %s for %s failed: %s", q.name, ip, exc)

    def _expire_answers(self, now, force=False):
        """Drop expired answers (call with the lock held); when FORCE and
        still full, drop the oldest half."""
        for key in [k for k, a in self.answers.items() if a.expires <= now]:
            del self.answers[key]
        if force and len(self.answers) >= MAX_ANSWERS:
            for key in list(self.answers)[:len(self.answers) // 2]:
                del self.answers[key]

    # -- housekeeping -------------------------------------------------------------
    def housekeeping(self):
        last_sweep = self.clock()
        while not self._stopping.wait(HOUSEKEEPING):
            now = self.clock()
            try:
                if self._reload_requested:
                    self._reload_requested = False
                    self.forget_caches()
                    self.check_state(force=True)
                else:
                    self.check_state()
                self._retry_or_fail(now)
                if now - last_sweep >= 1.0:
                    last_sweep = now
                    with self.lock:
                        self._expire_answers(now)
                    for state in list(self._by_id.values()):
                        state.learner.release_if_stale()
                        for hot in (state.hot_udp, state.hot_tcp):
                            for key in [k for k, r in list(hot.items()) if r.expires <= now]:
                                hot.pop(key, None)
                if now - self._host_refreshed >= HOST_ADDRESS_REFRESH:
                    self.refresh_host_addresses(now)
            except Exception as exc:
                log.error("housekeeping: %s", exc)

    def _retry_or_fail(self, now):
        with self.lock:
            items = list(self.pending.values())
        for pending in items:
            age = now - pending.sent
            if age >= UPSTREAM_GIVE_UP:
                self._take(pending)
                if self.notices.note("upstream-timeout", None, now) is not None:
                    log.warning("upstream %s:%d did not answer for %s", self.upstream[0], self.upstream[1],
                                pending.q.name)
                self._complete(pending, None)
            elif age >= UPSTREAM_RETRY and not pending.retried:
                pending.retried = True
                self._send_upstream(pending)

    # -- serving ------------------------------------------------------------------
    def open_sockets(self, listen):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for sock in (self.udp, self.tcp):
            # FREEBIND: the address appears on the host's lo with the first
            # VM; the resolver may start before that (at boot).
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.udp.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 4 << 20)
        except OSError:
            pass
        self.udp.bind(listen)
        self.tcp.bind(listen)
        self.tcp.listen(128)
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.connect(self.upstream)

    def close(self):
        self._stopping.set()
        for sock in (self.udp, self.tcp, self.up):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        for learner in list(self._learners.values()):
            learner.close()

    def start_threads(self):
        for target, name in ((self._serve_upstream, "upstream"), (self.housekeeping, "housekeeping"),
                             (self._serve_tcp, "tcp")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def serve_udp(self):
        """The UDP loop (main thread). The hot path is inlined: a VM's cached
        reply for these exact query bytes goes out without parsing, and
        under load many at once (recvmmsg/sendmmsg)."""
        if resolver_udp.AVAILABLE:
            return self._serve_udp_batched()
        return self._serve_udp_simple()

    def _serve_udp_batched(self):
        batch = resolver_udp.BatchSocket(self.udp)
        recv, data_of, key_of, queue, flush = batch.recv, batch.data, batch.key, batch.queue, batch.flush
        sendto, clock, stopping = self.udp.sendto, self.clock, self._stopping
        next_check, vms = 0.0, self.vms_raw
        while not stopping.is_set():
            try:
                count = recv()
            except OSError:
                if stopping.is_set():
                    return
                continue
            now = clock()
            if now >= next_check:
                next_check = now + STATE_CHECK_MIN
                self.check_state()
                vms = self.vms_raw
            for i in range(count):
                data = data_of(i)
                state = vms.get(key_of(i))
                if state is not None:
                    hot = state.hot_udp.get(data[2:])
                    if hot is not None and now < hot.fresh_until:
                        queue(i, data[:2] + hot.tail)
                        continue
                try:
                    self.handle(data, batch.address(i)[0], _udp_reply(sendto, batch.address(i)), False)
                except _Stop:
                    raise
                except Exception as exc:
                    log.exception("query from %s failed: %s", batch.address(i)[0], exc)
            flush()

    def _serve_udp_simple(self):
        recvfrom, sendto, clock = self.udp.recvfrom, self.udp.sendto, self.clock
        while not self._stopping.is_set():
            try:
                data, addr = recvfrom(4096)
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            now = clock()
            state = self.vms.get(addr[0])
            if state is not None and now < self._next_check:
                hot = state.hot_udp.get(data[2:])
                if hot is not None and now < hot.fresh_until:
                    try:
                        sendto(data[:2] + hot.at(now), addr)
                    except OSError:
                        pass
                    continue
            try:
                self.handle(data, addr[0], _udp_reply(sendto, addr), False)
            except _Stop:
                raise
            except Exception as exc:
                log.exception("query from %s failed: %s", addr[0], exc)

    def _serve_tcp(self):
        slots = threading.BoundedSemaphore(TCP_MAX_CONNECTIONS)
        while not self._stopping.is_set():
            try:
                conn, peer = self.tcp.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)
                continue
            if not slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._tcp_connection, args=(conn, peer[0], slots), daemon=True).start()

    def _tcp_connection(self, conn, ip, slots):
        write_lock = threading.Lock()
        answered = threading.Semaphore(0)

        def reply(payload):
            with write_lock:
                try:
                    conn.sendall(struct.pack("!H", len(payload)) + payload)
                except OSError:
                    pass
            answered.release()

        asked = 0
        try:
            conn.settimeout(TCP_IDLE)
            while not self._stopping.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    break
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                if data is None:
                    break
                if self.handle(data, ip, reply, True):
                    asked += 1
            # The guest may close its side right after asking: answer first.
            deadline = time.monotonic() + UPSTREAM_GIVE_UP + 0.5
            for _unused in range(asked):
                if not answered.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    break
        except Exception as exc:
            log.debug("TCP connection from %s: %s", ip, exc)
        finally:
            conn.close()
            slots.release()


def _udp_reply(sendto, addr):
    def reply(payload):
        try:
            sendto(payload, addr)
        except OSError:
            pass
    return reply


def _recv_exact(conn, size):
    data = b""
    while len(data) < size:
        try:
            chunk = conn.recv(size - len(data))
        except (socket.timeout, OSError):
            return None
        if not chunk:
            return None
        data += chunk
    return data


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------
def default_upstream(path="/etc/resolv.conf"):
    try:
        with open(path) as handle:
            found = core.upstream_from_resolv_conf(handle.read())
    except OSError as exc:
        raise VmsanError("cannot read %s (%s); give the upstream with --upstream IP[:PORT]" % (path, exc.strerror))
    if found is None:
        raise VmsanError("%s names no IPv4 nameserver; give the upstream with --upstream IP[:PORT]" % path)
    return (found, 53)


def _raise_fd_limit():
    # One netlink socket per VM that learns addresses, plus TCP clients.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard == resource.RLIM_INFINITY else min(hard, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(upstream=None, listen=None, ttl_floor=None, grace=None):
    """Run the resolver in the foreground until SIGTERM or SIGINT; SIGHUP
    re-reads every state file. Returns the exit status."""
    if not core.HAS_DNSLIB:
        raise VmsanError("the resolver needs the Python library dnslib (%s); install the pinned requirements "
                         "(scripts/setup.sh, or pip install -r requirements.txt)" % core.DNSLIB_IMPORT_ERROR)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="vmsan-resolver: %(levelname)s %(message)s")
    log.setLevel(os.environ.get("VMSAN_RESOLVER_LOG", "INFO").upper())
    cfg = core.settings(ttl_floor, grace)
    address = tuple(listen) if listen else (A.RESOLVER_IP, A.RESOLVER_PORT)
    ns.guard_sandbox()
    upstream = tuple(upstream) if upstream else default_upstream()
    if upstream == address:
        raise VmsanError("the upstream %s:%d is the resolver's own address" % upstream)
    _raise_fd_limit()
    resolver = Resolver(cfg, upstream)
    try:
        resolver.open_sockets(address)
    except OSError as exc:
        resolver.close()
        raise VmsanError("cannot listen on %s:%d: %s" % (address[0], address[1], exc.strerror))

    def stop(signum, frame):
        raise _Stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda s, f: resolver.request_reload())
    try:
        resolver.check_state(force=True)
        resolver.refresh_host_addresses(resolver.clock())
        resolver.start_threads()
        log.info("listening on %s:%d (UDP, TCP); upstream %s:%d; %d VMs; learned addresses stay "
                 "max(TTL, %d s) + %d s", address[0], address[1], upstream[0], upstream[1], len(resolver.vms),
                 cfg.ttl_floor, cfg.grace)
        resolver.serve_udp()
    except _Stop:
        log.info("stopping")
    finally:
        resolver.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
