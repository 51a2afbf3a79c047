"""A VM's own rules written into the entry bytes of an earlier rule of the
same shape, instead of being encoded again by python-iptables.

Why: of a fresh VM's rules, nine name that VM (its TAP, guest address, MAC,
gateway, chains and id), so no cache of encoded rules can hold them, and the
xtables parsers that python-iptables runs cost ~0.3 ms a rule: a third of a
create. Two such rules of different VMs differ only in fixed-size fields of
``struct ipt_entry``: addresses and masks, interface names and masks (all in
``struct ipt_ip``), the text of ``-m comment``, the address of ``-m mac``, and
the name of the user chain a ``-j`` jumps to. ``split`` tells those values
from the rest of a rule (its shape); ``patch`` writes new values into the
bytes python-iptables made for another rule of that shape.

What keeps it honest (iptables_apply.encode): the first rule of a shape is
encoded by python-iptables and becomes the template; the second is encoded
both ways, and the shape is patched from then on only if the two agree byte
for byte, else never. A unit test compares both ways over many VMs.
"""

import socket
import struct

from . import iptables_entries as entries
from .iptc_compat import LAYOUT as _L

if _L is not None:      # offsets in struct ipt_ip, from python-iptables' ctypes structures
    IFNAMSIZ = _L.ifnamsiz
    _SRC, _DST, _SMSK, _DMSK = _L.src, _L.dst, _L.smsk, _L.dmsk
    _IN, _OUT, _IN_MASK, _OUT_MASK = _L.iniface, _L.outiface, _L.iniface_mask, _L.outiface_mask
    _LABEL_AT, _LABEL_SIZE = _L.name_at, _L.name_size        # the target header's name
# python-iptables has no structures for these two match payloads (linux/netfilter/xt_*.h)
_COMMENT_SIZE = 256                                          # struct xt_comment_info
_MAC_SIZE = 6                                                # struct xt_mac_info.srcaddr
_ADDRESS = struct.Struct("!I")

# option -> kind of the value that follows it
_VALUE_OF = {"-s": "src", "-d": "dst", "-i": "in", "-o": "out", "--comment": "comment", "--mac-source": "mac"}


def split(tokens):
    """(shape, values) of rule TOKENS: the shape has a placeholder (a 1-tuple
    naming the kind) where a value of one of the kinds above stands, and a
    jump to one of our chains is a ``label``. None for a rule naming an IP
    set: the kernel resolves set names to indexes of one namespace."""
    if "--match-set" in tokens:
        return None
    shape, values = [], []
    previous = None
    for token in tokens:
        kind = _VALUE_OF.get(previous)
        if kind is None and previous == "-j" and token.startswith("vmsan-"):
            kind = "label"
        if kind is None:
            shape.append(token)
        else:
            shape.append((kind,))
            values.append(token)
        previous = token
    return tuple(shape), tuple(values)


def _address(raw, value, address_at, mask_at):
    address, _slash, bits = value.partition("/")
    bits = int(bits) if bits else 32
    if not 0 <= bits <= 32:
        raise ValueError("prefix length %d" % bits)
    mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
    number = _ADDRESS.unpack(socket.inet_pton(socket.AF_INET, address))[0]
    _ADDRESS.pack_into(raw, address_at, number & mask)
    _ADDRESS.pack_into(raw, mask_at, mask)


def _interface(raw, value, name_at, mask_at):
    name = value.encode("ascii")
    if not name or len(name) >= IFNAMSIZ or name.endswith(b"+"):
        raise ValueError("interface %r" % value)
    raw[name_at:name_at + IFNAMSIZ] = name.ljust(IFNAMSIZ, b"\0")
    # the terminating NUL is part of the match (an exact name, not a prefix)
    raw[mask_at:mask_at + IFNAMSIZ] = (b"\xff" * (len(name) + 1)).ljust(IFNAMSIZ, b"\0")


def _match_data_at(raw, name, size):
    """Offset of the data of RAW's one match called NAME, at least SIZE long."""
    found = [pos + entries.HEADER_SIZE for match, pos, length in entries.match_spans(bytes(raw))
             if match == name and length - entries.HEADER_SIZE >= size]
    if len(found) != 1:
        raise ValueError("template has %d %s matches" % (len(found), name))
    return found[0]


def _text(raw, at, size, value):
    data = value.encode("utf-8")
    if len(data) >= size:
        raise ValueError("%r is too long" % value)
    raw[at:at + size] = data.ljust(size, b"\0")


def _mac(raw, value):
    address = bytes.fromhex(value.replace(":", ""))
    if len(address) != _MAC_SIZE:
        raise ValueError("MAC %r" % value)
    at = _match_data_at(raw, "mac", _MAC_SIZE)
    raw[at:at + _MAC_SIZE] = address


def patch(template, shape, values):
    """Entry bytes of the rule of SHAPE with VALUES, written into TEMPLATE
    (the bytes of a rule of the same shape). Raises ValueError for a value it
    does not write the way python-iptables would."""
    raw = bytearray(template)
    kinds = [part[0] for part in shape if isinstance(part, tuple)]
    if len(kinds) != len(values) or len(set(kinds)) != len(kinds):
        raise ValueError("each kind of value must appear once")
    for kind, value in zip(kinds, values):
        if kind == "src":
            _address(raw, value, _SRC, _SMSK)
        elif kind == "dst":
            _address(raw, value, _DST, _DMSK)
        elif kind == "in":
            _interface(raw, value, _IN, _IN_MASK)
        elif kind == "out":
            _interface(raw, value, _OUT, _OUT_MASK)
        elif kind == "comment":
            _text(raw, _match_data_at(raw, "comment", _COMMENT_SIZE), _COMMENT_SIZE, value)
        elif kind == "mac":
            _mac(raw, value)
        elif kind == "label":
            _text(raw, entries.offsets(raw)[0] + _LABEL_AT, _LABEL_SIZE, value)
    return bytes(raw)
