"""``vmsan port add|remove|list VM ...``."""

from ..model.inputs import as_list, port_list, port_to_text
from ..plan.ports import with_added, without


class PortCommands(object):
    """``vmsan port add|remove|list VM ...``: ports of a running VM, its other
    ports untouched."""

    def __init__(self, manager):
        self.manager = manager

    def run(self, args, out):
        if args.port_command == "list":
            vm = self.manager.get(args.vm)
            lines = ["%s -> guest port %d/%s%s" % (port_to_text(p), p.guest_port, p.protocol,
                                                   "" if p.host_ip == "0.0.0.0" else " (only on %s)" % p.host_ip)
                     for p in port_list("published_ports", vm["published_ports"])]
            out(args, vm["published_ports"], "\n".join(lines) or "(no published ports)")
            return 0
        given = port_list("published_ports", args.ports)     # syntax and duplicates, before anything
        texts = as_list("published_ports", args.ports)

        def edit(current):
            if args.port_command == "add":
                return with_added(args.vm, current, given)
            return without(args.vm, current, texts)

        # the edit runs under the state lock, on the VM's ports as they are then
        result = self.manager.update(args.vm, ports=edit)
        out(args, result.as_dict(), "\n".join("changed: %s" % c for c in result.changes) or "no change")
        return 0
