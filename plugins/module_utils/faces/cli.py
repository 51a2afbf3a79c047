"""The ``vmsan`` command: parses flags, calls the core, renders the result.

Exit status: 0 success, 1 runtime failure, 2 bad input (argparse's own
usage errors included). With --json one JSON document goes to stdout; every
message goes to stderr.

``run(argv, stdout, stderr, env)`` runs one command and returns its exit
status, writing only to the streams it is given and reading VMSAN_HOME from
ENV: a long-running daemon can run a command in-process and hand back the
same bytes and status as a ``vmsan`` process would. ``main()`` is that with
the process's own streams.

This module imports neither pyroute2 nor python-iptables (nor the layers
that do): each handler imports the lifecycle when it runs, so ``vmsan
--help``, a usage error or a bad flag costs no netlink or libiptc import.
"""

import argparse
import functools
import json
import os
import sys

from ..model import addressing as A
from ..model import events as E
from ..model import inputs
from ..model.errors import ConflictError, InputError, VmsanError
from ..model.facts import broken, facts
from ..model.records import KEEP, BrokenRecord
from ..model.release import VERSION
from .client import quiet_on_closed_pipe


class UsageError(Exception):
    """A usage error, with the parser (the subcommand's) whose usage fits."""

    def __init__(self, message, parser=None):
        Exception.__init__(self, message)
        self.parser = parser


