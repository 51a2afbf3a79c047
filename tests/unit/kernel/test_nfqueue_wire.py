"""The guard's netlink messages, read back by pyroute2's own message
classes (an independent reading of the same wire format): conntrack deletes
(kernel/conntrack_wire.py) and queue verdicts (kernel/nfqueue.py), and our
reader of queue packets on a message pyroute2 packs."""

import socket
import struct

from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

from ansible_collections.vmsan.network.plugins.module_utils.kernel import conntrack_wire, nfqueue


def test_conntrack_delete_names_the_original_tuple():
    data = conntrack_wire.delete_message(6, "172.16.0.2", 40999, "203.0.113.10", 8443)
    msg = nfct_msg(data)
    msg.decode()
    assert msg["header"]["type"] == (1 << 8) | 2            # IPCTNL_MSG_CT_DELETE
    assert msg["nfgen_family"] == socket.AF_INET
    orig = msg.get_attr("CTA_TUPLE_ORIG")
    ip, proto = orig.get_attr("CTA_TUPLE_IP"), orig.get_attr("CTA_TUPLE_PROTO")
    assert (ip.get_attr("CTA_IP_V4_SRC"), ip.get_attr("CTA_IP_V4_DST")) == ("172.16.0.2", "203.0.113.10")
    assert (proto.get_attr("CTA_PROTO_NUM"), proto.get_attr("CTA_PROTO_SRC_PORT"),
            proto.get_attr("CTA_PROTO_DST_PORT")) == (6, 40999, 8443)
    assert len(data) == struct.unpack_from("=I", data)[0]


def test_verdict_layout():
    data = nfqueue.verdict_bytes(3013, 77, nfqueue.NF_REPEAT, 0x10000005)
    length, mtype, flags = struct.unpack_from("=IHH", data)
    assert (length, mtype, flags) == (len(data), (3 << 8) | 1, 1)
    family, version, res_id = struct.unpack_from("!BBH", data, 16)
    assert res_id == 3013
    attrs = nfqueue.attributes(data, 20, len(data))
    assert struct.unpack("!II", attrs[nfqueue.NFQA_VERDICT_HDR]) == (nfqueue.NF_REPEAT, 77)
    assert struct.unpack("!I", attrs[nfqueue.NFQA_MARK]) == (0x10000005,)
    assert nfqueue.NFQA_MARK not in nfqueue.attributes(nfqueue.verdict_bytes(1, 2, 1), 20, 32)


def test_queued_packet_and_log_copy_are_read():
    def attr(t, p):
        return struct.pack("=HH", 4 + len(p), t) + p + b"\x00" * ((4 - len(p) % 4) % 4)

    def msg(subsys, kind, attrs):
        body = struct.pack("!BBH", 2, 0, 3013) + b"".join(attrs)
        return struct.pack("=IHHII", 16 + len(body), (subsys << 8) | kind, 0, 0, 0) + body
    ip = b"E" + b"\x00" * 39
    queued = msg(3, 0, [attr(1, struct.pack("!IHB", 9, 0x0800, 2)), attr(3, struct.pack("!I", 5)), attr(10, ip)])
    logged = msg(4, 0, [attr(1, struct.pack("!HBx", 0x0800, 2)), attr(9, ip[:21])])
    error = struct.pack("=IHHIIi", 36, 2, 0, 7, 0, -2) + b"\x00" * 16
    messages, acks = nfqueue.parse(queued + logged + error)
    assert messages == [nfqueue.Message(nfqueue.QUEUED, 9, 5, ip), nfqueue.Message(nfqueue.LOGGED, None, 0, ip[:21])]
    assert acks == [(2, 7)]
