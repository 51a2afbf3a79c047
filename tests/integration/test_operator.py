"""The operator's view (issue 17), proved from guests: ``vmsan daemon`` in
the sandbox host namespace (resolver, name guard, event log, drop reader,
metrics at --metrics-listen on the sandbox's loopback), real probes from
guests behind TAPs, and what ``vmsan events``, ``vmsan show``, ``vmsan
metrics``, the daemon's metrics endpoint, a real Prometheus server and
``vmsan policy suggest`` say about them (docs/operator.md).
"""

import json
import os
import re
import shutil
import time
import urllib.parse

import pytest

from sandbox import procs

pytestmark = pytest.mark.integration

AUTH_DNS = "203.0.113.53"
METRICS = ("127.0.0.1", 9464)       # in the sandbox host namespace: its own loopback
DENIED = "192.0.2.10"               # the internet's; inside the denied CIDR below
PROMPT = 1.0                        # an event is in the log within this (issue 17)


class Daemon(object):
    """``vmsan daemon`` in the sandbox host namespace."""

    def __init__(self, sandbox, *flags):
        self.sandbox, self.flags, self.proc = sandbox, flags, None

    def start(self, timeout=20.0):
        self.proc = self.sandbox.vmsan_spawn("daemon", "--upstream", AUTH_DNS, *self.flags, log_name="daemon.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.proc.log_path) as handle:
                if "listening on" in handle.read():
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.proc.log_path) as handle:
            raise AssertionError("the daemon did not start:\n" + handle.read())

    def stop(self):
        procs.stop(self.proc)


def events(sandbox, vm_id, *flags):
    """The events of VM_ID as ``vmsan events VM --json`` prints them."""
    done = sandbox.vmsan("events", vm_id, "--json", *flags, json_out=False)
    return [json.loads(line) for line in done.out.splitlines() if line.strip()]


def wait_event(sandbox, vm_id, pred, timeout=PROMPT):
    """The first event of VM_ID that PRED accepts, waiting up to TIMEOUT
    from now (the probe was just sent); None if there is none by then."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in events(sandbox, vm_id) if pred(e)]
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def scrape(sandbox, port=METRICS[1], path="/metrics"):
    done = sandbox.host.run(["curl", "-sS", "--max-time", "3", "http://127.0.0.1:%d%s" % (port, path)])
    assert done.returncode == 0, done.stderr
    return done.stdout


def sample(text, name, **labels):
    """The value of metric NAME with LABELS (all of them) in exposition TEXT, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        head, _sp, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


@pytest.fixture
def daemon(sandbox):
    d = Daemon(sandbox, "--metrics-listen", "%s:%d" % METRICS).start()
    yield d
    d.stop()


def custom_vm(sandbox, name, *flags):
    vm = sandbox.vmsan("create", "--id", sandbox.unique_id(name), *flags).out
    guest = sandbox.add_guest(vm)
    # the daemon looks at the state directory every 0.1 s (telemetry/dropped.py): a VM's drops are read
    # from then on, as a VMM boots its guest after vmsan create
    time.sleep(0.3)
    return vm, guest


