"""Does a resolver answer on this host? One query the resolver answers
itself (``health.vmsan.``, class CHAOS, type TXT), for the faces
(``vmsan doctor``, and create/network warnings) to call.

    >>> probe()
    Health(ok=True, detail='169.254.64.1:53 answers (vms=3 queries=...)', stats={...})

The probe never sends a packet off the host: the resolver's address must be
one of this host's (the address appears on ``lo`` with the first VM); when
it is not, nothing is sent and the answer says so. It asks over UDP from the
namespace the caller is in, waits at most TIMEOUT, and reads the reply with
dnslib. From the host, the TXT record also carries the resolver's counters
(``key=value`` words); a guest asking the same gets ``ok`` alone.
"""

import errno
import secrets
import socket
import time
from collections import namedtuple

from ..lifecycle.state import StateStore
from ..model import addressing as A
from . import core

Health = namedtuple("Health", "ok detail stats")


def stats_text(stats):
    return " ".join("%s=%s" % (k, stats[k]) for k in sorted(stats))


def parse_stats(text):
    """{key: value} of the words ``key=value`` of a health answer (integers
    where they are)."""
    out = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep:
            out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def probe(address=(A.RESOLVER_IP, A.RESOLVER_PORT), timeout=0.5):
    """Health of the resolver at ADDRESS (ip, port)."""
    if not core.HAS_DNSLIB:
        return Health(False, "cannot ask: the Python library dnslib is missing", {})
    from dnslib import QTYPE, DNSRecord
    where = "%s:%d" % address
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            sock.bind((address[0], 0))      # only an address of this host binds (no packet leaves the host)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return Health(False, "%s is not an address of this host (it comes with the first VM): "
                                     "no resolver to ask" % address[0], {})
            raise
        query = DNSRecord.question(core.HEALTH_NAME, "TXT", "CH")
        query.header.id = secrets.randbits(16)
        sock.settimeout(timeout)
        sock.connect(address)
        sock.send(query.pack())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            data = sock.recv(4096)
            if len(data) >= 2 and data[:2] == query.pack()[:2]:
                break
        reply = DNSRecord.parse(data)
    except socket.timeout:
        return Health(False, "%s: no answer within %.1f s (is vmsan-resolver running?)" % (where, timeout), {})
    except OSError as exc:
        return Health(False, "%s: %s (is vmsan-resolver running?)" % (where, exc.strerror or exc), {})
    except Exception as exc:        # an unreadable reply: something else answers there
        return Health(False, "%s: unreadable answer: %s" % (where, exc), {})
    finally:
        sock.close()
    texts = [b" ".join(rr.rdata.data).decode("ascii", "replace") for rr in reply.rr if rr.rtype == QTYPE.TXT]
    if reply.header.rcode != core.NOERROR or not texts or not texts[0].startswith("ok"):
        return Health(False, "%s answers, but not as vmsan's resolver does (rcode %d)" % (where, reply.header.rcode),
                      {})
    stats = parse_stats(texts[0])
    return Health(True, "%s answers (%s)" % (where, texts[0]), stats)


def relying_on_it(records):
    """Ids of the VMs (state records; unreadable ones are skipped) whose
    allowed domains only the resolver can open: ``custom`` with a domain
    list."""
    out = []
    for record in records:
        policy = getattr(record, "policy", None)
        if policy is not None and policy.learns_names:
            out.append(record.id)
    return out


def assess(store=None, address=(A.RESOLVER_IP, A.RESOLVER_PORT), timeout=0.5):
    """(status, detail) for ``vmsan doctor``: "ok" when the resolver answers;
    else "FAIL" when a VM has allowed domains (its guests resolve nothing),
    "warn" when none has."""
    answer = probe(address, timeout)
    if answer.ok:
        return "ok", answer.detail
    try:
        relying = relying_on_it((store or StateStore()).scan())
    except Exception as exc:        # an unreadable state file: say so, do not hide the resolver's state
        return "warn", "%s; cannot read the VMs' state: %s" % (answer.detail, exc)
    if relying:
        return "FAIL", "%s; the allowed domains of %s resolve nothing" % (
            answer.detail, ", ".join(relying[:5]) + (" and %d more" % (len(relying) - 5) if len(relying) > 5 else ""))
    return "warn", "%s; no VM has allowed domains yet" % answer.detail
