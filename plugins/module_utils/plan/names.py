"""The names of a VM's chains and IP sets, shared by the firewall plan and
the name guard's rules (``firewall`` re-exports them). Pure."""

# Chains a VM owns, ``vmsan-<id>-<role>``: spoof (raw), dns (nat), in, out,
# to (filter), pub (nat, host namespace), cap (filter: the connection budget,
# plan/budgets.py), guard (filter: the name guard,
# plan/name_guard.py; only while the policy names domains).
CHAIN_ROLES = ("spoof", "dns", "in", "out", "to", "pub", "cap", "guard")


def chain_name(vm_id, role):
    return "vmsan-%s-%s" % (vm_id, role)


def vm_chains(vm_id):
    """The names of every chain of VM_ID. Exact names, never a prefix: ids
    may contain '-', so "vmsan-web-*" would also be VM web-2's chains."""
    return [chain_name(vm_id, role) for role in CHAIN_ROLES]


def set_name(vm_id, role):
    return "vmsan-%s-%s" % (vm_id, role)
