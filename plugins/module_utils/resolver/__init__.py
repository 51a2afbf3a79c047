"""Layer ``resolver``: the host DNS resolver that enforces domain policies
(its decisions in ``core``, pure; its sockets and threads in the daemon).
Reads the state directory through ``lifecycle`` and learns addresses through
the ``kernel`` adapters.

Private to the collection ``vmsan.network``.
"""
