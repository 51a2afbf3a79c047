"""The ``vmsan`` command: parses flags, calls the core, renders the result.

Exit status: 0 success, 1 runtime failure, 2 bad input (argparse's own
usage errors included). With --json one JSON document goes to stdout; every
message goes to stderr.
"""

import argparse
import json
import sys

from ..model import inputs
from ..model.errors import InputError, VmsanError


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _add_policy_flags(p, with_ports):
    p.add_argument("--network-policy", metavar="POLICY",
                   help="allow-all (default), deny-all or custom")
    p.add_argument("--allowed-domain", metavar="LIST", help="comma-separated names; *.example.com for subdomains")
    p.add_argument("--allowed-cidr", metavar="LIST", help="comma-separated IPv4 CIDRs the guest may reach")
    p.add_argument("--denied-cidr", metavar="LIST", help="comma-separated IPv4 CIDRs the guest may never reach")
    if with_ports:
        p.add_argument("--publish-port", metavar="LIST", help="[host_ip:]host_port[:guest_port][/tcp|udp], comma-separated")
    p.add_argument("--bandwidth", metavar="RATE", help="cap on what the guest sends, e.g. 50mbit")
    p.add_argument("--bandwidth-in", metavar="RATE", help="cap on what the guest receives, e.g. 50mbit")


def build_parser():
    parser = _Parser(prog="vmsan", description="Per-microVM networking: TAP, namespace, outbound policy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("create", help="create a VM's network")
    p.add_argument("--id", metavar="ID", help="VM id (default: generated)")
    p.add_argument("--slot", metavar="N", help="slot to use (default: the lowest free)")
    p.add_argument("--no-netns", action="store_true", help="keep the TAP in the host namespace (weaker isolation)")
    p.add_argument("--tap-owner", metavar="UID", help="uid or user that may open the TAP (a jailed VMM)")
    _add_policy_flags(p, with_ports=True)
    p.add_argument("--json", action="store_true", help="print the VM's facts as one JSON object")

    p = sub.add_parser("network", help="change a running VM's policy or bandwidth")
    p.add_argument("vm", metavar="VM")
    _add_policy_flags(p, with_ports=False)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("port", help="add, remove or list published ports")
    psub = p.add_subparsers(dest="port_command", metavar="ACTION", parser_class=_Parser)
    psub.required = True
    for action in ("add", "remove"):
        q = psub.add_parser(action)
        q.add_argument("vm", metavar="VM")
        q.add_argument("ports", metavar="PORT", help="[host_ip:]host_port[:guest_port][/tcp|udp], comma-separated")
        q.add_argument("--json", action="store_true")
    q = psub.add_parser("list")
    q.add_argument("vm", metavar="VM")
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("list", help="list VMs")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="show a VM, its policy and its rules as the kernel has them")
    p.add_argument("vm", metavar="VM")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("remove", help="remove a VM's network and verify nothing is left")
    p.add_argument("vm", metavar="VM")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("doctor", help="check this host's kernel features and settings")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("resolver", help="run the host DNS resolver (foreground)")
    p.add_argument("--upstream", metavar="IP[:PORT]", help="upstream DNS server (default: from /etc/resolv.conf)")
    p.add_argument("--listen", metavar="IP", help="address to listen on (default: the resolver address)")
    p.add_argument("--ttl-floor", metavar="SECONDS", help="a learned address stays at least this long (default 30)")
    p.add_argument("--grace", metavar="SECONDS", help="a learned address stays this much longer than its TTL (default 30)")
    for name, (flag, low, high, default) in inputs.RESOLVER_BUDGETS.items():
        p.add_argument(flag, dest=name, metavar="N", help="per VM, unless its state says otherwise: %s (%d-%d, default %d)"
                       % (_BUDGET_HELP[name], low, high, default))
    return parser


_BUDGET_HELP = {"vm_queries_per_second": "queries a second, beyond them REFUSED",
                "vm_upstream_queries": "queries upstream at once, beyond them REFUSED",
                "vm_tcp_connections": "TCP connections open at once"}


def _out(args, data, text):
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text + ("\n" if text and not text.endswith("\n") else ""))


def _err(message):
    sys.stderr.write("vmsan: %s\n" % message)


def _policy_args(args):
    given = any(getattr(args, k) is not None for k in ("network_policy", "allowed_domain", "allowed_cidr", "denied_cidr"))
    if not given:
        return None
    return inputs.policy(args.network_policy, args.allowed_domain, args.allowed_cidr, args.denied_cidr)


