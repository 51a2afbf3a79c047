"""The name guard's rules for one VM, as iptables-save tokens. Pure.
``firewall.vm_plan`` builds them into the plan of every VM whose policy is
``custom`` with allowed domains (``guards``), in both namespace modes.

Where they go (filter table, the namespace that holds the VM's TAP): the
``out`` chain's rule that accepts the learned set,
``-m set --match-set vmsan-ID-dns dst -j ACCEPT``, becomes a jump to the
VM's ``guard`` chain (``out_rule``). It stays where it is: after the denied
CIDRs (which still win), the link-local drop and the allowed CIDRs (a
destination that an allowed CIDR opens is never held), before the final
DROP. The ``guard`` chain (``chain_rules``):

1. a packet the guard just gave a verdict (it comes back through the hook
   with ``NF_REPEAT`` and the verdict in its mark): the verdict is saved in
   the connection's mark (CONNMARK, our two bits only);
2. a connection with a verdict: accepted (every later packet of an accepted
   flow stops here, in the kernel), or reset (TCP) / dropped;
3. TCP without one: packets without payload pass (the handshake, pure ACKs: an IPv4 header of 20
   bytes and a total length of exactly 20 + the TCP header, ``u32``); the
   rest is queued (NFQUEUE, no ``--queue-bypass``: with no guard reading
   the queue the packet is dropped, the flow fails closed);
4. UDP to a port that a ``name:port/udp`` entry names: queued; other UDP and
   every other protocol: dropped.

and the head of the ``to`` chain copies the server's SYN-ACK of such flows
to the guard (``syn_ack_rule``: NFLOG, the packet does not wait): the guard
reads from it where the client's stream starts.

The queue number and log group are the same in every namespace: queues are
per network namespace, and the guard opens one socket in each namespace
that holds a guarded VM's TAP (the host's for ``--no-netns`` VMs, which
share it: the guard tells them apart by the guest address). Marks: the
guard reads and writes only the two bits of ``MARK_MASK`` of the packet's
and the connection's mark (``--nfmask``/``--ctmask``, ``-m mark``/``-m
connmark`` with the mask), so in the host namespace the mark bits of other
software survive; that software must leave these two bits alone.
"""

from ..model import domains
from . import drops
from .names import chain_name, set_name

QUEUE_NUM = 3013            # NFQUEUE queue of every namespace with guarded VMs
LOG_GROUP = 3013            # NFLOG group of the same namespaces (SYN copies)
# How much of a SYN-ACK is copied is set by the guard's socket for the whole
# group (kernel/nfqueue.py, 128 bytes: the headers): python-iptables encodes
# a rule's --nflog-size as the old --nflog-range, which the kernel ignores.

MARK_MASK = 0x30000000      # the two bits of the packet and connection marks that are ours
MARK_ACCEPTED = 0x10000000
MARK_REFUSED = 0x20000000

MULTIPORT_MAX = 15          # ports per -m multiport match


def guards(policy):
    """Whether POLICY (a model Policy, or anything with its ``mode``,
    ``allowed_domains`` and ``audit``) puts the name guard on its learned
    set's path: ``custom`` with allowed domains. In audit mode too: there
    the guard lets through what it would refuse, and logs it as "would
    refuse" (``chain_rules(audit=True)``; guard/loop.py)."""
    return policy.mode == "custom" and bool(policy.allowed_domains)


def udp_ports(allowed_domains):
    """The ports of the ``name:port/udp`` entries of ALLOWED_DOMAINS, sorted."""
    return tuple(sorted({port for _pattern, port, proto in map(domains.split_entry, allowed_domains)
                         if proto == "udp"}))


def _hex(value):
    return "0x%x" % value


def _mark(value):
    return "%s/%s" % (_hex(value), _hex(MARK_MASK))


