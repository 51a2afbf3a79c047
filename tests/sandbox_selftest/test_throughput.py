"""Relay throughput guest <-> internet with iperf3 (printed, not asserted)."""

import shutil

import pytest

from sandbox import topology as t

pytestmark = pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3")


def test_iperf3_through_the_relay(sandbox, routed_guest, capsys):
    sandbox.internet.iperf3_server()
    up = routed_guest.iperf3(t.WEB_A, seconds=3)
    down = routed_guest.iperf3(t.WEB_A, seconds=3, reverse=True)
    with capsys.disabled():
        print(
            f"\nrelay throughput: guest->internet {up / 1e9:.2f} Gbit/s, "
            f"internet->guest {down / 1e9:.2f} Gbit/s"
        )
    assert up > 0 and down > 0
