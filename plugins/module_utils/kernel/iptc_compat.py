"""Everything vmsan takes from python-iptables beyond its public API, in one
place, checked against the version this was written for (requirements.txt).

The fast path (iptables_entries, iptables_template, iptables) relies on:

* the ctypes structures of ``iptc.ip4tc`` and ``iptc.xtables``, for the
  layout of ``struct ipt_entry``, ``struct ipt_ip`` and the match and target
  headers (``LAYOUT``);
* ``Table._init``, to open a fresh libiptc handle bound to the calling
  thread's namespace instead of the library's process-wide table cache
  (``open_table``), and ``Rule.tables``, the library's answer to "is this a
  user chain?" (``use_chain_oracle``);
* ``Table._iptc`` / ``Table._handle``, to delete an entry by position, and
  ``first_rule`` / ``next_rule`` / ``get_target`` to read entries as bytes.

Another python-iptables version may change any of these, so using them with
one refuses with a message instead of misreading the kernel's rules.

The library is imported here so that the core still imports without it (the
Ansible modules then name what is missing); ``require()`` is the gate.
"""

import ctypes
import errno
import os
import threading
from collections import namedtuple

from ..model.errors import KernelError, VmsanError
from .third_party import import_iptc

PINNED_VERSION = "1.2.0"        # python-iptables in requirements.txt (a unit test compares them)

try:
    iptc = import_iptc()     # without setuptools and subprocesses (third_party.py)
    from iptc import ip4tc, xtables
    from iptc.version import __version__ as VERSION
    IMPORT_ERROR = None
except Exception as exc:  # ImportError, or libiptc's own error when the C library is missing
    iptc = ip4tc = xtables = None
    VERSION = None
    IMPORT_ERROR = exc

Layout = namedtuple("Layout", "entry_size ip_size target_offset_at next_offset_at counters_at header_size name_at "
                              "name_size revision_at src dst smsk dmsk iniface outiface iniface_mask outiface_mask "
                              "ifnamsiz")


def _layout():
    entry, ip, header = ip4tc.ipt_entry, ip4tc.ipt_ip, xtables.xt_entry_match_user
    return Layout(
        entry_size=ctypes.sizeof(entry), ip_size=ctypes.sizeof(ip),
        target_offset_at=entry.target_offset.offset, next_offset_at=entry.next_offset.offset,
        counters_at=entry.counters.offset, header_size=ctypes.sizeof(xtables.xt_entry_match), name_at=header.name.offset,
        name_size=header.name.size, revision_at=header.revision.offset,
        src=ip.src.offset, dst=ip.dst.offset, smsk=ip.smsk.offset, dmsk=ip.dmsk.offset,
        iniface=ip.iniface.offset, outiface=ip.outiface.offset, iniface_mask=ip.iniface_mask.offset,
        outiface_mask=ip.outiface_mask.offset, ifnamsiz=ip.iniface.size)


LAYOUT = _layout() if iptc is not None else None


class _LibraryMissing(Exception):
    """Stands in for python-iptables' errors where it is not installed."""


# what python-iptables raises: libiptc's failures and the xtables parsers'
LIBRARY_ERRORS = (iptc.IPTCError, xtables.XTablesError) if iptc is not None else (_LibraryMissing,)

_checked = []
_active = threading.local()


def require():
    """Raise VmsanError unless the pinned python-iptables is importable."""
    if _checked:
        return
    if iptc is None:
        raise VmsanError("the iptables adapter needs python-iptables (libiptc): %s; install the pinned "
                         "requirements (scripts/setup.sh, or pip install -r requirements.txt)" % IMPORT_ERROR)
    if VERSION != PINNED_VERSION:
        raise VmsanError("python-iptables %s is installed, but vmsan reads libiptc entries through internals of "
                         "python-iptables %s (requirements.txt); install that version" % (VERSION, PINNED_VERSION))
    _checked.append(True)


_ERRNO_OF_TEXT = {os.strerror(n): n for n in errno.errorcode}


def translated(exc, doing):
    """A KernelError for python-iptables' IPTCError or XTablesError EXC,
    raised while DOING. libiptc's messages end with the strerror text of the
    errno it failed with ("can't delete chain X: Too many links")."""
    text = str(exc)
    err = next((n for t, n in _ERRNO_OF_TEXT.items() if text.endswith(t)), None)
    return KernelError(err, doing, text)


class ChainOracle(object):
    """Answers python-iptables' question "is NAME a user chain?" (which decides
    whether a target is a jump) from the handle this thread has open, instead
    of the library's process-wide table cache, which belongs to whichever
    namespace first opened it. Our own chains count even before they exist, so
    a check run can encode jumps to chains it would create."""

    @staticmethod
    def is_chain(name):
        if name.startswith(("VMSAN-", "vmsan-")):
            return True
        table = getattr(_active, "table", None)
        return bool(table is not None and table.is_chain(name))


if iptc is not None:
    iptc.Rule.tables = property(lambda self: [ChainOracle])


def open_table(name):
    """A fresh libiptc handle bound to this thread's namespace (python-iptables
    caches one handle per table name process-wide, which would point at
    whichever namespace first opened it)."""
    require()
    table = object.__new__(iptc.Table)
    try:
        table._init(name, False)
    except LIBRARY_ERRORS as exc:
        raise translated(exc, "open the iptables table %s" % name)
    _active.table = table
    return table


def close_table(table):
    """Close TABLE's handle; the chain oracle no longer asks it (a closed
    handle is freed memory: asking it crashes the process)."""
    if getattr(_active, "table", None) is table:
        _active.table = None
    table.close()


def delete_entry(table, chain, position):
    """Delete the rule at POSITION (0-based) of CHAIN in TABLE's handle."""
    if table._iptc.iptc_delete_num_entry(chain.encode(), position, table._handle) != 1:
        raise KernelError(ctypes.get_errno() or None, "delete rule %d of chain %s" % (position + 1, chain),
                          table.strerror())


def entries(table, chain):
    """(entry bytes, target label) of each rule of CHAIN in TABLE's handle."""
    found = []
    entry = table.first_rule(chain)
    while entry:
        raw = ctypes.string_at(ctypes.addressof(entry), entry.next_offset)
        label = table.get_target(entry)
        found.append((raw, label.decode() if label else ""))
        entry = table.next_rule(entry)
    return found
