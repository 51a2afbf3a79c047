"""ipset adds and deletes as netlink messages, many per system call.

The messages are built with pyroute2's protocol layer
(``pyroute2.netlink.nfnetlink.ipset.ipset_msg``: fields and attributes
filled in, ``encode()``, the bytes read from ``.data``) and sent through
``netlink_wire``: one plain ``AF_NETLINK``/``NETLINK_NETFILTER`` socket with a
timeout, acks matched by sequence number, no event loop. pyroute2's ``IPSet`` sends one request and waits for its answer
per element (about 0.25-0.5 ms each through its asyncio core);
``IpsetSocket.add_many`` sends up to ``CHUNK`` messages in one ``send()``
and the kernel applies them one after another, so 1000 CIDRs cost one
encoding pass (about 0.1 ms per element) and a handful of system calls.

Two users:

* the resolver learns each allowed address with ``add()`` before it answers
  the guest (one message, one ack);
* ``ipsets.SetManager`` can fill a ``hash:net`` set with a VM's CIDR list in
  one batch::

      with netns.entered(vm_namespace):
          with IpsetSocket() as sock:
              sock.add_many("vmsan-web-allow-tmp",
                            [("203.0.113.0/24", None, None),
                             ("198.51.100.7", None, None)])
              sock.delete_many("vmsan-web-allow", ["192.0.2.0/24"])

Semantics, for every message:

* an entry is ``"ADDRESS"`` or ``"ADDRESS/PREFIX"`` (IPv4 or IPv6; the
  message's family follows the address). A prefix sends ``IPSET_ATTR_CIDR``
  (what a ``hash:net`` set stores; a ``hash:ip`` set takes it as a range of
  addresses). Host bits of a network are cleared, as ``ipset`` does.
* ``timeout`` (seconds, an int) and ``comment`` (text) are sent only when
  given; the set must have been created with ``timeout`` / ``comment``
  support for them (else the kernel refuses with an ipset error).
  Comments are cut to the kernel's 254 characters, non-ASCII replaced.
* "exist" semantics by default (no ``NLM_F_EXCL``), as ``ipset -exist``:
  adding an entry that is there refreshes its timeout and comment, deleting
  one that is not there is no error. ``exist=False`` makes both an error
  (``IPSET_ERR_EXIST``).

Failures: every message of a batch is tried (the kernel goes on after a
failed one); then the first failure, in the order given, is raised as
``IpsetError`` (a ``KernelError``) with the kernel's errno (``ENOENT``: no such
set; values >= 4096 are ipset's own codes, ``IPSET_ERR_*``), and
``.failures`` lists every ``(index, errno)``. Only the last message of each
chunk asks for an ack (``NLM_F_ACK``); the kernel acks a failed message
anyway, and since it handles a chunk in order, the last ack tells that the
chunk is done and every error of it has been read.

A socket belongs to the network namespace of the thread that opened it,
for its whole life: open it inside the namespace that holds the set, close
it before that namespace goes (an open socket keeps it alive).
"""

import errno
import ipaddress
import os
import socket
import struct
import threading

from ..model.errors import KernelError
from .netlink_wire import HEADER, NETLINK_NETFILTER, NetlinkSocket
from .third_party import pyroute2_submodules

try:
    pyroute2_submodules()       # only the submodules we use (third_party.py)
    from pyroute2.netlink import NLM_F_ACK, NLM_F_EXCL, NLM_F_REQUEST
    from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_IPSET
    from pyroute2.netlink.nfnetlink import ipset as _ipset
    from pyroute2.netlink.nfnetlink.ipset import IPSET_CMD_ADD, IPSET_CMD_DEL, IPSET_CMD_HEADER, ipset_msg
except ImportError:  # the faces name the missing library (missing_required_lib)
    _ipset = None
    IPSET_CMD_ADD, IPSET_CMD_DEL, IPSET_CMD_HEADER = 9, 10, 12

