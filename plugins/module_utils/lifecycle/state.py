"""VM state files and slot allocation.

Layout under VMSAN_HOME (default /var/lib/vmsan):

* ``vms/<id>.json``  one file per VM, schema-versioned, written atomically
  (temporary file, its data written out, rename, fsync of the directory:
  one flush of the disk, ``StateStore.save``);
* ``slots/<n>``      a symlink to the VM id holding slot n; creating it is
  the reservation, so a free slot is found without reading any VM file;
* ``slots/.free``    a hint: every slot below the number it holds is taken.
  A create tries the hinted slot first instead of listing the directory
  (0.7 ms with a thousand VMs); the links stay the truth, so a missing,
  unreadable or low hint only costs a listing or a failed symlink;
* ``lock``           flock(2) held while allocating or changing a VM.

This module is the one place that reads and writes a state file's JSON
(``encode``, ``decode``) and the only code that knows its schema: every other
layer passes ``model.records.VmRecord``.
"""

import errno
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager

from ..model import inputs
from ..model.errors import ConflictError, InputError, NotFoundError, VmsanError
from ..model.records import DEFAULT_LIMITS, Bandwidth, BrokenRecord, DnsLimits, Policy, VmRecord

SCHEMA_VERSION = 1
DEFAULT_HOME = "/var/lib/vmsan"
FREE_HINT = ".free"


def home(state_dir=None):
    return state_dir or os.environ.get("VMSAN_HOME") or DEFAULT_HOME


# --------------------------------------------------------------------------
# the file's JSON (schema 1)
# --------------------------------------------------------------------------
def encode(record):
    """The JSON object of RECORD, schema 1."""
    policy = record.policy
    data = {
        "schema": SCHEMA_VERSION, "id": record.id, "slot": record.slot, "netns": record.netns,
        "policy": {"mode": policy.mode, "allowed_domains": list(policy.allowed_domains),
                   "allowed_cidrs": list(policy.allowed_cidrs), "denied_cidrs": list(policy.denied_cidrs),
                   "audit": policy.audit},
        "published_ports": [p.text for p in record.ports],
        "bandwidth": record.bandwidth.send, "bandwidth_in": record.bandwidth.receive,
        "tap_owner": record.tap_owner, "status": record.status, "created": record.created,
    }
    # the budgets, each key absent while the default applies (the resolver
    # reads "dns_limits", resolver.limits.RECORD_FIELD)
    if record.limits.connections is not None:
        data["connection_limit"] = record.limits.connections
    dns = record.limits.dns
    if dns.given:
        data["dns_limits"] = {k: v for k, v in vars(dns).items() if v is not None}
    return data


def _limits(data):
    """The Limits of a file's JSON: what the faces validated when they wrote
    it, checked again so that a hand-edited file cannot widen a budget."""
    connections = data.get("connection_limit")
    dns = data.get("dns_limits") or {}
    if connections is None and not dns:
        return DEFAULT_LIMITS
    if not isinstance(dns, dict) or set(dns) - set(vars(DnsLimits())):
        raise ValueError("dns_limits %r: expected an object of %s" % (dns, ", ".join(vars(DnsLimits()))))
    given = inputs.limits(connections, dns.get("queries_per_second"), dns.get("upstream_queries"),
                          dns.get("tcp_connections"))
    return given.over(DEFAULT_LIMITS)


