"""NFQUEUE (and NFLOG) for the name guard: one netlink socket per network
namespace that receives the packets the kernel holds for a verdict, and the
copies of packets it logs, and sends verdicts back.

A small reader of our own on a plain ``AF_NETLINK``/``NETLINK_NETFILTER``
socket (the messages are fixed structures and a few attributes, packed and
read with ``struct``): docs/domain-policies.md, "The name guard", gives the
numbers against NetfilterQueue (libnetfilter_queue) and pyroute2's message
classes. It binds

* queue ``queue_num`` (``nfnetlink_queue``): every packet an ``NFQUEUE
  --queue-num N`` rule sends waits in the kernel until a verdict names its id.
  Without a bound socket (and the rules use no ``--queue-bypass``) such
  packets are dropped: the guard fails closed. Packets are copied up to
  ``copy_range`` bytes (the whole IP packet of a first segment);
* optionally NFLOG group ``log_group`` (``nfnetlink_log``), flushed per
  packet, on a second socket of its own: copies that do not wait (the guard
  reads the servers' SYN-ACKs this way, and the SYN-ACK goes on at once).

Verdicts are sent many per ``send()``; each names one packet
(``NFQNL_MSG_VERDICT``: a batch verdict would cover every older packet of
the queue, other flows' included).

Why two sockets: the copies need no answer, so they should not wake the
reader. The log socket is not polled; ``receive()`` reads it *after* it has
read the queue, and returns its copies first. A flow's SYN-ACK is copied
(synchronously, as it passes the rule) before the client can send the
payload that its rule queues, so every copy that came before a queued packet
is in the log socket when that packet has been read from the queue: the
reader sees a flow's SYN-ACK before its first held packet, as it would on
one socket, with one wake-up per connection instead of two. (A copy that
came after a queued packet of the same batch is read before it: a newer
start record, which is what the server acknowledged last.) ``logged()``
reads the copies waiting without the queue (a reader calls it on a timer so
that copies of flows that send nothing do not fill the socket).

A socket belongs to the namespace of the thread that opened it: open it
inside the namespace (``netns.entered``), close it before the namespace goes.
The kernel allows one socket per queue number per namespace (``EBUSY``).
Library and kernel errors become ``NfqueueError`` (a ``VmsanError``).
"""

import errno
import os
import select
import socket
import struct
from collections import namedtuple

from ..model.errors import VmsanError
from .fastpath import native as _native
from .netlink_wire import HEADER as _NLMSGHDR
from .netlink_wire import attr as _attr

NETLINK_NETFILTER = 12
SOL_NETLINK = 270

NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4

NFNL_SUBSYS_QUEUE = 3
NFNL_SUBSYS_ULOG = 4

# nfnetlink_queue
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_PAYLOAD = 10
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3

# nfnetlink_log
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_MARK = 2
NFULA_PAYLOAD = 9
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5

# verdicts (linux/netfilter.h)
NF_DROP = 0
NF_ACCEPT = 1
NF_REPEAT = 4

QUEUED = "queued"
LOGGED = "logged"

# kind: QUEUED (waits for a verdict) or LOGGED (a copy); packet_id: the
# queue's id (None for LOGGED); mark: the packet's mark; payload: the IP
# packet (bytes, up to the copy range)
Message = namedtuple("Message", "kind packet_id mark payload")

_NFGENMSG = struct.Struct("!BBH")
_NLATTR = struct.Struct("=HH")
_VERDICT = struct.Struct("=IHHIIBBHHHII")           # header, nfgenmsg, NFQA_VERDICT_HDR
_VERDICT_MARK = struct.Struct("=IHHIIBBHHHIIHHI")   # + NFQA_MARK
_BE32 = struct.Struct("!I")

RCVBUF = 8 << 20
RECV_SIZE = 0x10000 + 512
QUEUE_MAXLEN = 8192
QUEUE_READ_LIMIT = 256      # datagrams of the queue read per wake-up
LOG_READ_LIMIT = 1024       # and of its log group (the SYN-ACK copies)
# where a QueueSocket's read or send failed (the pump in C returns the same codes)
READ_QUEUE, READ_LOG, SEND_VERDICTS = 1, 2, 3


class NfqueueError(VmsanError):
    """The kernel refused to bind or configure a queue or log group, or the
    socket failed."""

    def __init__(self, message, err=None):
        VmsanError.__init__(self, message)
        self.errno = err


