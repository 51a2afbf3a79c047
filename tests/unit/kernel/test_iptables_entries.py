"""The binary rule keys (iptables_entries): what makes two rules the same."""

import struct

import pytest

from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as fp
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord

pytest.importorskip("iptc")     # the entry layout is read from python-iptables' ctypes structures
from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables_entries as E  # noqa: E402


def header(size, name, revision=0, garbage=b""):
    """A match/target header; GARBAGE lands after the name's NUL."""
    field = name.encode() + b"\0" + garbage
    return struct.pack("=H", size) + field.ljust(29, b"\0") + bytes([revision])


def entry(src=b"\xac\x10\x03\x02", comment=b"vmsan:a1", target="ACCEPT", counters=0, comefrom=0,
          name_garbage=b"", verdict=-2):
    ip = src + bytes(80)
    match = header(32 + 256, "comment", garbage=name_garbage) + comment.ljust(256, b"\0")
    target = header(40, target) + struct.pack("=i", verdict) + bytes(4)
    target_offset = E.ENTRY_SIZE + len(match)
    head = ip + struct.pack("=IHHIQQ", 0, target_offset, target_offset + len(target), comefrom, counters, counters)
    assert len(head) == E.ENTRY_SIZE
    return head + match + target


def test_parts_are_read():
    raw = entry()
    assert E.matches(raw)[0].name == "comment"
    assert E.comment(raw) == "vmsan:a1"
    assert E.target_name(raw) == "ACCEPT"


def test_key_ignores_what_the_kernel_owns():
    # counters, comefrom, bytes after a name's NUL, and a standard target's verdict/offset
    a = E.key(entry(), "ACCEPT", True)
    b = E.key(entry(counters=99, comefrom=7, name_garbage=b"\x06x", target="", verdict=1064), "ACCEPT", True)
    assert a == b


def test_key_sees_every_difference_that_matters():
    base = E.key(entry(), "ACCEPT", True)
    assert E.key(entry(src=b"\xac\x10\x03\x06"), "ACCEPT", True) != base
    assert E.key(entry(comment=b"vmsan:a2"), "ACCEPT", True) != base
    assert E.key(entry(), "DROP", True) != base
    # a module target is compared by its data as well
    assert E.key(entry(target="REJECT", verdict=7), "REJECT", False) != \
        E.key(entry(target="REJECT", verdict=6), "REJECT", False)


def test_kernel_rule_knows_standard_targets_by_their_empty_name():
    assert E.KernelRule(entry(target=""), "vmsan-a1-out").standard
    assert not E.KernelRule(entry(target="REJECT"), "REJECT").standard


def test_malformed_match_is_refused():
    raw = bytearray(entry())
    struct.pack_into("=H", raw, E.ENTRY_SIZE, 8)       # a match shorter than its header
    with pytest.raises(ValueError, match="malformed"):
        E.matches(bytes(raw))


def test_every_planned_rule_keeps_its_key_in_the_form_the_kernel_returns():
    """After a commit the kernel hands a standard target back with an empty
    name and an offset for a verdict: the key must not change."""
    from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables as apply
    vm = VmRecord("web1", 3, None)
    ports = inputs.port_list("published_ports", "8080,53/udp")
    plans = [fp.vm_plan(vm, inputs.policy("deny-all"), ports), fp.vm_plan(vm, inputs.policy(), ports),
             fp.host_plan(), fp.published_plan(vm, ports)]
    seen = 0
    for plan in plans:
        for group in (plan.owned, plan.members, plan.hooks):
            for rules in group.values():
                for rule in rules:
                    if "--match-set" in rule:
                        continue       # needs its set in the kernel: see the integration test
                    encoded = apply.encode(rule)
                    raw = bytearray(bytes(encoded.buf))
                    target_offset = E.offsets(bytes(raw))[0]
                    label = E.target_name(bytes(raw))
                    kernel = E.KernelRule(bytes(raw), label)
                    if label in E.VERDICTS or label.lower().startswith("vmsan-"):
                        raw[target_offset + 2:target_offset + 31] = bytes(29)
                        struct.pack_into("=i", raw, target_offset + 32, 1234)
                        kernel = E.KernelRule(bytes(raw), label)
                        assert kernel.standard
                    assert kernel.key == encoded.key, rule
                    seen += 1
    assert seen > 30
