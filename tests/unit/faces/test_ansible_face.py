"""The modules' shared helpers (faces/ansible_module.py): error
rendering in Ansible's vocabulary, options left out, one port among others,
diffs. Pure: no kernel, no root."""

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.faces import ansible_module as face
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.manager import Result
from ansible_collections.vmsan.network.plugins.module_utils.model import changes as C
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.changes import Change
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import ConflictError, InputError
from ansible_collections.vmsan.network.plugins.module_utils.model.facts import facts
from ansible_collections.vmsan.network.plugins.module_utils.model.records import KEEP, Bandwidth, VmRecord
from ansible_collections.vmsan.network.plugins.module_utils.plan.ports import with_added, without
from ansible_collections.vmsan.network.plugins.modules import vmsan_vm


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


RECORD = VmRecord("web", 3, "vmsan-web", inputs.policy("custom", ["api.example.com"], ["192.0.2.0/24"]),
                  inputs.port_list("published_ports", "8080:80"), Bandwidth(50000000, None), 1000)


def _params(**given):
    params = dict(name="web", state="present", netns=True, slot=None, network_policy=None, allowed_domains=None,
                  allowed_cidrs=None, denied_cidrs=None, published_ports=None, bandwidth=None, bandwidth_in=None,
                  tap_owner=None, state_dir=None, published_ports_exclusive=False)
    params.update(given)
    return params


def test_audit_is_a_policy_option_of_the_vm_faces():
    wanted = vmsan_vm.parse(_params(network_policy="custom", audit=True))
    assert wanted["policy"].audit is True and wanted["policy"].mode == "custom"
    assert vmsan_vm.parse(_params(allowed_cidrs=["192.0.2.0/24"]))["policy"].audit is False
    with pytest.raises(InputError) as info:
        vmsan_vm.parse(_params(network_policy="allow-all", audit=True))
    assert face.error_message(info.value).startswith("audit: audit mode needs a custom policy")


def test_options_left_out_are_kept_and_given_ones_parsed():
    wanted = vmsan_vm.parse(_params())
    assert all(wanted[k] is KEEP for k in ("policy", "ports", "bandwidth", "bandwidth_in", "tap_owner"))
    given = vmsan_vm.parse(_params(network_policy="deny-all", published_ports=[], bandwidth="none"))
    assert given["policy"].mode == "deny-all" and given["ports"] == () and given["bandwidth"] is None


def spec(text):
    return inputs.port_spec("published_ports", text)


def test_vmsan_port_replaces_a_colliding_port_in_place():
    current = [spec("8080:80"), spec("9090:90"), spec("53/udp")]
    assert with_added("web", current, [spec("9090:91")], replace=True) == [spec("8080:80"), spec("9090:91"),
                                                                           spec("53/udp")]
    assert with_added("web", current, [spec("7070")], replace=True) == current + [spec("7070")]
    assert with_added("web", current, [spec("8080:80")], replace=True) == current


def test_vmsan_port_absent_matches_address_port_and_protocol():
    current = [spec("8080:80"), spec("127.0.0.1:9090:90"), spec("8080/udp")]

    def gone(text):
        return without("web", current, [(spec(text), False, text)], missing_ok=True)
    assert gone("8080:1") == current[1:]
    assert gone("9090") == current       # other host address
    assert gone("127.0.0.1:9090") == [current[0], current[2]]


def test_the_structured_port_is_checked_under_each_options_name():
    assert inputs.port(8080, None, "udp", "127.0.0.1") == spec("127.0.0.1:8080:8080/udp")
    for args, param in (((0,), "host_port"), ((80, 70000), "guest_port"), ((80, 80, "sctp"), "protocol"),
                        ((80, 80, "tcp", "localhost"), "host_ip")):
        with pytest.raises(InputError) as caught:
            inputs.port(*args)
        assert caught.value.param == param


def test_diff_shows_rules_only_when_they_change():
    after = RECORD.but(policy=inputs.policy("deny-all"))
    diffs = face.build_diff(RECORD, after)
    assert [d["before_header"] for d in diffs] == ["web (facts)", "web (rules)"]
    rules_before, rules_after = diffs[1]["before"], diffs[1]["after"]
    assert "-A vmsan-web-out -m set --match-set vmsan-web-allow dst -j ACCEPT" in rules_before
    assert "--match-set" not in rules_after and "-A vmsan-web-out -j VMSAN-DROP-POLICY" in rules_after
    assert "# ipset vmsan-web-allow: 192.0.2.0/24" in rules_before
    assert len(face.build_diff(RECORD, RECORD.but(bandwidth=Bandwidth()))) == 1
    created = face.build_diff(None, RECORD)
    assert created[0]["before"] == "" and created[1]["before"] == "" and "*filter" in created[1]["after"]


def test_exit_with_reports_changes_facts_and_warnings():
    result = Result(None, RECORD)
    result.changes = [Change(C.CREATE_VM, "web", (3,))]
    result.warnings = ["shares the host namespace"]
    module = FakeModule(diff=True)
    with pytest.raises(SystemExit):
        face.exit_with(module, result)
    assert module.exited["changed"] and module.exited["vm"] == facts(RECORD) and len(module.exited["diff"]) == 2
    assert module.exited["changes"] == ["create VM web in slot 3"]
    assert module.warnings == ["shares the host namespace"]
