"""Rules written into a template of their shape must be byte for byte what
python-iptables encodes for them (no root needed: encoding is user space)."""

import random

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as fp
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord

pytest.importorskip("iptc")     # the adapters import without it (and then cannot encode)
from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables as apply  # noqa: E402
from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables_template as T  # noqa: E402

ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _rules(vm, in_host_namespace):
    ports = inputs.port_list("published_ports", "8080:80,53/udp")
    out = []
    for policy in (inputs.policy(), inputs.policy("deny-all"), inputs.policy(None, allowed_cidrs="169.254.169.254/32")):
        plan = fp.vm_plan(vm, policy, ports, in_host_namespace=in_host_namespace)
        for group in (plan.owned, plan.members):
            for rules in group.values():
                out += [tuple(r) for r in rules]
    for rules in fp.published_plan(vm, ports).owned.values():
        out += [tuple(r) for r in rules]
    return out


def _vms(count, seed):
    rng = random.Random(seed)
    vms = [VmRecord("a", 0, None), VmRecord("Z" * inputs.VM_ID_MAX, 4094, None), VmRecord("web1", 254, None),
           VmRecord("x-1", 255, None)]
    for _unused in range(count):
        length = rng.randint(1, inputs.VM_ID_MAX)
        vm_id = rng.choice(ID_CHARS[:62]) + "".join(rng.choice(ID_CHARS) for _ in range(length - 1))
        vms.append(VmRecord(vm_id, rng.randint(0, 4094), None))
    return vms


@pytest.mark.parametrize("in_host_namespace", [False, True])
def test_patched_rules_equal_python_iptables_encoding(in_host_namespace):
    templates, patched = {}, 0
    for vm in _vms(60, seed=7 if in_host_namespace else 3):
        for tokens in _rules(vm, in_host_namespace):
            parts = T.split(tokens)
            if parts is None:
                continue
            shape, values = parts
            encoded = bytes(apply._encode(tokens).rule)
            if shape not in templates:
                templates[shape] = encoded
                continue
            assert T.patch(templates[shape], shape, values) == encoded, tokens
            patched += 1
    assert patched > 500
    # the rules that name the VM are the ones that get patched
    kinds = {part[0] for shape in templates for part in shape if isinstance(part, tuple)}
    assert kinds == {"in", "out", "src", "dst", "comment", "mac", "label"}


def test_split_finds_the_values_that_name_a_vm():
    shape, values = T.split(("-i", "fhvm3", "-m", "comment", "--comment", "vmsan:web1", "-j", "vmsan-web1-out"))
    assert values == ("fhvm3", "vmsan:web1", "vmsan-web1-out")
    assert shape == ("-i", ("in",), "-m", "comment", "--comment", ("comment",), "-j", ("label",))
    assert T.split(("!", "-s", "172.16.3.2/32", "-j", "DROP")) == (("!", "-s", ("src",), "-j", "DROP"),
                                                                   ("172.16.3.2/32",))
    assert T.split(("-m", "set", "--match-set", "vmsan-web1-allow", "dst", "-j", "ACCEPT")) is None


@pytest.mark.parametrize("bad", ["fhvm+", "averyveryverylongname"])
def test_what_patch_does_not_write_is_refused(bad):
    tokens = ("-i", "fhvm3", "-j", "DROP")
    shape, _values = T.split(tokens)
    template = bytes(apply._encode(tokens).rule)
    with pytest.raises(ValueError):
        T.patch(template, shape, (bad,))


def test_encode_patches_only_after_a_shape_agreed_and_never_after_it_disagreed(monkeypatch):
    monkeypatch.setattr(apply, "_ENCODED", {})
    monkeypatch.setattr(apply, "_TEMPLATES", {})

    def rule(n):
        return ("-i", "fhvm%d" % n, "-m", "comment", "--comment", "vmsan:t%d" % n, "-j", "vmsan-t%d-in" % n)

    def python_iptables(n):
        return bytes(apply._encode(rule(n)).rule)

    shape = T.split(rule(1))[0]
    assert bytes(apply.encode(rule(1)).buf) == python_iptables(1)       # the template
    assert apply._TEMPLATES[shape][1] is False
    assert bytes(apply.encode(rule(2)).buf) == python_iptables(2)       # both ways, agreed
    assert apply._TEMPLATES[shape][1] is True
    calls = []
    real = apply._encode
    monkeypatch.setattr(apply, "_encode", lambda tokens: calls.append(tokens) or real(tokens))
    patched = bytes(apply.encode(rule(3)).buf)
    assert calls == []                                                  # patched, not encoded
    assert patched == python_iptables(3)
    # a shape whose patch disagrees is never patched again
    other = ("-o", "fhvm1", "-m", "comment", "--comment", "vmsan:t1", "-j", "vmsan-t1-to")
    other_shape = T.split(other)[0]
    monkeypatch.setattr(T, "patch", lambda template, shape, values: b"wrong")
    apply.encode(other)
    apply.encode(other[:1] + ("fhvm2",) + other[2:])
    assert apply._TEMPLATES[other_shape] is False
    third = ("-o", "fhvm3", "-m", "comment", "--comment", "vmsan:t3", "-j", "vmsan-t3-to")
    assert bytes(apply.encode(third).buf) == bytes(real(third).rule)
