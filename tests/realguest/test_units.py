"""Unit tests of the real-guest fixture's pure parts (no root, no QEMU)."""

from __future__ import annotations

import lzma
import struct

import pytest

from . import build as rg_build
from .boot import BASE_APPEND, _normalise_probes, design_boot_args, qemu_command


def _fake_elf() -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\0" * 57 + bytes(range(256)) * 64


def _fake_bzimage(payload: bytes, setup_sects: int = 3) -> bytes:
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x20F)
    pm_prefix = b"\x90" * 700  # decompressor code before the payload
    struct.pack_into("<II", setup, 0x248, len(pm_prefix), len(payload) + 4)
    return bytes(setup) + pm_prefix + payload + struct.pack("<I", 12345) + b"\xcc" * 300


def test_extract_vmlinux_from_header():
    elf = _fake_elf()
    xz = lzma.compress(elf, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    assert rg_build.extract_vmlinux(_fake_bzimage(xz)) == elf


def test_extract_vmlinux_by_magic_scan():
    import gzip

    elf = _fake_elf()
    image = bytearray(_fake_bzimage(gzip.compress(elf)))
    image[0x202:0x206] = b"XXXX"  # no boot header: fall back to the magic scan
    assert rg_build.extract_vmlinux(bytes(image)) == elf


def test_extract_vmlinux_rejects_garbage():
    with pytest.raises(rg_build.BuildError):
        rg_build.extract_vmlinux(b"\0" * 4096)


def _read_cpio(blob: bytes) -> dict:
    out, pos = {}, 0
    while True:
        hdr = blob[pos : pos + 110]
        assert hdr[:6] == b"070701"
        f = [int(hdr[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        pos += 110
        name = blob[pos : pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        data = blob[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data, (f[9], f[10]))


def test_cpio_writer_roundtrip():
    c = rg_build.Cpio()
    c.file("usr/bin/x", b"hello", 0o755)
    c.symlink("bin/sh", "/bin/busybox")
    c.chardev("dev/console", 5, 1)
    blob = c.bytes()
    assert len(blob) % 512 == 0
    entries = _read_cpio(blob)
    assert entries["usr/bin/x"][1] == b"hello" and entries["usr/bin/x"][0] == 0o100755
    assert "usr" in entries and "usr/bin" in entries
    assert entries["bin/sh"][1] == b"/bin/busybox" and entries["bin/sh"][0] & 0o170000 == 0o120000
    assert entries["dev/console"][2] == (5, 1)


def test_probe_spec_validation():
    assert _normalise_probes("tcp:1.2.3.4:5,dns:a.example.test") == ["tcp:1.2.3.4:5", "dns:a.example.test"]
    for bad in (["tcp 1.2.3.4:5"], ["a,b:1"], ["nocolon"], ["tcp:x y"]):
        with pytest.raises(ValueError):
            _normalise_probes(bad)


def test_qemu_command_shape():
    art = rg_build.Artifacts("k", "p", "v", "/c/vmlinux", "/c/initramfs.cpio", [], "bb")
    cmd = qemu_command(art, "/run/netns/x", "fhvm3", "02:00:ac:10:03:02", design_boot_args(3), ["ping:172.16.3.1"])
    assert cmd[:3] == ["nsenter", "--net=/run/netns/x", "--"]
    append = cmd[cmd.index("-append") + 1]
    assert append.startswith("console=ttyS0 ") and "tsc_early_khz=" in append
    assert "ip=172.16.3.2::172.16.3.1:255.255.255.252::eth0:off:172.16.3.1" in append
    assert append.endswith("vmsan.probes=ping:172.16.3.1")
    assert "tap,id=n0,ifname=fhvm3,script=no,downscript=no,vnet_hdr=on" in cmd
    assert "virtio-net-device,netdev=n0,mac=02:00:ac:10:03:02" in cmd
    assert cmd[cmd.index("-accel") + 1] == "tcg" and cmd[cmd.index("-M") + 1].startswith("microvm")
    with pytest.raises(ValueError):
        qemu_command(art, "/run/netns/x", "fhvm3", "bad-mac", "", [])
    assert "{tsc}" in BASE_APPEND


def test_design_boot_args():
    assert design_boot_args(0) == "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1"
    with pytest.raises(ValueError):
        design_boot_args(255)


def test_tamper_changes_only_the_named_field():
    from .tamper import other_slot_gateway, other_slot_mac, parse_ip_arg, tampered

    vm = {
        "slot": 0, "host_ip": "172.16.0.1", "guest_ip": "172.16.0.2", "mac": "06:00:ac:10:00:02",
        "boot_args": "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1",
        "firecracker": {"guest_mac": "06:00:ac:10:00:02", "host_dev_name": "fhvm0", "iface_id": "eth0"},
    }  # fmt: skip
    assert parse_ip_arg(vm["boot_args"])["dns1"] == ""
    gw = tampered(vm, gateway=other_slot_gateway(vm))
    assert gw["boot_args"] == "ip=172.16.0.2::172.16.1.1:255.255.255.252::eth0:off:172.16.0.1"
    dns = tampered(vm, dns="169.254.64.1")
    assert dns["boot_args"] == "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:169.254.64.1"
    mac = tampered(vm, mac=other_slot_mac(vm))
    assert mac["mac"] == mac["firecracker"]["guest_mac"] == "06:00:ac:10:01:02"
    assert mac["boot_args"] == vm["boot_args"] and vm["mac"] == "06:00:ac:10:00:02"  # the original is untouched
    with pytest.raises(ValueError):
        parse_ip_arg("console=ttyS0")
