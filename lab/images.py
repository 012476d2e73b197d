r"""Build recipes for the two images the emulated rack boots: the deploy ramdisk and a demo disk.

=================  ==========================================================================
image              what it is
=================  ==========================================================================
deploy ramdisk     Debian's kernel + one zstd initramfs: ``mmdebstrap --variant=essential``
                   with python3-minimal, libpython3-stdlib (json, http.client, urllib.request:
                   the agent API's client) and busybox, slimmed, the NIC/disk modules, and the
                   ``agent`` package from this checkout. Its /init mounts the kernel file
                   systems, loads the modules, waits for the boot NIC (``BOOTIF`` or the first
                   Ethernet), takes a lease with busybox ``udhcpc`` (kept renewing in the
                   background) and runs ``python3 -m agent``, whose line on the serial port
                   is ``INGOT-AGENT started mac=... ip=...``. Afterwards the machine stays up,
                   or powers off if ``ingot.poweroff`` is on the command line.
demo disk          a bootable qcow2 golden image: ``--variant=minbase`` + systemd-sysv, udev,
                   python3-minimal and iproute2 on an ext4 partition (4 KiB blocks: extlinux
                   6.04 cannot load from 1 KiB-block ext4), with its own busybox initramfs
                   (loads the drivers, mounts ``root=LABEL=ingot-root``, ``switch_root``). It
                   boots on both firmwares from one MBR disk: BIOS through the MBR code and
                   extlinux on the active ext4 partition; UEFI through an EFI system partition
                   (type 0xEF, FAT) holding systemd-boot as the removable-media loader
                   ``\EFI\BOOT\BOOTX64.EFI`` and a copy of the kernel and initramfs.
                   systemd-networkd takes a DHCP lease, and a unit prints ``INGOT-DEMO booted
                   hostname=... addresses=... machine_id=... first_boot=...`` on ttyS0 at every
                   boot; ``first_boot`` is who first booted the disk (a file it writes then).
=================  ==========================================================================

Both are cached under ``cache_dir`` by a content key over the recipe (mmdebstrap options,
scripts, unit files, modules), the kernel package version, the host's apt indexes (which decide
every package version) and, for the ramdisk, the agent's sources. A build runs in a temp dir
beside its entry and is renamed into place (:func:`lab.build.atomic_dir`); nothing stays mounted
or attached afterwards, even when a step fails.

Needs root and the Debian packages mmdebstrap, extlinux, syslinux-common, fdisk, e2fsprogs,
zstd, busybox, systemd-boot-efi, dosfstools, mtools, qemu-utils (and for booting, qemu-system-x86).

``python -m lab.images ramdisk|demo-disk --cache DIR`` builds one and prints where it is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agent.__main__ import STARTED as AGENT_STARTED
from lab.build import BuildError, atomic_dir, content_key, remove_tree, run, sha256_file, tree_hash, unmount_under
from lab.initramfs import Archive, busybox_files, compress
from lab.kernel import DISK_MODULES, NET_MODULES, Kernel, fetch_kernel
from lab.rootfs import (
    KEEP_TERMINFO,
    SLIM_GLOBS,
    bootstrap,
    candidate_versions,
    host_codename,
    index_digest,
    installed_packages,
    mmdebstrap_argv,
    slim,
    tree_size,
)

__all__ = ["AGENT_STARTED", "DEMO_BOOTED", "BuildInfo", "DemoDisk", "Ramdisk", "build_demo_disk", "build_ramdisk"]

REPO = Path(__file__).resolve().parents[1]
AGENT_DIR = REPO / "agent"
MiB = 1 << 20

# ---------------------------------------------------------------------------------------------
# Deploy ramdisk
RAMDISK_FORMAT = 1  # bump when a build step changes in a way the key below does not see
# libpython3-stdlib: the rest of the standard library (json, http, email, dataclasses, ...) the
# agent's API client needs; python3-minimal alone has neither json nor http.
RAMDISK_PACKAGES = ("python3-minimal", "libpython3-stdlib", "busybox")
RAMDISK_MODULES = (*NET_MODULES, *DISK_MODULES)  # the agent will write images to these disks
RAMDISK_CONFIG = ("CONFIG_BLK_DEV_INITRD", "CONFIG_DEVTMPFS", "CONFIG_PACKET", "CONFIG_UNIX",
                  "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_MODULES")
RAMDISK_SKIP = ("dev", "proc", "sys", "run", "tmp")  # mount points: added empty
AGENT_PATH = "usr/lib/python3/dist-packages/agent"  # on python3's default sys.path

RAMDISK_INIT = r"""#!/bin/busybox sh
# Ingot deploy ramdisk, PID 1: kernel file systems, drivers, a DHCP lease on the boot NIC, then
# the agent (python3 -m agent). Everything it prints goes to the first serial port.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PYTHONDONTWRITEBYTECODE=1
bb=/usr/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts devpts /dev/pts
$bb mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
$bb mkdir -p /run/ingot
# The appliance's kernel arguments may end with console=tty0, so /dev/console can be the screen:
# reports go to ttyS0 when the machine has one.
if (: >/dev/ttyS0) 2>/dev/null; then out=/dev/ttyS0; else out=/dev/console; fi
exec </dev/null >"$out" 2>&1
echo "INGOT-RAMDISK init uptime=$(cut -d' ' -f1 /proc/uptime)"
$bb hostname -F /etc/hostname
for ko in $(cat /etc/ingot/modules.list); do
  $bb insmod "/usr/lib/ingot/modules/$ko" || echo "INGOT-RAMDISK insmod $ko failed"