IPSET_PROTOCOL = 6          # the oldest protocol every ipset kernel accepts
IPSET_MAX_COMMENT = 254     # characters; the kernel's IPSET_MAX_COMMENT_SIZE is 255 with the NUL
CHUNK = 512                 # messages per send(); about 40 KiB of adds
LIST_SIZE = 200             # entries per list message (fill): ~5 KiB
LIST_SEND = 16              # list messages per send(): ~80 KiB, inside the socket's send buffer
RCVBUF = 4 << 20            # room for the error acks of a whole chunk

HEADER_SIZE = HEADER.size
_U32 = struct.Struct("=I")

IPSET_ERRORS = {value: name for name, value in (vars(_ipset).items() if _ipset is not None else ())
                if name.startswith("IPSET_ERR_") and isinstance(value, int)}


class IpsetError(KernelError):
    """The first failure of a batch. ``failures``: [(index, errno)] of
    every message the kernel refused, in the order given."""

    def __init__(self, err, text, failures=()):
        KernelError.__init__(self, err, text, describe(err))
        self.failures = list(failures)


def describe(err):
    if err >= 4096:
        return IPSET_ERRORS.get(err, "ipset error %d" % err)
    return os.strerror(err)


def _entry(entry):
    """("ADDRESS" or "ADDRESS/PREFIX") -> (family, address text, prefix or None)."""
    text = str(entry).strip()
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        return (socket.AF_INET if net.version == 4 else socket.AF_INET6), str(net.network_address), net.prefixlen
    address = ipaddress.ip_address(text)
    return (socket.AF_INET if address.version == 4 else socket.AF_INET6), str(address), None


def _comment(text):
    return str(text).encode("ascii", "replace").decode("ascii")[:IPSET_MAX_COMMENT]


def _data(entry, timeout=None, comment=None):
    """(family, the attributes of one IPSET_ATTR_DATA) of ENTRY."""
    family, address, prefix = _entry(entry)
    data = [["IPSET_ATTR_IP", {"attrs": [["IPSET_ATTR_IPADDR_IPV4" if family == socket.AF_INET
                                          else "IPSET_ATTR_IPADDR_IPV6", address]]}]]
    if prefix is not None:
        data.append(["IPSET_ATTR_CIDR", prefix])
    if timeout is not None:
        data.append(["IPSET_ATTR_TIMEOUT", int(timeout)])
    if comment is not None:
        data.append(["IPSET_ATTR_COMMENT", _comment(comment)])
    return family, data


def _encoded(command, family, set_name, payload, seq, exist, ack, extra=()):
    msg = ipset_msg()
    msg["header"]["type"] = (NFNL_SUBSYS_IPSET << 8) | command
    msg["header"]["flags"] = NLM_F_REQUEST | (NLM_F_ACK if ack else 0) | (0 if exist else NLM_F_EXCL)
    msg["header"]["sequence_number"] = seq
    msg["nfgen_family"] = family
    msg["attrs"] = ([["IPSET_ATTR_PROTOCOL", IPSET_PROTOCOL], ["IPSET_ATTR_SETNAME", set_name]]
                    + ([payload] if payload else []) + list(extra))
    msg.encode()
    return bytes(msg.data)


def header_message(set_name, seq=0):
    """IPSET_CMD_HEADER of SET_NAME, acknowledged: the kernel answers with
    the set's header and an ack, or with ENOENT when there is no such set
    (``ipset list -name``'s question, without listing members). Pure."""
    return _encoded(IPSET_CMD_HEADER, socket.AF_INET, set_name, None, seq, True, True)


def message(command, set_name, entry, timeout=None, comment=None, seq=0, exist=True, ack=True):
    """The netlink message (bytes) of an ipset ADD or DEL (COMMAND is
    ``IPSET_CMD_ADD`` or ``IPSET_CMD_DEL``) of ENTRY in SET_NAME. Pure."""
    family, data = _data(entry, timeout, comment)
    return _encoded(command, family, set_name, ["IPSET_ATTR_DATA", {"attrs": data}], seq, exist, ack)


