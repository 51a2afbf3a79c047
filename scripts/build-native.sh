#!/usr/bin/env bash
# Builds native/vmsan_fastpath.c (the name guard's per-packet reading in C)
# for PYTHON into DIR (default: that Python's site-packages), as root or not.
# Without it the guard reads in Python (the same results, slower:
# docs/domain-policies.md, "The guard's reading in C").
#   scripts/build-native.sh [PYTHON [DIR]]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-python3}"
dir="${2:-$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')}"
include="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
suffix="$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
if [ ! -e "$include/Python.h" ]; then
    echo "build-native: no Python.h in $include (install the Python headers, e.g. python3-dev)" >&2
    exit 1
fi
out="$dir/vmsan_fastpath$suffix"
cc -O2 -g0 -shared -fPIC -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
    -I"$include" "$repo/native/vmsan_fastpath.c" -o "$out.tmp"
mv -f "$out.tmp" "$out"
echo "built $out"
