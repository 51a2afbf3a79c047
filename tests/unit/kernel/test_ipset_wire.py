"""ipset netlink messages built with pyroute2's ipset_msg, and the batching
sender (over a fake socket here: nothing reaches a kernel; the real thing
is in tests/integration/test_domains.py)."""

import asyncio
import errno
import socket
import threading

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR, nlmsgerr
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_IPSET
from pyroute2.netlink.nfnetlink.ipset import IPSET_CMD_ADD, IPSET_CMD_DEL, IPSET_ERR_EXIST, ipset_msg

from ansible_collections.vmsan.network.plugins.module_utils.kernel import ipset_wire as wire
from ansible_collections.vmsan.network.plugins.module_utils.kernel.netlink_wire import NetlinkSocket, read_acks


def decoded(data):
    msg = ipset_msg(data)
    msg.decode()
    return msg


def data_attrs(msg):
    """{name: value} of the message's IPSET_ATTR_DATA (the address as text)."""
    out = {}
    for name, value in msg.get_attr("IPSET_ATTR_DATA")["attrs"]:
        if name in ("IPSET_ATTR_IP", "IPSET_ATTR_IP_FROM"):
            value = tuple(value["attrs"][0][:2])
        out[name] = value
    return out


# -- messages -------------------------------------------------------------------

