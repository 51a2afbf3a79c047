"""The IFLA_AF_SPEC that switches one device's IPv4 forwarding, in wire form."""

import struct

from ansible_collections.vmsan.network.plugins.module_utils.kernel.netconf import forwarding_af_spec


def _attrs(data):
    out, offset = [], 0
    while offset < len(data):
        length, kind = struct.unpack_from("HH", data, offset)
        out.append((kind, data[offset + 4:offset + length]))
        offset += (length + 3) & ~3
    return out


def test_forwarding_af_spec_nests_one_entry():
    [(kind, af_spec)] = _attrs(forwarding_af_spec())
    assert kind == 26                                   # IFLA_AF_SPEC
    [(family, inet)] = _attrs(af_spec)
    assert family == 2                                  # AF_INET
    [(conf_kind, conf)] = _attrs(inet)
    assert conf_kind == 1                               # IFLA_INET_CONF
    # exactly one entry: IPV4_DEVCONF_FORWARDING (1) = 1; any other entry
    # would overwrite that part of the device's configuration
    assert _attrs(conf) == [(1, struct.pack("I", 1))]
    assert _attrs(_attrs(_attrs(_attrs(forwarding_af_spec(False))[0][1])[0][1])[0][1]) == [(1, struct.pack("I", 0))]
