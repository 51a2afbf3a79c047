"""``vmsan policy suggest VM``: the smallest allowlist that would have let
through what the event log shows the VM tried (docs/operator.md, "Audit
mode"). Pure: events and the VM's policy in, lists out.

* Names: every name the resolver refused or, in audit mode, answered
  although the list would refuse it (kind ``name``), as exact entries. A
  wildcard ``*.parent`` takes the place of WILDCARD_AT or more names right
  below one parent (never below a top-level domain), and the suggestion says
  which names it stands for.
* Names the name guard read (kind ``guard``, TLS SNI or HTTP Host) that
  the list would refuse (reason ``not_allowed``), the same way. A name that
  is on the list but was asked for at an address not learned for it
  (``not_pinned``: domain fronting, or a name the guest did not resolve) is
  named in the notes: no entry lets that through.
* Addresses: every destination the firewall refused or would have refused
  (kind ``policy``), as a /32. (In audit mode the addresses of names the
  resolver answered are learned and pass without an event: they come as
  names, not as addresses.)
* What the policy allows already stays, so the printed flags can replace
  the VM's lists as they are (``vmsan network`` replaces a policy whole);
  a destination inside a denied CIDR is named in the notes instead, since
  denied CIDRs win over every allow.
"""

import ipaddress
from collections import namedtuple

from ..model import domains
from ..model import events as E
from ..model import inputs
from ..model.errors import InputError

WILDCARD_AT = 3         # names below one parent that make a wildcard
# the name guard's reasons (guard/reasons.py) that the suggestion reads from
# its events' detail (the guard is a layer above: its labels, not its code)
NOT_ALLOWED = "not_allowed"
NOT_PINNED = "not_pinned"

Suggestion = namedtuple("Suggestion", "allowed_domains allowed_cidrs denied_cidrs notes names addresses events")
# allowed_domains, allowed_cidrs: the lists to give; denied_cidrs: the VM's, kept;
# notes: lines for a person; names, addresses: what the log showed; events: how many were read


def _valid_name(name):
    try:
        return inputs.domain("allowed_domains", name)
    except InputError:
        return None


def _inside(address, cidrs):
    ip = ipaddress.IPv4Address(address)
    return any(ip in ipaddress.IPv4Network(c) for c in cidrs)


def _grouped(names):
    """NAMES as entries: exact, or a wildcard for WILDCARD_AT or more under
    one parent of at least two labels; (entries, notes)."""
    by_parent = {}
    for name in names:
        parent = name.partition(".")[2]
        if parent.count(".") >= 1:
            by_parent.setdefault(parent, []).append(name)
    entries, notes, covered = [], [], set()
    for parent, under in sorted(by_parent.items()):
        if len(under) >= WILDCARD_AT:
            entries.append("*." + parent)
            covered.update(under)
            notes.append("*.%s stands for the %d names seen below %s: %s"
                         % (parent, len(under), parent, ", ".join(sorted(under))))
    entries += [n for n in names if n not in covered]
    return entries, notes


def suggest(policy, events):
    """The Suggestion for a VM with POLICY (records.Policy) whose log holds
    EVENTS (model.events.Event, the VM's)."""
    names, addresses, denied_hits, fronted = [], [], [], []
    count = 0
    for event in events:
        count += 1
        if event.verdict not in E.VERDICTS:
            continue
        if (event.kind == "name" or (event.kind == "guard" and event.detail == NOT_ALLOWED)) and event.name:
            name = _valid_name(event.name)
            if name and name not in names and not domains.allowed(name, policy.allowed_domains):
                names.append(name)
        elif event.kind == "guard" and event.detail == NOT_PINNED and event.name:
            seen = (event.name, event.destination)
            if seen not in fronted:
                fronted.append(seen)
        elif event.kind == "policy" and event.destination:
            try:
                ipaddress.IPv4Address(event.destination)
            except ValueError:
                continue
            if event.destination in addresses or event.destination in denied_hits:
                continue
            if _inside(event.destination, policy.denied_cidrs):
                denied_hits.append(event.destination)
            elif not _inside(event.destination, policy.allowed_cidrs):
                addresses.append(event.destination)
    entries, notes = _grouped(names)
    kept = [d for d in policy.allowed_domains if d not in entries]
    allowed_domains = tuple(dict.fromkeys(kept + entries))
    allowed_cidrs = tuple(dict.fromkeys(list(policy.allowed_cidrs) + ["%s/32" % a for a in addresses]))
    for address in denied_hits:
        notes.append("%s is inside a denied CIDR, which wins over any allow: left out" % address)
    for name, address in fronted:
        notes.append("%s was asked for at %s, an address not learned for it (domain fronting, or the name was "
                     "not resolved first): no list entry lets that through" % (name, address))
    return Suggestion(allowed_domains, allowed_cidrs, tuple(policy.denied_cidrs), tuple(notes), tuple(names),
                      tuple(addresses), count)


def flags(suggestion):
    """The suggestion as ``vmsan network`` flags (shell words)."""
    words = []
    for flag, values in (("--allowed-domain", suggestion.allowed_domains),
                         ("--allowed-cidr", suggestion.allowed_cidrs),
                         ("--denied-cidr", suggestion.denied_cidrs)):
        if values:
            words += [flag, ",".join(values)]
    if not words:
        words = ["--network-policy", "custom"]
    return words
