"""Build the real-guest artifacts: an uncompressed Debian kernel and an initramfs.

Everything lands in ``tests/.cache/realguest/`` (gitignored):

* ``vmlinux-<kver>``: the ELF kernel, extracted from Debian's ``vmlinuz`` (bzImage).
  QEMU's ``-M microvm`` boots it through its PVH entry point, which is several times
  faster under TCG than letting the bzImage decompress itself.
* ``initramfs-<hash>.cpio``: an uncompressed cpio (newc) archive with busybox from
  ``busybox-static``, its applet links, the virtio modules the guest needs and
  ``init.sh`` (this directory) as ``/init``.
* ``manifest.json``: what was built from what; a second run that finds everything in
  place returns at once.

Only Debian packages are downloaded, through ``apt-get download``; nothing is installed
into the host system except ``qemu-system-x86`` when it is missing and
``ensure_host_tools(install=True)`` is asked for.

Command line: ``python -m tests.realguest.build [--refresh] [--kernel-version V]``
(or ``python tests/realguest/build.py``) prints the manifest as JSON.
"""

from __future__ import annotations

import argparse
import bz2
import fcntl
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE_DIR = Path(os.environ.get("VMSAN_REALGUEST_CACHE", REPO / "tests" / ".cache" / "realguest"))
INIT_SCRIPT = HERE / "init.sh"

# Modules the guest loads, in addition to their dependencies (resolved at build time).
# virtio_mmio: the transport of microvm's virtio devices (found through ACPI);
# virtio_net: the NIC.
GUEST_MODULES = ("virtio_mmio", "virtio_net")

# Bump when the layout of the initramfs (not the init script) changes.
INITRAMFS_FORMAT = 2

QEMU_PACKAGE = "qemu-system-x86"
QEMU_BINARY = "qemu-system-x86_64"


class BuildError(RuntimeError):
    pass


@dataclass
class Artifacts:
    kernel_version: str  # e.g. 6.1.0-56-amd64
    package: str  # linux-image-6.1.0-56-amd64
    package_version: str  # Debian version of that package
    vmlinux: str  # absolute paths
    initramfs: str
    modules: list  # module names in load order
    busybox_version: str

    @property
    def vmlinux_path(self) -> Path:
        return Path(self.vmlinux)

    @property
    def initramfs_path(self) -> Path:
        return Path(self.initramfs)


def log(msg: str) -> None:
    print(f"[realguest.build] {msg}", file=sys.stderr, flush=True)


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    try:
        return subprocess.run(cmd, **kw)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"command failed ({exc.returncode}): {' '.join(map(str, cmd))}\n{exc.stderr or ''}") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- apt


_APT_OPTS = ["-o", "APT::Sandbox::User=root", "-q"]


