"""Parsing and validation of user input: the one place both faces use.

Every function takes what a user typed (a CLI string, comma-separated, or an
Ansible list or number) and returns normalised, immutable values of the data
model (``model.records``), or raises InputError naming the neutral parameter
and the accepted form. The CLI and the modules map the neutral names to their
own spelling (see PARAM_LABELS), so both give the same message. The resolver's
flags are read here too.
"""

import grp
import ipaddress
import pwd
import re

from .addressing import MAX_SLOT, RESOLVER_PORT
from .errors import InputError
from .records import ANY_ADDRESS, KEEP, Bandwidth, DnsLimits, Limits, PortSpec, Policy

POLICIES = ("allow-all", "deny-all", "custom")

# neutral name -> (CLI flag, Ansible parameter)
PARAM_LABELS = {
    "id": ("--id", "name"),
    "vm": ("VM", "vm"),
    "slot": ("--slot", "slot"),
    "network_policy": ("--network-policy", "network_policy"),
    "allowed_domains": ("--allowed-domain", "allowed_domains"),
    "allowed_cidrs": ("--allowed-cidr", "allowed_cidrs"),
    "denied_cidrs": ("--denied-cidr", "denied_cidrs"),
    "published_ports": ("--publish-port", "published_ports"),
    "bandwidth": ("--bandwidth", "bandwidth"),
    "bandwidth_in": ("--bandwidth-in", "bandwidth_in"),
    "tap_owner": ("--tap-owner", "tap_owner"),
    "upstream": ("--upstream", "upstream"),
    "listen": ("--listen", "listen"),
    "metrics_listen": ("--metrics-listen", "metrics_listen"),
    "socket_group": ("--socket-group", "socket_group"),
    "ttl_floor": ("--ttl-floor", "ttl_floor"),
    "grace": ("--grace", "grace"),
    "audit": ("--audit", "audit"),
    "since": ("--since", "since"),
    "host_port": ("host port", "host_port"),
    "guest_port": ("guest port", "guest_port"),
    "protocol": ("protocol", "protocol"),
    "host_ip": ("host ip", "host_ip"),
}

VM_ID_MAX = 16
_VM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
_RATE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(kbit|mbit|gbit)$")
_RATE_UNITS = {"kbit": 1000, "mbit": 1000 ** 2, "gbit": 1000 ** 3}
RATE_MIN = 8 * 1000             # 8 kbit: below that tc cannot shape sensibly
RATE_MAX = 100 * 1000 ** 3      # 100 gbit


def label(param, face):
    """The parameter's name as the given face ('cli' or 'ansible') spells it."""
    cli, ansible = PARAM_LABELS.get(param, (param, param))
    return cli if face == "cli" else ansible


def as_list(param, value):
    """A comma-separated string or a list of strings -> list of non-empty items."""
    if value is None:
        return []
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                raise InputError(param, "list items must be strings, got %r" % (item,))
            items.extend(str(item).split(","))
    else:
        raise InputError(param, "expected a comma-separated string or a list, got %r" % (value,))
    items = [i.strip() for i in items]
    spaced = next((i for i in items if len(i.split()) > 1), None)
    if spaced is not None:
        raise InputError(param, "%r holds more than one value: use commas between values, not spaces" % spaced,
                         "comma-separated values, e.g. a,b")
    if any(i == "" for i in items) and any(i != "" for i in items):
        raise InputError(param, "empty item in list %r" % (value,), "comma-separated values without empty items")
    return [i for i in items if i]