done
# The boot NIC: the one BOOTIF=01-aa-bb-.. names, else the first Ethernet interface (10 s at most).
bootif=$(sed -n 's/.*BOOTIF=01-\([0-9A-Fa-f-]*\).*/\1/p' /proc/cmdline | tr 'A-F-' 'a-f:')
iface=
i=0
while [ $i -lt 100 ]; do
  first=
  for dev in /sys/class/net/*; do
    [ "$(cat "$dev/type" 2>/dev/null)" = 1 ] || continue
    [ -n "$first" ] || first=${dev##*/}
    if [ -z "$bootif" ] || [ "$(cat "$dev/address")" = "$bootif" ]; then iface=${dev##*/}; break; fi
  done
  [ -z "$iface" ] || break
  sleep 0.1
  i=$((i + 1))
done
[ -n "$iface" ] || iface=$first
$bb ip link set lo up
if [ -n "$iface" ]; then
  $bb ip link set "$iface" up
  # -n: give up after the tries; once bound it forks and keeps renewing the lease.
  $bb udhcpc -i "$iface" -s /etc/ingot/udhcpc.script -p /run/ingot/udhcpc.pid -t 5 -T 1 -A 2 -n ||
    echo "INGOT-RAMDISK no DHCP lease on $iface"
else
  echo "INGOT-RAMDISK no network interface"
fi
cd /
# bench/agent_write.py's peer: the plainest way to put an image on a disk, busybox wget into dd
# (fsynced, as the agent's write is), in place of the agent; then power off.
peer=$(sed -n 's/.*ingot\.peer_write=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$peer" ]; then
  disk=$(sed -n 's/.*ingot\.peer_disk=\([^ ]*\).*/\1/p' /proc/cmdline)
  $bb wget -q -O - "$peer" | $bb dd of="${disk:-/dev/vda}" bs=4M conv=fsync 2>/run/ingot/peer.log
  echo "INGOT-PEER-WRITE done status=$? $(tail -n 1 /run/ingot/peer.log)"
  $bb poweroff -f
fi
python3 -m agent
echo "INGOT-RAMDISK agent exited status=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
if grep -qw 'ingot\.poweroff' /proc/cmdline; then
  sync
  $bb poweroff -f
fi
while :; do sleep 3600; done
"""

RAMDISK_UDHCPC = r"""#!/bin/sh
# busybox udhcpc event script: configure the address, default route and resolver, and record the
# lease in /run/ingot/dhcp.env (key=value lines) for the agent, which looks for the appliance at
# the DHCP server when the kernel command line has no ingot.url.
bb=/usr/bin/busybox
case "$1" in
  deconfig)
    $bb ip addr flush dev "$interface"
    $bb ip link set "$interface" up
    ;;
  bound|renew)
    if ! $bb ip addr show dev "$interface" | grep -q " $ip/${mask:-24} "; then
      $bb ip addr flush dev "$interface"
      $bb ip addr add "$ip/${mask:-24}" dev "$interface"
    fi
    for r in $router; do $bb ip route replace default via "$r" dev "$interface"; break; done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "ip=$ip/${mask:-24} server=${serverid:-none} router=${router:-none} lease=${lease:-0}" >/run/ingot/lease
    printf 'serverid=%s\nsiaddr=%s\nip=%s\nmask=%s\n' "$serverid" "$siaddr" "$ip" "$mask" >/run/ingot/dhcp.env.new &&
      mv -f /run/ingot/dhcp.env.new /run/ingot/dhcp.env
    ;;