def test_add_message_for_an_address_with_timeout_and_comment():
    msg = decoded(wire.add_message("vmsan-vm1-dns", "203.0.113.10", 90, "a.example.test", seq=7))
    header = msg["header"]
    assert header["type"] == (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_ADD
    assert header["flags"] == NLM_F_REQUEST | NLM_F_ACK        # no NLM_F_EXCL: a second add refreshes
    assert header["sequence_number"] == 7 and header["length"] == len(wire.add_message(
        "vmsan-vm1-dns", "203.0.113.10", 90, "a.example.test", seq=7))
    assert msg["nfgen_family"] == socket.AF_INET
    assert msg.get_attr("IPSET_ATTR_PROTOCOL") == wire.IPSET_PROTOCOL
    assert msg.get_attr("IPSET_ATTR_SETNAME") == "vmsan-vm1-dns"
    assert data_attrs(msg) == {"IPSET_ATTR_IP_FROM": ("IPSET_ATTR_IPADDR_IPV4", "203.0.113.10"),
                               "IPSET_ATTR_TIMEOUT": 90, "IPSET_ATTR_COMMENT": "a.example.test"}


def test_add_message_is_the_one_the_resolver_sent_before():
    """The bytes the hand-written encoder produced (kernel-tested since):
    pyroute2 encodes exactly the same message."""
    expected = bytes.fromhex(
        "5c00000009060500070000000000000002000000050001000600000012000200766d73616e2d766d312d646e7300"
        "00002c0007800c00018008000140cb00710a080006400000005a13001a00612e6578616d706c652e746573740000")
    assert wire.add_message("vmsan-vm1-dns", "203.0.113.10", 90, "a.example.test", seq=7) == expected


@pytest.mark.parametrize("entry,address,prefix", [
    ("10.1.2.0/24", "10.1.2.0", 24),
    ("10.1.2.3/24", "10.1.2.0", 24),          # host bits cleared, as ipset does
    ("192.0.2.7/32", "192.0.2.7", 32),
])
def test_add_message_for_a_network_carries_the_prefix(entry, address, prefix):
    attrs = data_attrs(decoded(wire.add_message("vmsan-vm1-allow", entry)))
    assert attrs == {"IPSET_ATTR_IP_FROM": ("IPSET_ATTR_IPADDR_IPV4", address), "IPSET_ATTR_CIDR": prefix}


def test_ipv6_entries_use_the_ipv6_family():
    msg = decoded(wire.add_message("s6", "2001:db8::/64"))
    assert msg["nfgen_family"] == socket.AF_INET6
    assert data_attrs(msg) == {"IPSET_ATTR_IP_FROM": ("IPSET_ATTR_IPADDR_IPV6", "2001:db8::"), "IPSET_ATTR_CIDR": 64}


def test_exist_false_asks_for_an_error_on_existing_entries():
    assert decoded(wire.add_message("s", "192.0.2.1", exist=False))["header"]["flags"] & NLM_F_EXCL
    assert decoded(wire.del_message("s", "192.0.2.1", exist=False))["header"]["flags"] & NLM_F_EXCL
    assert not decoded(wire.del_message("s", "192.0.2.1"))["header"]["flags"] & NLM_F_EXCL


def test_del_message():
    msg = decoded(wire.del_message("vmsan-vm1-dns", "203.0.113.10", seq=3))
    assert msg["header"]["type"] == (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_DEL
    assert msg["header"]["sequence_number"] == 3
    assert data_attrs(msg) == {"IPSET_ATTR_IP_FROM": ("IPSET_ATTR_IPADDR_IPV4", "203.0.113.10")}


def test_long_or_non_ascii_comments_fit_the_kernel():
    attrs = data_attrs(decoded(wire.add_message("s", "192.0.2.1", 1, "x" * 400)))
    assert attrs["IPSET_ATTR_COMMENT"] == "x" * wire.IPSET_MAX_COMMENT       # + the NUL: the kernel's 255
    attrs = data_attrs(decoded(wire.add_message("s", "192.0.2.1", 1, "caf\u00e9.test")))
    assert attrs["IPSET_ATTR_COMMENT"] == "caf?.test"


@pytest.mark.parametrize("entry", ["not-an-address", "10.0.0.0/33", "256.1.1.1"])
def test_bad_entries_raise_value_error(entry):
    with pytest.raises(ValueError):
        wire.add_message("s", entry)


def test_same_data_as_pyroute2s_ipset_would_send():
    """pyroute2's IPSet.add, its request captured instead of sent: the same
    attributes (pyroute2 adds a zero line number next to a comment)."""
    from pyroute2.ipset import AsyncIPSet
    captured = []

    async def capture(msg, msg_type, msg_flags=0, terminate=None):
        captured.append((msg, msg_type, msg_flags))
        return ()

    ipset = AsyncIPSet(version=wire.IPSET_PROTOCOL)
    ipset.request = capture
    asyncio.run(ipset.add("s", "10.1.2.0/24", etype="net", exclusive=False, timeout=30))
    asyncio.run(ipset.add("s", "203.0.113.10", exclusive=False, timeout=90, comment="a.example.test"))
    ours = [wire.add_message("s", "10.1.2.0/24", 30), wire.add_message("s", "203.0.113.10", 90, "a.example.test")]
    for (theirs, msg_type, flags), mine in zip(captured, ours):
        theirs["header"]["type"] = (NFNL_SUBSYS_IPSET << 8) | msg_type
        theirs["header"]["flags"] = flags
        theirs.encode()
        theirs = decoded(bytes(theirs.data))
        mine = decoded(mine)
        assert theirs["header"]["type"] == mine["header"]["type"]
        assert theirs["header"]["flags"] == mine["header"]["flags"]
        assert theirs.get_attr("IPSET_ATTR_SETNAME") == mine.get_attr("IPSET_ATTR_SETNAME")
        assert theirs.get_attr("IPSET_ATTR_PROTOCOL") == mine.get_attr("IPSET_ATTR_PROTOCOL")
        their_data = data_attrs(theirs)
        their_data.pop("IPSET_ATTR_CADT_LINENO", None)
        assert their_data == data_attrs(mine)
    assert len(captured) == 2


# -- acks -----------------------------------------------------------------------

def ack(seq, error=0):
    msg = nlmsgerr()
    msg["header"]["type"] = NLMSG_ERROR
    msg["header"]["sequence_number"] = seq
    msg["error"] = -error
    msg.encode()
    return bytes(msg.data)


def test_read_acks():
    assert read_acks(ack(5) + ack(6, errno.ENOENT)) == [(5, 0), (6, errno.ENOENT)]
    assert read_acks(b"") == []


class FakeKernel(object):
    """Stands in for the netlink socket: reads each sent datagram back with
    ipset_msg and acks like the kernel (errors always, success only with
    NLM_F_ACK), refusing the addresses in FAIL."""

    def __init__(self, fail=None, stale=()):
        self.fail = fail or {}
        self.sent, self.acks = [], [ack(seq) for seq in stale]

    def send(self, data):
        self.sent.append(data)
        pos = 0
        while pos < len(data):
            msg = ipset_msg(data, offset=pos)
            msg.decode()
            header = msg["header"]
            address = data_attrs(msg)["IPSET_ATTR_IP_FROM"][1]
            err = self.fail.get(address, 0)
            if err or header["flags"] & NLM_F_ACK:
                self.acks.append(ack(header["sequence_number"], err))
            pos += header["length"]
        return len(data)

    def recv(self, size):
        return self.acks.pop(0)

    def close(self):
        pass


def fake_socket(kernel):
    return wire.IpsetSocket(channel=NetlinkSocket(0, "ipset", sock=kernel))


def flags_of(datagram):
    out, pos = [], 0
    while pos < len(datagram):
        msg = ipset_msg(datagram, offset=pos)
        msg.decode()
        out.append(msg["header"]["flags"] & NLM_F_ACK)
        pos += msg["header"]["length"]
    return out


def test_add_many_sends_chunks_and_asks_for_one_ack_per_chunk(monkeypatch):
    monkeypatch.setattr(wire, "CHUNK", 3)
    kernel = FakeKernel()
    entries = [("10.0.%d.0/24" % i, None, None) for i in range(7)]
    assert fake_socket(kernel).add_many("s", entries) == 7
    assert [len(flags_of(d)) for d in kernel.sent] == [3, 3, 1]
    assert [flags_of(d) for d in kernel.sent] == [[0, 0, NLM_F_ACK], [0, 0, NLM_F_ACK], [NLM_F_ACK]]
    assert not kernel.acks


def test_every_failure_is_reported_and_the_first_raised(monkeypatch):
    monkeypatch.setattr(wire, "CHUNK", 3)
    kernel = FakeKernel(fail={"10.0.1.0": errno.ENOENT, "10.0.4.0": IPSET_ERR_EXIST, "10.0.6.0": errno.EPERM})
    sock = fake_socket(kernel)
    with pytest.raises(wire.IpsetError) as err:
        sock.add_many("s", [("10.0.%d.0/24" % i, None, None) for i in range(7)])
    assert err.value.errno == errno.ENOENT and isinstance(err.value, OSError)
    assert wire.is_missing_set(err.value)
    assert err.value.failures == [(1, errno.ENOENT), (4, IPSET_ERR_EXIST), (6, errno.EPERM)]
    assert "10.0.1.0/24" in str(err.value) and len(kernel.sent) == 3        # every chunk was still sent
    assert not kernel.acks
    sock.add("s", "192.0.2.1", 5, "x")          # the socket goes on with fresh sequence numbers
    assert wire.describe(IPSET_ERR_EXIST) == "IPSET_ERR_EXIST"


def test_acks_of_an_earlier_request_are_skipped():
    kernel = FakeKernel(stale=[0, 999])
    fake_socket(kernel).add("s", "192.0.2.1")
    assert not kernel.acks


def test_a_bad_entry_sends_nothing():
    kernel = FakeKernel()
    with pytest.raises(ValueError):
        fake_socket(kernel).add_many("s", [("192.0.2.1", None, None), ("nonsense", None, None)])
    assert kernel.sent == []


def test_delete_many_sends_del_messages():
    kernel = FakeKernel()
    fake_socket(kernel).delete_many("s", ["192.0.2.1", "10.0.0.0/8"])
    msg = decoded(kernel.sent[0])
    assert msg["header"]["type"] == (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_DEL


# -- list messages (fill) -----------------------------------------------------------

def test_list_message_carries_every_entry_in_one_adt():
    msg = decoded(wire.list_message(IPSET_CMD_ADD, "vmsan-a-allow~", ["10.0.0.0/8", "203.0.113.7"], seq=9))
    assert msg["header"]["type"] == (NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_ADD
    assert msg["header"]["sequence_number"] == 9 and msg["header"]["flags"] & NLM_F_ACK
    assert msg.get_attr("IPSET_ATTR_SETNAME") == "vmsan-a-allow~"
    entries = []
    for data in msg.get_attr("IPSET_ATTR_ADT").get_attrs("IPSET_ATTR_DATA"):
        address = data.get_attr("IPSET_ATTR_IP_FROM").get_attr("IPSET_ATTR_IPADDR_IPV4")   # id 1: IP
        entries.append((address, data.get_attr("IPSET_ATTR_CIDR")))
    assert entries == [("10.0.0.0", 8), ("203.0.113.7", None)]
    assert msg.get_attr("IPSET_ATTR_LINENO") == 0          # the kernel refuses a list without it


def test_list_message_refuses_mixed_families_and_nothing():
    with pytest.raises(ValueError):
        wire.list_message(IPSET_CMD_ADD, "s", ["10.0.0.0/8", "2001:db8::/32"])
    with pytest.raises(ValueError):
        wire.list_message(IPSET_CMD_ADD, "s", [])


# -- messages written into an earlier one's bytes (Templates) ----------------------

def _random_items(rng, count):
    for _item in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            entry = "%d.%d.%d.%d" % tuple(rng.randrange(256) for _ in range(4))
        elif kind == 1:
            entry = "%d.%d.%d.%d/%d" % (tuple(rng.randrange(256) for _ in range(4)) + (rng.randrange(1, 33),))
        elif kind == 2:
            entry = "2001:db8::%x" % rng.randrange(65536)
        else:
            entry = "2001:db8:%x::/%d" % (rng.randrange(65536), rng.randrange(16, 129))
        yield (rng.choice([IPSET_CMD_ADD, IPSET_CMD_DEL]), rng.choice(["vmsan-a-dns", "vmsan-web-allow"]), entry,
               rng.choice([None, rng.randrange(1, 2147483)]),
               rng.choice([None, "a%d.example.test" % rng.randrange(1000), "x" * rng.randrange(1, 300), "caf\u00e9"]),
               rng.randrange(1 << 32), rng.random() < 0.8, rng.random() < 0.5)


def test_templates_write_what_pyroute2_encodes_byte_for_byte():
    """Thousands of messages of every shape (families, prefixes, timeouts,
    comments of every length, flags, sequence numbers): each the bytes
    pyroute2 makes, and most of them written into an earlier message."""
    import random
    templates = wire.Templates()
    items = list(_random_items(random.Random(5452), 4000))
    for command, set_name, entry, timeout, comment, seq, exist, ack in items:
        assert templates.message(command, set_name, entry, timeout, comment, seq, exist, ack) == \
            wire.message(command, set_name, entry, timeout, comment, seq, exist, ack), (entry, timeout, comment)
    assert templates.patched > len(items) // 2


def test_an_answers_addresses_are_written_into_one_template():
    """What the learning thread sends for one answer: 16 addresses, one
    name: pyroute2 encodes the first two (the second to check the patch),
    the other 14 are written into the first."""
    templates = wire.Templates()
    entries = [("198.18.0.%d" % i, 660, "m5.many.test") for i in range(16)]
    wires = [templates.message(IPSET_CMD_ADD, "vmsan-bad-dns", a, t, c, seq=i) for i, (a, t, c) in enumerate(entries)]
    assert templates.patched == 15
    assert [data_attrs(decoded(w))["IPSET_ATTR_IP_FROM"][1] for w in wires] == [a for a, _t, _c in entries]
    assert [decoded(w)["header"]["sequence_number"] for w in wires] == list(range(16))


def test_a_shape_whose_patch_disagrees_is_never_patched(monkeypatch):
    templates = wire.Templates()
    real = wire._fields

    def misplaced(message):
        fields = real(message)
        at, size = fields["address"]
        fields["address"] = (at - 1, size)          # a layout this code got wrong
        return fields
    monkeypatch.setattr(wire, "_fields", misplaced)
    wires = [templates.message(IPSET_CMD_ADD, "s", "192.0.2.%d" % i, 60, "a.test", seq=i) for i in range(5)]
    assert wires == [wire.message(IPSET_CMD_ADD, "s", "192.0.2.%d" % i, 60, "a.test", seq=i) for i in range(5)]
    assert templates.patched == 0


def test_add_many_sends_templated_messages():
    kernel = FakeKernel()
    sock = fake_socket(kernel)
    sock.add_many("vmsan-vm1-dns", [("203.0.113.%d" % i, 90, "a.example.test") for i in range(1, 41)])
    assert sock.templates.patched == 39
    sent = []
    for datagram in kernel.sent:
        pos = 0
        while pos < len(datagram):
            length = int.from_bytes(datagram[pos:pos + 4], "little")
            sent.append(datagram[pos:pos + length])
            pos += length
    assert sent == [wire.add_message("vmsan-vm1-dns", "203.0.113.%d" % i, 90, "a.example.test", seq=i,
                                     ack=i == 40) for i in range(1, 41)]
