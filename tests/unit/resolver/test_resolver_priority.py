"""The daemon's CPU priority over the guests (resolver/daemon.py
DAEMON_NICE, take_priority; docs/domain-policies.md "Priority"): the value
of the systemd unit, taken by the daemon itself when it was started at the
default nice, every thread of it; an operator's own nice left alone."""

import os

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model.errors import VmsanError
from ansible_collections.vmsan.network.plugins.module_utils.resolver import daemon

UNIT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "vmsan_host", "files",
                    "vmsan-resolver.service")


def unit_settings():
    with open(UNIT) as handle:
        return dict(line.strip().split("=", 1) for line in handle if "=" in line and not line.startswith("#"))


def test_the_unit_and_the_daemon_give_the_same_priority():
    settings = unit_settings()
    assert int(settings["Nice"]) == daemon.DAEMON_NICE < 0
    assert int(settings["CPUWeight"]) > 100         # systemd's default weight


@pytest.mark.parametrize("env,expected", [({}, daemon.DAEMON_NICE), ({"VMSAN_DAEMON_NICE": "0"}, 0),
                                          ({"VMSAN_DAEMON_NICE": " -5 "}, -5), ({"VMSAN_DAEMON_NICE": ""}, -10)])
def test_daemon_nice_from_the_environment(env, expected):
    assert daemon.daemon_nice(env) == expected


@pytest.mark.parametrize("text", ["high", "-21", "20", "1.5"])
def test_a_bad_nice_value_names_the_variable_and_the_accepted_form(text):
    with pytest.raises(VmsanError) as err:
        daemon.daemon_nice({"VMSAN_DAEMON_NICE": text})
    assert "VMSAN_DAEMON_NICE" in str(err.value) and "-20 to 19" in str(err.value)


class Priorities(object):
    """os.getpriority/os.setpriority over a table of thread ids."""

    def __init__(self, monkeypatch, tmp_path, tids, nice=0):
        self.nice = {tid: nice for tid in tids}
        self.tasks = tmp_path / "task"
        self.tasks.mkdir()
        for tid in tids:
            (self.tasks / str(tid)).mkdir()
        monkeypatch.setattr(os, "getpriority", lambda which, who: self.nice[who or tids[0]])
        monkeypatch.setattr(os, "setpriority", self.set)

    def set(self, which, who, value):
        assert which == os.PRIO_PROCESS
        self.nice[who] = value


def test_every_thread_takes_the_priority_when_started_at_nice_0(monkeypatch, tmp_path):
    table = Priorities(monkeypatch, tmp_path, [100, 101, 102])
    assert daemon.take_priority(-10, str(table.tasks)) == -10
    assert table.nice == {100: -10, 101: -10, 102: -10}


@pytest.mark.parametrize("started,wanted", [(-10, -10), (5, -10), (-3, -10), (0, 0)])
def test_a_priority_given_at_the_start_is_left_alone(monkeypatch, tmp_path, started, wanted):
    table = Priorities(monkeypatch, tmp_path, [100, 101], nice=started)
    assert daemon.take_priority(wanted, str(table.tasks)) == started
    assert table.nice == {100: started, 101: started}


def test_without_the_right_to_raise_its_priority_the_daemon_says_so_once(monkeypatch, tmp_path, caplog):
    table = Priorities(monkeypatch, tmp_path, [100, 101, 102])

    def refused(which, who, value):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "setpriority", refused)
    assert daemon.take_priority(-10, str(table.tasks)) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "cannot give the daemon nice -10: Permission denied (set Nice= in its unit, or start it with nice)"]
