"""The optional C twin of the name guard's per-packet reading
(native/vmsan_fastpath.c, built by scripts/build-native.sh).

``native`` is the module, or None when it is not built, is of another
version, or ``VMSAN_FASTPATH=0`` is set (the benchmarks compare both). The
Python functions it mirrors stay the definition and the fallback:
``kernel.nfqueue._parse`` and ``verdict_bytes``, ``guard.packet._read``, the
common case of ``guard.tls.read``, and the common case of a guarded
connection in ``guard.loop.NamespaceGuard.handle``; their users pick the C
one at import when there is one.
docs/domain-policies.md, "The guard's reading in C".
"""

import os

VERSION = 2

try:
    import vmsan_fastpath as native
except ImportError:
    native = None

if native is not None and (os.environ.get("VMSAN_FASTPATH", "1") == "0" or getattr(native, "VERSION", None) != VERSION):
    native = None


def describe():
    """Which reader runs, "C" or "Python": the guard's start line in the
    daemon's log and the guard bench's first line say it."""
    return "C" if native is not None else "Python"