def test_each_refusal_is_an_event_and_a_counter_in_show_and_the_metrics(sandbox, daemon):
    vm, guest = custom_vm(sandbox, "ops", "--allowed-domain", "a.example.test", "--denied-cidr", "192.0.2.0/24")
    vm_id = vm["id"]
    # what is allowed still passes (the learned address of an allowed name)
    assert guest.dig("a.example.test", guest.dns_server)[:2] == ("NOERROR", ["203.0.113.10"])

    # a refused name
    assert guest.dig("www.example.com", guest.dns_server)[0] == "NXDOMAIN"
    name = wait_event(sandbox, vm_id, lambda e: e["kind"] == "name")
    assert name is not None and name["name"] == "www.example.com" and name["verdict"] == "refused"
    assert name["policy_version"] == sandbox.vmsan("show", vm_id).out["policy_version"]

    # a packet to a denied CIDR
    assert guest.tcp(DENIED, 9000, timeout=0.5) is None
    policy = wait_event(sandbox, vm_id, lambda e: e["kind"] == "policy")
    assert policy is not None and (policy["destination"], policy["port"], policy["protocol"]) == (DENIED, 9000, "tcp")

    # a spoofed source
    guest.send_spoofed_udp("172.16.250.2", "203.0.113.10", 9000)
    spoofed = wait_event(sandbox, vm_id, lambda e: e["kind"] == "spoofed")
    assert spoofed is not None and spoofed["detail"] == "source 172.16.250.2"

    # IPv6
    guest.send_ipv6()
    ipv6 = wait_event(sandbox, vm_id, lambda e: e["kind"] == "ipv6" and e["destination"] == "2001:db8::1")
    assert ipv6 is not None and (ipv6["port"], ipv6["protocol"]) == (9000, "udp")

    # DNS over TLS to elsewhere
    assert guest.tcp("203.0.113.10", 853, timeout=0.5) is None
    assert wait_event(sandbox, vm_id, lambda e: e["kind"] == "dns_elsewhere") is not None

    # the counters of vmsan show
    shown = sandbox.vmsan("show", vm_id).out
    dropped = shown["counters"]["dropped"]
    assert dropped["policy"] >= 1 and dropped["spoofed"] >= 1 and dropped["ipv6"] >= 1
    assert dropped["dns_elsewhere"] >= 1
    assert shown["counters"]["sent"]["packets"] > 0 and shown["counters"]["received"]["bytes"] > 0
    learned = [m for m in shown["learned"] if m["address"] == "203.0.113.10"]
    assert learned and learned[0]["name"].startswith("a.example.test") and 0 < learned[0]["expires_in"] <= 60 + 30  # TTL + grace
    assert shown["sets"]["deny"] == ["192.0.2.0/24"]
    rules = shown["rules_text"]["vm_namespace"]
    assert "-m set --match-set vmsan-%s-deny dst -j VMSAN-DROP-POLICY" % vm_id in rules
    assert re.search(r"^\[[1-9][0-9]*:[0-9]+\] -A vmsan-%s-spoof ! -s %s/32 -j VMSAN-DROP-SPOOFED"
                     % (re.escape(vm_id), re.escape(vm["guest_ip"])), rules, re.M), rules
    text = sandbox.vmsan("show", vm_id, json_out=False).out
    assert "dropped:   policy " in text and "learned addresses" in text and "*filter" in text

    # the daemon's metrics, and vmsan metrics (in-process: the kernel's counters)
    served = scrape(sandbox)
    assert sample(served, "vmsan_dropped_packets_total", vm=vm_id, reason="policy") >= 1
    assert sample(served, "vmsan_dropped_packets_total", vm=vm_id, reason="ipv6") >= 1
    assert sample(served, "vmsan_dns_queries_total", vm=vm_id, rcode="NXDOMAIN") >= 1
    assert sample(served, "vmsan_dns_queries_total", vm=vm_id, rcode="NOERROR") >= 1
    assert sample(served, "vmsan_events_total", vm=vm_id, kind="name", verdict="refused") >= 1
    assert sample(served, "vmsan_learned_addresses", vm=vm_id) >= 1
    assert sample(served, "vmsan_vms") == 1
    assert sample(served, "vmsan_dns_upstream_latency_seconds_count") >= 1
    once = sandbox.vmsan("metrics", json_out=False).out
    assert sample(once, "vmsan_dropped_packets_total", vm=vm_id, reason="spoofed") >= 1
    assert sample(once, "vmsan_bytes_total", vm=vm_id, direction="sent") > 0


def test_a_flood_of_dropped_packets_is_counted_whole_and_logged_within_its_limit(sandbox, daemon):
    vm, guest = custom_vm(sandbox, "flood", "--denied-cidr", "192.0.2.0/24")
    vm_id = vm["id"]
    before = sandbox.vmsan("show", vm_id).out["counters"]["dropped"]["policy"]
    count = 100000
    began = time.monotonic()
    # paced a little: the relay (the VMM) would drop what its TAP's queue cannot take
    done = guest.run(["python3", "-c", "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                      "for i in range(%d):\n s.sendto(b'x', ('%s', 9000 + i %% 100))\n"
                      " if i %% 200 == 0: time.sleep(0.002)" % (count, DENIED)], timeout=60)
    assert done.returncode == 0, done.stderr
    time.sleep(1.5)         # the window of the event log's limit ends: its summary is written
    seconds = time.monotonic() - began
    shown = sandbox.vmsan("show", vm_id).out["counters"]["dropped"]["policy"]
    assert shown - before == count          # the kernel counts every one
    logged = [e for e in events(sandbox, vm_id) if e["kind"] == "policy"]
    # per VM at most 20 events a second (the event log's budget), whatever was sent
    assert 1 <= len(logged) <= 20 * (int(seconds) + 2)
    held = [e for e in events(sandbox, vm_id) if e["kind"] == "suppressed"]
    assert held and sum(e["count"] for e in held) >= 1
    size = sum(os.path.getsize(os.path.join(sandbox.home, "events", f)) for f in os.listdir(
        os.path.join(sandbox.home, "events")))
    assert size < 200 * 20 * (int(seconds) + 3)       # a line is ~200 bytes