def syn_ack_rule(vm_id):
    """The head of the VM's ``to`` chain: a copy of the server's SYN-ACK of
    every TCP flow to a learned address that has no verdict yet (NFLOG,
    it does not wait). Its acknowledgement number tells the guard where the
    client's stream starts as the server will read it. (A learned address
    that an allowed CIDR also opens gets copies the guard never needs; they
    expire.)"""
    return ("-p", "tcp", "-m", "tcp", "--tcp-flags", "SYN,ACK", "SYN,ACK",
            "-m", "set", "--match-set", set_name(vm_id, "dns"), "src",
            "-m", "connmark", "--mark", "0x0/%s" % _hex(MARK_MASK),
            "-j", "NFLOG", "--nflog-group", str(LOG_GROUP), "--nflog-threshold", "1")


def out_rule(vm_id):
    """The ``out`` chain's rule for the learned set, guarded."""
    return ("-m", "set", "--match-set", set_name(vm_id, "dns"), "dst", "-j", chain_name(vm_id, "guard"))


EMPTY_CHAIN = "VMSAN-GUARD-EMPTY"


def empty_tcp_rules():
    """TCP packets that carry no payload, told apart by the kernel: an IPv4
    header without options (IHL 5) and a total length of 20 + 4 * data
    offset, one rule per data offset (5..15). Packets with IP options fall
    through to the queue, where the guard passes them if they are empty."""
    rules = []
    for doff in range(5, 16):
        total = 20 + 4 * doff
        test = "0&0xFF00FFFF=0x%08X&&32>>28=%d" % (0x45000000 | total, doff)
        rules.append(("-m", "u32", "--u32", test, "-j", "ACCEPT"))
    return rules


def chain_rules(udp_ports=(), audit=False):
    """The rules of a VM's ``guard`` chain; UDP_PORTS: the ports of its
    ``name:port/udp`` entries. AUDIT (audit mode): the guard accepts what
    it would refuse (and logs it), so what the chain drops without it goes
    to the guard's audit chain instead (a logged copy, then ACCEPT), and the
    queue is bypassed while no guard reads it: audit mode lets through
    what it cannot judge, as it did before the guard was on its path."""
    accepted, refused = _mark(MARK_ACCEPTED), _mark(MARK_REFUSED)
    queue = ("-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM))
    if audit:
        queue += ("--queue-bypass",)
    rules = [
        ("-m", "mark", "!", "--mark", "0x0/%s" % _hex(MARK_MASK),
         "-j", "CONNMARK", "--save-mark", "--nfmask", _hex(MARK_MASK), "--ctmask", _hex(MARK_MASK)),
        ("-m", "connmark", "--mark", accepted, "-j", "ACCEPT"),
        ("-p", "tcp", "-m", "connmark", "--mark", refused, "-j", "REJECT", "--reject-with", "tcp-reset"),
        ("-m", "connmark", "--mark", refused, "-j", "DROP"),
    ]
    rules.append(("-p", "tcp", "-j", EMPTY_CHAIN))
    rules.append(("-p", "tcp") + queue)
    ports = sorted(set(int(p) for p in udp_ports))
    for start in range(0, len(ports), MULTIPORT_MAX):
        chunk = ",".join(str(p) for p in ports[start:start + MULTIPORT_MAX])
        rules.append(("-p", "udp", "-m", "multiport", "--dports", chunk) + queue)
    rules.append(drops.let_through("guard") if audit else ("-j", "DROP"))
    return rules


def owned_chains(vm_id, allowed_domains, audit=False):
    """{(table, chain): rules} the guard adds to a VM's plan: its ``guard``
    chain and the namespace's ``VMSAN-GUARD-EMPTY`` (the same content from
    every VM of a namespace). The learned set's jump (``out_rule``) and the
    SYN-ACK copy (``syn_ack_rule``) go into the VM's ``out`` and ``to``
    chains (plan/firewall.py)."""
    return {("filter", chain_name(vm_id, "guard")): chain_rules(udp_ports(allowed_domains), audit),
            ("filter", EMPTY_CHAIN): empty_tcp_rules()}