def decode(data):
    """The VmRecord of a schema-1 JSON object; ValueError if it is not one.
    Keys that early schema-1 files lack take their defaults."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("schema") != SCHEMA_VERSION:
        raise ValueError("schema %r; this vmsan reads schema %d" % (data.get("schema"), SCHEMA_VERSION))
    policy = data.get("policy") or {}
    try:
        ports = tuple(inputs.port_spec("published_ports", text) for text in data.get("published_ports") or ())
        return VmRecord(
            id=data["id"], slot=int(data["slot"]), netns=data.get("netns"),
            policy=Policy(policy.get("mode", "allow-all"), tuple(policy.get("allowed_domains", ())),
                          tuple(policy.get("allowed_cidrs", ())), tuple(policy.get("denied_cidrs", ())),
                          bool(policy.get("audit", False))),
            ports=ports, bandwidth=Bandwidth(data.get("bandwidth"), data.get("bandwidth_in")),
            tap_owner=data.get("tap_owner"), status=data.get("status", "ready"), created=data.get("created"),
            limits=_limits(data))
    except KeyError as exc:
        raise ValueError("no %s" % exc)
    except (InputError, TypeError) as exc:
        raise ValueError(str(exc))


# sync_file_range(2) flags (linux/fs.h)
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4
_sync_file_range = []


def write_out(fd):
    """Write FD's data to the disk and wait for it, without a flush of the
    disk's cache: sync_file_range(2). The journal commit of the directory's
    fsync that follows the rename flushes the cache before it writes the
    commit (ext4, XFS), and records the blocks the write-out allocated and
    the rename together; so a power cut leaves the old record or the whole
    new one, as with fsync of the file and then of the directory, for one
    flush instead of two (docs/architecture.md, "Concurrency and crashes").
    Where the call is missing, the file is fsynced."""
    if not _sync_file_range:
        # ctypes only when a record is saved: ``vmsan list`` never needs it
        import ctypes
        call = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
        if call is not None:
            call.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
        _sync_file_range.append(call)
    call = _sync_file_range[0]
    if call is None or call(fd, 0, 0, _WAIT_BEFORE | _WRITE | _WAIT_AFTER) != 0:
        os.fsync(fd)


class StateStore(object):
    def __init__(self, state_dir=None):
        self.root = home(state_dir)
        self.vms_dir = os.path.join(self.root, "vms")
        self.slots_dir = os.path.join(self.root, "slots")

    def ensure(self):
        for d in (self.root, self.vms_dir, self.slots_dir):
            try:
                os.makedirs(d, mode=0o750, exist_ok=True)
            except OSError as exc:
                raise VmsanError("cannot create state directory %s: %s" % (d, exc.strerror))

    @contextmanager
    def locked(self):
        """Exclusive lock over allocation and changes of any VM."""
        self.ensure()
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- VM files ---------------------------------------------------------
    def path(self, vm_id):
        return os.path.join(self.vms_dir, vm_id + ".json")

    def exists(self, vm_id):
        return os.path.exists(self.path(vm_id))

    def load(self, vm_id):
        """The VmRecord of VM_ID; NotFoundError, or VmsanError for a file
        that cannot be read."""
        path = self.path(vm_id)
        try:
            with open(path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise NotFoundError("no VM with id %r (state directory %s)" % (vm_id, self.root))
        except (OSError, ValueError) as exc:
            raise VmsanError("state file %s is corrupt: %s" % (path, exc))
        try:
            return decode(data)
        except ValueError as exc:
            raise VmsanError("state file %s cannot be read: %s" % (path, exc))

    def save(self, record, durable=True):
        """Write RECORD atomically (a reader sees the old file or the new one).
        DURABLE: the record survives a power cut, at the cost of one flush
        of the disk: the file's data is written out (no flush), renamed into
        place, and the directory fsynced, whose journal commit flushes the
        disk's cache before it records the rename, the data's blocks with
        it (``write_out``). A record that only matters while the kernel
        state it describes exists (the "creating" marker, which lets a killed
        create be removed) need not be: a power cut takes the kernel state
        with it, and the marker still survives a killed process."""
        self.ensure()
        fd, tmp = tempfile.mkstemp(prefix=".%s." % record.id, dir=self.vms_dir)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(encode(record), handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                if durable:
                    write_out(handle.fileno())
            os.rename(tmp, self.path(record.id))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if not durable:
            return
        dfd = os.open(self.vms_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def delete(self, vm_id):
        try:
            os.unlink(self.path(vm_id))
        except FileNotFoundError:
            pass

    def ids(self):
        try:
            names = os.listdir(self.vms_dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and not n.startswith("."))

    def scan(self):
        """Every VM of the directory, by id: a VmRecord, or a BrokenRecord
        for a file that cannot be read (one such file must not stop the
        others from being listed or checked)."""
        result = []
        for vm_id in self.ids():
            try:
                result.append(self.load(vm_id))
            except NotFoundError:
                continue    # removed while we listed
            except VmsanError as exc:
                result.append(BrokenRecord(vm_id, str(exc)))
        return result

    # -- slots --------------------------------------------------------------
    def slot_holder(self, slot):
        try:
            return os.readlink(os.path.join(self.slots_dir, str(slot)))
        except FileNotFoundError:
            return None

    def used_slots(self):
        try:
            return {int(n) for n in os.listdir(self.slots_dir) if n.isdigit()}
        except FileNotFoundError:
            return set()

    def _hint_path(self):
        return os.path.join(self.slots_dir, FREE_HINT)

    def _read_hint(self):
        try:
            with open(self._hint_path()) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def _write_hint(self, slot):
        """Not fsynced: after a crash an old hint is still safe (see above)
        or unreadable (then the directory is listed)."""
        with open(self._hint_path(), "w") as handle:
            handle.write("%d\n" % slot)

    def lowest_free_slot(self, max_slot, skip=()):
        """The lowest slot no VM holds and not in SKIP, or None. Call under lock."""
        hint = self._read_hint()
        if hint is not None:
            slot = next((s for s in range(hint, max_slot + 1)
                         if s not in skip and self.slot_holder(s) is None), None)
            if slot is not None:
                return slot
        # no hint, or a hint that is wrong (edited by hand): list the links
        used = self.used_slots()
        return next((s for s in range(0, max_slot + 1) if s not in used and s not in skip), None)

    def reserve_slot(self, vm_id, wanted=None, max_slot=None, skip=()):
        """Reserve WANTED (or the lowest free slot not in SKIP: slots the
        kernel says are another's) for VM_ID. Call under lock."""
        self.ensure()
        if wanted is not None:
            if not self._link_slot(vm_id, wanted):
                raise ConflictError("slot %d is held by VM %r; leave the slot out for the lowest free one, or give "
                                    "a free slot" % (wanted, self.slot_holder(wanted)), "slot")
            return wanted
        while True:
            slot = self.lowest_free_slot(max_slot, skip)
            if slot is None:
                raise VmsanError("no free slot left (0-%s are all held)" % max_slot)
            if self._link_slot(vm_id, slot):
                if not skip:
                    self._write_hint(slot + 1)
                return slot

    def _link_slot(self, vm_id, slot):
        """Whether SLOT is now held by VM_ID (False: another VM holds it)."""
        link = os.path.join(self.slots_dir, str(slot))
        try:
            os.symlink(vm_id, link)
            return True
        except FileExistsError:
            return os.readlink(link) == vm_id

    def release_slot(self, slot, vm_id):
        link = os.path.join(self.slots_dir, str(slot))
        try:
            if os.readlink(link) == vm_id:
                # the hint first: a crash in between leaves it low, never high
                hint = self._read_hint()
                if hint is not None and slot < hint:
                    self._write_hint(slot)
                os.unlink(link)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