def _message(subsys, msg, res_id, attrs, flags=NLM_F_REQUEST, seq=0, family=socket.AF_UNSPEC):
    body = _NFGENMSG.pack(family, 0, res_id) + b"".join(attrs)
    return _NLMSGHDR.pack(16 + len(body), (subsys << 8) | msg, flags, seq, 0) + body


def attributes(data, start, end):
    """{type: payload} of the netlink attributes in DATA[start:end]."""
    out = {}
    while start + 4 <= end:
        alen, atype = _NLATTR.unpack_from(data, start)
        if alen < 4:
            break
        out[atype & 0x3FFF] = data[start + 4:start + alen]
        start += (alen + 3) & ~3
    return out


_QUEUE_PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
_LOG_PACKET = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET


def _parse(data, length=None):
    """The messages in one datagram DATA (a bytes-like object) read from the
    socket: [Message], plus [(errno, seq)] for error acks (errno 0: an ack).
    An attribute that does not fit in its message ends the message's reading;
    a mark or packet header shorter than its 4 bytes is not read. ``parse``
    is this, or its C twin (kernel/fastpath.py)."""
    messages, acks = [], []
    end = len(data) if length is None else min(length, len(data))
    pos = 0
    header, nlattr, be32 = _NLMSGHDR.unpack_from, _NLATTR.unpack_from, _BE32.unpack_from
    while pos + 16 <= end:
        mlen, mtype, _flags, seq, _pid = header(data, pos)
        if mlen < 16 or pos + mlen > end:
            break
        if mtype == _QUEUE_PACKET or mtype == _LOG_PACKET:
            # the three attributes we read, by hand: this runs for every
            # queued packet and every copy (a dict of all of them costs more)
            queued = mtype == _QUEUE_PACKET
            want_mark, want_payload = (NFQA_MARK, NFQA_PAYLOAD) if queued else (NFULA_MARK, NFULA_PAYLOAD)
            packet_id, mark, payload = None, 0, b""
            at, stop = pos + 20, pos + mlen
            while at + 4 <= stop:
                alen, atype = nlattr(data, at)
                if alen < 4 or at + alen > stop:
                    break
                atype &= 0x3FFF
                if atype == want_payload:
                    payload = bytes(data[at + 4:at + alen])
                elif atype == want_mark and alen >= 8:
                    mark = be32(data, at + 4)[0]
                elif queued and atype == NFQA_PACKET_HDR and alen >= 8:
                    packet_id = be32(data, at + 4)[0]
                at += (alen + 3) & ~3
            if not queued:
                messages.append(Message(LOGGED, None, mark, payload))
            elif packet_id is not None:
                messages.append(Message(QUEUED, packet_id, mark, payload))
        elif mtype == NLMSG_ERROR and mlen >= 20:
            acks.append((-struct.unpack_from("=i", data, pos + 16)[0], seq))
        pos += (mlen + 3) & ~3
    return messages, acks


if _native is not None:
    _native.configure_messages(Message, QUEUED, LOGGED)
    parse = _native.parse
else:
    parse = _parse


def configure(sock, buf, subsys, msg, res_id, attrs, seq, what):
    """Send one config request (ATTRS for queue or log group RES_ID) on SOCK
    and wait for its ack, reading into BUF; NfqueueError naming WHAT if the
    kernel refuses (EBUSY: another socket holds it) or the socket fails.
    Both readers bind this way: QueueSocket here, kernel/nflog.LogSocket."""
    sock.settimeout(5.0)
    sock.send(_message(subsys, msg, res_id, attrs, NLM_F_REQUEST | NLM_F_ACK, seq))
    view = memoryview(buf)
    while True:
        try:
            n = sock.recv_into(buf)
        except OSError as exc:
            raise NfqueueError("%s: %s" % (what, exc), exc.errno)
        _messages, acks = parse(view, n)
        for err, ack_seq in acks:
            if ack_seq == seq:
                if err:
                    why = "another socket holds it" if err == errno.EBUSY else os.strerror(err)
                    raise NfqueueError("%s: %s" % (what, why), err)
                return


