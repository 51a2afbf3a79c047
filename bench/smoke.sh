#!/usr/bin/env bash
# Smoke run of every benchmark in bench/, with tiny sizes, for CI: proves
# that each one still runs to the end and cleans up; the numbers mean
# nothing. Benchmarks run one after another (in parallel they starve each
# other on a 2-core machine), each in its own sandbox, each under a time limit. Exit 1 if one crashed, timed out, or left a sandbox
# namespace behind; a benchmark that is not in bench/ is reported, not failed.
#
#   sudo bench/smoke.sh                 # logs in a temp directory (printed)
#   SMOKE_TIMEOUT=40 sudo bench/smoke.sh
set -uo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
LIMIT="${SMOKE_TIMEOUT:-150}"         # seconds per benchmark, unless LIMITS says otherwise
LOGS="$(mktemp -d /tmp/vmsan-bench-smoke.XXXXXX)"

if [ "$(id -u)" != 0 ]; then
    echo "smoke.sh: the benchmarks build network namespaces: run as root" >&2
    exit 2
fi

# benchmark -> tiny arguments (keep in step with bench/README.md)
declare -A ARGS=(
    [lifecycle_bench.py]="--sizes 1,2"
    [policy_bench.py]="--rounds 1 --cli-rounds 1 --cidrs 20 --iperf-runs 1 --iperf-seconds 1"
    [resolver_bench.py]="--seconds 1 --repeat 1 --latency-queries 100"
    [resolver_hostile_bench.py]="--seconds 1 --fuzz 1000 --hops"
    [ports_bandwidth_bench.py]="--rounds 1 --seconds 1 --repeat 1 --caps 50"
    [ansible_bench.py]="--sizes 1 --baseline-sizes none --new 0 --repeat 1 --no-docs"
    [nfqueue_bench.py]="--packets 200 --repeat 1"
    [guard_bench.py]="--connections 20 --rate-seconds 1 --iperf-seconds 1 --repeat 1"
    [import_bench.py]="--runs 3"
    [tenancy_bench.py]="storm --seconds 5 --workers 4 --vms 3"
    [operator_bench.py]="--rounds 1 --seconds 1 --issue-rounds 1 --packets 2000 --latency-seconds 1 --flood-rounds 1"
    [metrics_plot.py]="--seconds 4 --out /tmp/vmsan-smoke-metrics.png"
)
# benchmarks that need longer: ansible_bench's four playbook runs cost ~20 s
# each on a loaded 2-core machine (Ansible's own start and the host role)
declare -A LIMITS=(
    [ansible_bench.py]="${SMOKE_TIMEOUT:-360}"
)
ORDER=(lifecycle_bench.py policy_bench.py resolver_bench.py resolver_hostile_bench.py ports_bandwidth_bench.py
       ansible_bench.py nfqueue_bench.py guard_bench.py import_bench.py tenancy_bench.py operator_bench.py metrics_plot.py)

# Leftovers of dead sandboxes before and after: a new one after is ours.
leftovers() { "$PY" -m sandbox.cleanup --dry-run 2>&1 | grep -v '^nothing to clean' | sort; }
leftovers > "$LOGS/leftovers.before"

began=$SECONDS
declare -A PIDS
for bench in "${ORDER[@]}"; do
    if [ ! -f "bench/$bench" ]; then
        continue
    fi
    # shellcheck disable=SC2086  # ARGS are words on purpose
    timeout --signal=TERM --kill-after=15 "${LIMITS[$bench]:-$LIMIT}" "$PY" "bench/$bench" ${ARGS[$bench]} \
        > "$LOGS/${bench%.py}.log" 2>&1 &
    PIDS[$bench]=$!
    wait "${PIDS[$bench]}"
    echo $? > "$LOGS/${bench%.py}.rc"
done

failed=0
for bench in "${ORDER[@]}"; do
    if [ -z "${PIDS[$bench]:-}" ]; then
        printf '%-28s missing (not in bench/), skipped\n' "$bench"
        continue
    fi
    rc=$(cat "$LOGS/${bench%.py}.rc")
    if [ "$rc" = 0 ]; then
        printf '%-28s ok\n' "$bench"
    else
        [ "$rc" = 124 ] && why="timed out after ${LIMITS[$bench]:-$LIMIT}s" || why="exit $rc"
        printf '%-28s FAILED (%s), last lines of %s:\n' "$bench" "$why" "$LOGS/${bench%.py}.log"
        tail -n 15 "$LOGS/${bench%.py}.log" | sed 's/^/    /'
        failed=1
    fi
done

leftovers > "$LOGS/leftovers.after"
new_leftovers="$(comm -13 "$LOGS/leftovers.before" "$LOGS/leftovers.after")"
if [ -n "$new_leftovers" ]; then
    echo "left behind by this run (remove with: $PY -m sandbox.cleanup):"
    echo "$new_leftovers" | sed 's/^/    /'
    failed=1
fi

echo "smoke run: $((SECONDS - began)) s; logs in $LOGS"
exit "$failed"
