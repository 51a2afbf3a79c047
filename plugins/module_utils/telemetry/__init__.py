"""Layer ``telemetry``: what an operator sees (docs/operator.md): the event
log of refusals (written by the daemon, read by ``vmsan events`` and ``vmsan
policy suggest``), the kernel's counters of a VM, the copies of dropped
packets, and the Prometheus metrics and their server. Above ``lifecycle``
(it lists the VMs through the state store) and below ``resolver`` (the
resolver and the name guard report their refusals here).

Private to the collection ``vmsan.network``.
"""
