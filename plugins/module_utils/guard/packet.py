"""The few fields of a queued IPv4 packet the guard reads. Pure."""

import socket
import struct
from collections import namedtuple

from ..kernel.fastpath import native as _native

TCP = 6
UDP = 17
SYN = 0x02
ACK = 0x10

# proto: TCP or UDP; src, dst: dotted addresses; sport, dport; seq, ack and
# flags (TCP; None and 0 for UDP); payload: the transport payload (bytes)
Packet = namedtuple("Packet", "proto src sport dst dport seq ack flags payload")

_IP = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!HHIIBB")

# dotted text of the addresses seen lately: a guard sees few (its guests and
# the addresses they were let reach), and every packet needs two
_DOTTED = {}
_DOTTED_MAX = 8192


def _dotted(raw):
    text = _DOTTED.get(raw)
    if text is None:
        if len(_DOTTED) >= _DOTTED_MAX:
            _DOTTED.clear()
        text = _DOTTED[raw] = socket.inet_ntoa(raw)
    return text


def _read(data):
    """The Packet in DATA (an IPv4 packet as the queue copied it), or None
    for anything else (IPv6, another protocol, a header cut short). ``read``
    is this, or its C twin (kernel/fastpath.py)."""
    if len(data) < 20:
        return None
    vihl, _tos, total, _id, frag, _ttl, proto, _csum, src, dst = _IP.unpack_from(data)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or frag & 0x1FFF:
        return None
    end = min(total, len(data))
    if proto == TCP:
        if end < ihl + 20:
            return None
        sport, dport, seq, ack, off, flags = _TCP.unpack_from(data, ihl)
        start = ihl + (off >> 4) * 4
        if (off >> 4) < 5 or start > end:
            return None
        return Packet(TCP, _dotted(src), sport, _dotted(dst), dport, seq, ack, flags,
                      bytes(data[start:end]))
    if proto == UDP:
        if end < ihl + 8:
            return None
        sport, dport = _PORTS.unpack_from(data, ihl)
        return Packet(UDP, _dotted(src), sport, _dotted(dst), dport, None, None, 0, bytes(data[ihl + 8:end]))
    return None


if _native is not None:
    _native.configure_packets(Packet)
    read = _native.read_packet
else:
    read = _read
