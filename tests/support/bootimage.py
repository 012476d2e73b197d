"""A tiny network-bootable Linux for the QEMU tests: Debian's own kernel plus a busybox initramfs
whose /init prints a marker and the kernel command line on the serial port, asks for a DHCP
lease with ``udhcpc``, prints the address and powers the VM off.

The kernel package is fetched with ``apt-get download`` (the current bookworm ABI, read from
``apt-cache depends linux-image-amd64``); virtio-net is a module there, so the .ko files it needs
are put into the initramfs in load order. The order is what ``depmod -b`` + ``modprobe -d ...
--show-depends`` would print, resolved here from each module's ``.modinfo`` ``depends=`` (kmod is
not needed on the host).
The cpio archive is written here (newc, sorted, mtime 0), so the same inputs give the same bytes.

Everything is cached under ``cache_dir`` by a content key; a build happens in a temp directory
beside the cache entry and is renamed into place, so two processes racing both end up using one
complete entry.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MARKER = "INGOT-NETBOOT-MARKER"
ADDRESS_MARKER = "INGOT-NETBOOT-ADDRESS"
FORMAT = 1  # bump when the layout or build steps change in a way the key would not see
STALE_BUILD_S = 3600  # a temp build dir this old belongs to a build that died
BUSYBOX = Path("/bin/busybox")
MODULES = ("virtio_pci", "virtio_net")  # + their dependencies (virtio, virtio_ring, failover, ...)
# Built-in options this initramfs relies on (checked against the package's config file).
REQUIRED_CONFIG = ("CONFIG_BLK_DEV_INITRD", "CONFIG_RD_GZIP", "CONFIG_DEVTMPFS", "CONFIG_PACKET",
                   "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_MODULES")

INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
# Whatever console= the boot script chose, everything from here goes to the first serial port.
exec </dev/null >/dev/ttyS0 2>&1
for m in $(cat /etc/modules.list); do insmod "/lib/modules/$m" || echo "insmod $m failed"; done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip link set eth0 up
echo "{MARKER} uptime=$(cut -d' ' -f1 /proc/uptime) cmdline=$(cat /proc/cmdline)"
udhcpc -f -q -n -i eth0 -s /etc/udhcpc.script -t 5 -T 1 -A 1 || udhcpc -f -q -n -i eth0 -s /etc/udhcpc.script -t 5 -T 1
echo "{ADDRESS_MARKER} $(cat /tmp/address 2>/dev/null || echo none) uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
"""

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    echo "ip=$ip/${mask:-24} server=${serverid:-?} router=${router:-none}" > /tmp/address
    ;;
esac
exit 0
"""


@dataclass(frozen=True)
class BootImage:
    kernel: Path
    initrd: Path


class BootImageError(RuntimeError):
    pass


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BootImageError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def kernel_package() -> tuple[str, str]:
    """(package, version) of the kernel ``linux-image-amd64`` depends on right now."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    match = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", out)
    if not match:
        raise BootImageError(f"no kernel ABI in `apt-cache depends linux-image-amd64`:\n{out}")
    package = match.group(1)
    policy = _run(["apt-cache", "policy", package])
    candidate = re.search(r"Candidate:\s*(\S+)", policy)
    if not candidate or candidate.group(1) == "(none)":
        raise BootImageError(f"apt has no candidate for {package}:\n{policy}")
    return package, candidate.group(1)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _busybox_files() -> dict[str, Path]:
    """busybox and the shared libraries it loads: {path inside the initramfs: host file}."""
    if not BUSYBOX.is_file():
        raise BootImageError(f"{BUSYBOX} is missing (Debian package busybox or busybox-static)")
    files = {"bin/busybox": BUSYBOX.resolve()}
    out = subprocess.run(["ldd", str(BUSYBOX)], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():  # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-... (0x...)"
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            name = match.group(1)
            files[name.lstrip("/")] = Path(name).resolve()
    return files


def _atomic_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temp dir next to ``final`` and rename it into place; a racing builder's
    complete result wins over ours."""
    if (final / "complete").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*"):  # left by a build that was killed
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_BUILD_S:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        (tmp / "complete").write_text("ok\n")
        try:
            os.rename(tmp, final)  # entries only ever appear complete, by this rename
        except OSError:
            if not (final / "complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _modinfo(ko: Path) -> dict[str, str]:
    """The ``key=value`` strings of an ELF64 module's .modinfo section (what ``modinfo`` shows)."""
    data = ko.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BootImageError(f"{ko} is not a little-endian ELF64 module (compressed?)")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if data[strtab + name:data.index(b"\0", strtab + name)] == b".modinfo":
            info: dict[str, str] = {}
            for item in data[offset:offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    raise BootImageError(f"{ko} has no .modinfo section")


def _load_order(tree: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The .ko files for ``wanted`` and everything they depend on, dependencies first (what
    ``modprobe --show-depends`` lists after ``depmod``, without needing kmod on the host)."""
    by_name = {ko.stem.replace("-", "_"): ko for ko in tree.rglob("*.ko")}
    builtin = {Path(line).stem.replace("-", "_") for line in (tree / "modules.builtin").read_text().split()}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        if name in chain:
            raise BootImageError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        ko = by_name.get(name)
        if ko is None:
            raise BootImageError(f"module {name} is neither in {tree} nor built in")
        for dep in filter(None, _modinfo(ko).get("depends", "").split(",")):
            visit(dep, (*chain, name))
        seen.add(name)
        order.append(ko)

    for name in wanted:
        visit(name, ())
    return order


def _fetch_kernel(dest: Path, package: str, version: str) -> None:
    """vmlinuz, config and the modules for MODULES (in load order) from the Debian package."""
    work = dest / "work"
    work.mkdir()
    _run(["apt-get", "download", f"{package}={version}"], cwd=work)
    debs = list(work.glob("*.deb"))
    if len(debs) != 1:
        raise BootImageError(f"apt-get download left {debs}")
    root = work / "root"
    _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BootImageError(f"expected one boot/vmlinuz-* in {debs[0].name}, found {kernels}")
    abi = kernels[0].name.removeprefix("vmlinuz-")
    config = (root / "boot" / f"config-{abi}").read_text()
    missing = [o for o in REQUIRED_CONFIG if not re.search(rf"^{o}=y$", config, re.M)]
    if missing:
        raise BootImageError(f"{package} lacks built-in {missing}")
    tree = root / "lib" / "modules" / abi
    order = _load_order(tree, MODULES)
    for path in order:
        shutil.copyfile(path, dest / path.name)
    shutil.copyfile(kernels[0], dest / "vmlinuz")
    (dest / "modules.list").write_text("".join(p.name + "\n" for p in order))
    (dest / "kernel.json").write_text(json.dumps({"package": package, "version": version, "abi": abi}) + "\n")
    shutil.rmtree(work)


def _newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (name, mode, data, rdev) with fixed owners and times."""
    out = io.BytesIO()

    def pad(n: int) -> None:
        out.write(b"\0" * (-n % 4))

    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], start=1):
        raw = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08x}" for v in (
            ino if name != "TRAILER!!!" else 0, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
            0, 0, os.major(rdev), os.minor(rdev), len(raw), 0))
        out.write(header.encode() + raw)
        pad(110 + len(raw))
        out.write(data)
        pad(len(data))
    return out.getvalue()