def list_message(command, set_name, entries, seq=0, exist=True, ack=True):
    """One message that adds or deletes every entry of ENTRIES (addresses or
    CIDRs of one family), as an IPSET_ATTR_ADT list of IPSET_ATTR_DATA: what
    ``ipset restore`` sends. pyroute2 encodes it ~2.5x faster per entry than
    a message each, but the kernel stops at the first entry it refuses and
    answers for the message as a whole. Pure."""
    if not entries:
        raise ValueError("list_message needs at least one entry")
    items = [_data(entry) for entry in entries]
    families = {family for family, _data_attrs in items}
    if len(families) != 1:
        raise ValueError("list_message: entries of one address family only")
    payload = ["IPSET_ATTR_ADT", {"attrs": [["IPSET_ATTR_DATA", {"attrs": data}] for _f, data in items]}]
    # the kernel takes a list only with a line number (it reports the
    # failing entry's there, as for ipset restore)
    return _encoded(command, families.pop(), set_name, payload, seq, exist, ack, [["IPSET_ATTR_LINENO", 0]])


# -- the same messages, written into the bytes of an earlier one ----------------
# What pyroute2 takes ~0.12 ms to encode (one message per learned address: the
# learning thread's time, which holds the GIL that every VM's DNS answers
# wait for) differs from the message of another address to the same set only
# in fixed-size fields: the address, the prefix, the timeout, the comment's
# text when it is as long, the sequence number and the ack flag. ``Templates``
# finds those fields in a message pyroute2 encoded (by walking its netlink
# attributes, not by knowing where they land) and writes new values there.
# What keeps it honest, as kernel/iptables_template does for rules: the first
# entry of a shape is pyroute2's own message; the second is encoded both ways
# and the shape is patched from then on only if the two agree byte for byte.
_NLA_TYPE = 0x3FFF              # an attribute's type without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_NLMSG_FLAGS_AT, _NLMSG_SEQ_AT = 6, 8       # in struct nlmsghdr
_NFGENMSG = 4                   # struct nfgenmsg follows the header
_ATTR_DATA, _ATTR_IP, _ATTR_CIDR, _ATTR_TIMEOUT, _ATTR_COMMENT = 7, 1, 3, 6, 26    # linux/netfilter/ipset/ip_set.h
_U16, _BE32 = struct.Struct("=H"), struct.Struct("!I")
MAX_TEMPLATES = 512             # shapes kept per socket (a shape per set, flags and comment length)


def _attributes(wire, start, end):
    """(type without flags, payload offset, payload length) of each netlink
    attribute in WIRE[START:END]."""
    pos = start
    while pos + 4 <= end:
        length, atype = struct.unpack_from("=HH", wire, pos)
        if length < 4:
            return
        yield atype & _NLA_TYPE, pos + 4, length - 4
        pos += (length + 3) & ~3


def _fields(wire):
    """{field: (offset, size)} of an ADD or DEL message's address, prefix,
    timeout and comment payloads (those it has). None if the message has
    no IPSET_ATTR_DATA holding an IPSET_ATTR_IP with one address."""
    for atype, at, size in _attributes(wire, HEADER_SIZE + _NFGENMSG, len(wire)):
        if atype != _ATTR_DATA:
            continue
        found = {}
        for inner, inner_at, inner_size in _attributes(wire, at, at + size):
            if inner == _ATTR_IP:
                addresses = list(_attributes(wire, inner_at, inner_at + inner_size))
                if len(addresses) != 1:
                    return None
                found["address"] = addresses[0][1:]
            elif inner == _ATTR_CIDR:
                found["prefix"] = (inner_at, inner_size)
            elif inner == _ATTR_TIMEOUT:
                found["timeout"] = (inner_at, inner_size)
            elif inner == _ATTR_COMMENT:
                found["comment"] = (inner_at, inner_size)
        return found if "address" in found else None
    return None


