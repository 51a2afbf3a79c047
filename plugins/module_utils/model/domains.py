"""Domain allowlist matching (docs/contract.md, "Precedence in custom"). Pure.

``api.example.com`` matches that name only; ``*.github.com`` matches any
name below github.com at any depth, but not github.com itself. Matching is
case-insensitive and ignores a trailing dot. Patterns come normalised from
``inputs.domain``.
"""


def split_entry(entry):
    """An allowlist entry (normalised by ``inputs.domain_entry``) ->
    (pattern, port or None, protocol or None): ``git.example.com:22`` ->
    ("git.example.com", 22, "tcp"), ``api.example.com`` -> ("api.example.com", None, None)."""
    pattern, colon, rest = entry.partition(":")
    if not colon:
        return entry, None, None
    port, _slash, proto = rest.partition("/")
    return pattern, int(port), proto or "tcp"


def pattern_of(entry):
    """The name pattern of an allowlist entry (what DNS answers are matched
    against: ``git.example.com:22`` lets the guest resolve git.example.com)."""
    return entry.partition(":")[0]


def normalise(name):
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def matches(name, pattern):
    name = normalise(name)
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def allowed(name, patterns):
    """The first entry whose pattern allows NAME, or None."""
    for pattern in patterns:
        if matches(name, pattern_of(pattern)):
            return pattern
    return None


class Matcher(object):
    """The same answers as ``allowed``, in time proportional to the number of
    labels of the name instead of the number of patterns: exact names go in
    one set, wildcard bases in another, and a name is checked against each of
    its proper suffixes. The resolver asks this for every uncached query, and
    a policy may hold hundreds of patterns."""

    __slots__ = ("exact", "bases", "patterns")

    def __init__(self, patterns):
        self.patterns = tuple(patterns)
        names = [pattern_of(p) for p in self.patterns]
        self.exact = {p for p in names if not p.startswith("*.")}
        self.bases = {p[2:] for p in names if p.startswith("*.")}

    def allowed(self, name):
        """The pattern that allows NAME (an exact entry before a wildcard),
        or None."""
        return self.allowed_normal(normalise(name))

    def allowed_normal(self, name):
        """``allowed`` for a NAME already in lower case without a trailing
        dot (the guard's names are: guard/hostname.py)."""
        if name in self.exact:
            return name
        if self.bases:
            dot = name.find(".")
            while dot != -1:
                base = name[dot + 1:]
                if base in self.bases:
                    return "*." + base
                dot = name.find(".", dot + 1)
        return None

    def __bool__(self):
        return bool(self.patterns)
