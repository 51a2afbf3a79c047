"""How each VM of a state directory stands against the kernel: a cheap
status for ``vmsan list`` and a full check for ``vmsan doctor``.

* ``quick_status``: existence only (a stat of the namespace, an ioctl per
  device, setns into the namespace for its TAP): ``ok`` when every device
  is there and the host-side one is this VM's, ``missing`` when none is
  (after a reboot), ``drift`` otherwise. No rule or address is read, so
  ``list`` stays fast (it is on the warm path).
* ``check``: what a converge would change (check mode: it reads every
  device, address, route, sysctl, rule, set and shaper and changes
  nothing), as the reasons a VM is not as its record says.
"""

from collections import namedtuple

from ..model import addressing as A
from ..kernel import link_alias
from ..kernel import netns as ns
from ..kernel.rtnl_batch import link_index
from . import ownership
from .converge import converge

OK, DRIFT, MISSING = "ok", "drift", "missing"

VmCheck = namedtuple("VmCheck", "id status reasons")


def _present(record, host_links):
    """{device or namespace: present} of RECORD, host side first.
    HOST_LINKS: {name: alias} of the host namespace (one dump for all VMs)."""
    slot = record.slot
    if record.netns is None:
        return {A.tap_name(slot): A.tap_name(slot) in host_links}
    host_veth, vm_veth = A.veth_names(slot)
    found = {"namespace " + record.netns: ns.exists(record.netns), host_veth: host_veth in host_links}
    if found["namespace " + record.netns]:
        with ns.entered(record.netns):
            found[vm_veth] = link_index(vm_veth) is not None
            found[A.tap_name(slot)] = link_index(A.tap_name(slot)) is not None
    return found


def host_links():
    """{name: alias} of the calling thread's namespace (the host's)."""
    return link_alias.links()


def quick_status(record, home, links=None):
    """(status, reasons) of RECORD (a VmRecord of state directory HOME).
    LINKS: ``host_links()``, read once for many VMs."""
    links = host_links() if links is None else links
    found = _present(record, links)
    if not any(found.values()):
        return MISSING, ["no device of the VM exists (after a reboot: vmsan restore)"]
    reasons = ["%s is missing" % name for name, there in found.items() if not there]
    host_side = A.tap_name(record.slot) if record.netns is None else A.veth_names(record.slot)[0]
    if found.get(host_side):
        owner = ownership.parse(host_side, links[host_side])
        if owner.vm_id is not None and not ownership.is_mine(owner, home, record.id):
            reasons.append(ownership.describe(owner))
    if record.status != "ready":
        reasons.append("a create or change was interrupted (vmsan restore finishes it, vmsan remove removes it)")
    return (DRIFT if reasons else OK), reasons


def check(record, home):
    """VmCheck of RECORD: its quick status, and every change a converge
    would make as the reasons."""
    status, reasons = quick_status(record, home)
    if status == MISSING:
        return VmCheck(record.id, status, reasons)
    try:
        planned = converge(record, check_mode=True, home=home)
    except Exception as exc:      # a check reports what it cannot read, and goes on with the next VM
        return VmCheck(record.id, DRIFT, reasons + ["cannot be checked: %s" % exc])
    reasons += ["would %s" % change for change in planned]
    return VmCheck(record.id, DRIFT if reasons else OK, reasons)


def stale_devices(records, home):
    """Host-side devices marked as VMs of HOME that HOME has no record of
    (left by a crashed run): [Owner]."""
    ids = {r.id for r in records}
    return [o for o in ownership.host_users() if o.home == home and o.vm_id not in ids]
