#!/usr/bin/env python3
"""The queue readers the name guard could use, side by side: CPU time of the
reading thread per queued packet (receive, read the message, send a verdict
with a mark), and the round trip a held packet sees, for

* ``vmsan``: kernel/nfqueue.py, our reader on a plain NETLINK_NETFILTER
  socket (struct);
* ``pyroute2``: the same socket, messages read and verdicts built with
  pyroute2's ``nfgen_msg`` message classes (nla maps for the queue's
  attributes);
* ``netfilterqueue``: NetfilterQueue (Cython binding of libnetfilter_queue),
  when it is importable (``--netfilterqueue-path`` adds a site-packages
  directory that has it; it needs libnetfilter-queue-dev to build).

A client process in the sandbox's host namespace sends UDP datagrams to
itself over the loopback, one at a time (each waits for the previous to
arrive), through an ``NFQUEUE`` rule; the reader under test gives each an
NF_ACCEPT verdict with a mark. The baseline is the same client with no rule.

    sudo .venv/bin/python bench/nfqueue_bench.py [--packets 20000] [--repeat 3]
"""

import argparse
import socket
import struct
import sys
import threading
import time

import common  # noqa: E402  (bench/, beside this script; sets VMSAN_SANDBOX_ONLY)

from ansible_collections.vmsan.network.plugins.module_utils.kernel import nfqueue as nq  # noqa: E402

QUEUE = 7
PORT = 9777
CLIENT = r"""
import socket, sys, time
n = int(sys.argv[1])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", %d)); rx.settimeout(2)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * 600
times = []
for i in range(n):
    t = time.perf_counter()
    tx.sendto(payload, ("127.0.0.1", %d))
    rx.recv(2048)
    times.append(time.perf_counter() - t)
times.sort()
print("%%.3f %%.3f" %% (times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6))
""" % (PORT, PORT)


def pyroute2_classes():
    from pyroute2.netlink import nla
    from pyroute2.netlink.nfnetlink import nfgen_msg

    class nfq_msg(nfgen_msg):
        nla_map = (("NFQA_UNSPEC", "none"),
                   ("NFQA_PACKET_HDR", "packet_hdr"),
                   ("NFQA_VERDICT_HDR", "verdict_hdr"),
                   ("NFQA_MARK", "be32"),
                   ("NFQA_TIMESTAMP", "hex"),
                   ("NFQA_IFINDEX_INDEV", "be32"),
                   ("NFQA_IFINDEX_OUTDEV", "be32"),
                   ("NFQA_IFINDEX_PHYSINDEV", "be32"),
                   ("NFQA_IFINDEX_PHYSOUTDEV", "be32"),
                   ("NFQA_HWADDR", "hex"),
                   ("NFQA_PAYLOAD", "cdata"))

        class packet_hdr(nla):
            fields = (("packet_id", ">I"), ("hw_protocol", ">H"), ("hook", "B"))

        class verdict_hdr(nla):
            fields = (("verdict", ">I"), ("id", ">I"))
    return nfq_msg


def run_own(sock, stop, counts, pyroute2=False):
    nfq_msg = pyroute2_classes() if pyroute2 else None
    mtype = (nq.NFNL_SUBSYS_QUEUE << 8) | nq.NFQNL_MSG_VERDICT
    while not stop.is_set():
        if not pyroute2:
            messages = sock.receive(limit=64)
            items = [(m.packet_id, nq.NF_ACCEPT, m.mark | 0x10000000) for m in messages if m.kind == nq.QUEUED]
            if items:
                sock.verdicts(items)
                counts[0] += len(items)
            continue
        if not sock._poll.poll(200):
            continue
        try:
            data = sock.sock.recv(70000)
        except BlockingIOError:
            continue
        msg = nfq_msg(data)
        msg.decode()
        pid = msg.get_attr("NFQA_PACKET_HDR")["packet_id"]
        mark = msg.get_attr("NFQA_MARK") or 0
        msg.get_attr("NFQA_PAYLOAD")
        out = nfq_msg()
        out["header"]["type"] = mtype
        out["header"]["flags"] = nq.NLM_F_REQUEST
        out["res_id"] = QUEUE
        out["attrs"] = [["NFQA_VERDICT_HDR", {"verdict": nq.NF_ACCEPT, "id": pid}],
                        ["NFQA_MARK", mark | 0x10000000]]
        out.encode()
        sock.sock.send(out.data)
        counts[0] += 1