def _facts_text(vm):
    lines = ["id:        %s" % vm["id"], "slot:      %d" % vm["slot"], "tap:       %s" % vm["tap"],
             "netns:     %s" % (vm["netns"] or "(host namespace)"),
             "guest:     %s/30 via %s, mac %s" % (vm["guest_ip"], vm["host_ip"], vm["mac"]),
             "policy:    %s" % vm["network_policy"]]
    for key, label in (("allowed_domains", "domains"), ("allowed_cidrs", "allowed"), ("denied_cidrs", "denied"),
                       ("published_ports", "ports")):
        if vm.get(key):
            lines.append("%-10s %s" % (label + ":", ",".join(vm[key])))
    for key in ("bandwidth", "bandwidth_in"):
        if vm.get(key):
            lines.append("%-10s %s bit/s" % (key + ":", vm[key]))
    lines.append("boot_args: %s" % vm["boot_args"])
    return "\n".join(lines)


def _changes_text(result):
    if not result.changes:
        return "no change"
    return "\n".join("changed: %s" % c for c in result.changes)


def _run(args):
    from ..lifecycle.manager import Manager
    manager = Manager()
    cmd = args.command
    if cmd == "create":
        vm_id = inputs.vm_id(args.id) if args.id is not None else None
        slot = inputs.slot(args.slot)
        policy = _policy_args(args)
        ports = inputs.port_list("published_ports", args.publish_port)
        bw = inputs.rate("bandwidth", args.bandwidth)
        bw_in = inputs.rate("bandwidth_in", args.bandwidth_in)
        owner = inputs.tap_owner(args.tap_owner)
        from ..lifecycle.manager import new_id
        result = manager.ensure(vm_id or new_id(), use_netns=not args.no_netns, slot=slot, policy=policy,
                                ports=ports, bandwidth=bw, bandwidth_in=bw_in, tap_owner=owner, must_be_new=True)
        for w in result.warnings:
            _err("warning: " + w)
        _out(args, result.vm, _facts_text(result.vm))
        return 0
    if cmd == "network":
        vm_id = inputs.vm_id(args.vm, "vm")
        policy = _policy_args(args)
        bw = inputs.rate("bandwidth", args.bandwidth) if args.bandwidth is not None else False
        bw_in = inputs.rate("bandwidth_in", args.bandwidth_in) if args.bandwidth_in is not None else False
        if policy is None and bw is False and bw_in is False:
            raise InputError("network_policy", "nothing to change", "--network-policy, a list flag, --bandwidth or --bandwidth-in")
        result = manager.update(vm_id, policy=policy, bandwidth=bw, bandwidth_in=bw_in)
        _out(args, dict(result.as_dict()), _changes_text(result))
        return 0
    if cmd == "port":
        vm_id = inputs.vm_id(args.vm, "vm")
        from .port_command import PortCommands
        return PortCommands(manager).run(args, _out)
    if cmd == "list":
        vms = manager.list()
        text = "\n".join("%-16s slot %-5d %-8s %-10s %s" % (v["id"], v["slot"], v["tap"], v["network_policy"],
                                                            v["netns"] or "(host)") for v in vms)
        if getattr(args, "json", False):
            json.dump(vms, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(text + ("\n" if text else ""))
        return 0
    if cmd == "show":
        from ..lifecycle.manager import require_root
        require_root()
        vm = manager.show(inputs.vm_id(args.vm, "vm"))
        from .show import rules_text
        _out(args, vm, _facts_text(vm) + "\n\nrules in the kernel:\n" + rules_text(vm["kernel_rules"]))
        return 0
    if cmd == "remove":
        result = manager.remove(inputs.vm_id(args.vm, "vm"))
        _out(args, result.as_dict(), _changes_text(result))
        return 0
    if cmd == "doctor":
        from .doctor import run_checks
        report = run_checks()
        text = "\n".join("%-4s %-28s %s" % (c["status"], c["name"], c["detail"]) for c in report["checks"])
        _out(args, report, text)
        return 0 if report["ok"] else 1
    if cmd == "resolver":
        from ..resolver.daemon import main as resolver_main
        upstream = inputs.upstream(args.upstream) if args.upstream else None
        budget = inputs.resolver_budget(**{name: getattr(args, name) for name in inputs.RESOLVER_BUDGETS})
        return resolver_main(upstream=upstream, listen=args.listen, ttl_floor=args.ttl_floor, grace=args.grace,
                             budget=budget)
    raise UsageError("unknown command %r" % cmd)


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _err(str(exc))
        sys.stderr.write(parser.format_usage())
        return 2
    try:
        return _run(args)
    except InputError as exc:
        _err(exc.render(inputs.label(exc.param, "cli")))
        return exc.exit_code
    except VmsanError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 1
    except OSError as exc:
        _err("system error: %s" % exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
