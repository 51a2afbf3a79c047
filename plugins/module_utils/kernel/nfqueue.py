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
  packet: copies that do not wait (the guard reads the SYNs' sequence
  numbers this way, and the SYN goes on at once).

Both arrive on the same socket, so a flow's logged SYN is always read before
its first held packet. Verdicts are sent many per ``send()``; each names one
packet (``NFQNL_MSG_VERDICT``: a batch verdict would cover every older packet
of the queue, other flows' included).

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


def parse(data, length=None):
    """The messages in one datagram DATA (a bytes-like object) read from the
    socket: [Message], plus [(errno, seq)] for error acks (errno 0: an ack)."""
    messages, acks = [], []
    end = len(data) if length is None else length
    pos = 0
    while pos + 16 <= end:
        mlen, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if mlen < 16 or pos + mlen > end:
            break
        if mtype == NLMSG_ERROR:
            acks.append((-struct.unpack_from("=i", data, pos + 16)[0], seq))
        elif mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            attrs = attributes(data, pos + 20, pos + mlen)
            hdr = attrs.get(NFQA_PACKET_HDR)
            if hdr is not None:
                mark = attrs.get(NFQA_MARK)
                messages.append(Message(QUEUED, _BE32.unpack_from(hdr)[0],
                                        _BE32.unpack(mark)[0] if mark else 0,
                                        bytes(attrs.get(NFQA_PAYLOAD, b""))))
        elif mtype == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            attrs = attributes(data, pos + 20, pos + mlen)
            mark = attrs.get(NFULA_MARK)
            messages.append(Message(LOGGED, None, _BE32.unpack(mark)[0] if mark else 0,
                                    bytes(attrs.get(NFULA_PAYLOAD, b""))))
        pos += (mlen + 3) & ~3
    return messages, acks


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


class QueueSocket(object):
    """Queue QUEUE_NUM (and NFLOG group LOG_GROUP) of the calling thread's
    network namespace. ``timeout``: seconds ``receive`` waits for a first
    datagram by default (None: for ever; 0: not at all). The socket itself
    is non-blocking: a loop over many queues polls their file descriptors
    and calls ``receive(timeout=0)`` on the ready ones."""

    def __init__(self, queue_num, log_group=None, copy_range=0xFFFF, maxlen=QUEUE_MAXLEN,
                 log_copy=128, timeout=1.0):
        self.queue_num, self.log_group = queue_num, log_group
        self.timeout = timeout
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise NfqueueError("cannot open a netfilter netlink socket: %s" % exc, exc.errno)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)     # SO_RCVBUFFORCE (root)
            except OSError:
                pass
            self.sock.bind((0, 0))
            self._configure(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, queue_num, [
                _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)),
            ], "bind queue %d" % queue_num)
            self._configure(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG, queue_num, [
                _attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, NFQNL_COPY_PACKET)),
                _attr(NFQA_CFG_QUEUE_MAXLEN, _BE32.pack(maxlen)),
            ], "configure queue %d" % queue_num)
            if log_group is not None:
                self._configure(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG, log_group, [
                    _attr(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND)),
                ], "bind log group %d" % log_group)
                self._configure(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG, log_group, [
                    _attr(NFULA_CFG_MODE, struct.pack("!IBx", log_copy, NFULNL_COPY_PACKET)),
                    _attr(NFULA_CFG_QTHRESH, _BE32.pack(1)),
                    _attr(NFULA_CFG_TIMEOUT, _BE32.pack(0)),
                ], "configure log group %d" % log_group)
            self.sock.setblocking(False)
            self._poll = select.poll()
            self._poll.register(self.sock.fileno(), select.POLLIN)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self):
        return self.sock.fileno()

    def _configure(self, subsys, msg, res_id, attrs, what):
        self._seq += 1
        configure(self.sock, self._buf, subsys, msg, res_id, attrs, self._seq, what)

    def receive(self, limit=256, timeout=-1):
        """The messages waiting: waits up to TIMEOUT seconds (default the
        socket's; 0: not at all) for the first datagram, then takes what is
        already there, up to LIMIT datagrams. [] when nothing came. Error
        acks (none expected after setup) are ignored; ``ENOBUFS`` (the socket
        overflowed: the kernel dropped copies or queued packets) raises
        NfqueueError with that errno."""
        timeout = self.timeout if timeout == -1 else timeout
        if timeout != 0 and not self._poll.poll(None if timeout is None else int(timeout * 1000)):
            return []
        out = []
        for _count in range(limit):
            try:
                n = self.sock.recv_into(self._buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise NfqueueError("queue %d: %s" % (self.queue_num, exc), exc.errno)
            messages, _acks = parse(self._view, n)
            out.extend(messages)
        return out

    def verdicts(self, items, then=()):
        """Send verdicts, many per system call: ITEMS are
        ``(packet_id, verdict, mark or None)``; THEN: more netlink messages
        (bytes) for the kernel to handle after them, in the same call (a
        verdict's packet has gone through the hook again when the next
        message is read)."""
        blob = b"".join(verdict_bytes(self.queue_num, pid, verdict, mark) for pid, verdict, mark in items)
        blob += b"".join(then)
        view = memoryview(blob)
        while view:
            try:
                sent = self.sock.send(view[:RCVBUF // 8])
            except OSError as exc:
                raise NfqueueError("queue %d: cannot send verdicts: %s" % (self.queue_num, exc), exc.errno)
            view = view[sent:]

    def close(self):
        """Unbinding drops what the queue still holds (the kernel does it
        when the socket goes)."""
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
