"""Layer ``lifecycle``: the state directory (VM records, slots, the lock)
and the orchestration that converges, updates and removes a VM's network
through the kernel adapters. Imports ``model``, ``plan`` and ``kernel``.

Private to the collection ``vmsan.network``.
"""
