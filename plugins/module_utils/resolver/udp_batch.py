"""Many UDP datagrams per system call: recvmmsg(2) and sendmmsg(2) through
ctypes, for the resolver's busy UDP loop.

Under load most of a Python UDP server's time goes to one recvfrom and one
sendto per query. With recvmmsg a single call returns every query that is
waiting (up to BATCH), and the cached replies to all of them leave with a
single sendmmsg. When one query at a time comes in, recvmmsg returns it as
soon as it is there (MSG_WAITFORONE), so nothing waits for a batch to fill.

Buffers are allocated once; a reply is copied into the send slot of the
batch and sent to the address its query came from (the receive slot's
sockaddr is reused as the destination). One BatchSocket can serve several
sockets in turn (``use``), each batch received and flushed before the next
socket's: the resolver's per-VM queues share one set of buffers.

``steer_by_source`` makes a group of SO_REUSEPORT sockets a set of queues by
source address: a classic BPF program (SO_ATTACH_REUSEPORT_CBPF) gives each
datagram to the socket ``(src ^ (src >> 8)) % count``, so one sender's flood
fills its own socket's queue and no other.
"""

import ctypes
import ctypes.util
import errno
import os
import socket
import struct

MSG_WAITFORONE = 0x10000
SOCKADDR_SIZE = 16          # struct sockaddr_in
RECV_SIZE = 4096            # a UDP query never needs more
SEND_SIZE = 2048            # a UDP reply never exceeds EDNS_PAYLOAD (1232)


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        for name in ("recvmmsg", "sendmmsg"):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    libc.recvmmsg.restype = ctypes.c_int
    libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    libc.sendmmsg.restype = ctypes.c_int
    return libc


_LIBC = _libc()
AVAILABLE = _LIBC is not None

_U32 = struct.Struct("=I")
_PTR = struct.Struct("@P")
_SIZE = struct.Struct("@N")


