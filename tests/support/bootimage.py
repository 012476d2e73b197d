"""A tiny network-bootable Linux for the QEMU tests: Debian's own kernel plus a busybox initramfs
whose /init prints a marker and the kernel command line on the serial port, asks for a DHCP
lease with ``udhcpc``, prints the address and powers the VM off.

The kernel, its modules in load order, the cpio writer and the cache entries come from the lab's
image builders (``lab.kernel``, ``lab.initramfs``, ``lab.build``); this module only holds the
test image's own /init and udhcpc script. The same inputs give the same bytes, and everything is
cached under ``cache_dir`` by a content key (see ``lab.build.atomic_dir``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from lab.build import BuildError, atomic_dir, sha256_file
from lab.initramfs import Archive, busybox_files, compress
from lab.kernel import Kernel, fetch_kernel

MARKER = "INGOT-NETBOOT-MARKER"
ADDRESS_MARKER = "INGOT-NETBOOT-ADDRESS"
FORMAT = 1  # bump when the layout or build steps change in a way the key would not see
MODULES = ("virtio_pci", "virtio_net")  # + their dependencies (virtio, virtio_ring, failover, ...)
# Built-in options this initramfs relies on (checked against the package's config file).
REQUIRED_CONFIG = ("CONFIG_BLK_DEV_INITRD", "CONFIG_RD_GZIP", "CONFIG_DEVTMPFS", "CONFIG_PACKET",
                   "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_MODULES")
BootImageError = BuildError

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


def _initramfs(kernel: Kernel) -> bytes:
    modules = kernel.load_order(MODULES)
    archive = Archive()
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "lib/modules"):
        archive.add_dir(d)
    archive.add_char_device("dev/console", 5, 1)
    for inside, host in busybox_files().items():
        archive.add_file(inside, host.read_bytes(), 0o755)
    for ko in modules:
        archive.add_file(f"lib/modules/{ko.name}", ko.read_bytes())
    archive.add_file("etc/modules.list", ("\n".join(ko.name for ko in modules) + "\n").encode())
    archive.add_file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    archive.add_file("init", INIT.encode(), 0o755)
    return compress(archive.cpio(), "gzip")


def build_boot_image(cache_dir: Path) -> BootImage:
    """The kernel and initramfs (cached); see the module docstring."""
    kernel = fetch_kernel(cache_dir)
    kernel.require_builtin(REQUIRED_CONFIG)
    key = hashlib.sha256(json.dumps({
        "format": FORMAT, "package": kernel.package, "version": kernel.version, "init": INIT,
        "udhcpc": UDHCPC_SCRIPT, "modules": MODULES,
        "busybox": {k: sha256_file(v) for k, v in sorted(busybox_files().items())},
    }, sort_keys=True).encode()).hexdigest()[:16]

    def build(dest: Path) -> None:
        (dest / "vmlinuz").write_bytes(kernel.vmlinuz.read_bytes())
        (dest / "initrd.img").write_bytes(_initramfs(kernel))

    image_dir = atomic_dir(cache_dir / f"image-{key}", build)
    return BootImage(kernel=image_dir / "vmlinuz", initrd=image_dir / "initrd.img")


if __name__ == "__main__":
    import sys

    started = time.monotonic()
    image = build_boot_image(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("test-artifacts/cache/bootimage"))
    print(f"{image.kernel} ({image.kernel.stat().st_size} bytes)\n{image.initrd} ({image.initrd.stat().st_size} bytes)"
          f"\nin {time.monotonic() - started:.1f} s")
