#!/usr/bin/env python3
"""A picture of the metrics (docs/metrics.png): a short demo run in a
sandbox, the daemon's /metrics scraped every second, plotted.

    sudo .venv/bin/python bench/metrics_plot.py [--seconds 20] [--out docs/metrics.png]

One VM (custom: ``a.example.test``, denied 192.0.2.0/24) with a guest that,
in turn: resolves allowed and refused names; sends bursts to the denied
CIDR; forges its source address; sends IPv6. The plot shows what the daemon
exported meanwhile: drops a second by reason, DNS answers a second by rcode,
events written. Needs matplotlib (requirements-test.txt).
"""

import argparse
import re
import time

from sandbox import procs

import common

AUTH_DNS = "203.0.113.53"
METRICS = "127.0.0.1:9464"


def scrape(sb):
    done = sb.host.run(["curl", "-sS", "--max-time", "2", "http://%s/metrics" % METRICS])
    values = {}
    for line in done.stdout.splitlines():
        match = re.match(r'^(vmsan_\w+)\{([^}]*)\} ([0-9.e+]+)$', line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            values[(match.group(1), labels.get("reason") or labels.get("rcode") or labels.get("kind"))] = \
                float(match.group(3))
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--out", default="docs/metrics.png")
    args = parser.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    samples = []
    with common.bench_sandbox() as sb:
        daemon = sb.vmsan_spawn("daemon", "--upstream", AUTH_DNS, "--metrics-listen", METRICS, log_name="daemon.log")
        try:
            deadline = time.monotonic() + 20
            while "listening on" not in open(daemon.log_path).read():
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError("the daemon did not start")
                time.sleep(0.05)
            vm = sb.vmsan("create", "--id", sb.unique_id("demo"), "--allowed-domain", "a.example.test",
                          "--denied-cidr", "192.0.2.0/24").out
            guest = sb.add_guest(vm)
            time.sleep(0.5)
            began = time.monotonic()
            step = 0
            while time.monotonic() - began < args.seconds:
                phase = int((time.monotonic() - began) / (args.seconds / 4.0))
                guest.dig("a.example.test", guest.dns_server)
                if phase in (0, 3):
                    guest.dig("www.example.com", guest.dns_server)
                if phase in (1, 3):
                    for port in range(9000, 9010):
                        guest.udp("192.0.2.10", port, timeout=0.01)
                if phase == 2:
                    guest.send_spoofed_udp("172.16.250.2", "203.0.113.10", 9000)
                    guest.send_ipv6(port=9000 + step % 10)
                if step % 4 == 0:          # each second: the kernel counters are read at most once a second
                    samples.append((time.monotonic() - began, scrape(sb)))
                step += 1
                time.sleep(0.25)
        finally:
            procs.stop(daemon)
    figure, axes = pyplot.subplots(3, 1, figsize=(9, 8), sharex=True)
    for axis, metric, title in ((axes[0], "vmsan_dropped_packets_total", "dropped packets/s by reason"),
                                (axes[1], "vmsan_dns_queries_total", "DNS answers/s by rcode"),
                                (axes[2], "vmsan_events_total", "events written/s by kind")):
        keys = sorted({k for _t, v in samples for k in v if k[0] == metric})
        for key in keys:
            xs, ys = [], []
            for (t0, a), (t1, b) in zip(samples, samples[1:]):
                xs.append(t1)
                ys.append(max(b.get(key, 0) - a.get(key, 0), 0) / (t1 - t0))
            if any(ys):
                axis.plot(xs, ys, label=key[1])
        axis.set_title(title)
        axis.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("seconds (demo run: refused names, a denied CIDR, spoofed and IPv6 packets, all of them)")
    figure.suptitle("vmsan daemon --metrics-listen, scraped every second")
    figure.tight_layout()
    figure.savefig(args.out, dpi=80)
    print("wrote %s (%d samples)" % (args.out, len(samples)))


if __name__ == "__main__":
    common.run_main(main)
