#!/usr/bin/env bash
# Installs what vmsan and its tests need on Debian/Ubuntu, as root:
# Debian packages, a venv at .venv with the pinned Python packages, the
# collection linked where Ansible and Python find it, and .venv/bin/vmsan.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [ "$(id -u)" != 0 ]; then
    echo "scripts/setup.sh must run as root (it installs Debian packages)" >&2
    exit 1
fi

packages=(iptables ipset iproute2 conntrack iperf3 dnsutils curl dnsperf dnsmasq-base
          containernetworking-plugins qemu-system-x86 busybox-static cpio python3-venv prometheus
          gcc libc6-dev python3-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Debian's prometheus starts its service on install where an init system
    # runs; the tests start their own inside a sandbox, and the host must not
    # serve one: no service starts during this install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python="${VMSAN_PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements-test.txt

# The name guard's per-packet reading in C (native/vmsan_fastpath.c; without
# it the guard reads in Python, slower: docs/domain-policies.md).
./scripts/build-native.sh .venv/bin/python >/dev/null

# The repository is the collection vmsan.network: link it into the venv's
# ansible_collections namespace so both Ansible and the vmsan command import
# the same core (ansible_collections.vmsan.network.plugins.module_utils).
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$site/ansible_collections/vmsan"
ln -sfn "$repo" "$site/ansible_collections/vmsan/network"

# The network test harness (tests/sandbox) imports as ``sandbox`` in this
# venv: pytest, the benchmarks, the demo and Molecule's sandbox machines
# (python -m sandbox.machines) find it without touching sys.path. It is
# test code: galaxy.yml keeps tests/ (but tests/sanity) out of the tarball.
echo "$repo/tests" > "$site/vmsan-test-harness.pth"

cat > .venv/bin/vmsan <<LAUNCH
#!$repo/.venv/bin/python
import sys
from ansible_collections.vmsan.network.plugins.module_utils.faces.client import main
sys.exit(main())
LAUNCH
chmod 755 .venv/bin/vmsan
echo "vmsan installed at $repo/.venv/bin/vmsan"
