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

# Two pytest-xdist workers, tests handed out as workers free up (worksteal):
# the suite is mostly CPU (Ansible, QEMU, the product's processes) on a
# 2-core machine, so a third worker only adds contention; the measurements
# are in docs/performance.md, "The test suite". Every sandbox is private to
# its worker (docs/testing.md, "Running in parallel").
workers="${VMSAN_TEST_WORKERS:-2}"
began=$SECONDS
echo "== unit and integration tests (pytest, $workers workers)"
"$py" -m pytest -q -rfEs -p no:cacheprovider -n "$workers" --dist worksteal \
    tests/unit tests/sandbox_selftest tests/integration tests/realguest
echo "(pytest: $((SECONDS - began)) s)"

began=$SECONDS
echo "== Ansible: sanity, lint, docs, build, Molecule"
scripts/ansible-checks.sh
echo "(Ansible checks: $((SECONDS - began)) s)"

echo "== benchmark smoke run (seconds; the full sweep is run by hand: bench/README.md)"
bench/smoke.sh

echo "== nothing left behind"
if [ "${CI:-}" = true ]; then
    # CI has the machine to itself: every sandbox namespace left is ours,
    # a live one too (say, a Molecule keeper that never stopped).
    left=$(ip netns list | awk '{print $1}' | grep -E '^(vst|vmsan-vst|rgtest)' || true)
else
    # A shared machine: sandboxes whose owner is gone (this run's, now that
    # it is over) and real-guest scratch namespaces of dead processes; the
    # live sandboxes of another run are not ours to judge.
    left=$("$py" -m sandbox.cleanup --dry-run | grep -v '^nothing to clean' || true)
    for name in $(ip netns list | awk '{print $1}' | grep -E '^rg(self|test|measure)-[0-9]+-[0-9]+$' || true); do
        pid="${name#*-}"; pid="${pid%%-*}"
        [ -d "/proc/$pid" ] || left="$left $name"
    done
fi
if [ -n "$left" ]; then
    echo "namespaces left behind: $left" >&2
    exit 1
fi
echo "all checks passed"
