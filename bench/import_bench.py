#!/usr/bin/env python3
"""Import-time benchmark: what a ``vmsan`` process pays before it works.

1. Interpreter start and library imports, each in a fresh process, the
   ordinary way and the way vmsan imports them (kernel/third_party.py),
   measured in the same run:
   ``import iptc`` against ``third_party.import_iptc()``, ``import pyroute2``
   against the pyroute2 submodules a create needs, and the warm path's
   client (faces/client.py).
2. What each verb imports when it runs in-process (``--no-daemon``):
   ``python -X importtime`` of the real ``vmsan create / network / list /
   remove`` in a sandbox, the modules' own times summed by library.

    sudo .venv/bin/python bench/import_bench.py --runs 15

Bytecode is cached for the product's modules (as on a host) unless
``--no-bytecode`` (then every process compiles ~30 modules, ~25 ms).
"""

import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

MU = C.MODULE_UTILS
PROBES = [
    ("interpreter start (python -c pass)", "pass"),
    ("warm path client (faces.client)", "import %s.faces.client" % MU),
    ("import iptc, the ordinary way", "import iptc"),
    ("python-iptables through third_party.import_iptc()",
     "from %s.kernel.third_party import import_iptc; import_iptc()" % MU),
    ("import pyroute2 (the package)", "import pyroute2"),
    ("pyroute2: the submodules a create needs", "from %s.kernel import rtnl_batch, netconf, rtnl_query" % MU),
    ("pyroute2: IPRoute (imported when a command uses it)",
     "from %s.kernel.third_party import pyroute2_submodules; pyroute2_submodules(); "
     "import pyroute2.iproute.linux" % MU),
    ("the core a create imports (cli, manager, converge, policy, ports, tc)",
     "import %s.faces.cli, %s.lifecycle.manager, %s.lifecycle.converge, %s.lifecycle.policy, "
     "%s.lifecycle.ports, %s.kernel.tc" % ((MU,) * 6)),
]


def library_of(module):
    top = module.split(".")[0]
    if top == "pyroute2":
        return "pyroute2"
    if top == "iptc":
        return "python-iptables"
    if top == "ansible_collections":
        return "vmsan core"
    if top in ("setuptools", "pkg_resources", "distutils", "_distutils_hack"):
        return "setuptools"
    if top in ("asyncio", "concurrent", "ssl", "_ssl", "selectors", "multiprocessing"):
        return "asyncio & co. (for pyroute2's sockets)"
    return "the rest of the standard library"


def self_times(stderr):
    """{module: own import time in seconds} from -X importtime output."""
    out = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            out[m.group(2)] = int(m.group(1)) / 1e6
    return out


def probe_startup(runs, env):
    rows = []
    for label, code in PROBES:
        walls = []
        for _ in range(runs):
            C.check_stop()
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            walls.append(time.perf_counter() - t0)
        rows.append([label, C.ms(C.median(walls)), C.ms(min(walls)), C.ms(C.percentile(walls, 99))])
    return rows


def probe_verbs(runs, env_extra):
    verbs = ("create", "network", "list", "remove")
    found = {v: [] for v in verbs}
    with C.bench_sandbox() as sandbox:
        env = sandbox.vmsan_env(env_extra)
        for r in range(runs):
            vm_id = sandbox.unique_id("i%d" % r)
            argvs = {"create": ["create", "--id", vm_id, "--json"],
                     "network": ["network", vm_id, "--network-policy", "deny-all"],
                     "list": ["list"], "remove": ["remove", vm_id]}
            for verb in verbs:
                C.check_stop()
                argv = [sys.executable, "-X", "importtime", sandbox.vmsan_cmd[-1]] + argvs[verb] + ["--no-daemon"]
                done = C.run_in(sandbox.host.name, argv, env=env)
                found[verb].append(self_times(done.stderr))
    rows = []
    libraries = ["vmsan core", "pyroute2", "python-iptables", "asyncio & co. (for pyroute2's sockets)", "setuptools",
                 "the rest of the standard library"]
    for verb in verbs:
        per_run = []
        for times in found[verb]:
            sums = {lib: 0.0 for lib in libraries}
            for module, seconds in times.items():
                sums[library_of(module)] += seconds
            sums["total"] = sum(times.values())
            sums["modules"] = len(times)
            per_run.append(sums)
        row = [verb, "%d" % C.median([s["modules"] for s in per_run]), C.ms(C.median([s["total"] for s in per_run]))]
        row += [C.ms(C.median([s[lib] for s in per_run])) for lib in libraries]
        rows.append(row)
    return ["verb (--no-daemon)", "modules", "imports ms"] + ["%s ms" % lib for lib in libraries], rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="processes per measurement (default 15)")
    parser.add_argument("--no-bytecode", action="store_true", help="keep PYTHONDONTWRITEBYTECODE as it is")
    args = parser.parse_args(argv)
    env_extra = {}
    if not args.no_bytecode and os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        C.note("# PYTHONDONTWRITEBYTECODE was set: dropped, so the core's bytecode is cached as on a host")
    env = dict(os.environ)
    info = C.print_machine()
    began = time.monotonic()
    try:
        # one process first, so that the core's bytecode is there
        subprocess.run([sys.executable, "-c", PROBES[-1][1]], env=env, check=True)
        C.print_table("## a fresh process: wall time (median of %d)" % args.runs,
                      ["what", "median ms", "min ms", "p99 ms"], probe_startup(args.runs, env))
        headers, rows = probe_verbs(max(3, args.runs // 3), env_extra)
        C.print_table("## what each verb imports in-process: own import times summed by library (median of %d, "
                      "python -X importtime, which adds its own overhead)" % max(3, args.runs // 3), headers, rows)
    finally:
        C.print_end(info, began)
    return 0


if __name__ == "__main__":
    sys.exit(C.run_main(main))