class Templates(object):
    """Encodes ADD and DEL messages as ``message`` does, writing each one
    into the bytes of an earlier message of the same shape. Not thread-safe
    (IpsetSocket holds its lock around it)."""

    def __init__(self):
        self._shapes = {}       # shape -> [template bytes, fields, verified] or None (never patched)
        self.patched = 0        # messages written into a template (for the tests)

    def message(self, command, set_name, entry, timeout=None, comment=None, seq=0, exist=True, ack=True):
        packed, family, prefix = _packed(entry)
        text = None if comment is None else _comment(comment).encode("ascii")
        shape = (command, set_name, family, prefix is None, timeout is None, None if text is None else len(text),
                 exist)
        known = self._shapes.get(shape, False)
        if known is False:
            wire = message(command, set_name, entry, timeout, comment, seq, exist, ack)
            if len(self._shapes) >= MAX_TEMPLATES:
                self._shapes.clear()
            fields = _fields(wire)
            self._shapes[shape] = None if fields is None else [wire, fields, False]
            return wire
        if known is None:
            return message(command, set_name, entry, timeout, comment, seq, exist, ack)
        template, fields, verified = known
        buf = bytearray(template)
        flags = _U16.unpack_from(template, _NLMSG_FLAGS_AT)[0]
        _U16.pack_into(buf, _NLMSG_FLAGS_AT, (flags | NLM_F_ACK) if ack else (flags & ~NLM_F_ACK))
        _U32.pack_into(buf, _NLMSG_SEQ_AT, seq & 0xFFFFFFFF)
        at, size = fields["address"]
        buf[at:at + size] = packed
        if prefix is not None:
            buf[fields["prefix"][0]] = prefix
        if timeout is not None:
            _BE32.pack_into(buf, fields["timeout"][0], int(timeout))
        if text is not None:
            at = fields["comment"][0]
            buf[at:at + len(text)] = text
        wire = bytes(buf)
        if not verified:
            if wire != message(command, set_name, entry, timeout, comment, seq, exist, ack):
                self._shapes[shape] = None          # this shape is never patched
                return message(command, set_name, entry, timeout, comment, seq, exist, ack)
            known[2] = True
        self.patched += 1
        return wire


def _packed(entry):
    """(address bytes, family, prefix or None) of ENTRY as ``_entry`` reads
    it; a plain address without ipaddress (the learning thread's case)."""
    if isinstance(entry, str) and "/" not in entry:
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                return socket.inet_pton(family, entry), family, None
            except OSError:
                continue
    family, address, prefix = _entry(entry)
    return socket.inet_pton(family, address), family, prefix


def add_message(set_name, entry, timeout=None, comment=None, seq=0, exist=True, ack=True):
    """IPSET_CMD_ADD of ENTRY (see ``message``)."""
    return message(IPSET_CMD_ADD, set_name, entry, timeout, comment, seq, exist, ack)


def del_message(set_name, entry, seq=0, exist=True, ack=True):
    """IPSET_CMD_DEL of ENTRY (see ``message``)."""
    return message(IPSET_CMD_DEL, set_name, entry, None, None, seq, exist, ack)


