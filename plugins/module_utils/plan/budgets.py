"""The connection budgets as rules (pure): per VM, and host-wide for all
VMs together (docs/contract.md, "Budgets"; docs/policies.md, "Connection
budgets").

* **Per VM.** In the namespace that holds the VM's TAP, a new connection
  from the guest while it already has its budget of tracked connections
  (``connlimit`` on its one address, which anti-spoofing makes its own)
  jumps to the VM's ``cap`` chain: TCP is reset, the rest dropped. The
  rule heads the VM's ``out`` chain (and ``in`` with --no-netns, where the
  resolver is local), before the resolver's accept, so DNS from random
  source ports counts too.
* **Host-wide.** Every VM flow is tracked a second time in the host
  namespace, whose table all VMs share with the host's own connections.
  There, VM flows together get at most ``forward`` (forwarded) plus
  ``resolver`` (to the host resolver) entries, and ``reserve`` is kept for
  the host: ``forward + resolver + reserve == nf_conntrack_max``.

connlimit counts per rule, so each limit is one rule that jumps to a
chain that says what happens (REJECT with a TCP reset needs ``-p tcp``).
"""

from collections import namedtuple

HOST_CAP_CHAIN = "VMSAN-HOST-CAP"

HostCaps = namedtuple("HostCaps", "forward resolver reserve")


def host_caps(table_limit):
    """The host-wide caps for a conntrack table of TABLE_LIMIT entries
    (nf_conntrack_max): an eighth reserved for the host, an eighth for VMs'
    DNS to the resolver, the rest for VMs' forwarded flows."""
    reserve = max(table_limit // 8, 1)
    resolver = max(table_limit // 8, 1)
    return HostCaps(max(table_limit - reserve - resolver, 1), resolver, reserve)


def refusal_rules():
    """The body of a cap chain: new TCP reset, anything else dropped."""
    return [("-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"), ("-j", "DROP")]


def over_budget(limit, mask, chain, source=None):
    """A rule sending a new connection beyond LIMIT (connections of the
    source address masked to MASK bits) to CHAIN."""
    match = ("-s", source) if source else ()
    return match + ("-m", "conntrack", "--ctstate", "NEW", "-m", "connlimit", "--connlimit-above", str(limit),
                    "--connlimit-mask", str(mask), "--connlimit-saddr", "-j", chain)


def vm_rules(record, cap_chain):
    """(the rule heading the VM's out chain, the cap chain's body)."""
    return over_budget(record.connection_budget, 32, cap_chain), refusal_rules()


def host_rules(table_limit, vm_net):
    """{shared host chain: rule at its head} and the cap chain's body, for a
    table of TABLE_LIMIT entries; nothing when TABLE_LIMIT is None (unknown)."""
    if not table_limit:
        return {}, None
    caps = host_caps(table_limit)
    return ({"VMSAN-HOST-FWD": over_budget(caps.forward, 0, HOST_CAP_CHAIN, vm_net),
             "VMSAN-HOST-IN": over_budget(caps.resolver, 0, HOST_CAP_CHAIN, vm_net)},
            refusal_rules())
