"""What reading the first bytes of a flow gives: not enough yet, a name, or a
refusal with its reason. Shared by the TLS and HTTP readers."""

from collections import namedtuple

from . import reasons

NEED_MORE = "more"
NAME = "name"
REFUSED = "refused"

# state: NEED_MORE, NAME or REFUSED; kind: "tls", "http" or None; name: the
# host name asked for (lower case, no trailing dot) with NAME; reason: why
# with REFUSED; ech: the hello carries an encrypted_client_hello extension;
# code: with REFUSED, the reason as a label (guard/reasons.py).
Reading = namedtuple("Reading", "state kind name reason ech code", defaults=(None,))

MORE = Reading(NEED_MORE, None, None, None, False)


def refused(kind, reason, code=reasons.MALFORMED):
    return Reading(REFUSED, kind, None, reason, False, code)


def named(kind, name, ech=False):
    return Reading(NAME, kind, name, None, ech)
