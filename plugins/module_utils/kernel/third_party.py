"""How the adapters import python-iptables and pyroute2 (docs/performance.md,
"Import time").

Both libraries cost far more to import than the work a ``vmsan`` command
does: ~450 ms of a 630 ms ``vmsan create``. Neither is forked or patched;
the work-arounds below only change what happens while they are imported.

python-iptables (``iptc``), ~480 ms -> ~20 ms:

* ``iptc.util`` imports ``distutils.sysconfig`` for ``get_python_lib``. In a
  venv with setuptools, distutils is setuptools' shim, which pulls in
  ``setuptools`` and ``pkg_resources`` (~100 ms). While iptc is imported,
  ``distutils`` is marked absent in ``sys.modules``, so iptc takes its own
  fallback (``sysconfig.get_path("purelib")``, what it does on Python 3.12).
* It looks each C library up with ``ctypes.util.find_library``, which runs
  ``ldconfig -p`` and, for its own ``libxtwrapper`` (not in the loader's
  path), ``gcc`` and ``ld`` once per candidate name (~200 ms). While iptc is
  imported, ``find_library`` answers from a listing of the loader's
  directories (``/etc/ld.so.conf`` and the default ones) and never starts a
  process; a name it cannot find there is None, and iptc then loads it from
  its own directory as it does anyway.
* Without ``XTABLES_LIBDIR`` it runs ``ldconfig -N -v`` to find the
  extensions directory (~80 ms). While it is imported, the variable is set
  to the ``xtables`` directory beside the ``libxtables`` found above (the
  library's own knob; its error message asks for it), then restored.

If the cheap import fails for any reason, the library is imported again
the ordinary way, so the work-around can cost time but never a failure.
(On hosts with loadable modules iptc also runs ``modprobe ip_tables`` and
``modprobe ip6_tables`` at import; that stays.)

pyroute2, ~270 ms -> the submodules the verb needs: importing any of its
submodules first runs ``pyroute2/__init__.py``, which imports every family
it has (NDB, IPDB, nl80211, devlink, WireGuard, ...).
``pyroute2_submodules()`` registers the package without running that file,
so ``import pyroute2.netlink.rtnl.ifinfmsg`` loads only what that module
imports. The first lookup of a name on the package itself (``from pyroute2
import IPRoute``, e.g. in ``vmsan doctor``) runs the real ``__init__`` then,
so code that wants the top level still gets all of it.
"""

import os
import re
import sys
import threading

_lock = threading.Lock()

# The default directories of the dynamic loader besides /etc/ld.so.conf.
_DEFAULT_LIB_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")


def pyroute2_submodules():
    """Make ``import pyroute2.<sub>`` load only that submodule (see above).
    Idempotent; does nothing if pyroute2 is imported already or missing."""
    with _lock:
        if "pyroute2" in sys.modules:
            return
        import importlib.util
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.loader is None or not spec.submodule_search_locations:
            return
        package = importlib.util.module_from_spec(spec)
        init_lock = threading.RLock()

        def __getattr__(name):
            if _is_submodule(spec, name):
                # ``from pyroute2 import config``: the submodule, as the
                # import system would load it
                import importlib
                return importlib.import_module("pyroute2." + name)
            if name.startswith("__") and name != "__version__":
                raise AttributeError(name)
            # a name the package's own __init__ defines: run it now, once
            with init_lock:
                if package.__dict__.get("__getattr__") is __getattr__:
                    del package.__dict__["__getattr__"]
                    spec.loader.exec_module(package)
            try:
                return package.__dict__[name]
            except KeyError:
                raise AttributeError("module 'pyroute2' has no attribute %r" % name)

        package.__getattr__ = __getattr__
        sys.modules["pyroute2"] = package


def _is_submodule(spec, name):
    for d in spec.submodule_search_locations:
        if os.path.exists(os.path.join(d, name + ".py")) or os.path.exists(os.path.join(d, name, "__init__.py")):
            return True
    return False


def import_iptc():
    """The ``iptc`` module, imported cheaply (see above)."""
    if "iptc" in sys.modules:
        return sys.modules["iptc"]
    with _lock:
        try:
            return _import_iptc_quietly()
        except Exception:
            for name in [n for n in sys.modules if n == "iptc" or n.startswith("iptc.")]:
                del sys.modules[name]
        import iptc
        return iptc


def _import_iptc_quietly():
    import ctypes.util
    import importlib
    blocked = [n for n in ("distutils", "distutils.sysconfig") if n not in sys.modules]
    for name in blocked:
        sys.modules[name] = None        # "absent": iptc takes its own fallback
    lookup = _LibraryLookup()
    original = ctypes.util.find_library
    set_libdir = "XTABLES_LIBDIR" not in os.environ
    ctypes.util.find_library = lookup.find
    try:
        if set_libdir:
            libdir = lookup.xtables_dir()
            if libdir:
                os.environ["XTABLES_LIBDIR"] = libdir
            else:
                set_libdir = False
        return importlib.import_module("iptc")
    finally:
        ctypes.util.find_library = original
        if set_libdir:
            os.environ.pop("XTABLES_LIBDIR", None)
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


class _LibraryLookup(object):
    """``ctypes.util.find_library`` without processes: the soname
    (``libip4tc.so.2``) of a library in the loader's directories, or None.
    Each directory is listed once (one that is a symlink to another, as
    /lib is to /usr/lib on a merged-/usr system, only once)."""

    _SONAME = re.compile(r"^lib(.+)\.so\.(\d+)$")

    def __init__(self):
        self._index = None

    def _dirs(self):
        dirs = []
        _conf_dirs("/etc/ld.so.conf", dirs, depth=0)
        for d in _DEFAULT_LIB_DIRS:
            if d not in dirs:
                dirs.append(d)
        return dirs

    def index(self):
        """{name: (directory, soname)}, the first directory winning."""
        if self._index is None:
            self._index, seen = {}, set()
            for d in self._dirs():
                real = os.path.realpath(d)
                if real in seen:
                    continue
                seen.add(real)
                try:
                    names = os.listdir(d)
                except OSError:
                    continue
                for n in names:
                    m = self._SONAME.match(n)
                    if m and m.group(1) not in self._index:
                        self._index[m.group(1)] = (d, n)
        return self._index

    def locate(self, name):
        """(directory, soname) of library NAME, or None."""
        return self.index().get(name)

    def find(self, name):
        found = self.locate(name)
        return found[1] if found else None

    def xtables_dir(self):
        found = self.locate("xtables")
        if found and os.path.isdir(os.path.join(found[0], "xtables")):
            return os.path.join(found[0], "xtables")
        return None


def _conf_dirs(path, dirs, depth):
    """The directories listed in an ld.so.conf file and its includes."""
    if depth > 4:
        return
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include "):
            import glob
            pattern = line.split(None, 1)[1]
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.dirname(path), pattern)
            for included in sorted(glob.glob(pattern)):
                _conf_dirs(included, dirs, depth + 1)
        elif os.path.isabs(line) and line not in dirs:
            dirs.append(line)