esac
exit 0
"""

# ---------------------------------------------------------------------------------------------
# Demo disk
DEMO_FORMAT = 3  # 2: the EFI system partition; 3: the report on every boot, with the first-boot file
DEMO_PACKAGES = ("systemd-sysv", "udev", "python3-minimal", "iproute2")
DEMO_HOSTNAME = "ingot-demo"
DEMO_LABEL = "ingot-root"
DEMO_BOOTED = "INGOT-DEMO booted"
DEMO_MODULES = (*NET_MODULES, *DISK_MODULES)
DEMO_UNITS = ("systemd-networkd.service", "ingot-demo-report.service")
PARTITION_START = MiB  # sector 2048
MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
ESP_BYTES = 64 * MiB  # FAT16; the kernel and the initramfs take about a quarter
ESP_LABEL = "INGOT-ESP"
DEMO_CMDLINE = f"root=LABEL={DEMO_LABEL} ro console=tty0 console=ttyS0,115200 quiet"
EXTLINUX_CONF = f"""SERIAL 0 115200
DEFAULT ingot
PROMPT 0
TIMEOUT 0
LABEL ingot
  LINUX /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND {DEMO_CMDLINE}
"""
# systemd-boot on the ESP: no menu, straight into the one entry.
ESP_FILES = {
    "loader/loader.conf": "default ingot.conf\ntimeout 0\nconsole-mode keep\n",
    "loader/entries/ingot.conf": f"title Ingot demo\nlinux /vmlinuz\ninitrd /initrd.img\noptions {DEMO_CMDLINE}\n",
}

DEMO_INIT = r"""#!/bin/busybox sh
# Ingot demo image initramfs: load the disk and NIC drivers, mount root= read-only, switch_root.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
exec </dev/console >/dev/console 2>&1
fail() { echo "INGOT-INITRD $*"; sleep 5; exit 1; }
for m in $(cat /etc/modules.list); do insmod "/lib/modules/$m" || echo "INGOT-INITRD insmod $m failed"; done
root=
fstype=ext4
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root=${arg#root=} ;;
    rootfstype=*) fstype=${arg#rootfstype=} ;;
  esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"
dev=
i=0
while [ -z "$dev" ] && [ $i -lt 100 ]; do
  case "$root" in
    LABEL=*|UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
    *) [ -b "$root" ] && dev=$root ;;
  esac
  [ -n "$dev" ] && break
  sleep 0.1
  i=$((i + 1))