def _initramfs(kernel_dir: Path) -> bytes:
    modules = kernel_dir.joinpath("modules.list").read_text().split()
    files: dict[str, tuple[int, bytes, int]] = {}

    def add_dirs(path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            files.setdefault("/".join(parts[:i]), (stat.S_IFDIR | 0o755, b"", 0))

    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "lib/modules"):
        add_dirs(d + "/x")
    files["dev/console"] = (stat.S_IFCHR | 0o600, b"", os.makedev(5, 1))
    for inside, host in _busybox_files().items():
        add_dirs(inside)
        files[inside] = (stat.S_IFREG | 0o755, host.read_bytes(), 0)
    for name in modules:
        files[f"lib/modules/{name}"] = (stat.S_IFREG | 0o644, (kernel_dir / name).read_bytes(), 0)
    files["etc/modules.list"] = (stat.S_IFREG | 0o644, ("\n".join(modules) + "\n").encode(), 0)
    files["etc/udhcpc.script"] = (stat.S_IFREG | 0o755, UDHCPC_SCRIPT.encode(), 0)
    files["init"] = (stat.S_IFREG | 0o755, INIT.encode(), 0)
    archive = _newc([(name, *files[name]) for name in sorted(files)])
    return gzip.compress(archive, compresslevel=9, mtime=0)


def build_boot_image(cache_dir: Path) -> BootImage:
    """The kernel and initramfs (cached); see the module docstring."""
    package, version = kernel_package()
    kernel_dir = _atomic_dir(cache_dir / f"kernel-{version}",
                             lambda d: _fetch_kernel(d, package, version))
    key = hashlib.sha256(json.dumps({
        "format": FORMAT, "package": package, "version": version, "init": INIT, "udhcpc": UDHCPC_SCRIPT,
        "modules": MODULES, "busybox": {k: _sha256(v) for k, v in sorted(_busybox_files().items())},
    }, sort_keys=True).encode()).hexdigest()[:16]

    def build(dest: Path) -> None:
        shutil.copyfile(kernel_dir / "vmlinuz", dest / "vmlinuz")
        (dest / "initrd.img").write_bytes(_initramfs(kernel_dir))

    image_dir = _atomic_dir(cache_dir / f"image-{key}", build)
    return BootImage(kernel=image_dir / "vmlinuz", initrd=image_dir / "initrd.img")


if __name__ == "__main__":
    import sys

    started = time.monotonic()
    image = build_boot_image(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("test-artifacts/cache/bootimage"))
    print(f"{image.kernel} ({image.kernel.stat().st_size} bytes)\n{image.initrd} ({image.initrd.stat().st_size} bytes)"
          f"\nin {time.monotonic() - started:.1f} s")
