"""Real Linux guest fixture: a Debian kernel + busybox initramfs booted under QEMU microvm.

See docs/real-guest.md. Entry points: ``build.build()``, ``boot.boot_guest()``,
``boot.start_guest()``, and ``netns.ScratchNetns`` for tests that need a namespace.
"""
