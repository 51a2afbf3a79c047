"""The CLI fixes of issue 17 (item 5) and the operator's commands that need
no kernel: --version, help texts, the subcommand's usage on a usage error,
--audit's and --since's errors, vmsan events reading the log."""

import io
import json
import os

from ansible_collections.vmsan.network.plugins.module_utils.faces import cli
from ansible_collections.vmsan.network.plugins.module_utils.model import events as E
from ansible_collections.vmsan.network.plugins.module_utils.model.release import VERSION


def run(argv, env=None):
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(argv, out, err, env or {})
    return status, out.getvalue(), err.getvalue()


def test_version():
    assert run(["--version"]) == (0, "vmsan %s\n" % VERSION, "")


def test_port_help_lists_its_actions_and_network_help_says_a_left_out_policy_stays():
    status, out, _err = run(["port", "--help"])
    assert status == 0 and "add VM PORTS | remove VM PORTS | list VM" in out
    out = run(["network", "--help"])[1]
    assert "leave them all out and the VM keeps its current policy" in out and "--audit" in out
    out = run(["show", "--help"])[1]
    assert "the VM's id" in out and "one JSON document" in out


def test_a_usage_error_prints_the_subcommands_usage():
    status, _out, err = run(["port", "add", "web"])
    assert status == 2 and "usage: vmsan port add [-h] [--json] VM PORTS" in err


def test_audit_needs_a_custom_policy_and_says_so(tmp_path):
    status, _out, err = run(["create", "--id", "web", "--network-policy", "deny-all", "--audit"],
                            {"VMSAN_HOME": str(tmp_path)})
    assert status == 2 and "--audit: audit mode needs a custom policy" in err
    assert not os.path.exists(tmp_path / "vms" / "web.json")


def test_spaces_in_a_list_and_an_ipv6_cidr_are_refused_with_the_accepted_form(tmp_path):
    env = {"VMSAN_HOME": str(tmp_path)}
    err = run(["create", "--id", "web", "--allowed-domain", "a.test b.test"], env)[2]
    assert "--allowed-domain" in err and "use commas between values" in err
    err = run(["create", "--id", "web", "--allowed-cidr", "2001:db8::/32"], env)[2]
    assert "--allowed-cidr" in err and "IPv6 is not supported" in err


def test_events_prints_the_log_of_one_vm_since_a_time(tmp_path):
    os.makedirs(tmp_path / "events")
    lines = [E.to_json(E.Event(1_800_000_000.0 + i, vm, "policy", destination="192.0.2.10", port=9000))
             for i, vm in enumerate(("web", "db", "web"))]
    (tmp_path / "events" / "events.jsonl").write_text("\n".join(lines) + "\n")
    env = {"VMSAN_HOME": str(tmp_path)}
    status, out, _err = run(["events", "web", "--json"], env)
    assert status == 0 and [json.loads(line)["time"] for line in out.splitlines()] == [
        "2027-01-15T08:00:00.000Z", "2027-01-15T08:00:02.000Z"]
    out = run(["events", "--since", "2027-01-15T08:00:01Z"], env)[1]
    assert out.splitlines()[0].startswith("2027-01-15T08:00:01.000Z db refused policy 192.0.2.10:9000")
    status, _out, err = run(["events", "--since", "soon"], env)
    assert status == 2 and "--since" in err and "30s" in err
