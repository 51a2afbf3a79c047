"""Domain allowlist matching (docs/contract.md, "Precedence in custom"). Pure.

``api.example.com`` matches that name only; ``*.github.com`` matches any
name below github.com at any depth, but not github.com itself. Matching is
case-insensitive and ignores a trailing dot. Patterns come normalised from
``inputs.domain``.
"""


def normalise(name):
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def matches(name, pattern):
    name = normalise(name)
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def allowed(name, patterns):
    """The first pattern that allows NAME, or None."""
    for pattern in patterns:
        if matches(name, pattern):
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
        self.exact = {p for p in self.patterns if not p.startswith("*.")}
        self.bases = {p[2:] for p in self.patterns if p.startswith("*.")}

    def allowed(self, name):
        """The pattern that allows NAME (an exact entry before a wildcard),
        or None."""
        name = normalise(name)
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
