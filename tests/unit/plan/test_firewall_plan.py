import pytest

from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as fp
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.records import VmRecord

VM = VmRecord("web1", 3, None)


def out_chain(policy, **kw):
    return fp.vm_plan(VM, policy, **kw).owned[("filter", "vmsan-web1-out")]


def test_allow_all_tail_and_baseline():
    rules = out_chain(inputs.policy())
    assert rules[-2:] == [("-d", "169.254.0.0/16", "-j", "VMSAN-DROP-ISOLATION"), ("-j", "ACCEPT")]
    assert ("-d", "172.16.0.0/16", "-j", "VMSAN-DROP-ISOLATION") in rules
    assert ("-d", "169.254.64.0/18", "-j", "VMSAN-DROP-ISOLATION") in rules
    # baseline drops come before anything that accepts new traffic
    assert rules.index(("-d", "172.16.0.0/16", "-j", "VMSAN-DROP-ISOLATION")) < rules.index(("-j", "ACCEPT"))


def test_deny_all_ends_in_drop_and_redirects_all_dns():
    plan = fp.vm_plan(VM, inputs.policy("deny-all"))
    rules = plan.owned[("filter", "vmsan-web1-out")]
    assert rules[-1] == ("-j", "VMSAN-DROP-POLICY")
    accepts = [r for r in rules if r[-1] == "ACCEPT"]
    # only DNS to the host resolver and replies on connections opened from outside
    assert all("--ctstate" in r or r[:2] == ("-d", "169.254.64.1/32") and "53" in r for r in accepts)
    dns = plan.owned[("nat", "vmsan-web1-dns")]
    assert all("-d" not in r for r in dns)               # any destination


def test_allow_all_redirects_only_gateway_dns():
    dns = fp.vm_plan(VM, inputs.policy()).owned[("nat", "vmsan-web1-dns")]
    assert all(r[:2] == ("-d", "172.16.3.1/32") for r in dns)


def test_custom_precedence_order():
    pol = inputs.policy(None, "a.example.com", "10.0.0.0/8", "10.1.0.0/16")
    rules = out_chain(pol)
    deny = rules.index(("-m", "set", "--match-set", "vmsan-web1-deny", "dst", "-j", "VMSAN-DROP-POLICY"))
    allow = rules.index(("-m", "set", "--match-set", "vmsan-web1-allow", "dst", "-j", "ACCEPT"))
    learned = rules.index(("-m", "set", "--match-set", "vmsan-web1-dns", "dst", "-j", "vmsan-web1-guard"))
    dot = rules.index(("-p", "tcp", "-m", "tcp", "--dport", "853", "-j", "VMSAN-DROP-DNS"))
    link_local = rules.index(("-d", "169.254.0.0/16", "-j", "VMSAN-DROP-ISOLATION"))
    assert dot < deny < link_local < allow < learned
    assert rules[-1] == ("-j", "VMSAN-DROP-POLICY")


def test_custom_only_denied_leaves_rest_open_and_empty_custom_closes():
    assert out_chain(inputs.policy(None, None, None, "10.0.0.0/8"))[-1] == ("-j", "ACCEPT")
    assert out_chain(inputs.policy("custom"))[-1] == ("-j", "VMSAN-DROP-POLICY")


def test_anti_spoofing_and_namespace_policies():
    plan = fp.vm_plan(VM, inputs.policy())
    spoof = plan.owned[("raw", "vmsan-web1-spoof")]
    assert ("!", "-s", "172.16.3.2/32", "-j", "VMSAN-DROP-SPOOFED") in spoof
    assert any("--mac-source" in r and "06:00:AC:10:03:02" in r for r in spoof)
    assert plan.policies == {("filter", "FORWARD"): "DROP", ("filter", "INPUT"): "DROP"}
    assert fp.vm_plan(VM, inputs.policy(), in_host_namespace=True).policies == {}


def test_members_are_tagged_with_the_vm():
    plan = fp.vm_plan(VM, inputs.policy())
    for rules in plan.members.values():
        for rule in rules:
            assert "vmsan:web1" in rule