def _apt_cache_depends(pkg: str) -> list:
    out = subprocess.run(["apt-cache", "depends", pkg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        return []
    return re.findall(r"^\s*Depends:\s*(\S+)", out.stdout, re.M)


def current_kernel_package() -> str:
    """Name of the kernel image package that ``linux-image-amd64`` points at."""
    for attempt in range(2):
        for dep in _apt_cache_depends("linux-image-amd64"):
            if re.fullmatch(r"linux-image-[0-9].*-amd64(-unsigned)?", dep):
                return dep
        if attempt == 0:
            log("apt-cache knows no linux-image-amd64; running apt-get update")
            _run(["apt-get", *_APT_OPTS, "update"], stdout=subprocess.DEVNULL)
    raise BuildError("cannot find the current Debian kernel: `apt-cache depends linux-image-amd64` is empty")


def apt_download(pkg: str, dest: Path) -> Path:
    """``apt-get download`` one package into *dest*; returns the .deb path."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.deb"))
    try:
        _run(["apt-get", *_APT_OPTS, "download", pkg], cwd=dest)
    except BuildError:
        # stale or missing package lists: refresh once and retry
        log(f"apt-get download {pkg} failed; running apt-get update and retrying")
        _run(["apt-get", *_APT_OPTS, "update"], stdout=subprocess.DEVNULL)
        _run(["apt-get", *_APT_OPTS, "download", pkg], cwd=dest)
    debs = sorted(set(dest.glob(f"{pkg}_*.deb")) - before) or sorted(dest.glob(f"{pkg}_*.deb"))
    if not debs:
        raise BuildError(f"apt-get download {pkg} produced no .deb in {dest}")
    return debs[-1]


def deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


def deb_extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)])


def ensure_host_tools(install: bool = False) -> str:
    """Return the path of qemu-system-x86_64; install the Debian package if asked and missing."""
    qemu = shutil.which(QEMU_BINARY)
    if qemu:
        return qemu
    if not install:
        raise BuildError(f"{QEMU_BINARY} not found (apt-get install {QEMU_PACKAGE})")
    log(f"installing {QEMU_PACKAGE} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run(["apt-get", *_APT_OPTS, "install", "-y", "--no-install-recommends", QEMU_PACKAGE], env=env)
    except BuildError:
        _run(["apt-get", *_APT_OPTS, "update"], env=env)
        _run(["apt-get", *_APT_OPTS, "install", "-y", "--no-install-recommends", QEMU_PACKAGE], env=env)
    qemu = shutil.which(QEMU_BINARY)
    if not qemu:
        raise BuildError(f"{QEMU_BINARY} still missing after installing {QEMU_PACKAGE}")
    return qemu


# ------------------------------------------------------------ vmlinux extraction

# (name, magic) of the compressors a bzImage payload may use.
_MAGICS = (
    ("xz", b"\xfd7zXZ\x00"),
    ("gzip", b"\x1f\x8b\x08"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("bzip2", b"BZh"),
    ("lzma", b"\x5d\x00\x00"),
    ("lz4", b"\x02\x21\x4c\x18"),
    ("lzo", b"\x89LZO\x00"),
)


def _decompress(kind: str, data: bytes) -> bytes:
    """Decompress one stream of *kind*, ignoring anything after its end."""
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if kind == "lzma":
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)
    if kind == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(data)
    if kind == "bzip2":
        return bz2.BZ2Decompressor().decompress(data)
    if kind in ("zstd", "lz4", "lzo"):
        # Not in Python's standard library: use the Debian tool of the same name.
        tool = {"zstd": "zstd", "lz4": "lz4", "lzo": "lzop"}[kind]
        if not shutil.which(tool):
            raise BuildError(f"kernel payload is {kind}; install the Debian package providing `{tool}`")
        proc = subprocess.run([tool, "-dc"], input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not proc.stdout:
            raise BuildError(f"{tool} -dc failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout
    raise BuildError(f"unknown compression {kind}")


def _kind_at(data: bytes, offset: int) -> str | None:
    for kind, magic in _MAGICS:
        if data.startswith(magic, offset):
            return kind
    return None


def _is_elf_kernel(blob: bytes) -> bool:
    return blob[:4] == b"\x7fELF" and blob[4] == 2  # ELF64


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Return the ELF vmlinux contained in an x86 bzImage.

    First the exact way: the boot protocol header (>= 2.08) says where the compressed
    payload lies (``payload_offset``/``payload_length``, relative to the protected-mode
    code, which follows the ``setup_sects`` real-mode sectors). If that fails, scan for
    the magic bytes of every supported compressor and keep the first stream that
    decompresses to an ELF64 file.
    """
    if len(bzimage) > 0x250 and bzimage[0x202:0x206] == b"HdrS":
        setup_sects = bzimage[0x1F1] or 4
        (version,) = struct.unpack_from("<H", bzimage, 0x206)
        if version >= 0x208:
            payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
            start = (setup_sects + 1) * 512 + payload_offset
            payload = bzimage[start : start + payload_length]
            kind = _kind_at(payload, 0)
            if kind:
                try:
                    blob = _decompress(kind, payload)
                except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError):
                    blob = b""
                if _is_elf_kernel(blob):
                    return blob
    for kind, magic in _MAGICS:
        pos = bzimage.find(magic)
        while pos != -1:
            try:
                blob = _decompress(kind, bzimage[pos:])
            except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError, BuildError):
                blob = b""
            if _is_elf_kernel(blob):
                return blob
            pos = bzimage.find(magic, pos + 1)
    raise BuildError("no compressed ELF kernel found in the bzImage")


# ------------------------------------------------------------------- modules


