"""Where a DNS query spends its time: the kernel's timestamp of each of its
frames at each capture point (a packet socket per interface, SO_TIMESTAMPNS).

    python -m sandbox.dns_hops --point guest:NETNS:eth0 --point tap:NETNS:fhvm3 \\
        --point uplink:NETNS:uplink0 --match '^u[0-9]+\\.victim\\.test$' --out hops.json

Prints ``ready`` once its sockets are open; runs until SIGTERM, then writes
[[point, "out"|"in", qr, qname, realtime], ...]. The timestamps are taken by
the kernel when a frame passes the interface, so how late this process
reads them changes nothing (it only has to keep up with the socket buffer);
a frame without one is an error, not a time of this process's. qname is
lowercased: the resolver randomises the case of what it asks upstream.
"""

import argparse
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys

from . import procs
from .guard import entered
from .packets import ETH_P_ALL

SO_TIMESTAMPNS = 35         # <asm-generic/socket.h>, not in Python's socket module
PACKET_OUTGOING = 4
RECEIVE_BUFFER = 8 << 20    # a flood's upstream queries must not overflow it


def open_point(netns, ifname):
    with entered(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setblocking(False)
    return sock


def dns_of(frame):
    """(qr, qname) of a UDP/53 DNS frame over IPv4, or None."""
    if len(frame) < 14 + 20 + 8 + 12 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    l4 = 14 + (frame[14] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", frame, l4)
    if 53 not in (sport, dport):
        return None
    dns = l4 + 8
    labels, pos = [], dns + 12
    while pos < len(frame) and frame[pos] and len(labels) < 64:
        labels.append(frame[pos + 1:pos + 1 + frame[pos]])
        pos += frame[pos] + 1
    return (frame[dns + 2] >> 7), b".".join(labels).decode("ascii", "replace").lower()


def capture(points, pattern, out):
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    socks = {open_point(netns, ifname): label for label, netns, ifname in points}
    print("ready", flush=True)
    seen = []
    while not stopping:
        try:
            ready = select.select(list(socks), [], [], 0.2)[0]
        except InterruptedError:
            continue
        for sock in ready:
            for _frame in range(256):
                try:
                    data, ancillary, _flags, addr = sock.recvmsg(2048, socket.CMSG_SPACE(16))
                except BlockingIOError:
                    break
                parsed = dns_of(data)
                if parsed is None or not pattern.match(parsed[1]):
                    continue
                stamp = next((struct.unpack("qq", cdata[:16]) for level, kind, cdata in ancillary
                              if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
                if stamp is None:
                    raise RuntimeError("dns_hops: a frame on %s without its kernel timestamp" % socks[sock])
                when = stamp[0] + stamp[1] / 1e9
                seen.append([socks[sock], "out" if addr[2] == PACKET_OUTGOING else "in", parsed[0], parsed[1], when])
    with open(out, "w") as handle:
        json.dump(seen, handle)


def start(endpoint, points, match, out, ready_timeout=10.0):
    """The capture, a process in ENDPOINT's namespace, once its sockets are open.
    POINTS: [(label, netns, ifname)]; MATCH: a regular expression of query names."""
    argv = [sys.executable, "-m", "sandbox.dns_hops", "--match", match, "--out", out]
    for point in points:
        argv += ["--point", ":".join(point)]
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = endpoint.spawn(argv, env=dict(os.environ, PYTHONPATH=tests), stdout=subprocess.PIPE, text=True)
    ready = select.select([proc.stdout], [], [], ready_timeout)[0]
    if not ready or proc.stdout.readline().strip() != "ready":
        procs.stop(proc)
        raise RuntimeError("the DNS hop capture did not start")
    return proc


def stop(proc, out):
    """Stop the capture of ``start``; its frames ([point, direction, qr, qname, realtime])."""
    procs.stop(proc, grace=30)      # SIGTERM: it writes OUT, then exits
    with open(out) as handle:
        return json.load(handle)


def hops(frames, order):
    """{qname: {point/direction/qr: first realtime}} of the frames of capture()."""
    by_name = {}
    for point, direction, qr, qname, when in frames:
        key = "%s/%s/%s" % (point, direction, "r" if qr else "q")
        by_name.setdefault(qname, {}).setdefault(key, when)
    return {name: stamps for name, stamps in by_name.items() if all(key in stamps for key in order)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--point", action="append", required=True, help="LABEL:NETNS:IFNAME")
    parser.add_argument("--match", required=True, help="regular expression of the query names to keep")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    capture([tuple(point.split(":", 2)) for point in args.point], re.compile(args.match), args.out)


if __name__ == "__main__":
    main()
