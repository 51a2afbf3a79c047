#!/usr/bin/env python3
"""Remove what crashed sandbox runs left behind, and nothing else.

Leftovers are namespaces named ``vstXXXXXX-...`` (the sandbox's own) or
``vmsan-vstXXXXXX-...`` (the product's, for VM ids made by
``Sandbox.unique_id``), relay processes serving them, owner files and
VMSAN_HOME temp directories. A sandbox whose owning process still runs is
left alone unless ``--force``.

    .venv/bin/python -m sandbox.cleanup [--dry-run] [--force]     # as root
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile

from . import procs, registry
from .netns import Namespace, list_netns


def _relay_pids_by_prefix():
    """{prefix: [pid]} of relay processes whose namespaces belong to a sandbox."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(arg.endswith("sandbox/relay.py") for arg in argv[:3]):
            continue
        for arg in argv:
            prefix = registry.prefix_of_netns(os.path.basename(arg))
            if arg.startswith("/run/netns/") and prefix:
                found.setdefault(prefix, []).append(int(entry))
                break
    return found


def find_leftovers(force=False):
    """{prefix: {"netns": [...], "relays": [...]}} of sandboxes to remove."""
    leftovers = {}

    def slot(prefix):
        return leftovers.setdefault(prefix, {"netns": [], "relays": []})

    for name in list_netns():
        prefix = registry.prefix_of_netns(name)
        if prefix:
            slot(prefix)["netns"].append(name)
    for prefix, pids in _relay_pids_by_prefix().items():
        slot(prefix)["relays"].extend(pids)
    for prefix in registry.owned_prefixes():
        slot(prefix)
    for home in glob.glob(os.path.join(tempfile.gettempdir(), "vst*-home-*")):
        prefix = os.path.basename(home).split("-")[0]
        if registry.PREFIX_RE.match(prefix):
            slot(prefix)
    if not force:
        leftovers = {p: v for p, v in leftovers.items() if not registry.owner_alive(p)}
    return leftovers


def reap(force=False, dry_run=False, log=lambda msg: None):
    """Remove leftovers; returns what was (or, dry, would be) removed."""
    leftovers = find_leftovers(force)
    for prefix, items in sorted(leftovers.items()):
        homes = glob.glob(os.path.join(tempfile.gettempdir(), f"{prefix}-home-*"))
        # The product's namespaces of VMs whose ids do not carry the prefix
        # are known from the state files in that sandbox's VMSAN_HOME.
        for home in homes:
            for name in registry.product_netns_in_home(home) - set(items["netns"]):
                if name in list_netns():
                    items["netns"].append(name)
        for pid in items["relays"]:
            log(f"kill relay {pid} ({prefix})")
            if not dry_run:
                procs.kill_pid(pid)
        # Guests first, the product's namespaces next, host and internet last.
        for name in sorted(items["netns"], key=lambda n: ("-g" not in n, n.startswith("vst"))):
            log(f"delete netns {name}")
            if not dry_run:
                Namespace(name).delete()
        for home in homes:
            log(f"remove {home}")
            if not dry_run:
                shutil.rmtree(home, ignore_errors=True)
        if not dry_run:
            registry.release(prefix)
    return leftovers


def main(argv=None):
    parser = argparse.ArgumentParser(description="Remove leftovers of crashed sandbox runs.")
    parser.add_argument("--dry-run", action="store_true", help="only say what would go")
    parser.add_argument(
        "--force", action="store_true", help="also sandboxes whose owner process still runs"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root")
    leftovers = reap(args.force, args.dry_run, log=print)
    if not leftovers:
        print("nothing to clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