def verdict_bytes(queue_num, packet_id, verdict, mark=None):
    """One NFQNL_MSG_VERDICT for PACKET_ID; MARK (the packet's whole mark) is
    set on the packet before the verdict applies."""
    mtype = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
    res_id = socket.htons(queue_num)
    if mark is None:
        return _VERDICT.pack(_VERDICT.size, mtype, NLM_F_REQUEST, 0, 0, socket.AF_UNSPEC, 0, res_id,
                             12, NFQA_VERDICT_HDR, socket.htonl(verdict), socket.htonl(packet_id))
    return _VERDICT_MARK.pack(_VERDICT_MARK.size, mtype, NLM_F_REQUEST, 0, 0, socket.AF_UNSPEC, 0, res_id,
                              12, NFQA_VERDICT_HDR, socket.htonl(verdict), socket.htonl(packet_id),
                              8, NFQA_MARK, socket.htonl(mark))


def _verdicts_bytes(queue_num, items):
    """The verdicts ITEMS ``(packet_id, verdict, mark or None)`` as one
    blob; ``verdicts_bytes`` is this, or its C twin (kernel/fastpath.py)."""
    return b"".join(verdict_bytes(queue_num, pid, verdict, mark) for pid, verdict, mark in items)


verdicts_bytes = _native.verdict_bytes if _native is not None else _verdicts_bytes


def read_datagrams(sock, buf, view, parse_one, limit, what, on_overflow=None):
    """What PARSE_ONE(VIEW, n) makes of each datagram waiting on SOCK (a
    non-blocking netfilter socket read into BUF, VIEW its memoryview), up to
    LIMIT datagrams, as one list. ENOBUFS (the socket overflowed: the kernel
    dropped messages) calls ON_OVERFLOW and reads on, or without one raises
    NfqueueError naming WHAT, as any other error does (EINTR: read again).
    The one receive loop of the queue, its log group and the NFLOG drop
    reader (nflog.LogSocket); the queue's sockets use its C twin
    (``QueueSocket._read_native``) where it is built."""
    out = []
    recv_into = sock.recv_into
    for _count in range(limit):
        try:
            n = recv_into(buf)
        except BlockingIOError:
            break
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            if on_overflow is not None and exc.errno == errno.ENOBUFS:
                on_overflow()
                continue
            raise NfqueueError("%s: %s" % (what, exc), exc.errno)
        out.extend(parse_one(view, n))
    return out


