"""Who owns a slot's devices, from the kernel (docs/architecture.md,
"Ownership"). A state directory's files say which VMs it has; only the
kernel knows which devices exist, and more than one state directory (or a
stale device of a crashed run) may use one host. So:

* every host-side device vmsan makes (the host end of a VM's veth; the TAP
  with --no-netns) carries an owner marker in its alias (IFLA_IFALIAS, set
  in the netlink batch that configures the device):
  ``vmsan id=<VM id> home=<state directory>``;
* a create takes a slot only if none of its host-side devices exists or they
  are the same VM's; a foreign or stale device is reported with its owner;
* a teardown deletes a device only if it is this VM's (or carries no
  marker: made by a version before markers);
* the host-wide parts (chains, the resolver's address) go only when no
  vmsan device of any state directory is left in the host namespace.
"""

import re
from collections import namedtuple

from ..model import addressing as A
from ..kernel import link_alias
from ..kernel import netns as ns
from ..kernel.rtnl_batch import link_index

MARKER_PREFIX = "vmsan "
_MARKER_RE = re.compile(r"^vmsan id=(?P<id>\S+) home=(?P<home>.*)$")
_VM_DEVICE_RE = re.compile(r"^(vmsan-h|fhvm)[0-9]+$")
IFALIAS_MAX = 255               # IFALIASZ - 1

Owner = namedtuple("Owner", "device vm_id home")     # vm_id and home None: no marker


def marker(home, vm_id):
    """The alias that marks a device as VM_ID's of state directory HOME."""
    return ("vmsan id=%s home=%s" % (vm_id, home))[:IFALIAS_MAX]


def parse(device, text):
    """The Owner that the alias TEXT of DEVICE names (vm_id None: no marker)."""
    match = _MARKER_RE.match(text or "")
    if not match:
        return Owner(device, None, None)
    return Owner(device, match.group("id"), match.group("home"))


def describe(owner):
    """How a message names OWNER."""
    if owner.vm_id is None:
        return "device %s exists without a vmsan owner marker (made by hand, or by an older vmsan)" % owner.device
    return "device %s belongs to VM %s of state directory %s" % (owner.device, owner.vm_id, owner.home)


def host_devices(slot, use_netns):
    """The names of SLOT's devices in the host namespace."""
    names = [A.veth_names(slot)[0], A.tap_name(slot)]
    return names if use_netns else names[::-1]


def slot_owner(slot):
    """The Owner of the first of SLOT's host-side devices that exists (in
    the calling thread's namespace, the host's), or None when none does:
    an ioctl per device, and a netlink request only for one that exists."""
    for device in host_devices(slot, True):
        if link_index(device) is not None:
            text = link_alias.alias(device)
            if text is not None:
                return parse(device, text)
    return None


def is_mine(owner, home, vm_id):
    """Whether OWNER is VM_ID of HOME (an unmarked device counts as nobody's)."""
    return owner.vm_id == vm_id and owner.home == home


def device_deletable(device, home, vm_id):
    """Whether a teardown of VM_ID (of HOME) may delete DEVICE: it is that
    VM's, or it has no marker (an older vmsan's device at the VM's slot)."""
    text = link_alias.alias(device)
    if text is None:
        return False
    owner = parse(device, text)
    return owner.vm_id is None or is_mine(owner, home, vm_id)


def host_users():
    """The host namespace's vmsan devices: [Owner] (marked or not) of every
    link that a VM of any state directory has there."""
    return [parse(name, text) for name, text in sorted(link_alias.links().items())
            if _VM_DEVICE_RE.match(name) or (text or "").startswith(MARKER_PREFIX)]


def namespace_owner(name):
    """What owns network namespace NAME, from the markers of its links."""
    with ns.entered(name):
        found = [parse(dev, text) for dev, text in sorted(link_alias.links().items()) if text]
    marked = [o for o in found if o.vm_id is not None]
    if marked:
        return describe(marked[0])
    return "it has no vmsan owner marker (made by hand, by an older vmsan, or left by a crashed run)"
