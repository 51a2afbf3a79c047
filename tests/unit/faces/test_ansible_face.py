"""The modules' shared helpers (plugins/module_utils/ansible_face.py): error
rendering in Ansible's vocabulary, options left out, one port among others,
diffs. Pure: no kernel, no root."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.faces import ansible_module as face
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import ConflictError, InputError


class FakeModule:
    def __init__(self, diff=False):
        self._diff = diff
        self.failed = None
        self.exited = None
        self.warnings = []

    def fail_json(self, **kwargs):
        self.failed = kwargs
        raise SystemExit(1)

    def exit_json(self, **kwargs):
        self.exited = kwargs
        raise SystemExit(0)

    def warn(self, text):
        self.warnings.append(text)


def test_input_error_names_the_ansible_option_with_the_cli_text():
    with pytest.raises(InputError) as caught:
        inputs.cidr_list("allowed_cidrs", ["10.0.0.1/8"])
    cli = caught.value.render(inputs.label("allowed_cidrs", "cli"))
    assert face.error_message(caught.value) == cli.replace("--allowed-cidr:", "allowed_cidrs:", 1)
    module = FakeModule()
    with pytest.raises(SystemExit):
        face.run(module, lambda: inputs.vm_id("bad id!"))
    assert module.failed["msg"].startswith("name: invalid VM id") and module.failed["param"] == "name"


def test_other_errors_keep_their_message():
    module = FakeModule()

    def conflict():
        raise ConflictError("published_ports: host port 8080/tcp is already published by VM 'a'")
    with pytest.raises(SystemExit):
        face.run(module, conflict)
    assert module.failed["msg"] == "published_ports: host port 8080/tcp is already published by VM 'a'"
    assert "param" not in module.failed


def test_missing_library_and_root_messages():
    module = FakeModule()

    def importer(name):
        if name == "iptc":
            raise ImportError("no iptc")
    with pytest.raises(SystemExit):
        face.check_libraries(module, importer=importer)
    assert "python-iptables" in module.failed["msg"]
    module = FakeModule()
    with pytest.raises(SystemExit):
        face.check_root(module, "vmsan_port", geteuid=lambda: 1000)
    assert module.failed["msg"].startswith("vmsan_port must run as root")
    face.check_root(FakeModule(), "vmsan_port", geteuid=lambda: 0)   # no failure


FACTS = {"id": "web", "slot": 3, "netns": "vmsan-web", "network_policy": "custom",
         "allowed_domains": ["api.example.com"], "allowed_cidrs": ["192.0.2.0/24"], "denied_cidrs": [],
         "published_ports": ["8080:80/tcp"], "bandwidth": 50000000, "bandwidth_in": None, "tap_owner": 1000}


def test_options_left_out_keep_the_vms_values():
    kept = face.settings_for(FACTS)
    assert kept["policy"] == inputs.Policy("custom", ("api.example.com",), ("192.0.2.0/24",), ())
    assert [inputs.port_to_text(p) for p in kept["ports"]] == ["8080:80/tcp"]
    assert (kept["bandwidth"], kept["bandwidth_in"], kept["tap_owner"]) == (50000000, None, 1000)
    given = face.settings_for(FACTS, policy=inputs.policy("deny-all"), ports=(), bandwidth=None)
    assert given["policy"].mode == "deny-all" and given["ports"] == () and given["bandwidth"] is None
    fresh = face.settings_for(None)
    assert fresh["policy"] is None and list(fresh["ports"]) == [] and fresh["tap_owner"] is None


def test_given_parses_only_what_the_task_gave():
    assert face.given(None, lambda v: 1 / 0) is face.KEEP
    assert face.given("none", lambda v: inputs.rate("bandwidth", v)) is None


def spec(text):
    return inputs.port_spec("published_ports", text)


def test_ports_with_replaces_a_colliding_port_in_place():
    current = [spec("8080:80"), spec("9090:90"), spec("53/udp")]
    assert face.ports_with(current, spec("9090:91")) == [spec("8080:80"), spec("9090:91"), spec("53/udp")]
    assert face.ports_with(current, spec("7070")) == current + [spec("7070")]
    assert face.ports_with(current, spec("8080:80")) == current


def test_ports_without_matches_address_port_and_protocol():
    current = [spec("8080:80"), spec("127.0.0.1:9090:90"), spec("8080/udp")]
    assert face.ports_without(current, spec("8080:1")) == current[1:]
    assert face.ports_without(current, spec("9090")) == current       # other host address
    assert face.ports_without(current, spec("127.0.0.1:9090")) == [current[0], current[2]]


def test_diff_shows_rules_only_when_they_change():
    after = dict(FACTS, network_policy="deny-all", allowed_domains=[], allowed_cidrs=[])
    diffs = face.build_diff(FACTS, after)
    assert [d["before_header"] for d in diffs] == ["web (facts)", "web (rules)"]
    rules_before, rules_after = diffs[1]["before"], diffs[1]["after"]
    assert "-A vmsan-web-out -m set --match-set vmsan-web-allow dst -j ACCEPT" in rules_before
    assert "--match-set" not in rules_after and "-A vmsan-web-out -j DROP" in rules_after
    assert "# ipset vmsan-web-allow: 192.0.2.0/24" in rules_before
    assert len(face.build_diff(FACTS, dict(FACTS, bandwidth=None))) == 1
    created = face.build_diff({}, FACTS)
    assert created[0]["before"] == "" and created[1]["before"] == "" and "*filter" in created[1]["after"]


def test_exit_with_reports_changes_facts_and_warnings():
    class Result:
        changed = True
        changes = ["create VM web in slot 3"]
        warnings = ["shares the host namespace"]
        vm = FACTS
        diff = {"before": {}, "after": FACTS}
    module = FakeModule(diff=True)
    with pytest.raises(SystemExit):
        face.exit_with(module, Result())
    assert module.exited["changed"] and module.exited["vm"] == FACTS and len(module.exited["diff"]) == 2
    assert module.warnings == ["shares the host namespace"]
