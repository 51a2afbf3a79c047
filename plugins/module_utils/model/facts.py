"""The facts of a VM: what ``vmsan create --json``, ``list``, ``show`` and
the modules' ``vm`` return. The one place that renders a VmRecord for users;
its keys are the documented interface (docs/cli.md, the modules' RETURN)."""

from . import addressing as A


def facts(record):
    """Everything a VMM needs to attach, and the VM's settings."""
    if record is None:
        return {}
    slot, policy = record.slot, record.policy
    return {
        "id": record.id,
        "slot": slot,
        "tap": A.tap_name(slot),
        "netns": record.netns,
        "host_ip": A.host_ip(slot),
        "guest_ip": A.guest_ip(slot),
        "subnet": str(A.subnet(slot)),
        "mac": A.guest_mac(slot),
        "boot_args": A.boot_args(slot),
        "firecracker": A.firecracker_interface(slot),
        "network_policy": policy.mode,
        "allowed_domains": list(policy.allowed_domains),
        "allowed_cidrs": list(policy.allowed_cidrs),
        "denied_cidrs": list(policy.denied_cidrs),
        "audit": policy.audit,
        "published_ports": [p.text for p in record.ports],
        "bandwidth": record.bandwidth.send,
        "bandwidth_in": record.bandwidth.receive,
        "tap_owner": record.tap_owner,
        # the budgets (docs/contract.md, "Budgets"): connections as in force,
        # the DNS ones null where the resolver's default applies
        "limits": {"connections": record.connection_budget,
                   "dns_queries_per_second": record.limits.dns.queries_per_second,
                   "dns_upstream_queries": record.limits.dns.upstream_queries,
                   "dns_tcp_connections": record.limits.dns.tcp_connections},
    }


def broken(record):
    """A VM whose state file cannot be read, as ``list`` shows it."""
    return {"id": record.id, "broken": record.error}
