"""A VM's cheap status for ``vmsan list``: existence only (a stat of the
namespace, an ioctl per device, setns into the namespace for its TAP):
``ok`` when every device is there and the host-side one is this VM's,
``missing`` when none is (after a reboot), ``drift`` otherwise. No rule or
address is read and neither the converge nor python-iptables is imported,
so ``list`` stays fast (it is on the warm path); lifecycle/health.py adds
the full check for ``vmsan doctor``.
"""

from ..model import addressing as A
from ..model.records import BrokenRecord
from ..kernel import link_alias
from ..kernel import netns as ns
from ..kernel.rtnl_batch import link_index
from . import ownership

OK, DRIFT, MISSING = "ok", "drift", "missing"


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


def statuses(store):
    """[(record, status, reasons)] of every VM of STORE (a StateStore;
    BrokenRecords: status "broken"), with one link dump for all of them."""
    out = []
    records = store.scan()
    links = host_links() if records else {}
    for record in records:
        if isinstance(record, BrokenRecord):
            out.append((record, "broken", [record.error]))
        else:
            out.append((record,) + quick_status(record, store.root, links))
    return out
