"""Changes as values: what a run changed (or, in check mode, would change).

A ``Change`` has a kind (one of the constants below), a subject (the object
changed: a device, chain, set, VM, address) and a detail (the other values its
text names, a tuple), and the namespace it was made in when that is not the
host's. ``str(change)`` is the line users and the docs read
(``vmsan-web: filter: set chain vmsan-web-out (9 rules)``); code and tests
look at ``kind`` and ``subject``, never at the text.
"""

from dataclasses import dataclass, replace
from typing import Optional, Tuple

# kind -> the text, formatted with the detail (positional) and the subject (s)
TEXTS = {}


def _kind(name, text):
    TEXTS[name] = text
    return name


# VMs (lifecycle)
CREATE_VM = _kind("create_vm", "create VM {s} in slot {0}")
UPDATE_SETTINGS = _kind("update_settings", "update settings of VM {s}")
FORGET_VM = _kind("forget_vm", "forget VM {s}")
# namespaces and links
CREATE_NETNS = _kind("create_netns", "create network namespace {s}")
DELETE_NETNS = _kind("delete_netns", "delete network namespace {s}")
BUILD_NETNS = _kind("build_netns", "create veth {s}/{0}, TAP {1} and the VM's rules inside {2}")
CREATE_VETH = _kind("create_veth", "create veth {s}/{0}")
CREATE_VETH_PAIR = _kind("create_veth_pair", "create veth pair {s} (host) / {0} ({1})")
DELETE_VETH = _kind("delete_veth", "delete veth {s}")
CREATE_TAP = _kind("create_tap", "create TAP {s}")
CREATE_OWNED_TAP = _kind("create_owned_tap", "create TAP {s} owned by uid {0}")
RECREATE_TAP = _kind("recreate_tap", "recreate TAP {s} (kind, queues or owner differ)")
DELETE_TAP = _kind("delete_tap", "delete TAP {s}")
LINK_UP = _kind("link_up", "link {s} up")
ADDRESS = _kind("address", "address {0} on {s}")
REMOVE_ADDRESS = _kind("remove_address", "remove address {0} from {s}")
REMOVE_RESOLVER_ADDRESS = _kind("remove_resolver_address", "remove resolver address {s} from {0}")
ROUTE = _kind("route", "route {s} via {0}")
ROUTE_DEV = _kind("route_dev", "route {s} via {0} dev {1}")
FORWARDING = _kind("forwarding", "IPv4 forwarding on {s}")
STRICT_SOURCE = _kind("strict_source", "strict reverse-path filter on {s}")
MARK_OWNER = _kind("mark_owner", "mark {s} as {0}")
UNREACHABLE = _kind("unreachable", "route {s} unreachable (the TAP's network address)")
REMOVE_UNREACHABLE = _kind("remove_unreachable", "remove route {s} unreachable")
SYSCTL = _kind("sysctl", "sysctl {s}={0} (was {1})")
SYSCTL_NEW = _kind("sysctl_new", "sysctl {s}={0}")
# iptables (the detail starts with the table)
CREATE_CHAIN = _kind("create_chain", "{0}: create chain {s}")
SET_CHAIN = _kind("set_chain", "{0}: set chain {s} ({1} rules)")
SET_MEMBERS = _kind("set_members", "{0}: set {1}'s rules in {s}")
HOOK = _kind("hook", "{0}: hook {1} into {s}")
CHAIN_POLICY = _kind("chain_policy", "{0}: policy {s} {1}")
DELETE_MEMBER = _kind("delete_member", "{0}: delete {1}'s rule in {s}")
DELETE_CHAIN = _kind("delete_chain", "{0}: delete chain {s}")
DELETE_EMPTY_CHAIN = _kind("delete_empty_chain", "{0}: delete chain {s} (no port published)")
UNHOOK = _kind("unhook", "{0}: unhook {1} from {s}")
# ip sets and what the resolver learned
CREATE_SET = _kind("create_set", "create ipset {s}")
FILL_SET = _kind("fill_set", "set ipset {s} ({0} networks)")
EDIT_SET = _kind("edit_set", "set ipset {s} ({0} networks: {1} added, {2} removed)")
DESTROY_SET = _kind("destroy_set", "destroy ipset {s}")
FORGET_LEARNED = _kind("forget_learned", "forget {s} (learned for {0})")
# tracked connections
CUT_CONNECTION = _kind("cut_connection", "cut connection {0} {s}:{1} -> {2}:{3}")
CUT_PORT_CONNECTIONS = _kind("cut_port_connections", "cut {0} connection(s) through the unpublished port {s}")
DELETE_CONNECTIONS = _kind("delete_connections", "delete {0} tracked connections of {s}")
# bandwidth (subject: the device shaped)
SHAPE_RECEIVE = _kind("shape_receive", "tc: cap what the guest receives at {0} (HTB at the root of {s})")
RESHAPE_RECEIVE = _kind("reshape_receive", "tc: cap what the guest receives at {0} ({1}) on {s}")
UNSHAPE_RECEIVE = _kind("unshape_receive", "tc: remove the cap on what the guest receives (root of {s})")
CREATE_IFB = _kind("create_ifb", "create IFB {s} for what the guest sends through {0}")
SHAPE_SEND = _kind("shape_send", "tc: cap what the guest sends at {0} (HTB at the root of {s})")
RESHAPE_SEND = _kind("reshape_send", "tc: cap what the guest sends at {0} ({1}) on {s}")
REDIRECT = _kind("redirect", "tc: redirect everything arriving on {s} to {0} (ingress, u32, mirred)")
UNREDIRECT = _kind("unredirect", "tc: remove the ingress qdisc of {s} (cap on what the guest sends)")
DELETE_IFB = _kind("delete_ifb", "delete IFB {s}")

KINDS = frozenset(TEXTS)


@dataclass(frozen=True)
class Change:
    kind: str
    subject: str
    detail: Tuple = ()
    netns: Optional[str] = None      # made inside this namespace (None: the host's)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError("unknown change kind %r" % (self.kind,))

    def __str__(self):
        text = TEXTS[self.kind].format(*self.detail, s=self.subject)
        return "%s: %s" % (self.netns, text) if self.netns else text

    def inside(self, netns):
        """This change as made inside namespace NETNS (None: unchanged)."""
        return replace(self, netns=netns) if netns else self

    def as_dict(self):
        return {"kind": self.kind, "subject": self.subject, "detail": list(self.detail), "netns": self.netns}


def inside(netns, changes):
    """CHANGES as made inside namespace NETNS."""
    return [c.inside(netns) for c in changes] if netns else list(changes)


def of_kind(changes, *kinds):
    """The changes of one of KINDS."""
    return [c for c in changes if c.kind in kinds]
