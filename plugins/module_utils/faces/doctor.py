"""``vmsan doctor``: what this host needs, checked without changing it."""

import os

from ..model import addressing as A
from ..lifecycle.state import StateStore
from ..resolver import health as resolver_health
from ..kernel.ipsets import SetManager
from ..kernel.iptables import open_table


def _check(name, ok, detail, warn=False):
    return {"name": name, "status": "ok" if ok else ("warn" if warn else "FAIL"), "detail": detail}


def _nft_forward_drop():
    """A nftables FORWARD chain with policy drop (as Docker hosts have) would
    drop VM traffic whatever our legacy-table rules accept."""
    try:
        from pyroute2.nftables.main import NFTables as NFT   # a probe: without it there is nothing to check
        nft = NFT()
        try:
            for chain in nft.get_chains():
                hook = chain.get_attr("NFTA_CHAIN_HOOK")
                policy = chain.get_attr("NFTA_CHAIN_POLICY")
                if hook is not None and hook.get_attr("NFTA_HOOK_HOOKNUM") == 2 and policy == 0:
                    return "%s %s" % (chain.get_attr("NFTA_CHAIN_TABLE"), chain.get_attr("NFTA_CHAIN_NAME"))
        finally:
            nft.close()
    except Exception:
        return None
    return None


def _probe(name, attempt, ok_detail, fail_prefix):
    """A check that passes when ATTEMPT() raises nothing."""
    try:
        attempt()
    except Exception as exc:
        return _check(name, False, "%s: %s" % (fail_prefix, exc))
    return _check(name, True, ok_detail)


def _open_tables():
    for name in ("filter", "nat", "raw"):
        open_table(name).close()


def _list_sets():
    with SetManager() as sets:
        sets.names()


def _list_qdiscs():
    from pyroute2 import IPRoute     # a probe: a missing or broken pyroute2 is what it reports
    with IPRoute() as ipr:
        ipr.get_qdiscs()


def run_checks(state_dir=None):
    checks = []
    checks.append(_check("root", os.geteuid() == 0, "running as uid %d" % os.geteuid()))
    checks.append(_check("tun", os.path.exists("/dev/net/tun"), "/dev/net/tun"))
    checks.append(_check("netns", os.path.exists("/proc/self/ns/net"), "network namespaces"))
    checks.append(_probe("iptables legacy", _open_tables, "filter, nat, raw tables through libiptc",
                         "python-iptables/libiptc"))
    checks.append(_probe("ipset", _list_sets, "ip_set through netlink", "ipset netlink"))
    checks.append(_probe("tc", _list_qdiscs, "qdiscs through netlink", "tc netlink"))
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as handle:
            fwd = handle.read().strip() == "1"
        checks.append(_check("forwarding", fwd, "net.ipv4.ip_forward=%s (vmsan create sets it)" % ("1" if fwd else "0"),
                             warn=True))
    except OSError as exc:
        checks.append(_check("forwarding", False, str(exc)))
    blocker = _nft_forward_drop()
    checks.append(_check("nft forward", blocker is None,
                         "no nftables FORWARD chain with policy drop" if blocker is None else
                         "nftables chain %s drops forwarded packets: VM traffic will not pass; accept %s there"
                         % (blocker, A.VM_RANGE)))
    status, detail = resolver_health.assess(StateStore(state_dir))
    checks.append({"name": "resolver", "status": status, "detail": detail})
    checks.append(_arp_filter_check())
    checks += _vm_checks(state_dir) if os.geteuid() == 0 else []
    ok = all(c["status"] != "FAIL" for c in checks)
    return {"ok": ok, "checks": checks}


def _arp_filter_check():
    """A loose ``all`` reverse-path filter (2) in the host's namespace makes
    the strict filter of a --no-netns VM's TAP loose too: ARP from any
    sender routed anywhere is then answered (docs/policies.md, "ARP and
    neighbour entries"). VM namespaces lower their own ``all``."""
    from ..kernel import netconf       # netlink: only when checking
    try:
        loose = netconf.device_conf().get_attr("NETCONFA_RP_FILTER") == 2
    except Exception as exc:            # a check reports what it cannot read
        return _check("arp filter", False, "cannot read net.ipv4.conf.all.rp_filter: %s" % exc, warn=True)
    if loose:
        return _check("arp filter", False, "net.ipv4.conf.all.rp_filter=2 (loose): the TAPs of --no-netns VMs "
                      "accept ARP from made-up senders; set it to 1 (or 0) for them", warn=True)
    return _check("arp filter", True, "TAPs take ARP only from their guest (strict reverse-path filter)")


def _vm_checks(state_dir):
    """One check per VM of the state directory against the kernel (what a
    converge would change), and one per stale device of this directory."""
    from ..lifecycle.manager import Manager      # netlink and libiptc: only when root and checking VMs
    manager = Manager(state_dir)
    found, stale = manager.checks()
    checks = []
    for vm in found:
        if vm.status == "ok":
            checks.append(_check("vm " + vm.id, True, "as its state says"))
            continue
        fix = ("vmsan restore %s rebuilds it, vmsan remove %s removes it" % (vm.id, vm.id)
               if vm.status != "broken" else "fix or delete its state file")
        checks.append(_check("vm " + vm.id, False, "%s: %s (%s)" % (vm.status, "; ".join(vm.reasons), fix)))
    for owner in stale:
        checks.append(_check("stale " + owner.device, False,
                             "%s, which has no state file here: remove it with ip link del %s"
                             % (ownership_text(owner), owner.device), warn=True))
    return checks


def ownership_text(owner):
    from ..lifecycle.ownership import describe
    return describe(owner)
