"""How many addresses each VM's learned set holds, read from the kernel
(``vmsan metrics`` run in-process, where no resolver keeps count)."""

from ..kernel import netns as ns
from ..kernel.ipsets import SetManager
from ..model.errors import VmsanError
from ..model.records import BrokenRecord
from ..plan import firewall as fp


def learned_counts(store):
    """{vm id: members of its learned set} of the VMs in STORE that learn names."""
    out = {}
    for record in store.scan():
        if isinstance(record, BrokenRecord) or not record.policy.learns_names:
            continue
        if record.netns is not None and not ns.exists(record.netns):
            continue
        try:
            with ns.entered(record.netns), SetManager() as sets:
                name = fp.set_name(record.id, "dns")
                out[record.id] = len(sets.members(name)) if sets.exists(name) else 0
        except (OSError, VmsanError):
            continue
    return out