def test_published_ports_plan():
    ports = inputs.port_list("published_ports", "8080,127.0.0.1:9000:90/udp")
    plan = fp.published_plan(VM, ports)
    rules = plan.owned[("nat", "vmsan-web1-pub")]
    assert ("-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", "DNAT", "--to-destination", "172.16.3.2:8080") in rules
    assert rules[1][:2] == ("-d", "127.0.0.1/32") and rules[1][-1] == "172.16.3.2:90"
    to = fp.vm_plan(VM, inputs.policy("deny-all"), ports).owned[("filter", "vmsan-web1-to")]
    assert ("-p", "udp", "-m", "udp", "--dport", "90", "-j", "ACCEPT") in to


@pytest.mark.parametrize("policy,dst,port,learned,expected", [
    (inputs.policy(), "203.0.113.10", 80, (), True),
    (inputs.policy(), "169.254.169.254", 80, (), False),
    (inputs.policy(), "172.16.5.2", 80, (), False),
    (inputs.policy("deny-all"), "203.0.113.10", 80, (), False),
    (inputs.policy(None, None, "203.0.113.0/24"), "203.0.113.10", 80, (), True),
    (inputs.policy(None, None, "203.0.113.0/24"), "192.0.2.10", 80, (), False),
    (inputs.policy(None, None, "203.0.113.0/24", "203.0.113.128/25"), "203.0.113.200", 80, (), False),
    (inputs.policy(None, None, None, "203.0.113.128/25"), "192.0.2.10", 80, (), True),
    (inputs.policy(None, "a.example.test"), "203.0.113.10", 80, ("203.0.113.10",), True),
    (inputs.policy(None, "a.example.test"), "203.0.113.11", 80, ("203.0.113.10",), False),
    (inputs.policy(None, "a.example.test", None, "203.0.113.0/24"), "203.0.113.10", 80, ("203.0.113.10",), False),
    (inputs.policy(None, None, "169.254.0.0/16"), "169.254.169.254", 80, (), True),
    (inputs.policy(None, None, "0.0.0.0/0"), "169.254.64.5", 80, (), False),
    (inputs.policy(None, None, "0.0.0.0/0"), "169.254.169.254", 80, (), False),
    (inputs.policy(None, None, "0.0.0.0/0,169.254.169.254"), "169.254.169.254", 80, (), True),
    (inputs.policy(None, None, "0.0.0.0/0"), "1.1.1.1", 853, (), False),
])
def test_outbound_allowed_mirrors_precedence(policy, dst, port, learned, expected):
    assert fp.outbound_allowed(policy, dst, "tcp", port, learned) is expected


def test_render_is_iptables_save_like():
    text = fp.render(fp.vm_plan(VM, inputs.policy()))
    assert "*filter" in text and "-A vmsan-web1-out -j ACCEPT" in text and "-P FORWARD DROP" in text


def test_every_rule_encodes():
    pytest.importorskip("iptc")     # the adapter imports without it (and then cannot encode)
    from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables as iptables_apply
    pol = inputs.policy("deny-all")
    ports = inputs.port_list("published_ports", "8080,53/udp")
    plans = [fp.vm_plan(VM, pol, ports), fp.vm_plan(VM, inputs.policy(), ports, in_host_namespace=True),
             fp.host_plan(), fp.published_plan(VM, ports)]
    for plan in plans:
        for group in (plan.owned, plan.members, plan.hooks):
            for rules in group.values():
                for rule in rules:
                    iptables_apply.encode(rule)


def test_allows_all_that_named_cases():
    P = inputs.policy
    wide, narrow = P(None, None, "10.0.0.0/8"), P(None, None, "10.1.0.0/16")
    assert fp.allows_all_that(P("deny-all"), P("allow-all"))
    assert fp.allows_all_that(P("deny-all"), narrow)
    assert fp.allows_all_that(narrow, wide) and not fp.allows_all_that(wide, narrow)
    assert not fp.allows_all_that(P("allow-all"), P("deny-all"))
    assert not fp.allows_all_that(P("allow-all"), wide)            # custom drops DNS over TLS
    assert fp.allows_all_that(wide, P("allow-all"))
    # a custom policy that opened metadata is not widened by allow-all
    assert not fp.allows_all_that(P(None, None, "169.254.169.254/32"), P("allow-all"))
    # a new denied range narrows
    assert not fp.allows_all_that(wide, P(None, None, "10.0.0.0/8", "10.2.0.0/16"))
    assert fp.allows_all_that(P(None, None, "10.0.0.0/8", "10.2.0.0/16"), wide)
    # domains: the same or more
    assert fp.allows_all_that(P(None, "a.example.com"), P(None, "a.example.com,b.example.com"))
    assert not fp.allows_all_that(P(None, "a.example.com,b.example.com"), P(None, "a.example.com"))


