"""Layer ``plan``: the desired state built from the model, as data that can
be printed and compared (firewall rules as iptables-save tokens, bandwidth
steps, edits of a VM's published ports). Pure; imports only ``model``.

Private to the collection ``vmsan.network``.
"""
