"""The host names the guard accepts in an SNI or a Host header.

The same alphabet as the allowlist's patterns (model/inputs.domain): labels
of 1-63 of ``a-z 0-9 - _``, at most 253 characters, compared in lower case
with one trailing dot dropped. An IP literal is no name (nothing can be
pinned to it): a last label of digits only, or a hex number (``0x7f``, as
inet_aton would read it), is refused, and so is anything with ``:`` or
``[``.
"""

import re

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(r"^(?:%s\.)*%s$" % (_LABEL, _LABEL))
_NUMERIC = re.compile(r"(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)$")


def normal(text):
    """TEXT (str) as a host name in lower case without a trailing dot, or
    None when it is not a host name (IP literals included)."""
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not _NAME.match(name) or _NUMERIC.search(name):
        return None
    return name


# the answers for the names seen lately, by their bytes: a guard reads the
# same few names over and over (a guest's connections to its allowed names);
# a guest that sends many names only makes the cache start again
_SEEN = {}
_SEEN_MAX = 4096


def from_bytes(raw):
    """The same for bytes off the wire: non-ASCII is no name."""
    try:
        return _SEEN[raw]
    except KeyError:
        pass
    except TypeError:           # a bytearray or memoryview: not a key
        raw = bytes(raw)
    try:
        name = normal(raw.decode("ascii"))
    except UnicodeDecodeError:
        name = None
    if len(_SEEN) >= _SEEN_MAX:
        _SEEN.clear()
    _SEEN[raw] = name
    return name
