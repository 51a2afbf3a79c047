"""Measure the real guest's boot-to-result time (docs/real-guest.md).

    .venv/bin/python -m tests.realguest.measure --boots 7

Makes a scratch namespace with TAP fhvm0 (172.16.0.1/30) and a payload server on
:9000, boots the guest N times with the probe ``tcp:172.16.0.1:9000`` and prints each
boot-to-result time (QEMU start to the last probe line) and the median. Root only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from . import build as rg_build
from .boot import boot_guest, design_boot_args
from .netns import ScratchNetns


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boots", type=int, default=5)
    ap.add_argument("--probe", default="tcp:172.16.0.1:9000")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    art = rg_build.build()
    build_s = time.monotonic() - t0
    times, walls = [], []
    with ScratchNetns("rgmeasure") as ns:
        ns.add_tap("fhvm0", "172.16.0.1/30")
        ns.payload_server("0.0.0.0", 9000, "HOST-PAYLOAD")
        for i in range(args.boots):
            w0 = time.monotonic()
            run = boot_guest(ns.name, "fhvm0", "02:00:ac:10:00:02", design_boot_args(0), [args.probe], verbose=False)
            walls.append(time.monotonic() - w0)
            if not run.all_ok:
                print(run.summary(), file=sys.stderr)
                return 1
            times.append(run.boot_to_result)
            print(f"boot {i + 1}: boot-to-result {run.boot_to_result:.2f}s, wall {walls[-1]:.2f}s", flush=True)
    print(
        json.dumps(
            {
                "boots": args.boots,
                "boot_to_result_s": [round(t, 2) for t in times],
                "median_s": round(statistics.median(times), 2),
                "min_s": round(min(times), 2),
                "max_s": round(max(times), 2),
                "median_wall_s": round(statistics.median(walls), 2),
                "build_check_s": round(build_s, 3),
                "kernel": art.kernel_version,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
