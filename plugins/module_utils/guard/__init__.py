"""Layer ``guard``: the name guard. For a flow to an address that a VM can
reach only because it was learned for an allowed name, it reads which name
the flow asks for (TLS SNI in ``tls``, HTTP/1.x Host in ``http``), decides
by the allowlist and the resolver's pins (``rule``, ``decide``), and holds
the flow's first payload until then (``flows``); all pure. ``loop`` runs the
queue sockets (``kernel.nfqueue``). Above ``resolver``, whose pin table it
reads. docs/domain-policies.md, "The name guard".

Private to the collection ``vmsan.network``.
"""