def _elf_section(blob: bytes, wanted: str) -> bytes | None:
    """Contents of the ELF64 little-endian section named *wanted* (None if absent)."""
    if blob[:4] != b"\x7fELF" or blob[4] != 2 or blob[5] != 1:
        raise BuildError("not an ELF64 little-endian file")
    e_shoff = struct.unpack_from("<Q", blob, 0x28)[0]
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", blob, 0x3A)

    def header(i):
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
        return struct.unpack_from("<IIQQQQ", blob, e_shoff + i * e_shentsize)

    strtab = header(e_shstrndx)
    names = blob[strtab[4] : strtab[4] + strtab[5]]
    for i in range(e_shnum):
        h = header(i)
        name = names[h[0] : names.index(b"\0", h[0])].decode()
        if name == wanted:
            return blob[h[4] : h[4] + h[5]]
    return None


def module_depends(ko: bytes) -> list:
    """The ``depends=`` field of a module's .modinfo section (what depmod turns into modules.dep)."""
    info = _elf_section(ko, ".modinfo") or b""
    for field in info.split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[len(b"depends=") :].decode().split(",") if d]
    return []


def _modname(path: str) -> str:
    base = os.path.basename(path)
    base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
    return base.replace("-", "_")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return zlib.decompress(data, wbits=16 + zlib.MAX_WBITS)
    if name.endswith(".ko.zst"):
        return _decompress("zstd", data)
    return data


def collect_modules(modroot: Path, wanted=GUEST_MODULES) -> list:
    """Resolve *wanted* and their dependencies under ``lib/modules/<kver>``.

    Returns ``[(name, uncompressed .ko bytes)]`` in load order (dependencies first).
    Modules that are built into the kernel (modules.builtin) are skipped. The
    dependency graph comes from modules.dep when the package ships one, else from each
    module's own ``.modinfo`` (Debian's image packages leave modules.dep to depmod at
    install time, so the latter is the usual case).
    """
    builtin = set()
    bfile = modroot / "modules.builtin"
    if bfile.exists():
        builtin = {_modname(l) for l in bfile.read_text().split() if l}
    paths = {}
    for p in (modroot / "kernel").rglob("*.ko*"):
        if re.search(r"\.ko(\.(xz|gz|zst))?$", p.name):
            paths[_modname(p.name)] = p
    deps_from_file = {}
    depfile = modroot / "modules.dep"
    if depfile.exists():
        for line in depfile.read_text().splitlines():
            if ":" in line:
                mod, rest = line.split(":", 1)
                deps_from_file[_modname(mod)] = [_modname(d) for d in rest.split()]

    order: list = []
    blobs: dict = {}

    def visit(name: str, stack: tuple) -> None:
        name = name.replace("-", "_")
        if name in blobs or name in builtin:
            return
        if name in stack:
            raise BuildError(f"module dependency cycle: {' -> '.join(stack + (name,))}")
        if name not in paths:
            raise BuildError(f"module {name} not found under {modroot}")
        blob = _read_module(paths[name])
        deps = deps_from_file.get(name) if deps_from_file else module_depends(blob)
        for dep in deps or []:
            visit(dep, stack + (name,))
        blobs[name] = blob
        order.append(name)

    for mod in wanted:
        visit(mod, ())
    return [(m, blobs[m]) for m in order]


# -------------------------------------------------------------------- busybox


def busybox_binary(workdir: Path) -> Path:
    """The static busybox of the busybox-static package (installed, else downloaded)."""
    q = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", "busybox-static"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if q.returncode == 0 and "install ok installed" in q.stdout and Path("/bin/busybox").exists():
        return Path("/bin/busybox")
    cached = CACHE_DIR / "busybox-static" / "bin" / "busybox"
    if cached.exists():
        return cached
    log("busybox-static not installed: downloading it with apt-get download")
    deb = apt_download("busybox-static", workdir)
    deb_extract(deb, CACHE_DIR / "busybox-static")
    if not cached.exists():
        raise BuildError("busybox-static package has no /bin/busybox")
    return cached


