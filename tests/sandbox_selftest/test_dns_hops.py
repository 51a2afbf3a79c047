"""The DNS hop capture (sandbox/dns_hops.py) of the resolver's hostile bench:
a query and its answer, seen at both ends of the uplink, in order."""

import os

from sandbox import dns_hops
from sandbox import topology as t

ORDER = ("uplink/out/q", "inet/in/q", "inet/out/r", "uplink/in/r")


def test_a_query_is_seen_at_each_point_in_order_and_others_are_not_kept(sandbox):
    out = os.path.join(sandbox.home, "hops.json")
    points = [("uplink", sandbox.host.name, t.UPLINK_IFNAME), ("inet", sandbox.internet.name, t.INET_IFNAME)]
    proc = dns_hops.start(sandbox.host, points, r"^hop[0-9]+\.example\.test$", out)
    for name in ("Hop1.Example.Test", "hop2.example.test", "other.example.test"):
        assert sandbox.host.dig(name, t.AUTH_DNS)[0] == "NXDOMAIN"     # answered (no such names)
    frames = dns_hops.stop(proc, out)

    assert {frame[3] for frame in frames} == {"hop1.example.test", "hop2.example.test"}   # lowercased, matched
    seen = dns_hops.hops(frames, ORDER)
    assert sorted(seen) == ["hop1.example.test", "hop2.example.test"]
    for stamps in seen.values():
        times = [stamps[key] for key in ORDER]
        assert times == sorted(times) and times[-1] - times[0] < 1.0
    # a query that one point did not see has no hops
    assert dns_hops.hops(frames, ORDER + ("tap/in/q",)) == {}
