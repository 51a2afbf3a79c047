"""Batched UDP receive/send (recvmmsg/sendmmsg) over 127.0.0.1."""

import collections
import socket
import time

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.resolver import udp_batch as resolver_udp

pytestmark = pytest.mark.skipif(not resolver_udp.AVAILABLE, reason="no recvmmsg/sendmmsg in this libc")


def test_batch_receives_several_and_answers_each_sender():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _client in range(3)]
    try:
        for n, client in enumerate(clients):
            client.settimeout(2)
            client.sendto(b"query-%d" % n, server.getsockname())
        batch = resolver_udp.BatchSocket(server, batch=8)
        got = []
        while len(got) < 3:
            for i in range(batch.recv()):
                got.append((batch.data(i), batch.key(i), batch.address(i)))
                batch.queue(i, b"reply-to-" + batch.data(i))
            batch.flush()
        assert sorted(g[0] for g in got) == [b"query-0", b"query-1", b"query-2"]
        assert all(g[1] == socket.inet_aton("127.0.0.1") for g in got)
        assert {g[2] for g in got} == {("127.0.0.1", c.getsockname()[1]) for c in clients}
        for n, client in enumerate(clients):
            assert client.recv(100) == b"reply-to-query-%d" % n
    finally:
        server.close()
        for client in clients:
            client.close()


def test_a_reply_too_big_for_a_slot_is_sent_on_its_own():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    try:
        client.sendto(b"q", server.getsockname())
        batch = resolver_udp.BatchSocket(server, batch=2)
        assert batch.recv() == 1
        batch.queue(0, b"x" * (resolver_udp.SEND_SIZE + 1))
        batch.flush()
        assert len(client.recv(65535)) == resolver_udp.SEND_SIZE + 1
    finally:
        server.close()
        client.close()


def test_udp_queues_deal_datagrams_out_by_source_address():
    """The resolver's UDP sockets are one SO_REUSEPORT group that the kernel
    deals out by source: every sender lands in the queue queue_of names,
    always the same one (here on 127.0.0.0/8, which lo answers for)."""
    from ansible_collections.vmsan.network.plugins.module_utils.resolver import servers
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    socks = servers.udp_queues(("127.0.0.1", port), count=16, rcvbuf=1 << 16)
    try:
        assert len(socks) == 16
        senders = ["127.0.%d.2" % s for s in range(40)] + ["127.16.7.%d" % (4 * k + 2) for k in range(1, 20)]
        for source in senders:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind((source, 0))
                for _copy in range(2):
                    client.sendto(source.encode(), ("127.0.0.1", port))
        got = {}
        for index, sock in enumerate(socks):
            sock.settimeout(0.05)
            while True:
                try:
                    data, address = sock.recvfrom(100)
                except socket.timeout:
                    break
                assert data.decode() == address[0]
                got.setdefault(address[0], []).append(index)
        assert sorted(got) == sorted(senders)
        assert all(indexes == [resolver_udp.queue_of(source, 16)] * 2 for source, indexes in got.items())
        assert len({resolver_udp.queue_of("127.0.%d.2" % s, 16) for s in range(16)}) == 16     # slots apart
    finally:
        for sock in socks:
            sock.close()


class _Bucket(object):
    def __init__(self):
        self.taken = 0

    def take(self, _now):
        self.taken += 1
        return True


class _Vm(object):
    """What UdpServer reads of a VM: its bucket (always room), its cache (empty)."""

    def __init__(self):
        self.meter = type("Meter", (), {"bucket": _Bucket(), "rcodes": collections.Counter()})()
        self.hot = {}


class _Resolver(object):
    """What UdpServer asks of the resolver; ``handle`` notes who was served."""

    def __init__(self, vms):
        self.registry = type("Registry", (), {"vms_raw": {socket.inet_aton(ip): vm for ip, vm in vms.items()}})()
        self.stats, self.next_check, self.clock, self.served = collections.Counter(), float("inf"), time.monotonic, []

    def handle(self, data, ip, _reply, _tcp, _state, _checked):
        self.served.append(ip)

    def maybe_check_state(self, _now):
        pass

    def note_over_budget(self, _meter, _now):
        raise AssertionError("no query here is beyond its budget")


def test_a_queue_full_of_queries_to_decide_gets_one_quantum_per_turn():
    """Deficit round robin: of a queue that holds 40 queries needing more
    than a cached reply, one turn of the loop handles UDP_COSTLY_PER_TURN;
    another queue's queries that arrive meanwhile are handled in the next
    turn, not after the 40 (they were, before the quantum)."""
    from ansible_collections.vmsan.network.plugins.module_utils.resolver import servers
    flooder, other = "127.0.0.2", "127.0.0.3"
    resolver = _Resolver({flooder: _Vm(), other: _Vm()})
    loop = servers.Loop(time.monotonic)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _queue in range(2)]
    senders = []
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        server = servers.UdpServer(socks, loop, resolver)
        for source, sock, count in ((flooder, socks[0], 40), (other, socks[1], 3)):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            senders.append(sender)
            sender.bind((source, 0))
            if source == other:
                loop.run_once(0.5)          # the flooder's first turn
                assert resolver.served == [flooder] * servers.UDP_COSTLY_PER_TURN
            for n in range(count):
                sender.sendto(b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00query%d" % n, sock.getsockname())
        for _turn in range(100):
            if len(resolver.served) == 43:
                break
            loop.run_once(0.02)
        quantum = servers.UDP_COSTLY_PER_TURN
        assert resolver.served.count(flooder) == 40 and resolver.served.count(other) == 3
        assert resolver.served[quantum:quantum + 3] == [other] * 3, resolver.served
        vms = resolver.registry.vms_raw            # each charged to its bucket once, waiting in line or not
        assert [vms[socket.inet_aton(ip)].meter.bucket.taken for ip in (flooder, other)] == [40, 3]
        assert server.sock is socks[0]
    finally:
        loop.close()
        for sock in socks + senders:
            sock.close()