def busybox_applets(busybox: Path) -> list:
    """Applet paths (``bin/sh``, ``sbin/ip``, ...) the binary provides."""
    out = subprocess.run([str(busybox), "--list-full"], stdout=subprocess.PIPE, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return [l.strip().lstrip("/") for l in out.stdout.splitlines() if l.strip()]
    out = _run([str(busybox), "--list"])
    return ["bin/" + l.strip() for l in out.stdout.splitlines() if l.strip()]


# ------------------------------------------------------------------------ cpio


class Cpio:
    """A minimal writer for the ``newc`` cpio format the kernel unpacks."""

    def __init__(self) -> None:
        self.parts: list = []
        self.ino = 1
        self.seen: set = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1, rdev=(0, 0)) -> None:
        name = name.lstrip("/")
        if name in self.seen:
            return
        self.seen.add(name)
        namez = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (
                self.ino,  # ino
                mode,
                0,  # uid
                0,  # gid
                nlink,
                0,  # mtime: fixed, so the archive is reproducible
                len(data),
                0,  # devmajor
                0,  # devminor
                rdev[0],  # rdevmajor
                rdev[1],  # rdevminor
                len(namez),
                0,  # check
            )
        )
        self.ino += 1
        rec = hdr.encode() + namez
        rec += b"\0" * (-len(rec) % 4)
        rec += data
        rec += b"\0" * (-len(rec) % 4)
        self.parts.append(rec)

    def dir(self, name: str) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def bytes(self) -> bytes:
        trailer = Cpio()
        trailer.ino = 0
        trailer._entry("TRAILER!!!", 0, nlink=1)
        out = b"".join(self.parts) + b"".join(trailer.parts)
        return out + b"\0" * (-len(out) % 512)


def build_initramfs(busybox: Path, modules: list, kver: str, init_script: bytes) -> bytes:
    c = Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "etc", "root"):
        c.dir(d)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        if applet in ("bin/busybox",):
            continue
        c.symlink(applet, "/bin/busybox")
    # The kernel opens /dev/console for /init before anything is mounted (init mounts
    # devtmpfs over /dev later), so the node must be in the archive.
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    moddir = f"lib/modules/{kver}"
    for name, blob in modules:
        c.file(f"{moddir}/{name}.ko", blob)
    c.file(f"{moddir}/load.order", "".join(f"{n}\n" for n, _ in modules).encode())
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    c.file("etc/group", b"root:x:0:\n")
    c.file("etc/hosts", b"127.0.0.1 localhost\n")
    c.file("init", init_script, 0o755)
    return c.bytes()


# ----------------------------------------------------------------------- build


def _manifest_path() -> Path:
    return CACHE_DIR / "manifest.json"


