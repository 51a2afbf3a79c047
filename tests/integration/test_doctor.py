"""`vmsan doctor` in the sandbox host: reports the kernel features it needs,
and tells forwarding off (a fresh namespace) from on (after a VM)."""

import pytest

pytestmark = pytest.mark.integration


def checks(sandbox):
    result = sandbox.vmsan("doctor", check=False)
    return result.rc, {c["name"]: c for c in result.out["checks"]}


def test_doctor_reports_features_and_forwarding(sandbox):
    sandbox.host.sysctl("net.ipv4.ip_forward", "0")
    rc, found = checks(sandbox)
    assert rc == 0
    for name in ("root", "tun", "netns", "iptables legacy", "ipset", "tc", "nft forward"):
        assert found[name]["status"] == "ok", found[name]
    assert found["forwarding"]["status"] == "warn"
    vm = sandbox.vmsan("create", "--id", sandbox.unique_id("doc")).out
    assert checks(sandbox)[1]["forwarding"]["status"] == "ok"
    sandbox.vmsan("remove", vm["id"])