def test_allows_all_that_agrees_with_outbound_allowed():
    """Whenever allows_all_that says NEW is the wider, no destination that OLD
    lets out is refused by NEW (random policies, random destinations)."""
    import random
    rng = random.Random(7)
    pool = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "203.0.113.0/24", "203.0.113.10/32",
            "169.254.0.0/16", "169.254.169.254/32", "192.0.2.0/24", "0.0.0.0/0"]
    destinations = ["10.1.2.3", "10.1.9.9", "10.200.0.1", "203.0.113.10", "203.0.113.99", "169.254.169.254",
                    "169.254.1.1", "192.0.2.1", "198.51.100.7", "8.8.8.8"]

    def random_policy():
        mode = rng.choice(["allow-all", "deny-all", "custom", "custom", "custom"])
        if mode != "custom":
            return inputs.policy(mode)
        allowed = rng.sample(pool, rng.randint(0, 3))
        denied = [c for c in rng.sample(pool, rng.randint(0, 2)) if c != "0.0.0.0/0"]
        return inputs.policy("custom", None, ",".join(allowed) or None, ",".join(denied) or None)

    wider = 0
    for _ in range(3000):
        old, new = random_policy(), random_policy()
        if not fp.allows_all_that(old, new):
            continue
        wider += 1
        for dst in destinations:
            for proto, port in (("tcp", 443), ("tcp", 853), ("udp", 53)):
                if fp.outbound_allowed(old, dst, proto, port):
                    assert fp.outbound_allowed(new, dst, proto, port), (old, new, dst, proto, port)
    assert wider > 300


# -- the name guard in the plan (plan/name_guard.py) -------------------------------

GUARD_DOMAINS = "a.example.com,git.example.com:22,ntp.example.com:123/udp,dns.example.com:53/udp"