def test_a_real_prometheus_scrapes_the_daemon(sandbox, daemon, tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("Debian's prometheus package is not installed (scripts/setup.sh installs it)")
    vm, guest = custom_vm(sandbox, "prom", "--denied-cidr", "192.0.2.0/24")
    vm_id = vm["id"]
    for port in (9000, 9001, 9002):
        assert guest.tcp(DENIED, port, timeout=0.3) is None
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vmsan\n"
                      "    static_configs:\n      - targets: ['%s:%d']\n" % METRICS)
    os.chmod(tmp_path, 0o755)
    server = sandbox.host.spawn([prometheus, "--config.file", str(config), "--storage.tsdb.path",
                                 str(tmp_path / "data"), "--web.listen-address", "127.0.0.1:9090"],
                                stdout=open(tmp_path / "prometheus.log", "wb"), stderr=open(
                                    tmp_path / "prometheus.err", "wb"))
    try:
        query = 'vmsan_dropped_packets_total{vm="%s",reason="policy"}' % vm_id
        path = "/api/v1/query?query=" + urllib.parse.quote(query)
        deadline = time.monotonic() + 30
        value = None
        while time.monotonic() < deadline:
            done = sandbox.host.run(["curl", "-sS", "--max-time", "2", "http://127.0.0.1:9090" + path])
            if done.returncode == 0:
                result = json.loads(done.stdout)["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
                    if value >= 3:
                        break
            time.sleep(0.5)
        assert value is not None and value >= 3, (tmp_path / "prometheus.err").read_text()[-2000:]
        up = json.loads(sandbox.host.run(["curl", "-sS", "http://127.0.0.1:9090/api/v1/query?query=up"]).stdout)
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        procs.stop(server)


AUDIT_FETCHED = ("alpha.test", "bravo.test", "charlie.test")
AUDIT_RESOLVED = ("delta.test", "echo.test")


def _audit_run(sandbox, guest, names_fetched, names_resolved):
    """curl each of NAMES_FETCHED (resolved through the VM's resolver
    first), dig each of NAMES_RESOLVED; the bodies curl got."""
    bodies = []
    for name in names_fetched:
        rcode, values, _t = guest.dig(name, guest.dns_server)
        address = values[0] if rcode == "NOERROR" and values else "192.0.2.1"
        done = guest.run(["curl", "-sS", "--max-time", "3", "--resolve", "%s:80:%s" % (name, address),
                          "http://%s/" % name], timeout=10)
        bodies.append(done.stdout)
    for name in names_resolved:
        guest.dig(name, guest.dns_server)
    return bodies


def test_audit_mode_lets_through_logs_and_policy_suggest_writes_the_allowlist(sandbox, daemon):
    for name in AUDIT_FETCHED + AUDIT_RESOLVED + ("foxtrot.test",):
        sandbox.internet.dns.set(name, "A", ["203.0.113.10"])
    vm, guest = custom_vm(sandbox, "audit", "--network-policy", "custom", "--audit")
    vm_id = vm["id"]
    # everything passes in audit mode, and each name is logged as "would refuse"
    bodies = _audit_run(sandbox, guest, AUDIT_FETCHED, AUDIT_RESOLVED)
    assert bodies == ["vmsan-ok 203.0.113.10\n"] * 3
    assert guest.tcp("203.0.113.11", 9000) is not None         # an address no name gave: passes, logged
    assert wait_event(sandbox, vm_id, lambda e: e["kind"] == "policy" and e["verdict"] == "would refuse"), \
        events(sandbox, vm_id)
    # the isolation baseline stays
    assert guest.tcp(vm["host_ip"], 22, timeout=0.3) is None
    time.sleep(0.3)
    suggestion = sandbox.vmsan("policy", "suggest", vm_id).out
    assert sorted(suggestion["allowed_domains"]) == sorted(AUDIT_FETCHED + AUDIT_RESOLVED)
    assert suggestion["allowed_cidrs"] == ["203.0.113.11/32"]

    # applying it (no audit now) and repeating the run refuses nothing
    whole = int(time.time()) + 1            # --since takes whole seconds: the next one, after what came before
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole))
    time.sleep(whole - time.time() + 0.1)
    sandbox.vmsan("network", vm_id, "--allowed-domain", ",".join(suggestion["allowed_domains"]),
                  "--allowed-cidr", ",".join(suggestion["allowed_cidrs"]))
    assert sandbox.vmsan("show", vm_id).out["audit"] is False
    bodies = _audit_run(sandbox, guest, AUDIT_FETCHED, AUDIT_RESOLVED)
    assert bodies == ["vmsan-ok 203.0.113.10\n"] * 3
    assert guest.tcp("203.0.113.11", 9000) is not None
    time.sleep(0.5)
    assert events(sandbox, vm_id, "--since", since) == []
    # and one more name is refused
    assert guest.dig("foxtrot.test", guest.dns_server)[0] == "NXDOMAIN"
    refused = wait_event(sandbox, vm_id, lambda e: e.get("name") == "foxtrot.test")
    assert refused is not None and refused["verdict"] == "refused"


