#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Run as root on
# Debian 12: every test that changes networking does so inside throwaway
# network namespaces (tests/sandbox), never in this machine's own.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -x .venv/bin/vmsan ] || ./scripts/setup.sh

# Integration tests must run, not skip, when this script runs them.
export VMSAN_REQUIRE_SANDBOX=1
py=.venv/bin/python

"$py" -m sandbox.cleanup >/dev/null      # what killed runs left (never live sandboxes)

echo "== unit and integration tests (pytest)"
"$py" -m pytest -q -rfEs -p no:cacheprovider tests/unit tests/sandbox_selftest tests/integration tests/realguest

echo "== Ansible: sanity, lint, docs, build, Molecule"
scripts/ansible-checks.sh

echo "== benchmark smoke run (seconds; the full sweep is run by hand: bench/README.md)"
bench/smoke.sh

echo "== nothing left behind"
left=$(ip netns list | awk '{print $1}' | grep -E '^(vst|vmsan-vst|rgtest)' || true)
if [ -n "$left" ]; then
    echo "namespaces left behind: $left" >&2
    exit 1
fi
echo "all checks passed"
