"""Refusals as the event log holds them: one ``Event`` per line of JSON
(docs/operator.md, "The event log"). Pure: the writer and the reader are in
``telemetry``; the resolver, the kernel's drop copies and the name guard
make the events.

A kind says what was refused; the same names label the drop counters
(``vmsan show``, ``vmsan_dropped_packets_total{reason}``) where the kernel
drops the packet:

* ``policy``: a packet to a destination the VM's policy does not allow;
* ``isolation``: a packet to another VM, the host, a transit link or
  link-local (the isolation baseline);
* ``spoofed``: a packet with another source address or MAC than the guest's;
* ``ipv6``: an IPv6 packet (IPv6 is off on the TAP; the kernel drops it);
* ``dns_elsewhere``: DNS the policy keeps from other servers (DNS over TLS);
* ``guard``: a connection the name guard refused (the name it carried is
  not allowed, or not the one its address was learned for);

and where the resolver refuses:

* ``name``: a DNS name off the VM's list (NXDOMAIN), or any name under
  deny-all (REFUSED);
* ``dns_budget``: a query beyond one of the VM's DNS budgets.

``suppressed`` is the rate limit's summary: how many events of a VM were
held back (``count``, and by kind in ``detail``).
"""

import calendar
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Optional

DROP_REASONS = ("policy", "isolation", "spoofed", "ipv6", "dns_elsewhere", "guard")
RESOLVER_KINDS = ("name", "dns_budget")
SUPPRESSED = "suppressed"
KINDS = DROP_REASONS + RESOLVER_KINDS + (SUPPRESSED,)

REFUSED = "refused"
WOULD_REFUSE = "would refuse"       # audit mode: let through, logged
VERDICTS = (REFUSED, WOULD_REFUSE)


@dataclass(frozen=True)
class Event:
    time: float                         # seconds since the epoch
    vm: str
    kind: str
    verdict: str = REFUSED
    destination: Optional[str] = None   # the address the guest sent to
    port: Optional[int] = None          # its destination port (TCP, UDP)
    protocol: Optional[str] = None      # tcp, udp, icmp, ... (by number when unnamed)
    name: Optional[str] = None          # the DNS name, or the name the guard read
    policy_version: Optional[str] = None
    detail: Optional[str] = None        # e.g. the rcode given, the guard's reason
    count: int = 1                      # suppressed: how many were held back


FIELDS = ("time", "vm", "kind", "verdict", "destination", "port", "protocol", "name", "policy_version", "detail",
          "count")


def time_text(seconds):
    """ISO 8601 in UTC with milliseconds: 2026-12-02T10:00:00.123Z."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % int((seconds - whole) * 1000)


def parse_time(text):
    """Seconds since the epoch of an ISO 8601 UTC time (``time_text``'s form,
    with or without the fraction, ``Z`` or ``+00:00``). ValueError otherwise."""
    body = text.strip()
    for suffix in ("Z", "+00:00"):
        if body.endswith(suffix):
            body = body[:-len(suffix)]
            break
    whole, _dot, fraction = body.partition(".")
    parsed = time.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    if fraction and not fraction.isdigit():
        raise ValueError("bad fraction of a second in %r" % text)
    return calendar.timegm(parsed) + (float("0." + fraction) if fraction else 0.0)


def to_json(event):
    """EVENT as one line of JSON (no newline): the fields that are set."""
    data = {"time": time_text(event.time), "vm": event.vm, "kind": event.kind, "verdict": event.verdict}
    for field in FIELDS[4:]:
        value = getattr(event, field)
        if value is not None and not (field == "count" and value == 1):
            data[field] = value
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def from_json(line):
    """The Event of one line of the log; ValueError for anything else."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ValueError("not JSON: %s" % exc)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("time", "vm", "kind")):
        raise ValueError("not an event")
    port = data.get("port")
    return Event(time=parse_time(data["time"]), vm=data["vm"], kind=data["kind"],
                 verdict=data.get("verdict", REFUSED), destination=data.get("destination"),
                 port=int(port) if port is not None else None, protocol=data.get("protocol"),
                 name=data.get("name"), policy_version=data.get("policy_version"), detail=data.get("detail"),
                 count=int(data.get("count", 1)))


def as_dict(event):
    """The JSON object of EVENT (what ``vmsan events --json`` prints a line of)."""
    return json.loads(to_json(event))


def policy_version(policy):
    """A short, stable name of POLICY (a records.Policy): the first 12 hex
    digits of the SHA-256 of its mode, lists and audit flag. Two VMs with the
    same policy have the same version; any change of the policy changes it."""
    canonical = json.dumps([policy.mode, list(policy.allowed_domains), list(policy.allowed_cidrs),
                            list(policy.denied_cidrs), bool(policy.audit)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def text(event):
    """One line for a person: time, VM, verdict, kind and what was asked."""
    where = ""
    if event.destination:
        where = event.destination
        if event.port is not None:
            where += ":%d" % event.port
        if event.protocol:
            where += "/%s" % event.protocol
    parts = [time_text(event.time), event.vm, event.verdict, event.kind]
    if event.name:
        parts.append(event.name)
    if where:
        parts.append(where)
    if event.kind == SUPPRESSED:
        parts.append("%d events held back" % event.count)
    if event.detail:
        parts.append("(%s)" % event.detail)
    return " ".join(parts)
