"""Batched UDP receive/send (recvmmsg/sendmmsg) over 127.0.0.1."""

import socket

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