class IpsetSocket(object):
    """A netfilter netlink socket for ipset adds and deletes (see the
    module's docstring). Thread-safe; a context manager."""

    def __init__(self, timeout=2.0, channel=None):
        """CHANNEL: a NetlinkSocket to use (tests); else one is opened."""
        self.channel = channel or NetlinkSocket(NETLINK_NETFILTER, "ipset", timeout, rcvbuf=RCVBUF, cap_ack=True)
        self._seq = 0
        self._lock = threading.Lock()
        self.templates = Templates()

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- one entry -------------------------------------------------------------
    def add(self, set_name, address, timeout=None, comment=None, exist=True):
        """Add (or, with exist semantics, refresh) ADDRESS ("IP" or
        "IP/PREFIX") in SET_NAME; raises IpsetError (a KernelError) with the
        kernel's errno."""
        self.add_many(set_name, [(address, timeout, comment)], exist=exist)

    def delete(self, set_name, address, exist=True):
        """Delete ADDRESS from SET_NAME (no error if it is not there, unless
        EXIST is False)."""
        self.delete_many(set_name, [address], exist=exist)

    def existing(self, set_names):
        """The names among SET_NAMES that are sets in this namespace: one
        header request each, sent in one write (what pyroute2's IPSet
        socket would answer one at a time, after its asyncio start)."""
        names = list(set_names)
        if not names:
            return set()
        with self._lock:
            first = self._seq + 1
            self._seq = (self._seq + len(names)) & 0xFFFFFFFF
            seqs = [(first + i) & 0xFFFFFFFF for i in range(len(names))]
            self.channel.send(b"".join(header_message(name, seq) for name, seq in zip(names, seqs)))
            acks = self.channel.acks(seqs[-1], set(seqs))
        found = set()
        for name, seq in zip(names, seqs):
            err = acks.get(seq)
            if err == 0:
                found.add(name)
            elif err not in (errno.ENOENT, None):
                raise IpsetError(err, "ipset header %s" % name)
        return found

    # -- batches ---------------------------------------------------------------
    def add_many(self, set_name, entries, exist=True):
        """Add every (address_or_cidr, timeout_or_None, comment_or_None) of
        ENTRIES to SET_NAME, CHUNK messages per send(). Returns how many
        were sent; raises IpsetError for the first failure."""
        items = [(IPSET_CMD_ADD, entry, timeout, comment) for entry, timeout, comment in entries]
        return self._batch(set_name, items, exist)

    def delete_many(self, set_name, addresses, exist=True):
        """Delete every address or CIDR of ADDRESSES from SET_NAME."""
        return self._batch(set_name, [(IPSET_CMD_DEL, entry, None, None) for entry in addresses], exist)

    def fill(self, set_name, entries):
        """Add ENTRIES (addresses or CIDRs, one family, no timeout or
        comment) to SET_NAME, LIST_SIZE to a message (``list_message``).
        For a set that was just created, where no entry can fail; a failure
        is raised as IpsetError for the first message that had one, and the
        entries after it in that message were not added."""
        entries = list(entries)
        chunks = [entries[i:i + LIST_SIZE] for i in range(0, len(entries), LIST_SIZE)]
        with self._lock:
            first = self._seq + 1
            self._seq = (self._seq + len(chunks)) & 0xFFFFFFFF
            wires = [list_message(IPSET_CMD_ADD, set_name, chunk, seq=(first + i) & 0xFFFFFFFF)
                     for i, chunk in enumerate(chunks)]
            failures = self._send(wires, first, LIST_SEND)
        if failures:
            index, err = failures[0]
            raise IpsetError(err, "ipset add %s (entries %d-%d)"
                             % (set_name, index * LIST_SIZE + 1, index * LIST_SIZE + len(chunks[index])), failures)
        return len(entries)

    def _send(self, wires, first, per_send):
        """Send WIRES (sequence numbers from FIRST), PER_SEND to a send(),
        reading each group's acks: [(index, errno)] of the failed ones."""
        failures = []
        for start in range(0, len(wires), per_send):
            group = wires[start:start + per_send]
            self.channel.send(b"".join(group))
            failures += [(start + index, err) for index, err in self._collect(first + start, len(group))]
        return failures

    def _batch(self, set_name, items, exist):
        with self._lock:
            # Everything is encoded before anything is sent: an entry that
            # is not an address raises ValueError with the set untouched.
            first = self._seq + 1
            self._seq = (self._seq + len(items)) & 0xFFFFFFFF
            encode = self.templates.message
            wires = [encode(command, set_name, entry, timeout, comment, seq=(first + i) & 0xFFFFFFFF,
                            exist=exist, ack=(i + 1) % CHUNK == 0 or i == len(items) - 1)
                     for i, (command, entry, timeout, comment) in enumerate(items)]
            failures = self._send(wires, first, CHUNK)
        if failures:
            index, err = failures[0]
            command, entry = items[index][:2]
            raise IpsetError(err, "ipset %s %s %s" % ("add" if command == IPSET_CMD_ADD else "del", set_name, entry),
                             failures)
        return len(items)

    def _collect(self, first, count):
        """Read acks until the one of the chunk's last message: [(index in
        the chunk, errno)] of the failed messages."""
        wanted = {(first + i) & 0xFFFFFFFF: i for i in range(count)}
        acks = self.channel.acks((first + count - 1) & 0xFFFFFFFF, wanted)
        return sorted((wanted[seq], err) for seq, err in acks.items() if err)


def is_missing_set(exc):
    """Whether EXC says that the set does not exist."""
    return getattr(exc, "errno", None) == errno.ENOENT
