"""The desired netfilter state of a VM and of the host, built as data.

Pure: nothing here touches the kernel. A rule is a tuple of iptables-save
tokens (``("-i", "fhvm3", "-p", "udp", "-m", "udp", "--dport", "53", "-j",
"DROP")``) so a plan prints the way operators already read rules, and
``iptables_apply`` turns tokens into libiptc entries.

Layout, in the namespace that holds a VM's TAP (its own, or the host's with
--no-netns):

* built-in chains jump first to shared chains ``VMSAN-*`` (the hooks);
* each shared chain holds one jump per VM, tagged ``vmsan:<id>`` (members);
* per-VM chains ``vmsan-<id>-<role>`` hold the VM's rules (owned):
  ``spoof`` (raw: anti-spoofing), ``dns`` (nat: DNS to the host resolver),
  ``out`` (filter: what the guest may send), ``in`` (filter: what the guest may
  send to the namespace itself), ``to`` (filter: what may reach the guest),
  ``pub`` (nat: published ports, host namespace), ``guard`` (filter: the
  name guard's part of the learned set's path, for a ``custom`` policy with
  domains: plan/name_guard.py).

The host namespace additionally gets ``VMSAN-HOST-*`` chains: the guard that
keeps guests off the host's own addresses, forwarding for VM traffic, and the
masquerade towards the default route.
"""

import ipaddress
import socket
from collections import namedtuple

from ..model import addressing as A
from . import budgets, drops, name_guard
# the plan's names, used as fp.* by its callers
from .names import CHAIN_ROLES, chain_name, set_name, vm_chains  # noqa: F401  pylint: disable=unused-import

TABLES = ("raw", "nat", "filter")

Plan = namedtuple("Plan", "hooks owned members policies absent", defaults=(frozenset(),))
# hooks:    {(table, builtin): [rule, ...]}  must head the built-in chain, in order
# owned:    {(table, chain): [rule, ...]}    whole content of chains we own
# members:  {(table, shared chain): [rule, ...]} rules tagged for one owner
# policies: {(table, builtin): "DROP"}       built-in chain policies
# absent:   {(table, chain)}                 chains of ours that must not exist (deleted once
#                                            nothing jumps to them: a guard chain after its policy
#                                            stopped naming domains)

SHARED_HOOKS = {
    ("raw", "PREROUTING"): ["VMSAN-RAW"],
    ("nat", "PREROUTING"): ["VMSAN-PREROUTING"],
    ("nat", "OUTPUT"): ["VMSAN-OUTPUT"],
    ("filter", "INPUT"): ["VMSAN-INPUT"],
    ("filter", "FORWARD"): ["VMSAN-FORWARD"],
}
HOST_HOOKS = {
    ("nat", "POSTROUTING"): ["VMSAN-HOST-NAT"],
    ("filter", "INPUT"): ["VMSAN-INPUT", "VMSAN-HOST-IN"],
    ("filter", "FORWARD"): ["VMSAN-FORWARD", "VMSAN-HOST-FWD"],
}

VM_NET = str(A.VM_RANGE)
TRANSIT_NET = str(A.TRANSIT_RANGE)
LINK_LOCAL_NET = str(A.LINK_LOCAL)


def tag(owner):
    return ("-m", "comment", "--comment", "vmsan:%s" % owner)


def _jump(chain):
    return ("-j", chain)


def _hooks(spec):
    return {key: [_jump(c) for c in chains] for key, chains in spec.items()}


def _dns_to_resolver(proto, dst=None):
    match_dst = ("-d", dst) if dst else ()
    return match_dst + ("-p", proto, "-m", proto, "--dport", "53", "-j", "DNAT",
                        "--to-destination", "%s:%d" % (A.RESOLVER_IP, A.RESOLVER_PORT))


def _accept_resolver(proto):
    # No "--ctstate DNAT": a query sent to the resolver's own address is
    # redirected onto itself, which the kernel does not mark as NATed; it must
    # still get its answer (REFUSED at once under deny-all).
    return ("-d", A.RESOLVER_IP + "/32", "-p", proto, "-m", proto, "--dport", str(A.RESOLVER_PORT),
            "-j", "ACCEPT")


