"""The vmsan core, private to the collection ``vmsan.network``.

Nothing here is a public API: the Ansible modules, the ``vmsan`` command and
the host daemon are its only callers, and any name may change between
releases. Each subpackage is one layer; a module imports only from its own
layer or the layers below it (docs/architecture.md, checked by
tests/unit/test_layers.py):

    model      the data model and the one place that validates input (pure)
    plan       desired state built from the model: rules, caps, port edits (pure)
    kernel     adapters, one per kernel object: netns, links, sysctl, iptables, ipsets, tc, conntrack
    lifecycle  state files and the orchestration that converges a VM through the adapters
    telemetry  what an operator sees: the event log, a VM's kernel counters, dropped-packet copies, metrics
    resolver   the host DNS resolver: decisions (pure) and its sockets; the pin table
    guard      the name guard: SNI/Host readers, the rule, held flows (pure) and its queue loop
    daemon     the host daemon's command server (the warm path) and its protocol
    faces      the ``vmsan`` command and the Ansible face: parse, call, render
"""

# The layers from the bottom up. A module may import from its own package and
# from packages of a lower rank, never from a higher rank or from another
# package of the same rank (tests/unit/test_layers.py reads every import).
LAYERS = (
    ("model",),
    ("plan",),
    ("kernel",),
    ("lifecycle",),
    ("telemetry",),
    ("resolver",),
    ("guard",),
    ("daemon",),
    ("faces",),
)
