"""Layer ``kernel``: one adapter per kernel object (network namespaces,
TAPs, rtnetlink links/addresses/routes, sysctls, iptables through libiptc,
ipsets, tc, conntrack, host sockets). Each works in the network namespace
of the calling thread and knows nothing of VMs' lifecycles; imports only
``model`` and ``plan``.

Private to the collection ``vmsan.network``.
"""
