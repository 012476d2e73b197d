"""Debian's kernel for the lab's VMs: ``vmlinuz`` plus the few modules an initramfs needs.

The package is the one ``linux-image-amd64`` depends on in the host's apt sources right now,
fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (no kmod, no root tricks).
Only the modules in :data:`MODULES` and what they depend on are kept, with their dependency
map, so a builder asks :meth:`Kernel.load_order` for the ``insmod`` order of the modules it
wants — what ``depmod -b`` + ``modprobe -d ... --show-depends`` would print, resolved here from
each module's ``.modinfo`` ``depends=``.

Entries are cached as ``kernel-<version>-<key of MODULES>`` under the caller's cache dir.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lab.build import BuildError, atomic_dir, content_key, run

# Network drivers for the lab's NICs (virtio-net, QEMU's e1000) and their dependencies.
NET_MODULES = ("virtio_pci", "virtio_net", "e1000")
# Block drivers a root or target disk sits behind in QEMU (virtio-blk, virtio-scsi, AHCI, NVMe),
# and ext4. NOTE: ext4's metadata_csum needs crc32c through the crypto API, which no depends=
# names; crc32c_generic is listed because crc32c-intel may not load on a TCG CPU.
DISK_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "nvme", "ext4", "crc32c_generic")
MODULES = tuple(dict.fromkeys((*NET_MODULES, *DISK_MODULES)))


@dataclass(frozen=True)
class Kernel:
    """One cached kernel: ``directory`` holds ``vmlinuz``, ``config``, ``modules/*.ko`` and
    ``kernel.json`` (package, version, abi and the module dependency map)."""

    directory: Path
    package: str
    version: str
    abi: str
    depends: Mapping[str, tuple[str, ...]]  # kept module name -> the module names it needs first
    files: Mapping[str, str]  # kept module name -> file name under modules/

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "vmlinuz"

    def builtin(self, option: str) -> bool:
        """Whether ``CONFIG_...`` ``option`` is built in (``=y``)."""
        return re.search(rf"^{re.escape(option)}=y$", (self.directory / "config").read_text(), re.M) is not None

    def require_builtin(self, options: Iterable[str]) -> None:
        missing = [o for o in options if not self.builtin(o)]
        if missing:
            raise BuildError(f"{self.package} lacks built-in {missing}")

    def load_order(self, wanted: Iterable[str]) -> list[Path]:
        """The .ko files for ``wanted`` and everything they depend on, dependencies first.

        :raises BuildError: for a module that was not kept (not under :data:`MODULES`' closure).
        """
        order: list[Path] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            name = name.replace("-", "_")
            if name in seen:
                return
            if name not in self.depends:
                raise BuildError(f"module {name} is not kept in {self.directory} (add it to lab.kernel.MODULES)")
            seen.add(name)
            for dep in self.depends[name]:
                visit(dep)
            if name in self.files:  # built-in modules have no file
                order.append(self.directory / "modules" / self.files[name])

        for name in wanted:
            visit(name)
        return order


def kernel_package() -> tuple[str, str]:
    """(package, version) of the kernel ``linux-image-amd64`` depends on right now."""
    out = run(["apt-cache", "depends", "linux-image-amd64"])
    match = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", out)
    if not match:
        raise BuildError(f"no kernel ABI in `apt-cache depends linux-image-amd64`:\n{out}")
    package = match.group(1)
    policy = run(["apt-cache", "policy", package])
    candidate = re.search(r"Candidate:\s*(\S+)", policy)
    if not candidate or candidate.group(1) == "(none)":
        raise BuildError(f"apt has no candidate for {package}:\n{policy}")
    return package, candidate.group(1)


def modinfo(ko: Path) -> dict[str, str]:
    """The ``key=value`` strings of an ELF64 module's .modinfo section (what ``modinfo`` shows)."""
    data = ko.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError(f"{ko} is not a little-endian ELF64 module (compressed?)")
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
    raise BuildError(f"{ko} has no .modinfo section")


def dependency_map(tree: Path, wanted: Iterable[str]) -> tuple[dict[str, tuple[str, ...]], dict[str, Path]]:
    """The closure of ``wanted`` in the module tree ``tree`` (``lib/modules/<abi>``): each
    module's direct dependencies, and the .ko file of each one that is not built in."""
    by_name = {ko.stem.replace("-", "_"): ko for ko in tree.rglob("*.ko")}
    builtin = {Path(line).stem.replace("-", "_") for line in (tree / "modules.builtin").read_text().split()}
    depends: dict[str, tuple[str, ...]] = {}
    files: dict[str, Path] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in depends:
            return
        if name in chain:
            raise BuildError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        if name in builtin:
            depends[name] = ()
            return
        ko = by_name.get(name)
        if ko is None:
            raise BuildError(f"module {name} is neither in {tree} nor built in")
        deps = tuple(d.replace("-", "_") for d in modinfo(ko).get("depends", "").split(",") if d)
        for dep in deps:
            visit(dep, (*chain, name))
        depends[name] = deps
        files[name] = ko

    for name in wanted:
        visit(name, ())
    return depends, files


def _fetch(dest: Path, package: str, version: str) -> None:
    work = dest / "work"
    work.mkdir()
    run(["apt-get", "download", f"{package}={version}"], cwd=work, timeout=900)
    debs = list(work.glob("*.deb"))
    if len(debs) != 1:
        raise BuildError(f"apt-get download left {debs}")
    root = work / "root"
    run(["dpkg-deb", "-x", str(debs[0]), str(root)], timeout=600)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BuildError(f"expected one boot/vmlinuz-* in {debs[0].name}, found {kernels}")
    abi = kernels[0].name.removeprefix("vmlinuz-")
    tree = root / "lib" / "modules" / abi
    depends, files = dependency_map(tree, MODULES)
    (dest / "modules").mkdir()
    for path in files.values():
        shutil.copyfile(path, dest / "modules" / path.name)
    shutil.copyfile(kernels[0], dest / "vmlinuz")
    shutil.copyfile(root / "boot" / f"config-{abi}", dest / "config")
    (dest / "kernel.json").write_text(json.dumps({
        "package": package, "version": version, "abi": abi,
        "depends": {k: list(v) for k, v in depends.items()},
        "files": {k: v.name for k, v in files.items()},
    }, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(work)


def fetch_kernel(cache_dir: Path) -> Kernel:
    """The current Debian kernel with :data:`MODULES`, from the cache or fetched into it."""
    package, version = kernel_package()
    directory = atomic_dir(cache_dir / f"kernel-{version}-{content_key(sorted(MODULES), 8)}",
                           lambda d: _fetch(d, package, version))
    meta = json.loads((directory / "kernel.json").read_text())
    return Kernel(directory=directory, package=meta["package"], version=meta["version"], abi=meta["abi"],
                  depends={k: tuple(v) for k, v in meta["depends"].items()}, files=dict(meta["files"]))
