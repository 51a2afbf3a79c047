"""How each VM of a state directory stands against the kernel for
``vmsan doctor``: its quick status (lifecycle/status.py, what ``vmsan list``
shows) and what a converge would change (check mode: it reads every
device, address, route, sysctl, rule, set and shaper and changes nothing),
as the reasons a VM is not as its record says.
"""

from collections import namedtuple

from . import ownership
from .converge import converge
from .status import DRIFT, MISSING, OK, quick_status  # noqa: F401 (OK: the statuses doctor names)

VmCheck = namedtuple("VmCheck", "id status reasons")


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