def test_a_fronting_attempt_is_an_event_and_a_guard_decision_in_the_metrics(sandbox, daemon):
    from sandbox.tls import PORT, SHARED, TlsSite
    site = TlsSite.start(sandbox.internet)
    vm, guest = custom_vm(sandbox, "front", "--allowed-domain", "a.test")
    vm_id = vm["id"]
    assert guest.dig("a.test", guest.dns_server)[:2] == ("NOERROR", [SHARED])

    def curl(name):
        done = guest.run(["curl", "-sS", "--max-time", "3", "--cacert", site.ca_file, "--resolve",
                          "%s:%d:%s" % (name, PORT, SHARED), "https://%s:%d/" % (name, PORT)], timeout=10)
        return done.returncode, done.stdout
    assert curl("a.test") == (0, "tls a.test %s\n" % SHARED)
    # c.test is served at the same address: a name the policy does not allow, fronted by one it does
    assert curl("c.test")[0] != 0
    front = wait_event(sandbox, vm_id, lambda e: e["kind"] == "guard")
    assert front is not None and (front["name"], front["destination"], front["port"]) == ("c.test", SHARED, PORT)
    served = scrape(sandbox)
    refused = [line for line in served.splitlines() if line.startswith("vmsan_guard_decisions_total{")
               and 'vm="%s"' % vm_id in line and 'decision="refuse"' in line]
    assert refused and float(refused[0].rsplit(" ", 1)[1]) >= 1, served
    assert sandbox.vmsan("show", vm_id).out["counters"]["dropped"]["guard"] >= 1


