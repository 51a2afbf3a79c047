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


def test_list_has_a_header_the_guest_address_and_the_ports(tmp_path):
    os.makedirs(tmp_path / "vms")
    record = {"schema": 1, "id": "web", "slot": 4, "netns": "vmsan-web", "status": "ready",
              "policy": {"mode": "custom", "allowed_domains": [], "allowed_cidrs": [], "denied_cidrs": [],
                         "audit": True},
              "published_ports": ["8080:80/tcp"], "bandwidth": None, "bandwidth_in": None, "tap_owner": None,
              "created": "2026-01-01T00:00:00Z"}
    (tmp_path / "vms" / "web.json").write_text(json.dumps(record))
    status, out, _err = run(["list"], {"VMSAN_HOME": str(tmp_path)})
    header, line = out.splitlines()[:2]
    assert status == 0 and header.split() == ["ID", "SLOT", "STATUS", "TAP", "GUEST", "POLICY", "NETNS", "PORTS"]
    assert line.split()[3:] == ["fhvm4", "172.16.4.2", "custom/audit", "vmsan-web", "8080:80/tcp"]


def test_list_json_into_a_closed_pipe_exits_quietly(tmp_path):
    import subprocess
    import sys
    os.makedirs(tmp_path / "vms")
    for i in range(1, 400):
        (tmp_path / "vms" / ("v%d.json" % i)).write_text(json.dumps(
            {"schema": 1, "id": "v%d" % i, "slot": i, "netns": None, "status": "ready", "policy": {"mode": "allow-all"},
             "published_ports": [], "created": "2026-01-01T00:00:00Z"}))
    vmsan = os.path.join(os.path.dirname(sys.executable), "vmsan")
    env = dict(os.environ, VMSAN_HOME=str(tmp_path), VMSAN_NO_DAEMON="1")
    proc = subprocess.Popen([vmsan, "list", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout.read(10)
    proc.stdout.close()                 # what `| head` does
    err = proc.stderr.read().decode()
    assert proc.wait(30) == 1 and err == ""


def test_a_bad_metrics_address_names_the_flag_before_anything_starts():
    status, _out, err = run(["daemon", "--metrics-listen", "127.0.0.1"])
    assert status == 2 and "--metrics-listen" in err and "IPv4 address and a port" in err
    status, _out, err = run(["daemon", "--metrics-listen", "localhost:9464"])
    assert status == 2 and "--metrics-listen" in err


def test_the_metrics_server_names_the_flag_when_it_cannot_listen():
    import socket
    import pytest
    from ansible_collections.vmsan.network.plugins.module_utils.model.errors import VmsanError
    from ansible_collections.vmsan.network.plugins.module_utils.telemetry import metrics
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        server = metrics.MetricsServer(metrics.registry_with(metrics.VmsanCollector(None)), holder.getsockname())
        with pytest.raises(VmsanError) as info:
            server.start()
        assert str(info.value).startswith("--metrics-listen 127.0.0.1:%d: cannot listen there" % holder.getsockname()[1])
    finally:
        holder.close()


def test_the_metrics_server_serves_the_exposition_and_stops():
    import urllib.request
    from ansible_collections.vmsan.network.plugins.module_utils.telemetry import metrics

    class Store(object):
        def scan(self):
            return []
    server = metrics.MetricsServer(metrics.registry_with(metrics.VmsanCollector(Store())), ("127.0.0.1", 0)).start()
    try:
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % server.port, timeout=5).read().decode()
    finally:
        server.stop()
    assert "# TYPE vmsan_vms gauge" in body and "vmsan_vms 0.0" in body


def test_port_add_names_its_ports_argument_not_the_create_flag(tmp_path):
    status, _out, err = run(["port", "add", "web", "0"], {"VMSAN_HOME": str(tmp_path)})
    assert status == 2 and err.startswith("vmsan: PORTS: ") and "--publish-port" not in err
    status, _out, err = run(["create", "--id", "web", "--publish-port", "0"], {"VMSAN_HOME": str(tmp_path)})
    assert status == 2 and err.startswith("vmsan: --publish-port: ")
