"""The data model: what a VM is, as frozen values every layer passes around.

* ``Policy``    the outbound policy (mode and its three lists, normalised);
* ``PortSpec``  one published port;
* ``Bandwidth`` the two caps, in bit/s (None: no cap);
* ``Limits``    the VM's budgets: tracked connections and its DNS budgets
  (``DnsLimits``); None where the default applies;
* ``VmRecord``  one VM: its id, slot, namespace and settings;
* ``BrokenRecord`` a VM whose state file cannot be read (listed, never converged).

Values are built by ``model.inputs`` (from what a user typed) or by the state
file's codec (``lifecycle.state``, the only code that knows the file's
schema); the facts the faces print are rendered from a record by
``faces.facts``. Nothing here validates: a value that reaches a constructor
was checked where it came in.
"""

from dataclasses import dataclass, replace
from typing import Optional, Tuple

ANY_ADDRESS = "0.0.0.0"


class _Keep(object):
    """A setting the caller did not give: the VM keeps its current value (a
    new VM gets the default). The lifecycle resolves it under the state lock."""

    def __repr__(self):
        return "KEEP"


KEEP = _Keep()


@dataclass(frozen=True)
class Policy:
    mode: str = "allow-all"
    allowed_domains: Tuple[str, ...] = ()
    allowed_cidrs: Tuple[str, ...] = ()
    denied_cidrs: Tuple[str, ...] = ()
    # custom only: what the lists would refuse passes and is logged as
    # "would refuse" (docs/operator.md, "Audit mode")
    audit: bool = False

    @property
    def has_lists(self):
        return bool(self.allowed_domains or self.allowed_cidrs or self.denied_cidrs)

    @property
    def learns_names(self):
        """Whether the resolver learns answers into the VM's ``dns`` set:
        custom with allowed domains, or any custom policy in audit mode
        (it learns the names off the list too)."""
        return self.mode == "custom" and bool(self.allowed_domains or self.audit)


ALLOW_ALL = Policy()


@dataclass(frozen=True)
class PortSpec:
    host_ip: str
    host_port: int
    guest_port: int
    protocol: str = "tcp"

    @property
    def text(self):
        """The normal form ``[host_ip:]host_port:guest_port/protocol``."""
        prefix = "" if self.host_ip == ANY_ADDRESS else self.host_ip + ":"
        return "%s%d:%d/%s" % (prefix, self.host_port, self.guest_port, self.protocol)

    @property
    def host_side(self):
        """What names a published port on the host: address, port, protocol."""
        return (self.host_ip, self.host_port, self.protocol)

    def collides(self, other):
        """Same protocol and host port, overlapping host addresses (0.0.0.0
        overlaps every address)."""
        return (self.protocol == other.protocol and self.host_port == other.host_port
                and (self.host_ip == other.host_ip or ANY_ADDRESS in (self.host_ip, other.host_ip)))


@dataclass(frozen=True)
class Bandwidth:
    send: Optional[int] = None        # bit/s the guest may send (--bandwidth)
    receive: Optional[int] = None     # bit/s the guest may receive (--bandwidth-in)


NO_CAPS = Bandwidth()


@dataclass(frozen=True)
class DnsLimits:
    """What the VM may take of the shared resolver; None: the resolver's
    daemon-wide default (``vmsan resolver --vm-*``). The field names are the
    ones resolver.limits reads from a record's ``dns_limits``."""
    queries_per_second: Optional[int] = None
    upstream_queries: Optional[int] = None
    tcp_connections: Optional[int] = None

    @property
    def given(self):
        return any(v is not None for v in (self.queries_per_second, self.upstream_queries, self.tcp_connections))


NO_DNS_LIMITS = DnsLimits()


@dataclass(frozen=True)
class Limits:
    """A VM's budgets (docs/contract.md, "Budgets"). ``connections``: the
    guest's tracked connections at once (None: the default,
    ``DEFAULT_CONNECTIONS``); beyond it new TCP is reset, new UDP dropped."""
    connections: Optional[int] = None
    dns: DnsLimits = NO_DNS_LIMITS

    def over(self, current):
        """These limits with every KEEP field taken from CURRENT (a Limits)."""
        def pick(mine, theirs):
            return theirs if mine is KEEP else mine
        dns = DnsLimits(*(pick(getattr(self.dns, f), getattr(current.dns, f))
                          for f in ("queries_per_second", "upstream_queries", "tcp_connections")))
        return Limits(pick(self.connections, current.connections), dns)


DEFAULT_LIMITS = Limits()
# The default budget of tracked connections: far above a normal guest (a busy
# build VM holds a few hundred, a crawler a few thousand), far below the host's
# table (nf_conntrack_max, 262144 on a default kernel; plan.firewall keeps a reserve).
DEFAULT_CONNECTIONS = 16384


@dataclass(frozen=True)
class VmRecord:
    id: str
    slot: int
    netns: Optional[str]              # None: the TAP lives in the host namespace (--no-netns)
    policy: Policy = ALLOW_ALL
    ports: Tuple[PortSpec, ...] = ()
    bandwidth: Bandwidth = NO_CAPS
    tap_owner: Optional[int] = None
    status: str = "ready"             # "creating" until the first converge finished
    created: Optional[str] = None
    limits: Limits = DEFAULT_LIMITS

    @property
    def settings(self):
        """What a user chooses for a VM (its id, slot and namespace aside)."""
        return (self.policy, self.ports, self.bandwidth, self.tap_owner, self.limits)

    @property
    def connection_budget(self):
        """The guest's tracked connections at once, its own or the default."""
        return self.limits.connections or DEFAULT_CONNECTIONS

    @property
    def dns_limits(self):
        """The VM's own DNS budgets, or None (what resolver.limits reads)."""
        return self.limits.dns if self.limits.dns.given else None

    def but(self, **changes):
        """A copy with CHANGES (field=value)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class BrokenRecord:
    """A VM whose state file exists but cannot be read: reported, skipped."""
    id: str
    error: str
