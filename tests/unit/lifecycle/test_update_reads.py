"""What a live policy update reads and writes (issue 14, the warm path's
follow-ups): no conntrack dump when the VM's namespace tracks nothing, no
pyroute2 IPSet socket when the policy has no sets and none is left to
destroy, and a durable state save that flushes the disk once. The kernel
side is faked; the lifecycle's code is real."""

import json
import os

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import policy
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import state
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord

pytest.importorskip("pyroute2")

RECORD = VmRecord("web", 3, "vmsan-web", inputs.policy("deny-all"))


class FakeTable(object):
    """conntrack.Table with COUNT entries, none of which the test expects read."""
    opened = []

    def __init__(self, count=0, entries=()):
        self._count, self._entries, self.dumps = count, list(entries), 0
        FakeTable.opened.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def count(self):
        return self._count

    def entries(self, **kwargs):
        self.dumps += 1
        return self._entries

    def delete(self, entries):
        pass


def test_no_conntrack_dump_when_the_namespace_tracks_nothing(monkeypatch):
    """Nothing tracked: no dump, and no pyroute2 Conntrack socket at all."""
    FakeTable.opened = []
    monkeypatch.setattr(policy.conntrack, "tracked_count", lambda: 0)
    monkeypatch.setattr(policy.conntrack, "Table", lambda: FakeTable(count=0))
    assert policy._cut_forbidden(RECORD, RECORD.policy, {}, check_mode=False) == []
    assert FakeTable.opened == []
    # with connections, the (kernel-filtered) dump is read
    monkeypatch.setattr(policy.conntrack, "tracked_count", lambda: 5)
    monkeypatch.setattr(policy.conntrack, "Table", lambda: FakeTable(count=5))
    policy._cut_forbidden(RECORD, RECORD.policy, {}, check_mode=False)
    assert [t.dumps for t in FakeTable.opened] == [1]


def test_the_count_request_is_ctnetlinks_stats_request():
    from ansible_collections.vmsan.network.plugins.module_utils.kernel import conntrack
    from ansible_collections.vmsan.network.plugins.module_utils.kernel.netlink_wire import HEADER
    length, mtype, flags, seq, _pid = HEADER.unpack_from(conntrack.count_request())
    assert (mtype, flags & 0x301, seq) == ((1 << 8) | 5, 0x301, conntrack.STATS_SEQ)   # REQUEST | DUMP
    assert length == len(conntrack.count_request())


class FakeWire(object):
    def __init__(self, present):
        self.present = present
        self.asked = []

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def existing(self, names):
        self.asked.append(list(names))
        return {n for n in names if n in self.present}


def test_the_stale_set_check_opens_no_ipset_socket_when_there_is_none(monkeypatch):
    wire = FakeWire(present=set())

    def no_socket():
        raise AssertionError("a pyroute2 IPSet socket was opened")
    monkeypatch.setattr(policy, "IpsetSocket", wire)
    monkeypatch.setattr(policy, "SetManager", no_socket)
    assert policy.destroy_unused_sets(RECORD, check_mode=False) == []
    assert wire.asked == [["vmsan-web-allow", "vmsan-web-deny", "vmsan-web-dns"]]


def test_a_stale_set_is_destroyed_through_the_set_manager(monkeypatch):
    destroyed = []

    class Sets(object):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def destroy(self, name):
            destroyed.append(name)
    monkeypatch.setattr(policy, "IpsetSocket", FakeWire(present={"vmsan-web-deny"}))
    monkeypatch.setattr(policy, "SetManager", Sets)
    changes = policy.destroy_unused_sets(RECORD, check_mode=False)
    assert [str(c) for c in changes] == ["destroy ipset vmsan-web-deny"] and destroyed == ["vmsan-web-deny"]
    destroyed.clear()
    assert len(policy.destroy_unused_sets(RECORD, check_mode=True)) == 1 and destroyed == []


def test_a_durable_save_flushes_the_disk_once(tmp_path, monkeypatch):
    """The data written out without a flush, then the rename, then one fsync
    (the directory's), whose journal commit carries both."""
    calls = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        calls.append(("fsync", "dir" if os.path.isdir("/proc/self/fd/%d" % fd) else "file"))
        real_fsync(fd)

    def rename(a, b):
        calls.append(("rename",))
        real_rename(a, b)
    monkeypatch.setattr(state.os, "fsync", fsync)
    monkeypatch.setattr(state.os, "rename", rename)
    monkeypatch.setattr(state, "write_out", lambda fd: calls.append(("write_out",)))
    store = state.StateStore(str(tmp_path))
    store.save(RECORD)
    assert calls == [("write_out",), ("rename",), ("fsync", "dir")]
    calls.clear()
    store.save(RECORD, durable=False)
    assert calls == [("rename",)]
    with open(store.path("web")) as handle:
        assert state.decode(json.load(handle)) == RECORD


def test_write_out_writes_the_data(tmp_path):
    path = tmp_path / "f"
    with open(path, "w") as handle:
        handle.write("x" * 5000)
        handle.flush()
        state.write_out(handle.fileno())
    assert path.read_text() == "x" * 5000