def _load_manifest():
    try:
        data = json.loads(_manifest_path().read_text())
        art = Artifacts(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not (art.vmlinux_path.exists() and art.initramfs_path.exists()):
        return None
    return art


def _initramfs_key(busybox: Path, kver: str, modules: list, init_script: bytes) -> str:
    h = hashlib.sha256()
    h.update(f"format={INITRAMFS_FORMAT};kver={kver};".encode())
    h.update(busybox.read_bytes())
    for name, blob in modules:
        h.update(name.encode() + b"\0" + hashlib.sha256(blob).digest())
    h.update(init_script)
    return h.hexdigest()[:16]


def build(refresh: bool = False, kernel_version: str | None = None) -> Artifacts:
    """Make sure the kernel and initramfs exist in the cache; return where they are.

    Warm path (everything cached, init.sh unchanged): reads the manifest, hashes init.sh
    and busybox, returns. ``refresh`` asks apt again for the current kernel.
    """
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    lock = open(CACHE_DIR / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(refresh, kernel_version)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _build_locked(refresh: bool, kernel_version: str | None) -> Artifacts:
    t0 = time.monotonic()
    init_script = INIT_SCRIPT.read_bytes()
    manifest = None if refresh else _load_manifest()
    if kernel_version is None:
        kernel_version = os.environ.get("VMSAN_REALGUEST_KERNEL") or None
    if manifest and kernel_version and manifest.kernel_version != kernel_version:
        manifest = None

    kdir = None
    built = False
    if manifest:
        kver = manifest.kernel_version
        kdir = CACHE_DIR / f"kernel-{kver}"
        if not (kdir / "modules.json").exists():
            manifest = None
    if manifest is None:
        pkg = f"linux-image-{kernel_version}" if kernel_version else current_kernel_package()
        kver = pkg.removeprefix("linux-image-")
        kdir = CACHE_DIR / f"kernel-{kver}"
        if not (kdir / "modules.json").exists() or not (kdir / "vmlinux").exists():
            _prepare_kernel(pkg, kver, kdir)
            built = True

    meta = json.loads((kdir / "modules.json").read_text())
    modules = [(m, (kdir / "modules" / f"{m}.ko").read_bytes()) for m in meta["modules"]]

    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=".work-") as work:
        busybox = busybox_binary(Path(work))
        key = _initramfs_key(busybox, kver, modules, init_script)
        initramfs = CACHE_DIR / f"initramfs-{key}.cpio"
        if not initramfs.exists():
            log(f"building {initramfs.name}")
            _atomic_write(initramfs, build_initramfs(busybox, modules, kver, init_script))
            built = True
            for old in CACHE_DIR.glob("initramfs-*.cpio"):
                if old != initramfs:
                    old.unlink(missing_ok=True)

    bb_version = subprocess.run([str(busybox)], stdout=subprocess.PIPE, text=True).stdout.split("\n", 1)[0]
    art = Artifacts(
        kernel_version=kver,
        package=meta["package"],
        package_version=meta["package_version"],
        vmlinux=str(kdir / "vmlinux"),
        initramfs=str(initramfs),
        modules=meta["modules"],
        busybox_version=bb_version.strip(),
    )
    new = json.dumps(asdict(art), indent=2, sort_keys=True).encode() + b"\n"
    if manifest is None or _manifest_path().read_bytes() != new:
        _atomic_write(_manifest_path(), new)
    if built:
        log(f"artifacts ready in {time.monotonic() - t0:.2f}s ({kver})")
    return art


def _prepare_kernel(pkg: str, kver: str, kdir: Path) -> None:
    log(f"preparing kernel {pkg}")
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=".work-") as work:
        work = Path(work)
        deb = apt_download(pkg, work / "debs")
        version = deb_version(deb)
        root = work / "root"
        deb_extract(deb, root)
        vmlinuz = root / "boot" / f"vmlinuz-{kver}"
        if not vmlinuz.exists():
            cands = sorted((root / "boot").glob("vmlinuz-*"))
            if not cands:
                raise BuildError(f"{deb.name} has no /boot/vmlinuz-*")
            vmlinuz = cands[0]
        vmlinux = extract_vmlinux(vmlinuz.read_bytes())
        modroot = None
        for base in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
            if (base / kver).is_dir():
                modroot = base / kver
        if modroot is None:
            raise BuildError(f"{deb.name} has no lib/modules/{kver}")
        modules = collect_modules(modroot)

        staging = work / "kernel"
        (staging / "modules").mkdir(parents=True)
        (staging / "vmlinux").write_bytes(vmlinux)
        for name, blob in modules:
            (staging / "modules" / f"{name}.ko").write_bytes(blob)
        config = root / "boot" / f"config-{kver}"
        if config.exists():
            shutil.copyfile(config, staging / "config")
        (staging / "modules.json").write_text(
            json.dumps(
                {
                    "package": pkg,
                    "package_version": version,
                    "modules": [n for n, _ in modules],
                    "vmlinux_sha256": _sha256(vmlinux),
                },
                indent=2,
            )
            + "\n"
        )
        if kdir.exists():
            shutil.rmtree(kdir)
        os.replace(staging, kdir)
    # Older kernels in the cache are no longer referenced.
    for old in CACHE_DIR.glob("kernel-*"):
        if old != kdir and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def cache_size_bytes() -> int:
    total = 0
    for p in CACHE_DIR.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refresh", action="store_true", help="ask apt again for the current kernel")
    ap.add_argument("--kernel-version", help="e.g. 6.1.0-56-amd64 (default: what linux-image-amd64 depends on)")
    ap.add_argument("--install-qemu", action="store_true", help=f"apt-get install {QEMU_PACKAGE} if missing")
    args = ap.parse_args(argv)
    try:
        if args.install_qemu:
            ensure_host_tools(install=True)
        art = build(refresh=args.refresh, kernel_version=args.kernel_version)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = asdict(art)
    out["cache_dir"] = str(CACHE_DIR)
    out["cache_bytes"] = cache_size_bytes()
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
