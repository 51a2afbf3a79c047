"""What a copied packet was sent to: the first bytes of an IPv4 or IPv6
packet (as NFLOG and the IPv6 packet socket give them) read into source,
destination, protocol and destination port. Pure."""

import socket
import struct
from collections import namedtuple

Seen = namedtuple("Seen", "source destination protocol port")

PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
_PORTED = (6, 17, 132)
_PORT = struct.Struct("!H")


def _protocol(number):
    return PROTOCOLS.get(number, str(number))


def ipv4(packet):
    """The Seen of an IPv4 packet's first bytes, or None if they are not one."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header = (packet[0] & 0x0F) * 4
    number = packet[9]
    port = None
    fragment_offset = _PORT.unpack_from(packet, 6)[0] & 0x1FFF
    if number in _PORTED and not fragment_offset and len(packet) >= header + 4:
        port = _PORT.unpack_from(packet, header + 2)[0]
    return Seen(socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20]), _protocol(number), port)


def ipv6(packet):
    """The Seen of an IPv6 packet's first bytes (the next header of the fixed
    header: extension headers are not followed), or None."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    number = packet[6]
    port = _PORT.unpack_from(packet, 42)[0] if number in _PORTED and len(packet) >= 44 else None
    return Seen(socket.inet_ntop(socket.AF_INET6, packet[8:24]), socket.inet_ntop(socket.AF_INET6, packet[24:40]),
                _protocol(number), port)