done
[ -n "$dev" ] || fail "root device $root not found"
mount -t "$fstype" -o ro "$dev" /newroot || fail "cannot mount $dev ($root) as $fstype"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
"""

DEMO_REPORT = r"""#!/bin/sh
# Ingot demo image: say on the serial console that this machine booted, on every boot. The first
# boot of a disk also writes down who booted it (/var/lib/ingot/first-boot): a file written after
# the deploy, which a capture carries to the machines deployed from it, and the line shows it.
addresses=$(ip -o addr show scope global 2>/dev/null | while read -r _n _dev _family addr _rest; do
  printf '%s,' "$addr"
done)
addresses=${addresses%,}
me="$(hostname)/$(cat /etc/machine-id)"
mkdir -p /var/lib/ingot
[ -s /var/lib/ingot/first-boot ] || { echo "$me" >/var/lib/ingot/first-boot; sync; }
line="INGOT-DEMO booted hostname=$(hostname) addresses=${addresses:-none} machine_id=$(cat /etc/machine-id)"
line="$line uptime=$(cut -d' ' -f1 /proc/uptime) first_boot=$(cat /var/lib/ingot/first-boot)"
echo "$line"
if [ -c /dev/ttyS0 ]; then echo "$line" >/dev/ttyS0 2>/dev/null || true; fi
"""

# path in the image -> (content, mode)
DEMO_FILES: dict[str, tuple[str, int]] = {
    "etc/hostname": (f"{DEMO_HOSTNAME}\n", 0o644),
    "etc/hosts": (f"127.0.0.1\tlocalhost\n127.0.1.1\t{DEMO_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                  0o644),
    "etc/fstab": (f"LABEL={DEMO_LABEL}\t/\text4\tdefaults,errors=remount-ro\t0\t1\n", 0o644),
    # Empty: every machine made from this image gets its own machine-id on its first boot.
    "etc/machine-id": ("", 0o444),
    "etc/systemd/network/20-wired.network": ("[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n", 0o644),
    # The default is to wait 2 minutes for every link; one link with an address is enough.
    "etc/systemd/system/systemd-networkd-wait-online.service.d/ingot.conf": (
        "[Service]\nExecStart=\nExecStart=/usr/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n",
        0o644),
    "etc/systemd/system/ingot-demo-report.service": (
        "[Unit]\nDescription=Ingot demo image: report the boot on the serial console\n"
        "Wants=network-online.target\nAfter=network-online.target\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/lib/ingot/demo-report\nRemainAfterExit=yes\n\n"
        "[Install]\nWantedBy=multi-user.target\n", 0o644),
    "usr/lib/ingot/demo-report": (DEMO_REPORT, 0o755),
}


@dataclass(frozen=True)
class BuildInfo:
    """What a build produced and what it took; stored as ``info.json`` in the cache entry."""

    key: str
    directory: Path
    cached: bool  # this call found the entry ready
    build_s: float  # how long building the entry took (whenever that was)
    elapsed_s: float  # how long this call took
    sizes: dict[str, int]  # bytes, by artefact
    packages: dict[str, str] = field(default_factory=dict)  # installed in the image: name -> version
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ramdisk:
    kernel: Path
    initrd: Path
    info: BuildInfo


@dataclass(frozen=True)
class DemoDisk:
    path: Path  # qcow2
    info: BuildInfo


def _write_info(dest: Path, key: str, build_s: float, sizes: dict[str, int], packages: dict[str, str],
                details: dict[str, str], inputs: object) -> None:
    (dest / "info.json").write_text(json.dumps({
        "key": key, "build_s": round(build_s, 2), "sizes": sizes, "packages": packages, "details": details,
        "inputs": inputs}, indent=1, sort_keys=True) + "\n")


def _read_info(directory: Path, cached: bool, started: float) -> BuildInfo:
    meta = json.loads((directory / "info.json").read_text())
    return BuildInfo(key=meta["key"], directory=directory, cached=cached, build_s=meta["build_s"],
                     elapsed_s=round(time.monotonic() - started, 2), sizes=meta["sizes"], packages=meta["packages"],
                     details=meta["details"])


def _cached_build(final: Path, build: Callable[[Path], None]) -> bool:
    """Build ``final`` unless complete; True if it was already there (a cache hit)."""
    hit = (final / "complete").is_file()
    atomic_dir(final, build)
    return hit


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


# ---------------------------------------------------------------------------------------------


def _ramdisk_archive(rootfs: Path, kernel: Kernel) -> Archive:
    archive = Archive()
    archive.add_tree(rootfs, skip_contents_of=RAMDISK_SKIP)
    for d in RAMDISK_SKIP:
        archive.add_dir(d, 0o1777 if d == "tmp" else 0o755)
    archive.add_char_device("dev/console", 5, 1)  # init's first stdio, before devtmpfs is mounted
    for path in sorted(AGENT_DIR.rglob("*.py")):
        if "__pycache__" not in path.parts:
            archive.add_file(f"{AGENT_PATH}/{path.relative_to(AGENT_DIR).as_posix()}", path.read_bytes())
    modules = kernel.load_order(RAMDISK_MODULES)
    for ko in modules:
        archive.add_file(f"usr/lib/ingot/modules/{ko.name}", ko.read_bytes())
    archive.add_file("etc/ingot/modules.list", "".join(ko.name + "\n" for ko in modules).encode())
    archive.add_file("etc/ingot/udhcpc.script", RAMDISK_UDHCPC.encode(), 0o755)
    archive.add_file("etc/hostname", b"ingot-ramdisk\n")
    archive.add_file("init", RAMDISK_INIT.encode(), 0o755)
    return archive


def build_ramdisk(cache_dir: Path, *, log: Callable[[str], None] = print) -> Ramdisk:
    """The deploy ramdisk (kernel + initramfs), from ``cache_dir`` or built into it.

    :raises BuildError: when a build step fails (the message has the command's output).
    """
    started = time.monotonic()
    kernel = fetch_kernel(cache_dir)
    kernel.require_builtin(RAMDISK_CONFIG)
    compression = "zstd" if kernel.builtin("CONFIG_RD_ZSTD") else "gzip"
    codename = host_codename()
    argv = mmdebstrap_argv(variant="essential", include=RAMDISK_PACKAGES, hooks=(), codename=codename)
    inputs = {
        "format": RAMDISK_FORMAT, "mmdebstrap": argv, "init": RAMDISK_INIT, "udhcpc": RAMDISK_UDHCPC,
        "slim": [SLIM_GLOBS, KEEP_TERMINFO], "modules": RAMDISK_MODULES, "compression": compression,
        "kernel": [kernel.package, kernel.version], "apt_indexes": index_digest(codename),
        "versions": candidate_versions(RAMDISK_PACKAGES), "agent": tree_hash(AGENT_DIR),
    }
    key = content_key(inputs)

    def build(dest: Path) -> None:
        t0 = time.monotonic()
        rootfs = dest / "rootfs"
        try:
            bootstrap(rootfs, argv)
            t_bootstrap = time.monotonic() - t0
            packages = installed_packages(rootfs)
            unpacked = tree_size(rootfs)
            freed = slim(rootfs)
            archive = _ramdisk_archive(rootfs, kernel).cpio()
            t1 = time.monotonic()
            initrd = compress(archive, compression)
            t_compress = time.monotonic() - t1
        finally:
            remove_tree(rootfs)
        (dest / "initrd.img").write_bytes(initrd)
        (dest / "vmlinuz").write_bytes(kernel.vmlinuz.read_bytes())
        sizes = {"kernel": kernel.vmlinuz.stat().st_size, "initrd": len(initrd), "cpio": len(archive),
                 "rootfs_bootstrapped": unpacked, "rootfs_slim": unpacked - freed}
        details = {"compression": compression, "kernel": f"{kernel.package} {kernel.version}",
                   "bootstrap_s": f"{t_bootstrap:.1f}", "compress_s": f"{t_compress:.1f}",
                   "python": packages.get("python3-minimal", "?")}
        _write_info(dest, key, time.monotonic() - t0, sizes, packages, details, inputs)

    directory = cache_dir / f"ramdisk-{key}"
    hit = _cached_build(directory, build)
    info = _read_info(directory, hit, started)
    log(f"ramdisk {'cache hit' if hit else f'built in {info.build_s:.1f} s'} ({info.elapsed_s:.1f} s): "
        f"{directory}/vmlinuz {_mib(info.sizes['kernel'])}, initrd.img {_mib(info.sizes['initrd'])} "
        f"{info.details['compression']} (cpio {_mib(info.sizes['cpio'])}, "
        f"rootfs {_mib(info.sizes['rootfs_slim'])} slimmed from {_mib(info.sizes['rootfs_bootstrapped'])})")
    return Ramdisk(kernel=directory / "vmlinuz", initrd=directory / "initrd.img", info=info)


# ---------------------------------------------------------------------------------------------


def _demo_initramfs(kernel: Kernel, compression: str) -> bytes:
    archive = Archive()
    for d in ("bin", "dev", "proc", "sys", "newroot", "etc", "lib/modules"):
        archive.add_dir(d)
    archive.add_char_device("dev/console", 5, 1)
    for inside, host in busybox_files().items():
        archive.add_file(inside, host.read_bytes(), 0o755)
    modules = kernel.load_order(DEMO_MODULES)
    for ko in modules:
        archive.add_file(f"lib/modules/{ko.name}", ko.read_bytes())
    archive.add_file("etc/modules.list", "".join(ko.name + "\n" for ko in modules).encode())
    archive.add_file("init", DEMO_INIT.encode(), 0o755)
    return compress(archive.cpio(), compression)


def _customize_demo(rootfs: Path, kernel: Kernel, initrd: bytes) -> None:
    for rel, (content, mode) in DEMO_FILES.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text(content)
        path.chmod(mode)
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # NOTE: systemctl works offline in a chroot; the clean environment keeps the host's PYTHON*
    # and locale settings out of it.
    run(["chroot", str(rootfs), "systemctl", "enable", "--quiet", *DEMO_UNITS], clean_env=True, timeout=120)
    boot = rootfs / "boot"
    (boot / "extlinux").mkdir(parents=True, exist_ok=True)
    (boot / "vmlinuz").write_bytes(kernel.vmlinuz.read_bytes())
    (boot / "initrd.img").write_bytes(initrd)
    (boot / "extlinux" / "extlinux.conf").write_text(EXTLINUX_CONF)


def _loops_of(image: Path) -> list[str]:
    out = run(["losetup", "-j", str(image)], timeout=30)
    return [line.split(":", 1)[0] for line in out.splitlines() if line.startswith("/dev/")]


def _install_extlinux(raw: Path, mnt: Path) -> None:
    """extlinux needs the file system mounted: loop-mount the partition by offset (no partition
    scanning here), install, and always unmount and detach."""
    mnt.mkdir(exist_ok=True)
    try:
        run(["mount", "-t", "ext4", "-o", f"loop,offset={PARTITION_START}", str(raw), str(mnt)], timeout=60)
        run(["extlinux", "--install", str(mnt / "boot" / "extlinux")], timeout=120)
        run(["sync", "-f", str(mnt)], timeout=60)
    finally:
        try:
            unmount_under(mnt)
        finally:
            for loop in _loops_of(raw):
                with contextlib.suppress(BuildError):
                    run(["losetup", "-d", loop], timeout=30)
    if _loops_of(raw):
        raise BuildError(f"loop devices still attached to {raw}: {_loops_of(raw)}")


def _make_esp(rootfs: Path, esp: Path, key: str) -> None:
    """The EFI system partition as a file: FAT, systemd-boot as the removable-media loader, its
    loader entry, and the kernel and initramfs that extlinux boots from /boot. Built with mtools,
    so nothing is mounted."""
    esp.unlink(missing_ok=True)
    run(["mkfs.fat", "-C", "-n", ESP_LABEL, "-i", key[:8], str(esp), str(ESP_BYTES // 1024)], timeout=60)
    image = str(esp)
    for directory in ("::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"):
        run(["mmd", "-i", image, directory], timeout=30)
    staged = esp.parent / "esp-files"
    staged.mkdir()
    try:
        for rel, content in ESP_FILES.items():
            (staged / Path(rel).name).write_text(content)
            run(["mcopy", "-i", image, str(staged / Path(rel).name), f"::/{rel}"], timeout=30)
    finally:
        remove_tree(staged)
    for source, target in ((SYSTEMD_BOOT, "EFI/BOOT/BOOTX64.EFI"), (rootfs / "boot" / "vmlinuz", "vmlinuz"),
                           (rootfs / "boot" / "initrd.img", "initrd.img")):
        run(["mcopy", "-i", image, str(source), f"::/{target}"], timeout=60)


def _make_disk(rootfs: Path, raw: Path, key: str, mnt: Path) -> int:
    """A partitioned raw disk: ``rootfs`` as the active ext4 partition 1 (BIOS: MBR code, then
    extlinux), and after it the EFI system partition 2 (UEFI); returns the ext4 size in bytes."""
    fs_mib = int(tree_size(rootfs) * 1.3 / MiB) + 64
    fs_bytes = fs_mib * MiB
    raw.unlink(missing_ok=True)  # truncate would keep old data and signatures
    with open(raw, "wb") as f:
        f.truncate(PARTITION_START + fs_bytes + ESP_BYTES)
    layout = (f"start={PARTITION_START // 512}, size={fs_bytes // 512}, type=83, bootable\n"
              f"start={(PARTITION_START + fs_bytes) // 512}, size={ESP_BYTES // 512}, type=ef\n")
    run(["sfdisk", "-q", "-X", "dos", str(raw)], stdin=layout.encode(), timeout=60)
    # -b 4096: extlinux cannot load files from 1 KiB-block ext4, mke2fs's choice below 512 MB.
    # -d fills it from the tree without mounting; the UUID follows the content key.
    run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", DEMO_LABEL, "-U", str(uuid.UUID(key.ljust(32, "0")[:32])),
         "-E", f"offset={PARTITION_START}", "-d", str(rootfs), str(raw), f"{fs_bytes // 1024}k"],
        clean_env=True, timeout=600)
    _install_extlinux(raw, mnt)
    esp = raw.with_name("esp.img")
    try:
        _make_esp(rootfs, esp, key)
        with open(raw, "r+b") as f, open(esp, "rb") as part:
            f.write(MBR.read_bytes()[:440])  # boot code only; the partition table stays
            f.seek(PARTITION_START + fs_bytes)
            while chunk := part.read(MiB):
                f.write(chunk)
    finally:
        esp.unlink(missing_ok=True)
    return fs_bytes


def build_demo_disk(cache_dir: Path, *, log: Callable[[str], None] = print) -> DemoDisk:
    """The demo golden image (qcow2), from ``cache_dir`` or built into it.

    :raises BuildError: when a build step fails (the message has the command's output).
    """
    started = time.monotonic()
    if not MBR.is_file():
        raise BuildError(f"{MBR} is missing (Debian package syslinux-common)")
    if not SYSTEMD_BOOT.is_file():
        raise BuildError(f"{SYSTEMD_BOOT} is missing (Debian package systemd-boot-efi)")
    kernel = fetch_kernel(cache_dir)
    compression = "zstd" if kernel.builtin("CONFIG_RD_ZSTD") else "gzip"
    codename = host_codename()
    argv = mmdebstrap_argv(variant="minbase", include=DEMO_PACKAGES, hooks=(), codename=codename)
    inputs = {
        "format": DEMO_FORMAT, "mmdebstrap": argv, "files": DEMO_FILES, "units": DEMO_UNITS, "init": DEMO_INIT,
        "extlinux": EXTLINUX_CONF, "modules": DEMO_MODULES, "compression": compression,
        "kernel": [kernel.package, kernel.version], "apt_indexes": index_digest(codename),
        "versions": candidate_versions(DEMO_PACKAGES),
        "busybox": {k: sha256_file(v) for k, v in sorted(busybox_files().items())}, "mbr": sha256_file(MBR),
        "esp": {"files": ESP_FILES, "bytes": ESP_BYTES, "systemd_boot": sha256_file(SYSTEMD_BOOT)},
    }
    key = content_key(inputs)

    def build(dest: Path) -> None:
        t0 = time.monotonic()
        rootfs, raw, qcow2 = dest / "rootfs", dest / "disk.raw", dest / "disk.qcow2"
        try:
            bootstrap(rootfs, argv)
            t_bootstrap = time.monotonic() - t0
            packages = installed_packages(rootfs)
            _customize_demo(rootfs, kernel, _demo_initramfs(kernel, compression))
            rootfs_bytes = tree_size(rootfs)
            t1 = time.monotonic()
            fs_bytes = _make_disk(rootfs, raw, key, dest / "mnt")
            t_disk = time.monotonic() - t1
            raw_allocated = os.stat(raw).st_blocks * 512
            t2 = time.monotonic()
            run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], timeout=600)
            t_convert = time.monotonic() - t2
        finally:
            raw.unlink(missing_ok=True)
            remove_tree(rootfs)
        sizes = {"qcow2": qcow2.stat().st_size, "virtual": PARTITION_START + fs_bytes + ESP_BYTES,
                 "raw_allocated": raw_allocated, "rootfs": rootfs_bytes}
        details = {"kernel": f"{kernel.package} {kernel.version}", "label": DEMO_LABEL, "hostname": DEMO_HOSTNAME,
                   "bootstrap_s": f"{t_bootstrap:.1f}", "disk_s": f"{t_disk:.1f}", "convert_s": f"{t_convert:.1f}",
                   "initrd_compression": compression}
        (dest / "mnt").rmdir()
        _write_info(dest, key, time.monotonic() - t0, sizes, packages, details, inputs)

    directory = cache_dir / f"demo-disk-{key}"
    hit = _cached_build(directory, build)
    info = _read_info(directory, hit, started)
    log(f"demo disk {'cache hit' if hit else f'built in {info.build_s:.1f} s'} ({info.elapsed_s:.1f} s): "
        f"{directory}/disk.qcow2 {_mib(info.sizes['qcow2'])} (virtual {_mib(info.sizes['virtual'])}, "
        f"rootfs {_mib(info.sizes['rootfs'])}, {len(info.packages)} packages)")
    return DemoDisk(path=directory / "disk.qcow2", info=info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.images", description="Build the lab's images (cached).")
    parser.add_argument("image", choices=("ramdisk", "demo-disk"))
    parser.add_argument("--cache", type=Path, default=Path("var/cache/lab"), help="cache directory (%(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.image == "ramdisk":
            ramdisk = build_ramdisk(args.cache)
            result: dict[str, object] = {"kernel": str(ramdisk.kernel), "initrd": str(ramdisk.initrd),
                                         **_public(ramdisk.info)}
        else:
            disk = build_demo_disk(args.cache)
            result = {"path": str(disk.path), **_public(disk.info)}
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _public(info: BuildInfo) -> dict[str, object]:
    data = asdict(info)
    data["directory"] = str(info.directory)
    data["packages"] = len(info.packages)
    return data


if __name__ == "__main__":
    sys.exit(main())
