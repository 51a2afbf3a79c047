"""One VM's decision for a flow to a learned-only address, pure: the port
entries first (they need no payload), then the name the flow's first bytes
give (TLS or HTTP/1.x), against the allowlist and the address's pins."""

from . import http, reasons, rule, tls
from .reading import NEED_MORE, REFUSED, refused


def read_name(prefix):
    """The Reading of a flow's first bytes: TLS if it starts like a TLS
    record, HTTP if it starts like a request line, else refused."""
    if tls.looks_like(prefix):
        return tls.read(prefix)
    if http.looks_like(prefix):
        return http.read(prefix)
    return refused(None, "neither a TLS ClientHello nor an HTTP/1.x request", reasons.PROTOCOL)


def tcp(policy, pinned, dport, prefix):
    """The Verdict for a TCP flow to port DPORT of an address pinned to the
    names PINNED, whose client sent PREFIX so far; None: wait for more."""
    verdict = rule.decide_port(policy, pinned, "tcp", dport)
    if verdict is not None:
        return verdict
    reading = read_name(prefix)
    if reading.state == NEED_MORE:
        return None
    if reading.state == REFUSED:
        return rule.refuse("%s%s" % (reading.kind + ": " if reading.kind else "", reading.reason),
                           code=reading.code or reasons.MALFORMED)
    return rule.decide_name(policy, pinned, reading.name)


def udp(policy, pinned, dport):
    return rule.decide_port(policy, pinned, "udp", dport)