def explicit_link_local(policy):
    """Allowed CIDRs that lie inside 169.254.0.0/16."""
    # canonical CIDR text: only one whose network address is 169.254.x.y
    # can lie inside (parsing a thousand-entry list each time costs ~15 ms)
    return [c for c in policy.allowed_cidrs
            if c.startswith("169.254.") and ipaddress.IPv4Network(c).subnet_of(A.LINK_LOCAL)]


def _policy_rules(vm_id, policy):
    """The tail of the ``out`` chain: what the policy lets out. Each drop
    jumps to its reason's chain (plan.drops: counted, a limited copy logged);
    in audit mode what the lists would drop jumps to the audit chain, which
    logs and accepts it."""
    mode = policy.mode
    if mode == "allow-all":
        return [("-d", LINK_LOCAL_NET) + drops.drop("isolation"), ("-j", "ACCEPT")]
    if mode == "deny-all":
        return [drops.drop("policy")]
    # DNS over TLS stays dropped in audit mode too: names must reach the resolver to be seen
    rules = [("-p", "tcp", "-m", "tcp", "--dport", "853") + drops.drop("dns_elsewhere"),
             ("-p", "udp", "-m", "udp", "--dport", "853") + drops.drop("dns_elsewhere")]
    refuse = drops.let_through("policy") if policy.audit else drops.drop("policy")
    if policy.denied_cidrs:
        rules.append(("-m", "set", "--match-set", set_name(vm_id, "deny"), "dst") + refuse)
    # Link-local (cloud metadata) opens only for a CIDR inside 169.254.0.0/16
    # named explicitly; a wide allow such as 0.0.0.0/0 does not open it.
    for cidr in explicit_link_local(policy):
        rules.append(("-d", cidr, "-j", "ACCEPT"))
    rules.append(("-d", LINK_LOCAL_NET) + drops.drop("isolation"))
    if policy.allowed_cidrs:
        rules.append(("-m", "set", "--match-set", set_name(vm_id, "allow"), "dst", "-j", "ACCEPT"))
    if name_guard.guards(policy):
        # the learned set, guarded: a flow to an address open only through it
        # is held at its first payload until the name guard has read its name
        rules.append(name_guard.out_rule(vm_id))
    elif policy.learns_names:
        # audit mode with no allowed domain: every name is off the list (the
        # resolver logged each one as "would refuse"); its addresses pass, unguarded
        rules.append(("-m", "set", "--match-set", set_name(vm_id, "dns"), "dst", "-j", "ACCEPT"))
    only_denied = policy.denied_cidrs and not (policy.allowed_cidrs or policy.allowed_domains)
    rules.append(("-j", "ACCEPT") if only_denied else refuse)
    return rules


