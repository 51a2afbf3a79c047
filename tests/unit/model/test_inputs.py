import pytest

from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError


def err(fn, *args):
    with pytest.raises(InputError) as info:
        fn(*args)
    return info.value


@pytest.mark.parametrize("bad", ["has space", "a" * 17, "-lead", "", "x/y", "a" * 300])
def test_vm_id_rejected(bad):
    e = err(inputs.vm_id, bad)
    assert e.param == "id" and "1-16 characters" in e.accepted


def test_vm_id_ok():
    assert inputs.vm_id("web-01_a") == "web-01_a"


@pytest.mark.parametrize("bad,words", [
    ("10.0.0.0/33", "prefix"), ("300.1.1.1/8", "IPv4 address"), ("10.0.0/8", "IPv4 address"),
    ("10.0.0.1/8", "host bits"), ("abc", "IPv4 address"), ("2001:db8::/32", "IPv6 is not supported"),
    ("10.0.0.0/-1", "prefix"), ("010.0.0.0/8", "IPv4 address"),
])
def test_cidr_rejected(bad, words):
    e = err(inputs.cidr_list, "allowed_cidrs", bad)
    assert words in str(e) and e.param == "allowed_cidrs"


def test_cidr_lists_normalise():
    assert inputs.cidr_list("allowed_cidrs", "10.0.0.0/8, 1.2.3.4,10.0.0.0/8") == ("10.0.0.0/8", "1.2.3.4/32")
    assert inputs.cidr_list("allowed_cidrs", ["10.0.0.0/8", "192.168.1.0/24"]) == ("10.0.0.0/8", "192.168.1.0/24")
    err(inputs.cidr_list, "allowed_cidrs", "10.0.0.0/8,,1.2.3.4")


def test_policy_promotion_and_conflicts():
    assert inputs.policy().mode == "allow-all"
    assert inputs.policy(allowed_cidrs="10.0.0.0/8").mode == "custom"
    assert inputs.policy("allow-all", denied_cidrs="10.0.0.0/8").mode == "custom"
    assert inputs.policy(allowed_domains="*.github.com,npmjs.org").allowed_domains == ("*.github.com", "npmjs.org")
    assert inputs.policy("custom").mode == "custom"
    e = err(inputs.policy, "deny-all", None, "10.0.0.0/8")
    assert e.param == "network_policy" and "deny-all" in str(e)
    e = err(inputs.policy, "allow-some")
    assert "allow-all, deny-all, custom" in str(e)


@pytest.mark.parametrize("good,norm", [("API.Example.com.", "api.example.com"), ("*.github.com", "*.github.com"),
                                       ("a_b.example.test", "a_b.example.test")])
def test_domains_ok(good, norm):
    assert inputs.domain("allowed_domains", good) == norm


@pytest.mark.parametrize("bad", ["*", "*.com", "a.*.com", "**.a.com", "-a.com", "a..com", "a" * 64 + ".com",
                                 "exa mple.com", "*example.com"])
def test_domains_rejected(bad):
    assert err(inputs.domain, "allowed_domains", bad).param == "allowed_domains"


def test_ports():
    P = inputs.PortSpec
    assert inputs.port_list("published_ports", "8080,3000") == (P("0.0.0.0", 8080, 8080, "tcp"), P("0.0.0.0", 3000, 3000, "tcp"))
    assert inputs.port_spec("p", "127.0.0.1:8080:80/udp") == P("127.0.0.1", 8080, 80, "udp")
    assert inputs.port_spec("p", "8080:80") == P("0.0.0.0", 8080, 80, "tcp")
    assert inputs.port_spec("p", "10.0.0.1:8080") == P("10.0.0.1", 8080, 8080, "tcp")
    for bad in ("0", "65536", "80/sctp", "a:b", "1.2.3:80", "80:", ":80", "1:2:3:4"):
        assert "[host_ip:]host_port" in str(err(inputs.port_spec, "published_ports", bad))
    assert "twice" in str(err(inputs.port_list, "published_ports", "8080,127.0.0.1:8080"))
    assert inputs.port_list("published_ports", "8080,8080/udp")


def test_rates():
    assert inputs.rate("bandwidth", "50mbit") == 50_000_000
    assert inputs.rate("bandwidth", "1.5GBIT") == 1_500_000_000
    assert inputs.rate("bandwidth", "none") is None
    for bad in ("50", "50mb", "fast", "1kbit", "200gbit"):
        assert err(inputs.rate, "bandwidth", bad).param == "bandwidth"


def test_labels_same_message_both_faces():
    e = err(inputs.cidr_list, "allowed_cidrs", "10.0.0.0/33")
    assert e.render(inputs.label("allowed_cidrs", "cli")).startswith("--allowed-cidr: ")
    assert e.render(inputs.label("allowed_cidrs", "ansible")).startswith("allowed_cidrs: ")
    assert e.render("x").split(": ", 1)[1] == e.render("y").split(": ", 1)[1]