def vm_id(value, param="id"):
    if not isinstance(value, str) or not value:
        raise InputError(param, "a VM id is required", "1-%d characters of A-Z a-z 0-9 _ -, starting with a letter or digit" % VM_ID_MAX)
    if len(value) > VM_ID_MAX or not _VM_ID_RE.match(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InputError(param, "invalid VM id %r (%d characters)" % (shown, len(value)),
                         "1-%d characters of A-Z a-z 0-9 _ -, starting with a letter or digit" % VM_ID_MAX)
    return value


def whole_number(param, value, low, high, what="a whole number", noun=""):
    """VALUE (an int, or its digits as text) as an int from LOW to HIGH."""
    try:
        number = int(str(value).strip())
        if isinstance(value, bool) or str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(param, "%r is not %s" % (value, what), "%d-%d" % (low, high))
    if not low <= number <= high:
        raise InputError(param, "%s%d is out of range" % (noun, number), "%d-%d" % (low, high))
    return number


def slot(value):
    if value is None:
        return None
    return whole_number("slot", value, 0, MAX_SLOT)


def seconds(param, value, default):
    """A whole number of seconds (0 to a day); None means DEFAULT."""
    if value is None:
        return default
    return whole_number(param, value, 0, 86400, "a whole number of seconds")


def cidr(param, text):
    """One IPv4 network; a bare address means /32. Host bits must be clear."""
    accepted = "IPv4 CIDRs such as 10.0.0.0/8 or 203.0.113.7"
    if ":" in text:
        try:
            ipaddress.IPv6Network(text, strict=False)
        except ValueError:
            pass
        else:
            raise InputError(param, "%r is an IPv6 network: IPv6 is not supported (guests have no IPv6)" % text,
                             accepted)
    if "/" in text:
        addr, _unused, prefix = text.partition("/")
        if not prefix.isdigit() or int(prefix) > 32:
            raise InputError(param, "invalid prefix length in %r: must be 0-32" % text, accepted)
    else:
        addr, prefix = text, "32"
    try:
        ipaddress.IPv4Address(addr)
    except ValueError:
        raise InputError(param, "invalid IPv4 address in %r (four octets 0-255)" % text, accepted)
    try:
        return str(ipaddress.IPv4Network("%s/%s" % (addr, prefix)))
    except ValueError:
        network = ipaddress.IPv4Network("%s/%s" % (addr, prefix), strict=False)
        raise InputError(param, "%r has host bits set; did you mean %s?" % (text, network), accepted)


def cidr_list(param, value):
    """Normalised networks, first occurrence kept, duplicates dropped."""
    return tuple(dict.fromkeys(cidr(param, item) for item in as_list(param, value)))


def domain(param, text):
    """An exact name or a ``*.`` wildcard; lower-cased, trailing dot dropped."""
    accepted = "host names such as api.example.com, or *.example.com for any subdomain"
    name = text.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    wildcard = name.startswith("*.")
    body = name[2:] if wildcard else name
    if "*" in body:
        raise InputError(param, "%r: a wildcard is only allowed as one leading '*.'" % text, accepted)
    if not body or len(body) > 253:
        raise InputError(param, "%r is not a valid domain name (1-253 characters)" % text, accepted)
    labels = body.split(".")
    for part in labels:
        if not 1 <= len(part) <= 63 or not _LABEL_RE.match(part):
            raise InputError(param, "%r has an invalid label %r (1-63 of a-z 0-9 - _, no leading or trailing -)" % (text, part), accepted)
    if wildcard and len(labels) < 2:
        raise InputError(param, "%r: a wildcard must cover a domain with at least two labels" % text, accepted)
    return ("*." if wildcard else "") + body


DOMAIN_ENTRY_FORM = ("host names such as api.example.com, or *.example.com for any subdomain; "
                     "name:port lets any TCP protocol reach that name on that port, name:port/udp the same for UDP")


def domain_entry(param, text):
    """One allowlist entry: a pattern (``domain``), optionally ``:port`` and
    ``/udp`` or ``/tcp`` (the default, dropped when normalising): ``git.example.com:22``,
    ``*.example.com:8443``, ``ntp.example.com:123/udp``. docs/domain-policies.md
    says what the port form opens."""
    body, slash, proto = text.strip().partition("/")
    name, colon, port = body.partition(":")
    if not colon:
        if slash:
            raise InputError(param, "%r: a protocol needs a port (name:port/udp)" % text, DOMAIN_ENTRY_FORM)
        return domain(param, text)
    proto = proto.lower()
    if slash and proto not in ("tcp", "udp"):
        raise InputError(param, "%r: unknown protocol %r" % (text, proto), DOMAIN_ENTRY_FORM)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(param, "%r: port must be 1-65535" % text, DOMAIN_ENTRY_FORM)
    pattern = domain(param, name)
    return "%s:%d%s" % (pattern, int(port), "/udp" if proto == "udp" else "")


def domain_list(param, value):
    return tuple(dict.fromkeys(domain_entry(param, item) for item in as_list(param, value)))


EMPTY_LIST_FORM = ("at least one item; or name the policy too: custom with empty lists allows nothing, "
                   "allow-all and deny-all need no list")


def _refuse_empty_lists(mode, lists):
    """The empty-list rule (docs/policies.md, "Empty lists"): a list that is
    given but holds nothing (``--allowed-domain ""``, ``","``,
    ``allowed_domains: []``) never widens a policy. Without an explicit
    policy such a list would decide it, and an empty one would leave the VM
    ``allow-all`` (or turn a custom VM into one): refused. With an explicit
    policy the list adds nothing and the policy says what the VM gets
    (``custom`` with no list allows nothing)."""
    if mode is not None:
        return
    for param, value in lists:
        if value is not None and not as_list(param, value):
            raise InputError(param, "the list %r is empty: it allows nothing, and without a policy it would "
                                    "leave the VM allow-all" % (value,), EMPTY_LIST_FORM)


def policy(mode=None, allowed_domains=None, allowed_cidrs=None, denied_cidrs=None, audit=False):
    """Normalise a policy. Lists given with the default policy promote it to
    ``custom``; ``deny-all`` with any list is an error; an empty list without
    a policy is refused (``_refuse_empty_lists``). AUDIT (a custom policy
    only): what the lists would refuse passes and is logged."""
    _refuse_empty_lists(mode, (("allowed_domains", allowed_domains), ("allowed_cidrs", allowed_cidrs),
                               ("denied_cidrs", denied_cidrs)))
    domains = domain_list("allowed_domains", allowed_domains)
    allowed = cidr_list("allowed_cidrs", allowed_cidrs)
    denied = cidr_list("denied_cidrs", denied_cidrs)
    if mode is not None and mode not in POLICIES:
        raise InputError("network_policy", "unknown policy %r" % (mode,), ", ".join(POLICIES))
    has_lists = bool(domains or allowed or denied)
    if mode == "deny-all" and has_lists:
        raise InputError("network_policy", "deny-all cannot be combined with allowed domains or CIDR lists",
                         "deny-all alone, or custom with lists")
    if mode in (None, "allow-all"):
        mode = "custom" if has_lists else "allow-all"
    if not isinstance(audit, bool):
        raise InputError("audit", "expected true or false, got %r" % (audit,), "true or false")
    if audit and mode != "custom":
        raise InputError("audit", "audit mode needs a custom policy, not %s" % mode,
                         "a custom policy: --network-policy custom or a list flag, with --audit")
    return Policy(mode, domains, allowed, denied, audit)


PORT_FORM = "[host_ip:]host_port[:guest_port][/tcp|udp], e.g. 8080 or 127.0.0.1:8080:80/tcp"
PROTOCOLS = ("tcp", "udp")


def port_number(param, value):
    return whole_number(param, value, 1, 65535, "a port number", "port ")


def host_address(param, value, accepted):
    """An IPv4 address, as text."""
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise InputError(param, "invalid host address %r" % (value,), accepted)


def port(host_port, guest_port=None, protocol="tcp", host_ip=ANY_ADDRESS):
    """One published port from its parts (vmsan_port's options), each
    checked under its own name; GUEST_PORT defaults to HOST_PORT."""
    host = port_number("host_port", host_port)
    guest = host if guest_port is None else port_number("guest_port", guest_port)
    if protocol not in PROTOCOLS:
        raise InputError("protocol", "unknown protocol %r" % (protocol,), " or ".join(PROTOCOLS))
    address = host_address("host_ip", host_ip, "an IPv4 address of the host, or 0.0.0.0 for all")
    return PortSpec(address, host, guest, protocol)


def port_spec(param, text):
    """One ``[host_ip:]host_port[:guest_port][/tcp|udp]``."""
    body, _unused, proto = text.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in PROTOCOLS:
        raise InputError(param, "%r: unknown protocol %r" % (text, proto), PORT_FORM)
    parts = body.split(":")
    host_ip = ANY_ADDRESS
    if len(parts) >= 2 and "." in parts[0]:
        host_ip = parts.pop(0)
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise InputError(param, "%r: invalid host address %r" % (text, host_ip), PORT_FORM)
    if not 1 <= len(parts) <= 2 or any(p == "" for p in parts):
        raise InputError(param, "%r is not a valid port mapping" % text, PORT_FORM)
    try:
        host_port = port_number(param, parts[0])
        guest_port = port_number(param, parts[1]) if len(parts) == 2 else host_port
    except InputError as err:
        raise InputError(param, "%r: %s" % (text, err.detail), PORT_FORM)
    return PortSpec(host_ip, host_port, guest_port, proto)


def _names_guest_port(text):
    """Whether TEXT (one port mapping) says its guest port explicitly."""
    parts = text.partition("/")[0].split(":")
    if len(parts) >= 2 and "." in parts[0]:
        parts = parts[1:]
    return len(parts) == 2


def port_selectors(param, value):
    """Ports to unpublish (``vmsan port remove``): (PortSpec, whether the
    guest port was given, the text) for each mapping of VALUE."""
    port_list(param, value)         # syntax and duplicates, before anything
    return tuple((port_spec(param, text), _names_guest_port(text), text) for text in as_list(param, value))


def port_list(param, value):
    specs = []
    for item in as_list(param, value):
        spec = port_spec(param, item)
        for other in specs:
            if spec.collides(other):
                raise InputError(param, "host port %d/%s is given twice" % (spec.host_port, spec.protocol), PORT_FORM)
        specs.append(spec)
    return tuple(specs)


def rate(param, value):
    """A tc rate like 50mbit -> bits per second; None or 'none' -> no cap."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "none", "0"):
        return None
    match = _RATE_RE.match(text)
    accepted = "a number with kbit, mbit or gbit, e.g. 50mbit; or none"
    if not match:
        raise InputError(param, "invalid rate %r" % (value,), accepted)
    bits = int(float(match.group(1)) * _RATE_UNITS[match.group(2)])
    if not RATE_MIN <= bits <= RATE_MAX:
        raise InputError(param, "rate %r is out of range" % (value,), "8kbit to 100gbit")
    return bits


def bandwidth(send=None, receive=None):
    """Both caps (``--bandwidth``, ``--bandwidth-in``) as a Bandwidth."""
    return Bandwidth(rate("bandwidth", send), rate("bandwidth_in", receive))


def tap_owner(value):
    if value is None or value == "":
        return None
    text = str(value)
    if text.isdigit() and int(text) < 2 ** 32 - 1:
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise InputError("tap_owner", "no such user %r" % text, "a numeric uid or an existing user name")


# -- a VM's budgets (docs/contract.md, "Budgets") ---------------------------------
# One set of names in both faces: the flag --limit-X is the option limit_X.
# The DNS ranges are the resolver's (RESOLVER_BUDGETS, below), which reads a
# VM's own numbers from its record and uses its --vm-* defaults otherwise.
CONNECTIONS_RANGE = (64, 1048576)
VM_LIMITS = ("limit_connections", "limit_dns_queries_per_second", "limit_dns_upstream_queries",
             "limit_dns_tcp_connections")
PARAM_LABELS.update({name: ("--" + name.replace("_", "-"), name) for name in VM_LIMITS})
LIMIT_DEFAULT_WORD = "default"


def _limit(param, value, low, high):
    """One budget: KEEP when not given, None for ``default`` (the default
    applies again), else a whole number from LOW to HIGH."""
    if value is None:
        return KEEP
    if str(value).strip().lower() == LIMIT_DEFAULT_WORD:
        return None
    try:
        return whole_number(param, value, low, high)
    except InputError as err:
        raise InputError(param, err.detail, "%s, or %s" % (err.accepted, LIMIT_DEFAULT_WORD))


def limits(limit_connections=None, limit_dns_queries_per_second=None, limit_dns_upstream_queries=None,
           limit_dns_tcp_connections=None):
    """The budgets a user gave, as a Limits whose fields left out are KEEP
    (``Limits.over`` resolves them against the VM's current ones, under the
    state lock), or KEEP when none is given."""
    if all(v is None for v in (limit_connections, limit_dns_queries_per_second, limit_dns_upstream_queries,
                               limit_dns_tcp_connections)):
        return KEEP
    dns = {}
    for param, value, field in (
            ("limit_dns_queries_per_second", limit_dns_queries_per_second, "queries_per_second"),
            ("limit_dns_upstream_queries", limit_dns_upstream_queries, "upstream_queries"),
            ("limit_dns_tcp_connections", limit_dns_tcp_connections, "tcp_connections")):
        low, high = RESOLVER_BUDGETS["vm_" + field][1:3]
        dns[field] = _limit(param, value, low, high)
    return Limits(_limit("limit_connections", limit_connections, *CONNECTIONS_RANGE), DnsLimits(**dns))


def address_port(param, value, default_port, what, accepted):
    """``IP`` or ``IP:PORT`` -> (ip, port); the one grammar of the resolver's
    addresses. WHAT names the value in the message (``upstream``)."""
    text = str(value).strip()
    host, sep, port_text = text.partition(":") if text.count(":") == 1 else (text, "", "")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise InputError(param, "invalid %s %r" % (what, text), accepted)
    if not sep:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InputError(param, "invalid port in %r" % text, accepted)
    return host, int(port_text)


def upstream(value):
    """``--upstream``: the DNS server the resolver asks (port 53 by default)."""
    return address_port("upstream", value, 53, "upstream", "an IPv4 address, optionally with :port")


def listen(value):
    """``--listen``: where the resolver answers (port 53 by default)."""
    return address_port("listen", value, RESOLVER_PORT, "listen address",
                        "an IPv4 address, optionally with :port, e.g. 169.254.64.1 or 127.0.0.1:5353")


def metrics_listen(value):
    """``--metrics-listen``: where the daemon serves its metrics, IP:PORT
    (the port has no default)."""
    accepted = "an IPv4 address and a port, e.g. 127.0.0.1:9464"
    if ":" not in str(value):
        raise InputError("metrics_listen", "no port in %r" % str(value), accepted)
    return address_port("metrics_listen", value, None, "metrics address", accepted)


def socket_group(value):
    """``--socket-group``: a group whose members the daemon's command server
    also serves: an existing group name or a numeric gid -> the gid."""
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise InputError("socket_group", "no such group %r" % text, "a numeric gid or an existing group name")


_AGO_RE = re.compile(r"^([0-9]+)([smhd])$")
_AGO_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SINCE_FORM = "a time ago such as 30s, 10m, 2h or 1d, or a UTC time such as 2026-12-02T10:00:00Z"


def since(value, now):
    """``--since``: the time (seconds since the epoch) from which events are
    shown; NOW is the current time."""
    from .events import parse_time
    text = str(value).strip()
    match = _AGO_RE.match(text)
    if match:
        return now - int(match.group(1)) * _AGO_UNITS[match.group(2)]
    try:
        return parse_time(text)
    except ValueError:
        raise InputError("since", "%r is neither a time ago nor a UTC time" % (value,), SINCE_FORM)


# -- the resolver's budgets per VM -------------------------------------------------
# `vmsan resolver --vm-...` sets the defaults for every VM; a VM's own numbers,
# when its state record has them, are read by resolver.limits.budget_from_record
# (record field "dns_limits", the same names without the "vm_" prefix).
RESOLVER_BUDGETS = {
    # neutral name: (CLI flag, lowest, highest, default)
    "vm_queries_per_second": ("--vm-queries-per-second", 1, 1000000, 1000),
    "vm_upstream_queries": ("--vm-upstream-queries", 1, 4096, 128),
    "vm_tcp_connections": ("--vm-tcp-connections", 1, 1024, 16),
}
PARAM_LABELS.update({name: (flag, name) for name, (flag, _low, _high, _default) in RESOLVER_BUDGETS.items()})


def resolver_budget(vm_queries_per_second=None, vm_upstream_queries=None, vm_tcp_connections=None):
    """The resolver's per-VM budget: {neutral name: int}, defaults for what
    is None."""
    given = {"vm_queries_per_second": vm_queries_per_second, "vm_upstream_queries": vm_upstream_queries,
             "vm_tcp_connections": vm_tcp_connections}
    out = {}
    for name, (_flag, low, high, default) in RESOLVER_BUDGETS.items():
        value = given[name]
        out[name] = default if value is None else whole_number(name, value, low, high)
    return out