def vm_plan(vm, policy, published=(), in_host_namespace=False):
    """Rules for one VM in the namespace that holds its TAP.

    ``vm`` (a VmRecord) gives the id and slot; ``published`` is a list of
    PortSpec (the guest side is opened here; the DNAT lives in the host
    namespace, see ``published_plan``)."""
    vm_id, slot = vm.id, vm.slot
    tap, guest, gateway, mac = A.tap_name(slot), A.guest_ip(slot), A.host_ip(slot), A.guest_mac(slot)
    t = tag(vm_id)

    def c(role):
        return chain_name(vm_id, role)

    members = {
        ("raw", "VMSAN-RAW"): [("-i", tap) + t + _jump(c("spoof"))],
        ("nat", "VMSAN-PREROUTING"): [("-i", tap) + t + _jump(c("dns"))],
        ("filter", "VMSAN-INPUT"): [("-i", tap) + t + _jump(c("in"))],
        ("filter", "VMSAN-FORWARD"): [("-i", tap) + t + _jump(c("out")),
                                      ("-o", tap) + t + _jump(c("to"))],
    }
    owned = {}
    # Anti-spoofing before anything else sees the packet (raw PREROUTING).
    owned[("raw", c("spoof"))] = [
        ("!", "-s", guest + "/32") + drops.drop("spoofed"),
        ("-m", "mac", "!", "--mac-source", mac.upper()) + drops.drop("spoofed"),
    ]
    # DNS: in allow-all only queries to the gateway go to the resolver; in
    # custom and deny-all every port-53 packet does, whatever its address.
    if policy.mode == "allow-all":
        owned[("nat", c("dns"))] = [_dns_to_resolver("udp", gateway + "/32"), _dns_to_resolver("tcp", gateway + "/32")]
    else:
        owned[("nat", c("dns"))] = [_dns_to_resolver("udp"), _dns_to_resolver("tcp")]
    # To the namespace's own addresses (gateway, transit): only redirected DNS
    # when the resolver is local (--no-netns); nothing else.
    inbound = [_accept_resolver("udp"), _accept_resolver("tcp")]
    if in_host_namespace:
        # --no-netns: the host's own clients of a published port (and of the
        # guest directly) get their replies here; the guest opens nothing.
        inbound.append(("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "--ctdir", "REPLY", "-j", "ACCEPT"))
    # the connection budget first (plan/budgets.py): DNS counts too
    over_budget, owned[("filter", c("cap"))] = budgets.vm_rules(vm, c("cap"))
    if in_host_namespace:
        inbound.insert(0, over_budget)
    owned[("filter", c("in"))] = inbound + [drops.drop("isolation")]
    out = [
        over_budget,
        _accept_resolver("udp"), _accept_resolver("tcp"),
        # replies on connections the outside opened (published ports)
        ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "--ctdir", "REPLY", "-j", "ACCEPT"),
        ("-d", VM_NET) + drops.drop("isolation"),
        ("-d", TRANSIT_NET) + drops.drop("isolation"),
    ]
    owned[("filter", c("out"))] = out + _policy_rules(vm_id, policy)
    to = [("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")]
    for port in published:
        match = ("-p", port.protocol, "-m", port.protocol, "--dport", str(port.guest_port))
        if in_host_namespace:
            # the DNAT happened in this namespace: accept only what it rewrote
            match += ("-m", "conntrack", "--ctstate", "DNAT")
        to.append(match + ("-j", "ACCEPT"))
    to.append(("-j", "DROP"))
    owned[("filter", c("to"))] = to
    absent = set()
    if name_guard.guards(policy):
        owned.update(name_guard.owned_chains(vm_id, policy.allowed_domains, policy.audit))
        # the server's SYN-ACK of a guarded flow, copied to the guard first
        owned[("filter", c("to"))] = [name_guard.syn_ack_rule(vm_id)] + to
    else:
        absent.add(("filter", c("guard")))
        if not in_host_namespace:
            # the namespace's shared guard chain serves no other VM
            absent.add(("filter", name_guard.EMPTY_CHAIN))

    policies = {}
    if not in_host_namespace:
        # The namespace is the VM's alone: fail closed if rules are flushed.
        policies = {("filter", "FORWARD"): "DROP", ("filter", "INPUT"): "DROP"}
    return Plan(_hooks(SHARED_HOOKS), drops.with_chains(owned), members, policies, frozenset(absent))


def published_plan(vm, published):
    """DNAT of published ports, in the host namespace: PREROUTING for traffic
    arriving at the host's addresses from elsewhere, OUTPUT for the host's own
    clients (127.0.0.1 or its own addresses).

    Only packets to a local address are considered (``addrtype LOCAL``), and
    never packets from a guest: guests reach no published port (that would be
    VM-to-VM or guest-to-host traffic), and a guest's DNS, redirected to the
    resolver's local address, must not meet a port published on 0.0.0.0:53.

    Without ports the VM's member lists are given empty, so a run after the
    last port went removes the jumps (the emptied ``pub`` chain itself is
    deleted by ``ports.after_ports_change``)."""
    vm_id, guest = vm.id, A.guest_ip(vm.slot)
    pub = chain_name(vm_id, "pub")
    if not published:
        members = {("nat", "VMSAN-PREROUTING"): [], ("nat", "VMSAN-OUTPUT"): []}
        return Plan(_hooks(SHARED_HOOKS), {}, members, {})
    t = tag(vm_id)
    rules = []
    for port in published:
        dst = () if port.host_ip == "0.0.0.0" else ("-d", port.host_ip + "/32")
        rules.append(dst + ("-p", port.protocol, "-m", port.protocol, "--dport", str(port.host_port),
                            "-j", "DNAT", "--to-destination", "%s:%d" % (guest, port.guest_port)))
    local = ("-m", "addrtype", "--dst-type", "LOCAL")
    members = {
        ("nat", "VMSAN-PREROUTING"): [("!", "-s", VM_NET) + local + t + _jump(pub)],
        ("nat", "VMSAN-OUTPUT"): [local + t + _jump(pub)],
    }
    return Plan(_hooks(SHARED_HOOKS), {("nat", pub): rules}, members, {})


def host_plan(conntrack_limit=None):
    """Host-namespace rules shared by all VMs; with CONNTRACK_LIMIT (the
    host table's nf_conntrack_max) the host-wide caps on VM flows head
    VMSAN-HOST-FWD and VMSAN-HOST-IN (plan/budgets.py)."""
    owned = {
        ("filter", "VMSAN-HOST-IN"): [
            ("-s", VM_NET, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
            ("-s", VM_NET, "-d", A.RESOLVER_IP + "/32", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"),
            ("-s", VM_NET, "-d", A.RESOLVER_IP + "/32", "-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "ACCEPT"),
            ("-s", VM_NET) + drops.drop("isolation"),
        ],
        ("filter", "VMSAN-HOST-FWD"): [
            ("-s", VM_NET, "-d", VM_NET) + drops.drop("isolation"),
            ("-s", VM_NET, "-j", "ACCEPT"),
            ("-d", VM_NET, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "ACCEPT"),
            ("-d", VM_NET, "-j", "DROP"),
        ],
        ("nat", "VMSAN-HOST-NAT"): [
            ("-s", VM_NET, "!", "-d", VM_NET, "-j", "MASQUERADE"),
            # the host's own clients of a published port (curl 127.0.0.1:PORT)
            ("-s", "127.0.0.0/8", "-d", VM_NET, "-j", "MASQUERADE"),
        ],
    }
    heads, cap_rules = budgets.host_rules(conntrack_limit, VM_NET)
    for chain, rule in heads.items():
        owned[("filter", chain)].insert(0, rule)
    if cap_rules:
        owned[("filter", budgets.HOST_CAP_CHAIN)] = cap_rules
    hooks = _hooks(SHARED_HOOKS)
    hooks.update(_hooks(HOST_HOOKS))
    return Plan(hooks, drops.with_chains(owned), {}, {})


def merge(*plans):
    hooks, owned, members, policies, absent = {}, {}, {}, {}, set()
    for plan in plans:
        for key, rules in plan.hooks.items():
            if len(rules) > len(hooks.get(key, [])):
                hooks[key] = rules
        owned.update(plan.owned)
        for key, rules in plan.members.items():
            members.setdefault(key, []).extend(rules)
        policies.update(plan.policies)
        absent |= plan.absent
    return Plan(hooks, owned, members, policies, frozenset(absent - set(owned)))


def plans_for(record, conntrack_limit=None):
    """(plan for the VM's namespace, plan for the host namespace) of RECORD
    (a VmRecord); with --no-netns everything is in the host's: (None, plan).
    CONNTRACK_LIMIT: the host table's limit, for the host-wide caps."""
    in_host = record.netns is None
    vm = vm_plan(record, record.policy, record.ports, in_host_namespace=in_host)
    host = merge(host_plan(conntrack_limit), published_plan(record, record.ports))
    if in_host:
        return None, merge(host, vm)
    return vm, host


def render(plan):
    """iptables-save-like text of a plan, for show, check mode and diffs."""
    lines = []
    for table in TABLES:
        block = []
        for (tbl, chain), rules in sorted(plan.hooks.items()):
            if tbl == table:
                block += ["-I %s %s" % (chain, " ".join(r)) for r in rules]
        for (tbl, chain), rules in sorted(plan.members.items()):
            if tbl == table:
                block += ["-A %s %s" % (chain, " ".join(r)) for r in rules]
        for (tbl, chain), rules in sorted(plan.owned.items()):
            if tbl == table:
                block.append(":%s" % chain)
                block += ["-A %s %s" % (chain, " ".join(r)) for r in rules]
        for (tbl, chain), pol in sorted(plan.policies.items()):
            if tbl == table:
                block.append("-P %s %s" % (chain, pol))
        if block:
            lines.append("*" + table)
            lines += block
    return "\n".join(lines) + ("\n" if lines else "")


def outbound_allowed(policy, dst_ip, protocol=None, dport=None, learned=()):
    """Whether the ``out`` chain would let a new packet from the guest to
    DST_IP through (used to decide which tracked connections a policy change
    cuts). Mirrors ``vm_plan`` and ``_policy_rules`` rule by rule."""
    addr = ipaddress.IPv4Address(dst_ip)
    if addr in A.VM_RANGE or addr in A.TRANSIT_RANGE:
        return False
    mode = policy.mode
    if mode == "deny-all":
        return False
    if mode == "allow-all":
        return addr not in A.LINK_LOCAL
    if protocol in ("tcp", "udp") and dport == 853:
        return False
    if policy.audit:
        # what the lists would drop passes; link-local stays closed unless named
        return addr not in A.LINK_LOCAL or any(addr in ipaddress.IPv4Network(n) for n in explicit_link_local(policy))
    if any(addr in ipaddress.IPv4Network(n) for n in policy.denied_cidrs):
        return False
    if any(addr in ipaddress.IPv4Network(n) for n in explicit_link_local(policy)):
        return True
    if addr in A.LINK_LOCAL:
        return False
    if any(addr in ipaddress.IPv4Network(n) for n in policy.allowed_cidrs):
        return True
    if policy.allowed_domains and str(addr) in set(learned):
        return True
    return bool(policy.denied_cidrs and not (policy.allowed_cidrs or policy.allowed_domains))


def _network_key(cidr):
    """Canonical CIDR text -> (network address as int, prefix length)."""
    address, _slash, prefix = cidr.partition("/")
    return int.from_bytes(socket.inet_aton(address), "big"), int(prefix or 32)


def _covered(cidrs, by):
    """Whether every network of CIDRS (canonical text) lies inside some
    network of BY."""
    exact = set(by)
    rest = [c for c in cidrs if c not in exact]
    if not rest:
        return True
    # a network is covered when one of its supernets (or itself) is in BY:
    # at most 33 set lookups each
    wanted = {_network_key(n) for n in by}
    for cidr in rest:
        address, prefix = _network_key(cidr)
        if not any((address & ((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF), p) in wanted for p in range(prefix + 1)):
            return False
    return True


def allows_all_that(old, new):
    """Whether policy NEW lets out every new packet that policy OLD let out
    (by the rules of ``outbound_allowed``). Then a change from OLD to NEW
    forbids no tracked connection, and the conntrack table need not be read:
    reading it walks every bucket of the kernel's hash, which all namespaces
    share (~10 ms with 262144 buckets), however few entries the VM has.
    Conservative: False whenever it is not plain that NEW is the wider."""
    if old == new or old.mode == "deny-all":
        return True
    if new.mode == "deny-all":
        return False
    if new.mode == "allow-all":
        # allow-all lets out all but link-local, which only a custom list opens
        return not explicit_link_local(old)
    if old.mode == "allow-all":
        return False        # custom always drops DNS over TLS, allow-all does not
    # both custom. Audit lets out all but DNS over TLS and link-local
    if new.audit:
        return _covered(explicit_link_local(old), explicit_link_local(new))
    if old.audit:
        return False
    # NEW may deny no more, and must open at least what OLD opened
    if not _covered(new.denied_cidrs, old.denied_cidrs):
        return False
    if not _covered(explicit_link_local(old), explicit_link_local(new)):
        return False
    new_open = bool(new.denied_cidrs and not (new.allowed_cidrs or new.allowed_domains))
    old_open = bool(old.denied_cidrs and not (old.allowed_cidrs or old.allowed_domains))
    if new_open:
        return True
    if old_open:
        return False
    return (_covered(old.allowed_cidrs, new.allowed_cidrs)
            and set(old.allowed_domains) <= set(new.allowed_domains))
