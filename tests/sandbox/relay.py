#!/usr/bin/env python3
"""Stand-in for the VMM: connects a VM's persistent TAP to a guest namespace.

Firecracker opens the VM's TAP (made beforehand by vmsan) and moves frames
between it and the guest's virtio-net device. This relay does the same, with a
second TAP called ``eth0`` inside the guest namespace playing the guest's NIC:

    VM netns: fhvmS  <==relay==>  guest netns: eth0  (guest kernel)

Both TAPs are opened like Firecracker opens them: IFF_TAP | IFF_NO_PI |
IFF_VNET_HDR with a 12-byte virtio-net header and checksum/TSO offloads, so
large GSO frames pass whole, header included, and TCP gets near line rate.

Usage: relay.py --vm-netns PATH --vm-tap NAME --guest-netns PATH [--guest-ifname eth0]
Prints ``ready`` on stdout once both TAPs are attached. Standalone on purpose
(stdlib only): it is a separate program, as the VMM is.
"""

import argparse
import ctypes
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
import threading

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08

VNET_HDR_SIZE = 12  # struct virtio_net_hdr_v1 (with num_buffers), as Firecracker
OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
# One read returns one frame: a GSO frame is at most 64 KiB plus the header.
# The margin covers link-layer headers on top of a full 64 KiB GSO packet.
FRAME_BUFFER = 65536 + VNET_HDR_SIZE + 256

# Errors a write into a TAP can give for one bad or untimely frame (device
# down, bad GSO header, queue full): drop that frame, as a NIC would.
DROPPED_WRITE_ERRORS = {errno.EIO, errno.EINVAL, errno.ENOBUFS, errno.EAGAIN, errno.ENOMEM}

libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(1)


def setns(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def open_tap(name):
    """Attach to TAP ``name`` in the thread's namespace (created if absent).

    /dev/net/tun binds the device lookup to the namespace the file was opened
    in, hence open() only after setns().
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        ifreq = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        fcntl.ioctl(fd, TUNSETIFF, ifreq)
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_SIZE))
        fcntl.ioctl(fd, TUNSETOFFLOAD, OFFLOADS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def pump(src, dst, direction, failed):
    """Copy frames (virtio-net header included) from ``src`` to ``dst`` forever."""
    buf = bytearray(FRAME_BUFFER)
    view = memoryview(buf)
    while True:
        try:
            n = os.readv(src, [buf])
        except InterruptedError:
            continue
        except OSError as e:
            # The TAP went away (e.g. the VM was removed): the VMM's NIC is dead.
            print(f"relay: {direction}: read failed: {e}", file=sys.stderr, flush=True)
            failed.set()
            return
        try:
            os.write(dst, view[:n])
        except OSError as e:
            if e.errno not in DROPPED_WRITE_ERRORS:
                print(f"relay: {direction}: write failed: {e}", file=sys.stderr, flush=True)
                failed.set()
                return


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vm-netns", required=True, help="namespace holding the VM's TAP")
    parser.add_argument("--vm-tap", required=True, help="the VM's persistent TAP, e.g. fhvm3")
    parser.add_argument("--guest-netns", required=True, help="the guest's namespace")
    parser.add_argument("--guest-ifname", default="eth0")
    args = parser.parse_args()

    die_with_parent()
    setns(args.vm_netns)
    try:
        socket.if_nametoindex(args.vm_tap)
    except OSError:
        # TUNSETIFF would quietly create a new TAP: the VM's must already exist.
        sys.exit(f"relay: no TAP {args.vm_tap!r} in {args.vm_netns}")
    vm_fd = open_tap(args.vm_tap)
    setns(args.guest_netns)
    guest_fd = open_tap(args.guest_ifname)

    failed = threading.Event()
    for src, dst, direction in (
        (guest_fd, vm_fd, "guest->vm"),
        (vm_fd, guest_fd, "vm->guest"),
    ):
        threading.Thread(target=pump, args=(src, dst, direction, failed), daemon=True).start()
    print("ready", flush=True)
    failed.wait()
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