@pytest.mark.parametrize("in_host", [False, True], ids=["netns", "no-netns"])
def test_a_custom_policy_with_domains_sends_its_learned_set_through_the_guard(in_host):
    pol = inputs.policy(None, GUARD_DOMAINS, "10.0.0.0/8", "10.1.0.0/16")
    plan = fp.vm_plan(VM, pol, in_host_namespace=in_host)
    out = plan.owned[("filter", "vmsan-web1-out")]
    # no rule of the VM accepts the learned set without the guard
    assert not [r for r in out if "vmsan-web1-dns" in r and r[-1] == "ACCEPT"]
    jump = out.index(("-m", "set", "--match-set", "vmsan-web1-dns", "dst", "-j", "vmsan-web1-guard"))
    deny = out.index(("-m", "set", "--match-set", "vmsan-web1-deny", "dst", "-j", "VMSAN-DROP-POLICY"))
    allow = out.index(("-m", "set", "--match-set", "vmsan-web1-allow", "dst", "-j", "ACCEPT"))
    resolver = out.index(("-d", "169.254.64.1/32", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"))
    # DNS to the resolver first, denied CIDRs win, allowed CIDRs are never held
    assert resolver < deny < allow < jump < len(out) - 1 and out[-1] == ("-j", "VMSAN-DROP-POLICY")
    guard = plan.owned[("filter", "vmsan-web1-guard")]
    queued = [r for r in guard if "NFQUEUE" in r]
    assert all("--queue-bypass" not in r for r in queued)          # fail closed without a reader
    assert ("-p", "udp", "-m", "multiport", "--dports", "53,123", "-j", "NFQUEUE", "--queue-num", "3013") in guard
    assert guard[-1] == ("-j", "DROP")                              # other UDP, ICMP, ...
    assert ("filter", "VMSAN-GUARD-EMPTY") in plan.owned
    to = plan.owned[("filter", "vmsan-web1-to")]
    assert "NFLOG" in to[0] and "vmsan-web1-dns" in to[0]
    # marks: only our two bits are read or written (other software's survive)
    for rule in guard:
        if "--mark" in rule:
            assert rule[rule.index("--mark") + 1].endswith("/0x30000000")
        if "CONNMARK" in rule:
            assert rule[rule.index("--nfmask") + 1] == rule[rule.index("--ctmask") + 1] == "0x30000000"
    assert plan.absent == frozenset()


@pytest.mark.parametrize("policy", [inputs.policy(), inputs.policy("deny-all"),
                                    inputs.policy(None, None, "10.0.0.0/8")], ids=["allow-all", "deny-all", "cidr"])
def test_a_policy_without_domains_has_no_guard_and_says_its_chains_must_go(policy):
    plan = fp.vm_plan(VM, policy)
    assert ("filter", "vmsan-web1-guard") not in plan.owned
    assert not any("NFLOG" in r for r in plan.owned[("filter", "vmsan-web1-to")])
    assert plan.absent == {("filter", "vmsan-web1-guard"), ("filter", "VMSAN-GUARD-EMPTY")}
    # in the host namespace the shared chain may serve other VMs: only the VM's own goes
    host = fp.vm_plan(VM, policy, in_host_namespace=True)
    assert host.absent == {("filter", "vmsan-web1-guard")}


def test_a_merged_plan_never_deletes_a_chain_another_part_owns():
    guarded = VmRecord("web2", 4, None, policy=inputs.policy(None, "a.example.com"))
    plain = VmRecord("web1", 3, None, policy=inputs.policy())
    merged = fp.merge(fp.plans_for(plain)[1], fp.plans_for(guarded)[1])
    assert ("filter", "vmsan-web1-guard") in merged.absent
    assert ("filter", "VMSAN-GUARD-EMPTY") in merged.owned and ("filter", "VMSAN-GUARD-EMPTY") not in merged.absent


def test_the_guard_chain_is_one_of_the_vms_chains():
    assert "vmsan-web1-guard" in fp.vm_chains("web1")


def test_audit_mode_without_domains_learns_every_name_unguarded():
    pol = inputs.policy("custom", None, None, "10.1.0.0/16", audit=True)
    plan = fp.vm_plan(VM, pol)
    out = plan.owned[("filter", "vmsan-web1-out")]
    assert ("filter", "vmsan-web1-guard") not in plan.owned
    assert ("-m", "set", "--match-set", "vmsan-web1-dns", "dst", "-j", "ACCEPT") in out


def test_audit_mode_with_domains_guards_the_learned_set_and_lets_the_refused_through_its_audit_chains():
    pol = inputs.policy(None, "a.example.com", None, "10.1.0.0/16", audit=True)
    plan = fp.vm_plan(VM, pol)
    out = plan.owned[("filter", "vmsan-web1-out")]
    assert ("-m", "set", "--match-set", "vmsan-web1-dns", "dst", "-j", "vmsan-web1-guard") in out
    guard = plan.owned[("filter", "vmsan-web1-guard")]
    # the queue lets packets through while no guard reads it; what the chain drops by itself is let through, logged
    assert ("-p", "tcp", "-j", "NFQUEUE", "--queue-num", "3013", "--queue-bypass") in guard
    assert guard[-1] == ("-j", "VMSAN-AUDIT-GUARD")
    audit_guard = plan.owned[("filter", "VMSAN-AUDIT-GUARD")]
    assert audit_guard[-1] == ("-j", "ACCEPT") and "NFLOG" in audit_guard[0] and "3023" in audit_guard[0]
    # enforcing, the same list has no bypass and drops
    enforced = fp.vm_plan(VM, inputs.policy(None, "a.example.com", None, "10.1.0.0/16")).owned
    assert ("-p", "tcp", "-j", "NFQUEUE", "--queue-num", "3013") in enforced[("filter", "vmsan-web1-guard")]
    assert enforced[("filter", "vmsan-web1-guard")][-1] == ("-j", "DROP")
    assert ("-m", "set", "--match-set", "vmsan-web1-deny", "dst", "-j", "VMSAN-AUDIT-POLICY") in out
    assert out[-1] == ("-j", "VMSAN-AUDIT-POLICY")
    # DNS over TLS and the isolation baseline still drop
    assert ("-p", "tcp", "-m", "tcp", "--dport", "853", "-j", "VMSAN-DROP-DNS") in out
    assert ("-d", "172.16.0.0/16", "-j", "VMSAN-DROP-ISOLATION") in out
    audit = plan.owned[("filter", "VMSAN-AUDIT-POLICY")]
    assert audit[-1] == ("-j", "ACCEPT") and "NFLOG" in audit[0] and "NEW" in audit[0]
    assert plan.owned[("filter", "VMSAN-DROP-ISOLATION")][-1] == ("-j", "DROP")
    assert plan.owned[("raw", "VMSAN-DROP-SPOOFED")][-1] == ("-j", "DROP")
