"""The event log (telemetry/eventlog.py): rate limits per VM with a summary,
rotation by size, reading and following across a rotation; the Event's
JSON (model/events.py)."""

import threading

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import events as E
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError
from ansible_collections.vmsan.network.plugins.module_utils.telemetry import eventlog


class Clock(object):
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def event(vm="web", kind="policy", t=1_800_000_000.0, **kw):
    return E.Event(t, vm, kind, destination="192.0.2.10", port=9000, protocol="tcp", **kw)


def test_an_event_is_one_json_line_and_reads_back_the_same():
    e = event(name="x.example.test", policy_version="abc", detail="NXDOMAIN", t=1_800_000_000.125)
    line = E.to_json(e)
    assert "\n" not in line and '"time":"2027-01-15T08:00:00.125Z"' in line
    assert E.from_json(line) == e
    with pytest.raises(ValueError):
        E.from_json('{"vm": 1}')


def test_since_takes_a_time_ago_or_a_utc_time_and_names_the_flag_otherwise():
    assert inputs.since("10m", 1000.0) == 400.0
    assert inputs.since("2027-01-15T08:00:00Z", 0) == 1_800_000_000.0
    with pytest.raises(InputError) as info:
        inputs.since("yesterday", 0)
    assert "--since" in info.value.render("--since") and "30s" in info.value.render("--since")


def test_policy_version_changes_with_the_policy_and_only_with_it():
    a = inputs.policy(None, "a.example.test")
    assert E.policy_version(a) == E.policy_version(inputs.policy(None, "a.example.test"))
    assert E.policy_version(a) != E.policy_version(inputs.policy(None, "a.example.test", audit=True))


def test_a_vm_past_its_budget_is_summed_up_in_one_suppressed_event(tmp_path):
    clock = Clock()
    log = eventlog.EventLog(str(tmp_path), per_vm=3, window=1.0, clock=clock, journal=lambda line: None)
    log.start()
    try:
        took = [log.record(event(t=clock.now)) for _ in range(10)]
        assert took == [True] * 3 + [False] * 7
        assert log.record(event(vm="other", t=clock.now))      # another VM has its own budget
        clock.now += 1.5
        log.summaries()
    finally:
        log.stop()
    got = list(eventlog.read(str(tmp_path), "web"))
    assert [e.kind for e in got] == ["policy"] * 3 + ["suppressed"]
    assert got[-1].count == 7 and got[-1].detail == "7 policy"
    assert [e.vm for e in eventlog.read(str(tmp_path), "other")] == ["other"]


def test_the_log_rotates_at_its_size_and_keeps_its_backups_only(tmp_path):
    log = eventlog.EventLog(str(tmp_path), max_bytes=2000, backups=2, per_vm=10 ** 6, per_host=10 ** 6,
                            journal=lambda line: None)
    log.start()
    try:
        for i in range(200):
            log.record(event(vm="vm%d" % i))
            if i % 10 == 0:
                log._wake.set()
                while log._queue:
                    threading.Event().wait(0.01)
    finally:
        log.stop()
    files = eventlog.files(str(tmp_path))
    assert [f.rsplit("/", 1)[1] for f in files] == ["events.jsonl.2", "events.jsonl.1", "events.jsonl"]
    assert sum((tmp_path / f.rsplit("/", 1)[1]).stat().st_size for f in files) <= 2000 * 3 + 1000
    vms = [e.vm for e in eventlog.read(str(tmp_path))]
    assert vms[-1] == "vm199" and vms == sorted(vms, key=lambda v: int(v[2:]))     # oldest first


def test_follow_gives_what_is_written_after_it_started(tmp_path):
    log = eventlog.EventLog(str(tmp_path), journal=lambda line: None)
    log.start()
    log.record(event(vm="a"))
    log.stop()
    seen, done = [], threading.Event()

    def reader():
        for e in eventlog.follow(str(tmp_path), stop=done.is_set, poll=0.01):
            seen.append(e.vm)
            if len(seen) == 2:
                done.set()
    thread = threading.Thread(target=reader)
    thread.start()
    log = eventlog.EventLog(str(tmp_path), journal=lambda line: None)
    log.start()
    log.record(event(vm="b"))
    log.stop()
    thread.join(5)
    done.set()
    assert seen == ["a", "b"]
