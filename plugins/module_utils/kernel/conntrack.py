"""Tracked connections (conntrack) through pyroute2, in the network
namespace of the calling thread: the one place that reads and deletes them.

pyroute2's NetlinkError becomes a KernelError saying what was being done; a
delete of an entry that ended meanwhile (ENOENT) is no error.
"""

import errno

from ..model.errors import KernelError

try:
    from pyroute2 import Conntrack
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
except ImportError:  # the faces name the missing library (missing_required_lib)
    NetlinkError = ()


class Table(object):
    """The conntrack table of this namespace, over one netlink socket."""

    def __init__(self):
        try:
            self.ct = Conntrack()
        except NetlinkError as exc:
            raise KernelError(exc.code, "open the conntrack table")

    def close(self):
        self.ct.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def entries(self, orig=None, reply=None):
        """The tracked connections, filtered in the kernel by the fields of
        ORIG and REPLY ({"saddr": ..., "daddr": ...}) when given."""
        kwargs = {}
        if orig:
            kwargs["tuple_orig"] = NFCTAttrTuple(**orig)
        if reply:
            kwargs["tuple_reply"] = NFCTAttrTuple(**reply)
        try:
            return list(self.ct.dump_entries(**kwargs))
        except NetlinkError as exc:
            raise KernelError(exc.code, "read the tracked connections")

    def delete(self, entries):
        """Delete ENTRIES; those that ended meanwhile are skipped."""
        for entry in entries:
            try:
                self.ct.entry("del", tuple_orig=entry.tuple_orig)
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:
                    raise KernelError(exc.code, "delete the tracked connection %s:%s -> %s:%s"
                                      % (entry.tuple_orig.saddr, entry.tuple_orig.sport,
                                         entry.tuple_orig.daddr, entry.tuple_orig.dport))