def _netfilter_socket():
    """A bound NETLINK_NETFILTER socket with a large receive buffer."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as exc:
        raise NfqueueError("cannot open a netfilter netlink socket: %s" % exc, exc.errno)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)     # SO_RCVBUFFORCE (root)
        except OSError:
            pass
        sock.bind((0, 0))
    except OSError as exc:
        sock.close()
        raise NfqueueError("cannot bind a netfilter netlink socket: %s" % exc, exc.errno)
    return sock


class QueueSocket(object):
    """Queue QUEUE_NUM (and NFLOG group LOG_GROUP) of the calling thread's
    network namespace. ``timeout``: seconds ``receive`` waits for a first
    datagram by default (None: for ever; 0: not at all). The socket itself
    is non-blocking: a loop over many queues polls their file descriptors
    and calls ``receive(timeout=0)`` on the ready ones."""

    def __init__(self, queue_num, log_group=None, copy_range=0xFFFF, maxlen=QUEUE_MAXLEN,
                 log_copy=128, timeout=1.0):
        self.queue_num, self.log_group = queue_num, log_group
        # what an error names, by READ_QUEUE, READ_LOG, SEND_VERDICTS
        self._where = ("queue %d" % queue_num, "log group %s" % log_group,
                       "queue %d: cannot send verdicts" % queue_num)
        self.timeout = timeout
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self.log_sock = None
        self.log_overflows = 0
        self.sock = _netfilter_socket()
        try:
            self._configure(self.sock, NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, queue_num, [
                _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)),
            ], "bind queue %d" % queue_num)
            self._configure(self.sock, NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, queue_num, [
                _attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, NFQNL_COPY_PACKET)),
                _attr(NFQA_CFG_QUEUE_MAXLEN, _BE32.pack(maxlen)),
            ], "configure queue %d" % queue_num)
            if log_group is not None:
                self.log_sock = _netfilter_socket()
                self._configure(self.log_sock, NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG, log_group, [
                    _attr(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND)),
                ], "bind log group %d" % log_group)
                self._configure(self.log_sock, NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG, log_group, [
                    _attr(NFULA_CFG_MODE, struct.pack("!IBx", log_copy, NFULNL_COPY_PACKET)),
                    _attr(NFULA_CFG_QTHRESH, _BE32.pack(1)),
                    _attr(NFULA_CFG_TIMEOUT, _BE32.pack(0)),
                ], "configure log group %d" % log_group)
                self.log_sock.setblocking(False)
            self.sock.setblocking(False)
            self._poll = select.poll()
            self._poll.register(self.sock.fileno(), select.POLLIN)
        except BaseException:
            self.close()
            raise

    def fileno(self):
        return self.sock.fileno()

    def native_handles(self):
        """(queue fd, log group fd or -1, receive buffer, queue number, the
        two reads' limits): what the guard's pump in C (guard/loop.py,
        kernel/fastpath.py) reads and writes in place of ``receive`` and
        ``verdicts``."""
        return (self.sock.fileno(), self.log_sock.fileno() if self.log_sock is not None else -1, self._buf,
                self.queue_num, QUEUE_READ_LIMIT, LOG_READ_LIMIT)

    def error(self, where, err):
        """The NfqueueError of a read or send that failed with errno ERR
        (WHERE: READ_QUEUE, READ_LOG or SEND_VERDICTS)."""
        return NfqueueError("%s: %s" % (self._where[where - 1], os.strerror(err)), err)

    def overflowed(self, count):
        """COUNT overflows of the log socket read over (by the pump in C)."""
        self.log_overflows += count

    def _configure(self, sock, subsys, msg, res_id, attrs, what):
        self._seq += 1
        configure(sock, self._buf, subsys, msg, res_id, attrs, self._seq, what)

    def receive(self, limit=QUEUE_READ_LIMIT, timeout=-1):
        """The messages waiting: waits up to TIMEOUT seconds (default the
        socket's; 0: not at all) for the first datagram of the queue, then
        takes what is already there, up to LIMIT datagrams, and the log
        group's copies waiting after that (first in the list). [] when
        nothing came. Error acks (none expected after setup) are ignored;
        ``ENOBUFS`` (the socket overflowed: the kernel dropped queued
        packets) raises NfqueueError with that errno."""
        timeout = self.timeout if timeout == -1 else timeout
        if timeout != 0 and not self._poll.poll(None if timeout is None else int(timeout * 1000)):
            return []
        out = self._read(self.sock, limit, READ_QUEUE)
        if out and self.log_sock is not None:
            logged = self.logged()
            if logged:
                logged.extend(out)
                return logged
        return out

    def logged(self, limit=LOG_READ_LIMIT):
        """The log group's copies waiting now ([] without a log group). An
        overflow of the log socket (the kernel dropped copies: their flows
        will be refused, never passed) is counted in ``log_overflows`` and
        read on, so that the queued packets read with it still get their
        verdicts."""
        if self.log_sock is None:
            return []
        return self._read(self.log_sock, limit, READ_LOG, overflow_ok=True)

    def _read(self, sock, limit, where, overflow_ok=False):
        if _native is not None:
            # the receive loop in C (kernel/fastpath.py): the same messages and errors
            out, err, overflows = _native.receive(sock.fileno(), self._buf, limit, overflow_ok)
            self.log_overflows += overflows
            if err:
                raise self.error(where, err)
            return out

        def overflowed():
            self.log_overflows += 1
        return read_datagrams(sock, self._buf, self._view, lambda view, n: parse(view, n)[0], limit,
                              self._where[where - 1], overflowed if overflow_ok else None)

    def verdicts(self, items, then=()):
        """Send verdicts, many per system call: ITEMS are
        ``(packet_id, verdict, mark or None)``; THEN: more netlink messages
        (bytes) for the kernel to handle after them, in the same call (a
        verdict's packet has gone through the hook again when the next
        message is read)."""
        blob = verdicts_bytes(self.queue_num, items)
        if then:
            blob += b"".join(then)
        view = memoryview(blob)
        while view:
            try:
                sent = self.sock.send(view[:RCVBUF // 8])
            except OSError as exc:
                raise self.error(SEND_VERDICTS, exc.errno)
            view = view[sent:]

    def close(self):
        """Unbinding drops what the queue still holds (the kernel does it
        when the socket goes)."""
        self.sock.close()
        if self.log_sock is not None:
            self.log_sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
