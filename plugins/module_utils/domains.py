"""Domain allowlist matching (DESIGN.md section 3). Pure.

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
