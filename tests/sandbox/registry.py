"""Names of sandboxes, and who owns them.

Every sandbox gets a random prefix ``vst`` + 6 hex digits; all its namespaces
are called ``<prefix>-...``. VM ids that tests derive with
``Sandbox.unique_id()`` start with the prefix too, so the namespaces that the
product makes for them are ``vmsan-<prefix>-...``.

A sandbox writes ``/run/vst-sandbox/<prefix>`` with the pid and start time of
the process that owns it. The cleanup script removes only sandboxes whose owner
is gone, so it is safe to run while another test run is live.
"""

import json
import os
import re
import secrets

OWNER_DIR = "/run/vst-sandbox"
PREFIX_RE = re.compile(r"^vst[0-9a-f]{6}$")
# A sandbox namespace, or a product namespace for a VM id derived from a prefix.
SANDBOX_NETNS_RE = re.compile(r"^(?:vmsan-)?(vst[0-9a-f]{6})-")


def new_prefix():
    while True:
        prefix = "vst" + secrets.token_hex(3)
        if not os.path.exists(_owner_file(prefix)):
            return prefix


def prefix_of_netns(name):
    """The sandbox prefix a namespace name belongs to, or None."""
    match = SANDBOX_NETNS_RE.match(name)
    return match.group(1) if match else None


def _owner_file(prefix):
    return os.path.join(OWNER_DIR, prefix)


def _start_time(pid):
    """Start time in clock ticks (field 22 of /proc/PID/stat) of a running
    process; None for a process that is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are plain.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def claim(prefix):
    os.makedirs(OWNER_DIR, exist_ok=True)
    with open(_owner_file(prefix), "w") as f:
        f.write(f"{os.getpid()} {_start_time(os.getpid())}\n")


def release(prefix):
    try:
        os.unlink(_owner_file(prefix))
    except FileNotFoundError:
        pass


def owner_alive(prefix):
    """True when the process that created the sandbox still runs."""
    try:
        with open(_owner_file(prefix)) as f:
            pid, start = f.read().split()
    except (OSError, ValueError):
        return False
    now = _start_time(int(pid))
    return now is not None and str(now) == start


def owned_prefixes():
    """Prefixes that have an owner file (alive or not)."""
    try:
        return [p for p in os.listdir(OWNER_DIR) if PREFIX_RE.match(p)]
    except FileNotFoundError:
        return []


def product_netns_in(value):
    """Names of product namespaces (``"netns": "vmsan-..."``) anywhere in a
    parsed JSON value, e.g. what ``vmsan create --json`` printed."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "netns" and isinstance(item, str):
                if item.startswith("vmsan-") and "/" not in item:
                    found.add(item)
            else:
                found |= product_netns_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= product_netns_in(item)
    return found


def product_netns_in_home(home):
    """Product namespaces named in the VM state files under a sandbox's
    VMSAN_HOME: the VMs of that sandbox, whatever their ids."""
    found = set()
    for root, _, files in os.walk(home or "/nonexistent"):
        for file in files:
            if file.endswith(".json"):
                try:
                    with open(os.path.join(root, file)) as f:
                        found |= product_netns_in(json.load(f))
                except (OSError, ValueError):
                    continue
    return found