def run_netfilterqueue(nfq, stop, counts):
    sock = socket.fromfd(nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            nfq.run_socket(sock)
        except socket.timeout:
            continue
        except OSError:
            break


def measure(sb, reader, packets):
    """(client median us, p99 us, reader CPU us per packet)."""
    host = sb.host
    counts = [0]
    stop = threading.Event()
    cpu = [0.0]
    holder = {}

    def serve():
        began = time.thread_time()
        try:
            if reader == "netfilterqueue":
                run_netfilterqueue(holder["nfq"], stop, counts)
            else:
                run_own(holder["sock"], stop, counts, pyroute2=reader == "pyroute2")
        finally:
            cpu[0] = time.thread_time() - began

    with host.entered():
        if reader == "netfilterqueue":
            from netfilterqueue import NetfilterQueue

            def callback(pkt):
                pkt.get_payload()
                pkt.set_mark(pkt.get_mark() | 0x10000000)
                pkt.accept()
                counts[0] += 1
            nfq = NetfilterQueue()
            nfq.bind(QUEUE, callback, max_len=4096, range=0xFFFF)
            holder["nfq"] = nfq
        elif reader is not None:
            holder["sock"] = nq.QueueSocket(QUEUE, timeout=0.2)
        thread = threading.Thread(target=serve)
        if reader is not None:
            thread.start()
    try:
        done = host.run([sys.executable, "-c", CLIENT, str(packets)], timeout=600, check=True)
    finally:
        stop.set()
        if reader is not None:
            thread.join()
        if "sock" in holder:
            holder["sock"].close()
        if "nfq" in holder:
            holder["nfq"].unbind()
    median, p99 = (float(x) for x in done.stdout.split())
    per = cpu[0] / counts[0] * 1e6 if reader and counts[0] else 0.0
    return median, p99, per, counts[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--netfilterqueue-path", help="a site-packages directory with NetfilterQueue")
    args = ap.parse_args(argv)
    if args.netfilterqueue_path:
        sys.path.append(args.netfilterqueue_path)
    readers = ["vmsan", "pyroute2"]
    try:
        import netfilterqueue  # noqa: F401
        readers.append("netfilterqueue")
    except ImportError:
        common.note("NetfilterQueue is not importable: skipped")
    common.note("load average at start: %s" % common.load_average())
    results = {}
    with common.Sandbox() as sb:
        sb.host.run(["iptables-legacy", "-w", "-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", str(PORT),
                     "-m", "mark", "--mark", "0/0x10000000", "-j", "NFQUEUE", "--queue-num", str(QUEUE)],
                    check=True)
        for _ in range(args.repeat):
            for reader in readers:
                results.setdefault(reader, []).append(measure(sb, reader, args.packets))
        sb.host.run(["iptables-legacy", "-w", "-F", "OUTPUT"], check=True)
        for _ in range(args.repeat):
            results.setdefault("baseline", []).append(measure(sb, None, args.packets))
    rows = []
    base = common.median([r[0] for r in results["baseline"]])
    for reader in ["baseline"] + readers:
        runs = results[reader]
        median = common.median([r[0] for r in runs])
        rows.append([reader, "%.1f" % median, "%.1f" % common.median([r[1] for r in runs]),
                     "%.1f" % (median - base), "%.1f" % common.median([r[2] for r in runs]) if reader != "baseline" else "-",
                     "/".join(str(r[3]) for r in runs)])
    common.print_table("queue readers: %d packets, one at a time, median of %d runs" % (args.packets, args.repeat),
                       ["reader", "round trip median us", "p99 us", "added us", "reader CPU us/packet",
                        "verdicts"], rows)
    common.note("load average at end: %s" % common.load_average())


if __name__ == "__main__":
    main()
