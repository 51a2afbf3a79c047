"""The guard's rule, pure: may this VM's flow to a learned-only address go on?

* A name read from the flow (TLS SNI or HTTP Host) is accepted when it
  matches one of the VM's plain allowlist entries (``api.example.com``,
  ``*.example.com``) **and** the destination address is pinned to that name
  for this VM: the resolver learned the address from an answer to that name,
  or to a name whose CNAME chain holds it (resolver/pins.py).
* An entry with a port (``git.example.com:22``) lets any TCP protocol reach
  the addresses pinned to a name it matches, on that port, without reading
  the flow; ``name:port/udp`` does the same for UDP.
* Everything else is refused: no name, a name off the list, a name the
  address is not pinned to, UDP to a port no ``/udp`` entry names.

``decide_port`` is asked first (it needs no payload); ``decide_name`` when
the flow's first bytes gave a name.
"""

from collections import namedtuple

from ..model import domains
from ..plan.name_guard import udp_ports
from . import reasons

ACCEPT = "accept"
REFUSE = "refuse"

Verdict = namedtuple("Verdict", "action reason name code")
# action: ACCEPT or REFUSE; reason: words for the log; name: the name read
# from the flow (or the pinned name a port entry matched), None if none;
# code: the reason as a label (guard/reasons.py), what decisions are counted by


def accept(reason, name=None, code=reasons.NAME):
    return Verdict(ACCEPT, reason, name, code)


def refuse(reason, name=None, code=reasons.MALFORMED):
    return Verdict(REFUSE, reason, name, code)


class GuardPolicy(object):
    """A VM's allowlist as the guard reads it: one matcher for the plain
    entries, one per (protocol, port) for the port entries."""

    __slots__ = ("names", "ports", "udp_ports", "entries")

    def __init__(self, allowed_domains):
        self.entries = tuple(allowed_domains)
        plain, by_port = [], {}
        for entry in self.entries:
            pattern, port, proto = domains.split_entry(entry)
            if port is None:
                plain.append(pattern)
            else:
                by_port.setdefault((proto, port), []).append(pattern)
        self.names = domains.Matcher(plain)
        self.ports = {key: domains.Matcher(patterns) for key, patterns in by_port.items()}
        self.udp_ports = udp_ports(self.entries)        # the ones the rules queue

    def tcp_ports(self):
        return tuple(sorted(port for proto, port in self.ports if proto == "tcp"))

    def still_allows(self, code, name, proto, port):
        """Whether this policy would accept again a flow accepted with CODE
        (reasons.NAME or PORT) for NAME (the name read, or the pinned name
        the port entry matched), over PROTO ("tcp"/"udp") to PORT, its
        address still pinned to NAME. For a live policy change: the pins of
        names that left the list are dropped, so the address part holds."""
        if name is None:
            return False
        if code == reasons.PORT:
            matcher = self.ports.get((proto, port))
            return matcher is not None and bool(matcher.allowed(name))
        return bool(self.names.allowed(name))


def decide_port(policy, pinned, proto, port):
    """ACCEPT if a ``name:port[/udp]`` entry for PROTO and PORT matches a
    name the address is PINNED to (a set of names); else None (for TCP: read
    the flow), or REFUSE for UDP, which has nothing else to go by."""
    matcher = policy.ports.get((proto, port)) if policy.ports else None
    if matcher is not None:
        for name in sorted(pinned):
            if matcher.allowed(name):
                return accept("pinned to %s, allowed on %s port %d" % (name, proto, port), name, reasons.PORT)
    if proto == "udp":
        if matcher is None:
            return refuse("no entry allows UDP port %d" % port, code=reasons.UDP_PORT)
        return refuse("UDP port %d: address not pinned to an allowed name" % port, code=reasons.NOT_PINNED)
    return None


def decide_name(policy, pinned, name):
    """The verdict for a flow that asked for NAME at an address pinned to the
    names PINNED."""
    if not policy.names.allowed_normal(name):
        return refuse("%s is not in the allowed domains" % name, name, reasons.NOT_ALLOWED)
    if name not in pinned:
        return refuse("address not pinned to %s" % name, name, reasons.NOT_PINNED)
    return accept("allowed and pinned", name, reasons.NAME)
