"""The fleet module's face (faces/ansible_fleet.py): config items parsed
with messages that name config[N], a VM rendered in the shape of config
(so that gathered goes back in as config), one diff per VM, the return
values of a run. Pure: no kernel, no root."""

from types import SimpleNamespace

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.faces import ansible_fleet as fleet_face
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.manager import Result
from ansible_collections.vmsan.network.plugins.module_utils.model import changes as C
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.changes import Change
from ansible_collections.vmsan.network.plugins.module_utils.model.facts import facts
from ansible_collections.vmsan.network.plugins.module_utils.model.records import (Bandwidth, BrokenRecord, DnsLimits,
                                                                                  Limits, VmRecord)
from ansible_collections.vmsan.network.plugins.module_utils.plan import fleet

RECORD = VmRecord("web", 3, "vmsan-web", inputs.policy("custom", ["api.example.com"], ["192.0.2.0/24"], ["192.0.2.7"]),
                  inputs.port_list("published_ports", "8080:80,127.0.0.1:53/udp"), Bandwidth(50000000, 1500000), 1000,
                  limits=Limits(2000, DnsLimits(queries_per_second=50, tcp_connections=4)))
PLAIN = VmRecord("db", 0, None)


def item(**given):
    params = {k: None for k in fleet_face.ITEM_OPTIONS}
    params.update(given)
    return params


@pytest.mark.parametrize("bits", [8000, 12500, 1500000, 50000000, 7 * 1000 ** 3, 100 * 1000 ** 3, 123456])
def test_a_rate_reads_back_as_the_same_rate(bits):
    assert inputs.rate("bandwidth", fleet_face.rate_text(bits)) == bits
    assert fleet_face.rate_text(50000000) == "50mbit" and fleet_face.rate_text(1500000) == "1500kbit"


@pytest.mark.parametrize("record", [RECORD, PLAIN], ids=["every option", "defaults, host namespace"])
def test_gathered_goes_back_in_as_config(record):
    """A VM rendered as config and parsed back is replaced to the same settings."""
    config = fleet_face.vm_config(record)
    wanted = fleet_face.parse_item(0, item(**config))
    (step,) = fleet.plan("replaced", [wanted], {record.id: record}, (record.slot,))
    assert step.use_netns == (record.netns is not None) and step.slot == record.slot and not step.new
    assert (step.policy, step.ports_of(()), Bandwidth(step.bandwidth, step.bandwidth_in), step.tap_owner) \
        == (record.policy, record.ports, record.bandwidth, record.tap_owner)
    assert step.limits == record.limits


def test_gathered_leaves_out_what_has_no_value():
    assert fleet_face.vm_config(PLAIN) == {"name": "db", "netns": False, "slot": 0, "network_policy": "allow-all"}
    assert fleet_face.vm_config(RECORD)["published_ports"] == ["8080:80/tcp", "127.0.0.1:53:53/udp"]


def test_bad_input_names_the_item_the_option_and_the_vm():
    with pytest.raises(fleet_face.ItemError) as caught:
        fleet_face.parse({"config": [item(name="ok"), item(name="web", denied_cidrs=["10.0.0.1/8"])]})
    assert caught.value.where == "config[1].denied_cidrs"
    assert caught.value.message().startswith("config[1].denied_cidrs (VM web): '10.0.0.1/8' has host bits set")
    with pytest.raises(fleet_face.ItemError) as caught:
        fleet_face.parse({"config": [item(name="bad id")]})
    assert caught.value.where == "config[0].name" and "invalid VM id" in caught.value.message()
    assert fleet_face.parse({"config": None}) is None


def test_one_diff_per_vm_with_its_rules_when_they_change():
    after = RECORD.but(policy=inputs.policy("deny-all"))
    diff = fleet_face.vm_diff(RECORD, after)
    assert diff["before_header"] == diff["after_header"] == "VM web"
    assert '"network_policy": "custom"' in diff["before"] and '"network_policy": "deny-all"' in diff["after"]
    assert "-A vmsan-web-out -m set --match-set vmsan-web-allow dst -j ACCEPT" in diff["before"]
    assert "--match-set vmsan-web-allow" not in diff["after"]
    capped = fleet_face.vm_diff(RECORD, RECORD.but(bandwidth=Bandwidth()))
    assert "*filter" not in capped["before"] and "*filter" not in capped["after"]
    removed = fleet_face.vm_diff(RECORD, None)
    assert removed["after"] == "" and "*filter" in removed["before"]


def test_the_summary_of_a_run():
    created = Result(None, PLAIN)
    created.changes = [Change(C.CREATE_VM, "db", (0,))]
    removed = Result(RECORD)
    removed.changes = [Change(C.FORGET_VM, "web")]
    unchanged = Result(PLAIN, PLAIN)
    have = {"web": RECORD, "odd": BrokenRecord("odd", "corrupt")}
    done = [(fleet.Remove("web"), removed), (SimpleNamespace(id="db"), created), (SimpleNamespace(id="db"), unchanged)]
    out = fleet_face.summary(have, done)
    assert out["before"] == [fleet_face.vm_config(RECORD)]
    assert out["after"] == [fleet_face.vm_config(PLAIN)]
    assert out["changes"] == {"web": ["forget VM web"], "db": ["create VM db in slot 0"]}
    assert out["vms"] == {"db": facts(PLAIN)}
    assert fleet_face.summary(have, done, listed={"web"})["vms"] == {}
