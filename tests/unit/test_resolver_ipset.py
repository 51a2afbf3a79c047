"""The one netlink message the resolver sends to learn an address."""

import socket
import struct

from ansible_collections.vmsan.network.plugins.module_utils import resolver_ipset as ri


def _attrs(data):
    out, pos = [], 0
    while pos + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, pos)
        out.append((kind, data[pos + 4:pos + size]))
        pos += (size + 3) & ~3
    return out


def test_add_message_layout():
    msg = ri.add_message(7, "vmsan-vm1-dns", "203.0.113.10", 90, "a.example.test")
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and length % 4 == 0
    assert kind == (ri.NFNL_SUBSYS_IPSET << 8) | ri.IPSET_CMD_ADD
    assert flags == ri.NLM_F_REQUEST | ri.NLM_F_ACK      # no NLM_F_EXCL: a second add refreshes
    assert seq == 7
    family, _version, _res = struct.unpack_from("=BBH", msg, 16)
    assert family == socket.AF_INET
    attrs = dict(_attrs(msg[20:]))
    assert attrs[ri.IPSET_ATTR_PROTOCOL] == bytes([ri.IPSET_PROTOCOL])
    assert attrs[ri.IPSET_ATTR_SETNAME] == b"vmsan-vm1-dns\0"
    data = dict(_attrs(attrs[ri.IPSET_ATTR_DATA | ri.NLA_F_NESTED]))
    ip = dict(_attrs(data[ri.IPSET_ATTR_IP | ri.NLA_F_NESTED]))
    assert ip[ri.IPSET_ATTR_IPADDR_IPV4 | ri.NLA_F_NET_BYTEORDER] == socket.inet_aton("203.0.113.10")
    assert struct.unpack("!I", data[ri.IPSET_ATTR_TIMEOUT | ri.NLA_F_NET_BYTEORDER])[0] == 90
    assert data[ri.IPSET_ATTR_COMMENT] == b"a.example.test\0"


def test_long_comment_is_cut_to_the_kernel_limit():
    msg = ri.add_message(1, "s", "192.0.2.1", 1, "x" * 400)
    attrs = dict(_attrs(msg[20:]))
    data = dict(_attrs(attrs[ri.IPSET_ATTR_DATA | ri.NLA_F_NESTED]))
    assert len(data[ri.IPSET_ATTR_COMMENT]) == ri.IPSET_MAX_COMMENT_SIZE
