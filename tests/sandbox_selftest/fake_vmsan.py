#!/usr/bin/env python3
"""Stands in for the ``vmsan`` command in the sandbox self-tests: prints, as
JSON, what it was given and where it ran. ``create --id ID`` also makes the
namespace ``vmsan-ID`` and a state file ``$VMSAN_HOME/ID.json`` as the
product would; ``fail`` exits 2."""

import json
import os
import subprocess
import sys

args = sys.argv[1:]
if "fail" in args:
    print("fake vmsan: bad input", file=sys.stderr)
    sys.exit(2)
report = {
    "argv": args,
    "home": os.environ.get("VMSAN_HOME"),
    "sandbox_only": os.environ.get("VMSAN_SANDBOX_ONLY"),
    "netns_link": os.readlink("/proc/thread-self/ns/net"),
}
if args[:1] == ["create"]:
    vm_id = args[args.index("--id") + 1]
    subprocess.run(["ip", "netns", "add", f"vmsan-{vm_id}"], check=True)
    report["vm"] = {"id": vm_id, "netns": f"vmsan-{vm_id}"}
    with open(os.path.join(os.environ["VMSAN_HOME"], f"{vm_id}.json"), "w") as f:
        json.dump(report["vm"], f)
if "--json" in args:
    print(json.dumps(report))
else:
    print(f"plain output for {' '.join(args)}")
