"""Hand-built packets (for the probes that forge something) and frame
predicates (for the sniffer). Only what the tests need: Ethernet, IPv4, IPv6,
UDP and ICMP echo."""

import socket
import struct

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_ALL = 0x0003

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17


def checksum(data):
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_str(raw):
    return ":".join(f"{b:02x}" for b in raw)


def udp_ipv4(src_ip, dst_ip, src_port, dst_port, payload, ttl=64, ident=0):
    """A complete IPv4 packet carrying one UDP datagram, checksums filled in."""
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, IPPROTO_UDP, udp_len)
    udp = struct.pack("!HHHH", src_port, dst_port, udp_len, 0) + payload
    udp_sum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident, 0x4000, ttl, IPPROTO_UDP, 0, src, dst
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def udp_ipv6(src_ip, dst_ip, src_port, dst_port, payload, hop_limit=64):
    """A complete IPv6 packet carrying one UDP datagram."""
    src = socket.inet_pton(socket.AF_INET6, src_ip)
    dst = socket.inet_pton(socket.AF_INET6, dst_ip)
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!I3xB", udp_len, IPPROTO_UDP)
    udp = struct.pack("!HHHH", src_port, dst_port, udp_len, 0) + payload
    udp_sum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = struct.pack("!IHBB16s16s", 6 << 28, udp_len, IPPROTO_UDP, hop_limit, src, dst)
    return header + udp


def ethernet(dst_mac, src_mac, ethertype, payload):
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ethertype) + payload


def icmp_echo(ident, seq, payload=b"vmsan-probe"):
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    csum = checksum(header + payload)
    return struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload


# -- parsing, for sniffer predicates ------------------------------------------


class Frame:
    """Lazy view of one Ethernet frame as a sniffer saw it."""

    def __init__(self, raw, outgoing=False):
        self.raw = raw
        self.outgoing = outgoing

    @property
    def dst_mac(self):
        return mac_str(self.raw[0:6])

    @property
    def src_mac(self):
        return mac_str(self.raw[6:12])

    @property
    def ethertype(self):
        return struct.unpack("!H", self.raw[12:14])[0] if len(self.raw) >= 14 else None

    @property
    def is_ipv4(self):
        return self.ethertype == ETH_P_IP

    @property
    def is_ipv6(self):
        return self.ethertype == ETH_P_IPV6

    @property
    def ip_proto(self):
        if self.is_ipv4:
            return self.raw[14 + 9]
        if self.is_ipv6:
            return self.raw[14 + 6]
        return None

    @property
    def src_ip(self):
        if self.is_ipv4:
            return socket.inet_ntoa(self.raw[26:30])
        if self.is_ipv6:
            return socket.inet_ntop(socket.AF_INET6, self.raw[22:38])
        return None

    @property
    def dst_ip(self):
        if self.is_ipv4:
            return socket.inet_ntoa(self.raw[30:34])
        if self.is_ipv6:
            return socket.inet_ntop(socket.AF_INET6, self.raw[38:54])
        return None

    def _l4_offset(self):
        if self.is_ipv4:
            return 14 + (self.raw[14] & 0x0F) * 4
        if self.is_ipv6:
            return 14 + 40  # extension headers are not followed: tests send none
        return None

    @property
    def dst_port(self):
        off = self._l4_offset()
        if off is None or self.ip_proto not in (IPPROTO_TCP, IPPROTO_UDP):
            return None
        return struct.unpack("!H", self.raw[off + 2 : off + 4])[0]

    @property
    def src_port(self):
        off = self._l4_offset()
        if off is None or self.ip_proto not in (IPPROTO_TCP, IPPROTO_UDP):
            return None
        return struct.unpack("!H", self.raw[off : off + 2])[0]

    def __repr__(self):
        return (
            f"<Frame {self.src_mac}->{self.dst_mac} type={self.ethertype:#06x} "
            f"{self.src_ip}:{self.src_port}->{self.dst_ip}:{self.dst_port} proto={self.ip_proto}>"
        )


# Predicates take a Frame and say whether it counts.


def any_frame(frame):
    return True


def ipv6(frame):
    return frame.is_ipv6


def ipv4_to(ip, port=None, proto=None):
    def match(frame):
        return (
            frame.is_ipv4
            and frame.dst_ip == ip
            and (port is None or frame.dst_port == port)
            and (proto is None or frame.ip_proto == proto)
        )

    return match


def ipv4_from(ip):
    return lambda frame: frame.is_ipv4 and frame.src_ip == ip


def all_of(*predicates):
    return lambda frame: all(p(frame) for p in predicates)


def payload_contains(marker):
    marker = marker.encode() if isinstance(marker, str) else marker
    return lambda frame: marker in frame.raw