def test_audit_mode_lets_a_fronting_attempt_through_and_logs_it_as_would_refuse(sandbox, daemon):
    """Audit mode with the name guard on (issue 17): what the guard would
    refuse completes, and is an event "would refuse" with the VM and the
    name, a guard decision ``would_refuse`` in the metrics, and what
    ``policy suggest`` reads."""
    from sandbox.tls import OTHER, PORT, SHARED, TlsSite
    site = TlsSite.start(sandbox.internet)
    vm, guest = custom_vm(sandbox, "afront", "--allowed-domain", "a.test,d.test", "--audit")
    vm_id = vm["id"]
    # the audit guard chain (its queue's --queue-bypass) reads back from the kernel as planned
    assert sandbox.vmsan("network", vm_id, "--allowed-domain", "a.test,d.test", "--audit").out["changes"] == []
    assert guest.dig("a.test", guest.dns_server)[:2] == ("NOERROR", [SHARED])
    assert guest.dig("d.test", guest.dns_server)[:2] == ("NOERROR", [OTHER])

    def curl(name, address=SHARED):
        done = guest.run(["curl", "-sS", "--max-time", "3", "--cacert", site.ca_file, "--resolve",
                          "%s:%d:%s" % (name, PORT, address), "https://%s:%d/" % (name, PORT)], timeout=10)
        return done.returncode, done.stdout
    assert curl("a.test") == (0, "tls a.test %s\n" % SHARED)
    # c.test (not on the list) fronted by a.test's address, and d.test (on the list) at an address not
    # learned for it: both complete in audit mode
    assert curl("c.test") == (0, "tls c.test %s\n" % SHARED)
    assert curl("d.test") == (0, "tls d.test %s\n" % SHARED)

    def guard_event(name):
        return wait_event(sandbox, vm_id, lambda e: e["kind"] == "guard" and e.get("name") == name)
    for name, reason in (("c.test", "not_allowed"), ("d.test", "not_pinned")):
        seen = guard_event(name)
        assert seen is not None, events(sandbox, vm_id)
        assert (seen["vm"], seen["verdict"], seen["destination"], seen["port"], seen["detail"]) == \
            (vm_id, "would refuse", SHARED, PORT, reason)
    assert guard_event("a.test") is None            # allowed and pinned: no event
    served = scrape(sandbox)
    assert sample(served, "vmsan_guard_decisions_total", vm=vm_id, decision="would_refuse", reason="not_allowed") \
        == 1, served
    assert sample(served, "vmsan_guard_decisions_total", vm=vm_id, decision="would_refuse", reason="not_pinned") \
        == 1, served
    assert not sample(served, "vmsan_guard_decisions_total", vm=vm_id, decision="refuse")
    suggestion = sandbox.vmsan("policy", "suggest", vm_id).out
    assert sorted(suggestion["allowed_domains"]) == ["a.test", "c.test", "d.test"]
    assert any("d.test was asked for at %s" % SHARED in note for note in suggestion["notes"]), suggestion


def test_a_published_port_on_an_address_the_host_lacks_is_refused_and_changes_nothing(sandbox):
    vm_id = sandbox.unique_id("noaddr")
    done = sandbox.vmsan("create", "--id", vm_id, "--publish-port", "192.0.2.99:8080:80", check=False)
    assert done.rc == 2 and "--publish-port: 192.0.2.99:8080:80/tcp: 192.0.2.99 is not an address of this host" \
        in done.err, done.err
    assert sandbox.vmsan("list").out == []
    assert "vmsan-" + vm_id not in sandbox.namespaces()
    # an address the host has is fine
    made = sandbox.vmsan("create", "--id", vm_id, "--publish-port", "198.51.100.2:8080:80").out
    assert made["published_ports"] == ["198.51.100.2:8080:80/tcp"]


def test_conflicts_name_their_flag_and_change_nothing(sandbox):
    first = sandbox.vmsan("create", "--id", sandbox.unique_id("a"), "--slot", "3", "--publish-port", "8080").out
    for argv, flag in ((("--id", sandbox.unique_id("b"), "--slot", "3"), "--slot: slot 3 is held by VM"),
                       (("--id", sandbox.unique_id("c"), "--publish-port", "8080"),
                        "--publish-port: host port 8080/tcp is already published by VM"),
                       (("--id", first["id"]), "--id: VM %r already exists" % first["id"])):
        done = sandbox.vmsan("create", *argv, check=False)
        assert done.rc == 2 and done.err.startswith("vmsan: " + flag), done.err
    assert [v["id"] for v in sandbox.vmsan("list").out] == [first["id"]]


def test_events_follow_prints_a_refusal_as_it_happens(sandbox, daemon):
    import select
    import subprocess
    vm, guest = custom_vm(sandbox, "follow", "--allowed-domain", "a.example.test")
    follower = sandbox.host.spawn([*sandbox.vmsan_cmd, "events", vm["id"], "--follow", "--json"],
                                  env=sandbox.vmsan_env(), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)         # it has read the log as it was
        assert guest.dig("refused.example.test", guest.dns_server)[0] == "NXDOMAIN"
        ready, _w, _x = select.select([follower.stdout], [], [], PROMPT)
        assert ready, "nothing printed within %.1f s" % PROMPT
        line = json.loads(follower.stdout.readline())
        assert (line["vm"], line["kind"], line["name"]) == (vm["id"], "name", "refused.example.test")
    finally:
        procs.stop(follower)