class BatchSocket(object):
    """Receive up to BATCH datagrams at once from an IPv4 UDP socket, queue
    replies to them, send the queued replies at once.

    After ``n = recv()``: ``data(i)``, ``key(i)`` (the sender's address as 4
    raw bytes), ``address(i)`` ((ip, port)) for i < n; ``queue(i, payload)``
    then ``flush()``."""

    def __init__(self, sock, batch=64):
        self.sock, self.fd, self.batch = sock, sock.fileno(), batch
        self._rbuf = ctypes.create_string_buffer(batch * RECV_SIZE)
        self._names = ctypes.create_string_buffer(batch * SOCKADDR_SIZE)
        self._riov = (_Iovec * batch)()
        self._rmsgs = (_Mmsghdr * batch)()
        self._sbuf = ctypes.create_string_buffer(batch * SEND_SIZE)
        self._siov = (_Iovec * batch)()
        self._smsgs = (_Mmsghdr * batch)()
        rbase, sbase = ctypes.addressof(self._rbuf), ctypes.addressof(self._sbuf)
        self._names_base = ctypes.addressof(self._names)
        for i in range(batch):
            self._riov[i].iov_base, self._riov[i].iov_len = rbase + i * RECV_SIZE, RECV_SIZE
            hdr = self._rmsgs[i].msg_hdr
            hdr.msg_name, hdr.msg_namelen = self._names_base + i * SOCKADDR_SIZE, SOCKADDR_SIZE
            hdr.msg_iov, hdr.msg_iovlen = ctypes.pointer(self._riov[i]), 1
            self._siov[i].iov_base = sbase + i * SEND_SIZE
            hdr = self._smsgs[i].msg_hdr
            hdr.msg_namelen = SOCKADDR_SIZE
            hdr.msg_iov, hdr.msg_iovlen = ctypes.pointer(self._siov[i]), 1
        self._rview = memoryview(self._rbuf).cast("B")
        self._nview = memoryview(self._names).cast("B")
        self._sview = memoryview(self._sbuf).cast("B")
        self._rmsg_view = memoryview(self._rmsgs).cast("B")
        self._smsg_view = memoryview(self._smsgs).cast("B")
        self._siov_view = memoryview(self._siov).cast("B")
        self._mm_size = ctypes.sizeof(_Mmsghdr)
        self._len_off = _Mmsghdr.msg_len.offset
        self._namelen_off = _Msghdr.msg_namelen.offset
        self._name_off = _Msghdr.msg_name.offset
        self._iov_size = ctypes.sizeof(_Iovec)
        self._iovlen_off = _Iovec.iov_len.offset
        self._rmsgs_addr = ctypes.addressof(self._rmsgs)
        self._smsgs_addr = ctypes.addressof(self._smsgs)
        self.queued = 0
        self._used = 0

    def use(self, sock):
        """Receive from and reply through SOCK from now on (the previous
        socket's batch must have been flushed)."""
        self.sock, self.fd = sock, sock.fileno()

    def recv(self):
        """Wait for at least one datagram (on a blocking socket); returns how
        many arrived (0 when interrupted by a signal, whose handler then
        runs, or when a non-blocking socket has none)."""
        for i in range(self._used):     # the kernel rewrote their name lengths
            _U32.pack_into(self._rmsg_view, i * self._mm_size + self._namelen_off, SOCKADDR_SIZE)
        count = _LIBC.recvmmsg(self.fd, self._rmsgs_addr, self.batch, MSG_WAITFORONE, None)
        if count < 0:
            self._used = 0
            err = ctypes.get_errno()
            if err in (errno.EINTR, errno.EAGAIN):
                return 0
            raise OSError(err, os.strerror(err))
        self._used = count
        return count

    def data(self, i):
        size = _U32.unpack_from(self._rmsg_view, i * self._mm_size + self._len_off)[0]
        start = i * RECV_SIZE
        return bytes(self._rview[start:start + min(size, RECV_SIZE)])

    def key(self, i):
        start = i * SOCKADDR_SIZE + 4
        return bytes(self._nview[start:start + 4])

    def address(self, i):
        start = i * SOCKADDR_SIZE
        port = (self._nview[start + 2] << 8) | self._nview[start + 3]
        return socket.inet_ntoa(bytes(self._nview[start + 4:start + 8])), port

    def queue(self, i, payload):
        """Reply PAYLOAD to datagram I at the next flush()."""
        size = len(payload)
        if size > SEND_SIZE:
            self.sock.sendto(payload, self.address(i))
            return
        k = self.queued
        start = k * SEND_SIZE
        self._sview[start:start + size] = payload
        _SIZE.pack_into(self._siov_view, k * self._iov_size + self._iovlen_off, size)
        _PTR.pack_into(self._smsg_view, k * self._mm_size + self._name_off,
                       self._names_base + i * SOCKADDR_SIZE)
        self.queued = k + 1

    def flush(self):
        """Send the queued replies. A reply the kernel refuses is dropped,
        as a lost datagram would be."""
        done, total = 0, self.queued
        while done < total:
            sent = _LIBC.sendmmsg(self.fd, self._smsgs_addr + done * self._mm_size, total - done, 0)
            if sent < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                sent = 1            # skip the message that failed
            done += sent
        self.queued = 0


# --------------------------------------------------------------------------
# queues by source address
# --------------------------------------------------------------------------
SO_ATTACH_REUSEPORT_CBPF = 51
SKF_NET_OFF = -0x100000         # classic BPF: offsets from the network header
_BPF_LD_W_ABS, _BPF_TAX, _BPF_RSH_K, _BPF_XOR_X, _BPF_MOD_K, _BPF_RET_A = 0x20, 0x07, 0x74, 0xac, 0x94, 0x16
_INSN = struct.Struct("HBBI")   # struct sock_filter


def source_steering_program(count):
    """The classic BPF program of ``steer_by_source`` (bytes of struct
    sock_filter): A = source address; A ^= A >> 8; A %= COUNT; return A."""
    return b"".join(_INSN.pack(code, 0, 0, k & 0xFFFFFFFF) for code, k in (
        (_BPF_LD_W_ABS, SKF_NET_OFF + 12),      # A = the IPv4 header's source address
        (_BPF_TAX, 0),                          # X = A
        (_BPF_RSH_K, 8),                        # A >>= 8
        (_BPF_XOR_X, 0),                        # A ^= X
        (_BPF_MOD_K, count),                    # A %= count
        (_BPF_RET_A, 0)))                       # the socket of the group, by bind order


def steer_by_source(sock, count):
    """Attach the program to SOCK, the first of COUNT SO_REUSEPORT sockets,
    before it is bound. Raises OSError where the kernel cannot."""
    program = source_steering_program(count)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("@HP", len(program) // _INSN.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def queue_of(address, count):
    """Which of COUNT sockets ``steer_by_source`` gives datagrams from ADDRESS."""
    value = struct.unpack("!I", socket.inet_aton(address))[0]
    return (value ^ (value >> 8)) % count