class HelpRequested(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting, so ``run``
    decides where the text goes."""

    def error(self, message):
        raise UsageError(message, self)

    def print_help(self, file=None):
        raise HelpRequested(self.format_help())

    def exit(self, status=0, message=None):
        raise UsageError(message or "exit %d" % status, self)


class _Version(argparse.Action):
    """``vmsan --version``: the version, on stdout, through ``run``."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        argparse.Action.__init__(self, option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        raise HelpRequested("vmsan %s\n" % VERSION)


JSON_HELP = "print the result as one JSON document on stdout (messages stay on stderr)"
VM_HELP = "the VM's id (as vmsan create --id gave it or generated it)"


def _json_flag(p, text=JSON_HELP):
    p.add_argument("--json", action="store_true", help=text)


def _vm_arg(p):
    p.add_argument("vm", metavar="VM", help=VM_HELP)


def _add_policy_flags(p, with_ports):
    p.add_argument("--network-policy", metavar="POLICY",
                   help="allow-all (default), deny-all or custom")
    p.add_argument("--audit", action="store_true",
                   help="with a custom policy: let through what its lists would refuse, and log it as 'would "
                        "refuse' (see vmsan events, vmsan policy suggest)")
    p.add_argument("--allowed-domain", metavar="LIST", help="comma-separated names; *.example.com for subdomains")
    p.add_argument("--allowed-cidr", metavar="LIST", help="comma-separated IPv4 CIDRs the guest may reach")
    p.add_argument("--denied-cidr", metavar="LIST", help="comma-separated IPv4 CIDRs the guest may never reach")
    if with_ports:
        p.add_argument("--publish-port", metavar="LIST", help="[host_ip:]host_port[:guest_port][/tcp|udp], comma-separated")
    p.add_argument("--bandwidth", metavar="RATE", help="cap on what the guest sends, e.g. 50mbit")
    p.add_argument("--bandwidth-in", metavar="RATE", help="cap on what the guest receives, e.g. 50mbit")
    _add_limit_flags(p)


LIMIT_HELP = {
    "limit_connections": "connections the guest may have tracked at once (default %d)",
    "limit_dns_queries_per_second": "DNS queries per second (default: the resolver's --vm-queries-per-second)",
    "limit_dns_upstream_queries": "DNS queries in flight upstream (default: the resolver's --vm-upstream-queries)",
    "limit_dns_tcp_connections": "DNS TCP connections at once (default: the resolver's --vm-tcp-connections)",
}


def _add_limit_flags(p):
    """The VM's budgets (docs/cli.md, "Budgets"): N, or 'default'."""
    from ..model.records import DEFAULT_CONNECTIONS
    for name in inputs.VM_LIMITS:
        text = LIMIT_HELP[name]
        p.add_argument(inputs.label(name, "cli"), metavar="N", dest=name,
                       help=(text % DEFAULT_CONNECTIONS) if "%d" in text else text)


def _limit_args(args):
    return inputs.limits(*(getattr(args, name) for name in inputs.VM_LIMITS))


@functools.lru_cache(maxsize=1)
def build_parser():
    """The argument parser, built once per process: building it costs 5-20
    ms (argparse asks the terminal's size and gettext for every subcommand),
    most of a warm command's own time in the daemon; parse_args only reads
    it, so the daemon's command threads share it."""
    parser = _Parser(prog="vmsan", description="Per-microVM networking: TAP, namespace, outbound policy.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    # faces/client.py takes --no-daemon off the command line (anywhere on it)
    # before this parser sees it; it is here so that --help shows it
    parser.add_argument("--no-daemon", action="store_true",
                        help="run the command in this process, not through the vmsan daemon (docs/cli.md)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("create", help="create a VM's network")
    p.add_argument("--id", metavar="ID", help="VM id (default: generated)")
    p.add_argument("--slot", metavar="N", help="slot to use (default: the lowest free)")
    p.add_argument("--no-netns", action="store_true", help="keep the TAP in the host namespace (weaker isolation)")
    p.add_argument("--tap-owner", metavar="UID", help="uid or user that may open the TAP (a jailed VMM)")
    _add_policy_flags(p, with_ports=True)
    _json_flag(p, "print the VM's facts as one JSON object")

    p = sub.add_parser("network", help="change a running VM's policy or bandwidth",
                       description="Change a running VM's policy or bandwidth caps in place. The policy flags "
                                   "give the whole new policy; leave them all out and the VM keeps its current "
                                   "policy (likewise each cap left out keeps its value).")
    _vm_arg(p)
    _add_policy_flags(p, with_ports=False)
    _json_flag(p)

    p = sub.add_parser("port", help="add, remove or list published ports",
                       description="Publish ports of a running VM on the host, unpublish them, or list them.")
    psub = p.add_subparsers(dest="port_command", metavar="ACTION", parser_class=_Parser,
                            title="actions", description="add VM PORTS | remove VM PORTS | list VM")
    psub.required = True
    for action, text in (("add", "publish PORTS of VM, its other ports untouched"),
                         ("remove", "unpublish PORTS of VM")):
        q = psub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        _vm_arg(q)
        q.add_argument("ports", metavar="PORTS", help="[host_ip:]host_port[:guest_port][/tcp|udp], comma-separated")
        _json_flag(q)
    q = psub.add_parser("list", help="list VM's published ports", description="List VM's published ports.")
    _vm_arg(q)
    _json_flag(q)

    p = sub.add_parser("list", help="list VMs, each with its status against the kernel (ok, drift, missing)")
    _json_flag(p)
    p = sub.add_parser("restore", help="rebuild the network of every VM (or of the named ones) from its state")
    p.add_argument("vms", metavar="VM", nargs="*", help="the VMs to restore (default: every VM)")
    _json_flag(p)
    p = sub.add_parser("show", help="show a VM: policy, counters, learned addresses, its rules as the kernel has them")
    _vm_arg(p)
    _json_flag(p)
    p = sub.add_parser("remove", help="remove a VM's network and verify nothing is left")
    _vm_arg(p)
    _json_flag(p)
    p = sub.add_parser("doctor", help="check this host's kernel features and settings, and every VM")
    _json_flag(p)
    p = sub.add_parser("events", help="the log of refusals (what VMs tried and were stopped from)",
                       description="Print the event log: one line per refusal (or 'would refuse' in audit mode), "
                                   "oldest first. The host daemon writes it; rate limits per VM apply.")
    p.add_argument("vm", metavar="VM", nargs="?", help="only this VM's events (default: every VM's)")
    p.add_argument("--since", metavar="T",
                   help="only events since T: a time ago (30s, 10m, 2h, 1d) or a UTC time (2026-12-02T10:00:00Z)")
    p.add_argument("--follow", action="store_true", help="keep printing events as they are written (Ctrl-C ends)")
    _json_flag(p, "print each event as one JSON object per line")
    p = sub.add_parser("metrics", help="print the metrics once, in the Prometheus text format",
                       description="Print the metrics the daemon serves at --metrics-listen, once. Run in-process "
                                   "(no daemon) it reads the kernel's counters only.")
    p = sub.add_parser("policy", help="write policies from what VMs did (policy suggest VM)",
                       description="Policies from the event log.")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", parser_class=_Parser,
                            title="actions", description="suggest VM")
    psub.required = True
    q = psub.add_parser("suggest", help="the smallest allowlist that would have allowed what VM did",
                        description="Print the smallest --allowed-domain and --allowed-cidr lists that would have "
                                    "allowed what the event log shows VM tried (use audit mode to collect it), "
                                    "ready to paste into vmsan network.")
    _vm_arg(q)
    q.add_argument("--since", metavar="T", help="only events since T (as for vmsan events)")
    _json_flag(q)
    for command, what in (("daemon", "run the host daemon: DNS resolver, name guard, command server (foreground)"),
                          ("resolver", "the old name of 'vmsan daemon' (the same daemon, the same flags)")):
        _add_daemon_flags(sub.add_parser(command, help=what))
    return parser


def _add_daemon_flags(p):
    p.add_argument("--upstream", metavar="IP[:PORT]", help="upstream DNS server (default: from /etc/resolv.conf)")
    p.add_argument("--listen", metavar="IP", help="address to listen on (default: the resolver address)")
    p.add_argument("--ttl-floor", metavar="SECONDS", help="a learned address stays at least this long (default 30)")
    p.add_argument("--grace", metavar="SECONDS", help="a learned address stays this much longer than its TTL (default 30)")
    for name, (flag, low, high, default) in inputs.RESOLVER_BUDGETS.items():
        p.add_argument(flag, dest=name, metavar="N", help="per VM, unless its state says otherwise: %s (%d-%d, default %d)"
                       % (_BUDGET_HELP[name], low, high, default))
    p.add_argument("--socket-group", metavar="GROUP",
                   help="the command server also serves the members of GROUP (default: root only)")
    p.add_argument("--metrics-listen", metavar="IP:PORT",
                   help="serve Prometheus metrics at IP:PORT, e.g. 127.0.0.1:9464 (off unless given)")
    p.add_argument("--no-event-log", action="store_true",
                   help="write no event log (refusals are not logged, dropped packets not read)")


_BUDGET_HELP = {"vm_queries_per_second": "queries a second, beyond them REFUSED",
                "vm_upstream_queries": "queries upstream at once, beyond them REFUSED",
                "vm_tcp_connections": "TCP connections open at once"}


class Context(object):
    """What one run of a command may touch: its streams and its environment."""

    def __init__(self, args, stdout, stderr, env):
        self.args, self.stdout, self.stderr, self.env = args, stdout, stderr, env

    def out(self, data, text):
        """DATA as JSON with --json, else TEXT."""
        if getattr(self.args, "json", False):
            json.dump(data, self.stdout, indent=2, sort_keys=True)
            self.stdout.write("\n")
        else:
            self.stdout.write(text + ("\n" if text and not text.endswith("\n") else ""))

    def err(self, message):
        self.stderr.write("vmsan: %s\n" % message)

    def warn(self, warnings):
        for warning in warnings:
            self.err("warning: " + warning)

    def manager(self):
        # the lifecycle imports pyroute2 and python-iptables: only commands that need it pay for that
        from ..lifecycle.manager import Manager
        return Manager(self.env.get("VMSAN_HOME") or None)

    def state_dir(self):
        from ..lifecycle.state import home
        return home(self.env.get("VMSAN_HOME") or None)


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
def _policy_args(args):
    given = any(getattr(args, k) is not None for k in ("network_policy", "allowed_domain", "allowed_cidr", "denied_cidr"))
    if not given and not args.audit:
        return None
    return inputs.policy(args.network_policy, args.allowed_domain, args.allowed_cidr, args.denied_cidr, args.audit)


AUDIT_NOTE = " (audit mode: what the lists refuse passes, logged)"


def facts_text(record):
    """The facts of RECORD as ``create`` and ``show`` print them without --json."""
    slot, policy = record.slot, record.policy
    lines = ["id:        %s" % record.id, "slot:      %d" % slot, "tap:       %s" % A.tap_name(slot),
             "netns:     %s" % (record.netns or "(host namespace)"),
             "guest:     %s/30 via %s, mac %s" % (A.guest_ip(slot), A.host_ip(slot), A.guest_mac(slot)),
             "policy:    %s%s" % (policy.mode, AUDIT_NOTE if policy.audit else "")]
    for values, label in ((policy.allowed_domains, "domains"), (policy.allowed_cidrs, "allowed"),
                          (policy.denied_cidrs, "denied"), ([p.text for p in record.ports], "ports")):
        if values:
            lines.append("%-10s %s" % (label + ":", ",".join(values)))
    for value, key in ((record.bandwidth.send, "bandwidth"), (record.bandwidth.receive, "bandwidth_in")):
        if value:
            lines.append("%-10s %s bit/s" % (key + ":", value))
    lines.append("boot_args: %s" % A.boot_args(slot))
    return "\n".join(lines)


def result_data(result):
    """The JSON of a change result: ``changes`` as the lines users read,
    ``change_data`` as values (kind, subject, detail, netns) for programs."""
    out = {"changed": result.changed, "changes": [str(c) for c in result.changes],
           "change_data": [c.as_dict() for c in result.changes], "warnings": list(result.warnings)}
    if result.record is not None:
        out["vm"] = facts(result.record)
    return out


def changes_text(result):
    if not result.changes:
        return "no change"
    return "\n".join("changed: %s" % c for c in result.changes)


# --------------------------------------------------------------------------
# one handler per command: (context) -> exit status
# --------------------------------------------------------------------------
def _resolver_warnings(record):
    """A VM whose policy has allowed domains needs the host resolver: when
    none answers, say so (its guests would resolve nothing). One health
    query, answered by the resolver itself (resolver/health.py)."""
    if not (record.policy.mode == "custom" and record.policy.allowed_domains):
        return []
    from ..resolver.health import probe     # dnslib: only for a VM with domains
    answer = probe()
    if answer.ok:
        return []
    return ["VM %s has allowed domains, but no resolver answers: %s; its guests resolve nothing until "
            "vmsan-resolver runs (docs/domain-policies.md)" % (record.id, answer.detail)]


def cmd_create(ctx):
    args = ctx.args
    vm_id = inputs.vm_id(args.id) if args.id is not None else None
    slot = inputs.slot(args.slot)
    policy = _policy_args(args)
    ports = inputs.port_list("published_ports", args.publish_port)
    caps = inputs.bandwidth(args.bandwidth, args.bandwidth_in)
    owner = inputs.tap_owner(args.tap_owner)
    from ..lifecycle.manager import new_id
    limits = _limit_args(args)
    result = ctx.manager().ensure(vm_id or new_id(), use_netns=not args.no_netns, slot=slot, policy=policy,
                                  ports=ports, bandwidth=caps.send, bandwidth_in=caps.receive, tap_owner=owner,
                                  must_be_new=True, limits=limits)
    ctx.warn(result.warnings + _resolver_warnings(result.record))
    ctx.out(facts(result.record), facts_text(result.record))
    return 0


def cmd_network(ctx):
    args = ctx.args
    vm_id = inputs.vm_id(args.vm, "vm")
    policy = _policy_args(args)
    send = inputs.rate("bandwidth", args.bandwidth) if args.bandwidth is not None else KEEP
    receive = inputs.rate("bandwidth_in", args.bandwidth_in) if args.bandwidth_in is not None else KEEP
    limits = _limit_args(args)
    if policy is None and send is KEEP and receive is KEEP and limits is KEEP:
        raise InputError("network_policy", "nothing to change",
                         "--network-policy, a list flag, --bandwidth, --bandwidth-in or a --limit-* flag")
    result = ctx.manager().update(vm_id, policy=policy or KEEP, bandwidth=send, bandwidth_in=receive, limits=limits)
    ctx.warn(result.warnings + (_resolver_warnings(result.record) if policy is not None else []))
    ctx.out(result_data(result), changes_text(result))
    return 0


def _port_lines(record):
    return ["%s -> guest port %d/%s%s" % (p.text, p.guest_port, p.protocol,
                                          "" if p.host_ip == "0.0.0.0" else " (only on %s)" % p.host_ip)
            for p in record.ports]


def cmd_port(ctx):
    """``vmsan port add|remove|list VM ...``: ports of a running VM, its other
    ports untouched. The edit runs under the state lock, on the VM's ports
    as they are then."""
    from ..plan.ports import with_added, without
    args = ctx.args
    vm_id = inputs.vm_id(args.vm, "vm")
    if args.port_command == "list":
        record = ctx.manager().get(vm_id)
        ctx.out([p.text for p in record.ports], "\n".join(_port_lines(record)) or "(no published ports)")
        return 0
    if args.port_command == "add":
        given = inputs.port_list("published_ports", args.ports)     # syntax and duplicates, before anything

        def edit(current):
            return with_added(vm_id, current, given)
    else:
        selectors = inputs.port_selectors("published_ports", args.ports)

        def edit(current):
            return without(vm_id, current, selectors)
    result = ctx.manager().update(vm_id, ports=edit)
    ctx.warn(result.warnings)
    ctx.out(result_data(result), changes_text(result))
    return 0


LIST_FORMAT = "%-16s %-5s %-8s %-8s %-12s %-10s %-18s %s"
LIST_HEADER = LIST_FORMAT % ("ID", "SLOT", "STATUS", "TAP", "GUEST", "POLICY", "NETNS", "PORTS")


def _list_line(record, status, reasons):
    if isinstance(record, BrokenRecord):
        return "%-16s %-5s %-8s %s" % (record.id, "-", "broken", record.error)
    line = LIST_FORMAT % (record.id, record.slot, status, A.tap_name(record.slot), A.guest_ip(record.slot),
                          record.policy.mode + ("/audit" if record.policy.audit else ""), record.netns or "(host)",
                          ",".join(p.text for p in record.ports) or "-")
    return line.rstrip() + ("" if status == "ok" else "\n    " + "; ".join(reasons))


def _list_data(record, status, reasons):
    if isinstance(record, BrokenRecord):
        return broken(record)
    return dict(facts(record), status=status, status_reasons=reasons)


def cmd_list(ctx):
    """Each VM with its status against the kernel (lifecycle/status.py:
    existence checks only, and neither the lifecycle's manager nor
    python-iptables imported, so list stays fast)."""
    from ..lifecycle import status      # here: the verbs that do not list need none of it
    from ..lifecycle.state import StateStore
    rows = status.statuses(StateStore(ctx.env.get("VMSAN_HOME") or None))
    ctx.out([_list_data(*row) for row in rows],
            "\n".join([LIST_HEADER] + [_list_line(*row) for row in rows]) if rows else "(no VMs)")
    return 0


def cmd_restore(ctx):
    """``vmsan restore [VM...]``: every VM's network (or the named ones')
    rebuilt from its state; a second run changes nothing and says so."""
    ids = [inputs.vm_id(v, "vm") for v in ctx.args.vms]
    results = ctx.manager().restore(ids)
    lines = []
    for vm_id, result in results.items():
        ctx.warn(result.warnings)
        lines.append("%s: %s" % (vm_id, "%d changes" % len(result.changes) if result.changed else "no change"))
        lines += ["changed: %s" % c for c in result.changes]
    changed = any(r.changed for r in results.values())
    data = {"changed": changed, "vms": {vm_id: result_data(r) for vm_id, r in results.items()}}
    ctx.out(data, "\n".join(lines + ["restored %d VMs" % len(results) if changed else
                                     "nothing to restore: %d VMs as their state says" % len(results)]))
    return 0


def cmd_show(ctx):
    from ..lifecycle.manager import require_root
    from ..telemetry.inspect import inspect
    from .show import show_text
    require_root()
    manager = ctx.manager()
    record = manager.get(inputs.vm_id(ctx.args.vm, "vm"))
    seen = inspect(record)
    version = E.policy_version(record.policy)
    if ctx.args.json:
        # kernel_rules: the decoded rules, as before; rules_text: the iptables-save text with counters
        ctx.out(dict(facts(record), policy_version=version, counters=seen["counters"], learned=seen["learned"],
                     sets=seen["sets"], kernel_rules=manager.kernel_rules(record), rules_text=seen["rules"]), "")
    else:
        ctx.out(None, facts_text(record) + "\n" + show_text(version, seen))
    return 0


def cmd_remove(ctx):
    result = ctx.manager().remove(inputs.vm_id(ctx.args.vm, "vm"))
    ctx.out(result_data(result), changes_text(result))
    return 0


def cmd_doctor(ctx):
    from .doctor import run_checks
    report = run_checks(ctx.env.get("VMSAN_HOME") or None)
    text = "\n".join("%-4s %-28s %s" % (c["status"], c["name"], c["detail"]) for c in report["checks"])
    ctx.out(report, text)
    return 0 if report["ok"] else 1


def _events_dir(ctx):
    from ..telemetry.eventlog import directory
    return directory(ctx.state_dir())


def cmd_events(ctx):
    """``vmsan events [VM] [--since T] [--follow] [--json]``: the event log."""
    import time
    from ..telemetry import eventlog
    args = ctx.args
    vm = inputs.vm_id(args.vm, "vm") if args.vm is not None else None
    since = inputs.since(args.since, time.time()) if args.since is not None else None
    events = (eventlog.follow if args.follow else eventlog.read)(_events_dir(ctx), vm, since)
    try:
        for event in events:
            ctx.stdout.write((E.to_json(event) if args.json else E.text(event)) + "\n")
            if args.follow:
                ctx.stdout.flush()
    except KeyboardInterrupt:
        pass            # --follow ends with Ctrl-C
    return 0


def cmd_metrics(ctx):
    """``vmsan metrics``: the exposition text, once, of what this process
    can read: the kernel's counters and learned sets (the resolver's and the
    name guard's counters live in the daemon: its --metrics-listen)."""
    from ..telemetry import metrics
    from ..lifecycle.manager import require_root
    from ..lifecycle.state import StateStore
    from ..telemetry.learned import learned_counts
    require_root()
    store = StateStore(ctx.state_dir())
    registry = metrics.registry_with(metrics.VmsanCollector(store, learned=lambda: learned_counts(store)))
    ctx.stdout.write(metrics.exposition(registry).decode())
    return 0


def cmd_policy(ctx):
    """``vmsan policy suggest VM [--since T] [--json]``."""
    import shlex
    import time
    from ..plan import suggest
    from ..telemetry import eventlog
    args = ctx.args
    record = ctx.manager().get(inputs.vm_id(args.vm, "vm"))
    since = inputs.since(args.since, time.time()) if args.since is not None else None
    found = suggest.suggest(record.policy, eventlog.read(_events_dir(ctx), record.id, since))
    command = "vmsan network %s %s" % (record.id, " ".join(shlex.quote(w) for w in suggest.flags(found)))
    data = {"vm": record.id, "allowed_domains": list(found.allowed_domains), "allowed_cidrs": list(found.allowed_cidrs),
            "denied_cidrs": list(found.denied_cidrs), "names_seen": list(found.names),
            "addresses_seen": list(found.addresses), "events": found.events, "notes": list(found.notes),
            "command": command}
    lines = ["# %d events of VM %s read: %d names and %d addresses the policy %s" % (
        found.events, record.id, len(found.names), len(found.addresses),
        "would refuse (audit mode)" if record.policy.audit else "refused")]
    lines += ["# " + note for note in found.notes]
    lines.append(command)
    ctx.out(data, "\n".join(lines))
    return 0


def cmd_daemon(ctx):
    """``vmsan daemon`` (and its old name ``vmsan resolver``): the DNS
    resolver and the name guard (daemon/host.py) inside the warm path's
    command server (faces/warm.py), one process."""
    args = ctx.args
    upstream = inputs.upstream(args.upstream) if args.upstream else None
    listen = inputs.listen(args.listen) if args.listen else None
    ttl_floor = inputs.seconds("ttl_floor", args.ttl_floor, None)
    grace = inputs.seconds("grace", args.grace, None)
    budget = inputs.resolver_budget(**{name: getattr(args, name) for name in inputs.RESOLVER_BUDGETS})
    group = inputs.socket_group(args.socket_group) if args.socket_group is not None else None
    metrics = inputs.metrics_listen(args.metrics_listen) if args.metrics_listen is not None else None
    # dnslib, the sockets and the core behind the commands: only the daemon needs them
    from ..daemon.host import main as daemon_main
    from .warm import serving
    with serving(group=group):
        return daemon_main(upstream=upstream, listen=listen, ttl_floor=ttl_floor, grace=grace, budget=budget,
                           metrics_listen=metrics, event_log=not args.no_event_log)


HANDLERS = {"create": cmd_create, "network": cmd_network, "port": cmd_port, "list": cmd_list, "show": cmd_show,
            "remove": cmd_remove, "doctor": cmd_doctor, "events": cmd_events, "metrics": cmd_metrics,
            "policy": cmd_policy, "daemon": cmd_daemon, "resolver": cmd_daemon, "restore": cmd_restore}


def _label(args, param):
    """The CLI's name of PARAM: the ports of ``port add|remove`` are its
    PORTS argument, not --publish-port."""
    if param == "published_ports" and args.command == "port":
        return "PORTS"
    return inputs.label(param, "cli")


def run(argv, stdout, stderr, env=None):
    """Run the command ARGV (without the program name); return its exit
    status. Writes only to STDOUT and STDERR; ENV (default: the process's)
    gives VMSAN_HOME."""
    env = os.environ if env is None else env
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except HelpRequested as text:
        stdout.write(str(text))
        return 0
    except UsageError as exc:
        stderr.write("vmsan: %s\n" % exc)
        stderr.write((exc.parser or parser).format_usage())
        return 2
    ctx = Context(args, stdout, stderr, env)
    try:
        return HANDLERS[args.command](ctx)
    except (InputError, ConflictError) as exc:
        ctx.err(exc.render(_label(args, exc.param)) if exc.param else str(exc))
        return exc.exit_code
    except VmsanError as exc:
        ctx.err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        ctx.err("interrupted")
        return 1
    except BrokenPipeError:
        raise               # stdout's reader went away (| head): main exits quietly
    except OSError as exc:
        ctx.err("system error: %s" % exc)
        return 1


def main(argv=None):
    return quiet_on_closed_pipe(lambda: run(sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr))


if __name__ == "__main__":
    raise SystemExit(main())
