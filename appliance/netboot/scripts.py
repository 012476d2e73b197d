"""Which iPXE script a machine gets, decided from what the appliance knows about its MAC.

=================  ==========================================================================
the MAC is         the script
=================  ==========================================================================
reserved: netboot  the ramdisk, with a fresh one-time token in the kernel arguments
reserved: disk     boot the local disk (sanboot, else exit to the firmware's next device)
reserved: local    boot the local disk (DHCP gives such machines no boot file; a script is
                   only fetched if someone chainloads by hand)
reserved: none     a refusal
installing server  the installer media's kernel and initrd, told where its answer file is, with a
                   fresh token (an installer deploy: appliance/services/installer.py)
enrolled server    the ramdisk, with a token bound to the server hardware
unknown            by the subnet's unknown-MAC policy: the ramdisk (``discovery``), the local
                   disk (``address-only``) or a refusal (``ignore``)
=================  ==========================================================================

A missing ramdisk is a refusal that names the directory, so the console says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.config import Settings
from appliance.services.installer import InstallerBoot, installer_boot, installers_dir, missing_media
from appliance.services.netboot import NetbootService
from pxe.ipxe import local_disk_script, netboot_script, refusal_script

RAMDISK_FILES = ("vmlinuz", "initrd.img")


@dataclass(frozen=True)
class BootScript:
    text: str
    outcome: str  # ramdisk | installer | disk | refused
    detail: str


def ramdisk_dir(settings: Settings) -> Path:
    return settings.boot.ramdisk_dir or settings.home / "boot" / "ramdisk"


def boot_script(service: NetbootService, settings: Settings, mac: str, base_url: str,
                unknown_policy: str) -> BootScript:
    choice, server = service.boot_choice(mac)
    if server is not None:
        install = installer_boot(service.db, server, base_url)
        if install is not None:
            return _installer_script(settings, server.name, install)
    if choice == "unknown":
        choice = {"discovery": "netboot", "address-only": "disk"}.get(unknown_policy, "none")
    if choice in ("disk", "local"):
        return BootScript(local_disk_script("Ingot: boot from local disk"), "disk", "local disk")
    if choice == "none":
        return BootScript(refusal_script(f"{mac} is not to be booted by this appliance"), "refused",
                          "boot not allowed")
    directory = ramdisk_dir(settings)
    missing = [name for name in RAMDISK_FILES if not (directory / name).is_file()]
    if missing:
        return BootScript(refusal_script(f"no ramdisk to boot: {', '.join(missing)} missing in {directory}"),
                          "refused", f"ramdisk missing in {directory}")
    token = service.issue_token(mac, server, settings.boot.token_ttl_s)
    base = base_url.rstrip("/")
    args = [*settings.boot.kernel_args.split(),
            f"ingot.url={base}", f"ingot.token={token}", f"BOOTIF=01-{mac.replace(':', '-')}"]
    if settings.boot.lldp_wait_s > 0:
        args.append(f"ingot.lldp={settings.boot.lldp_wait_s:g}")
    who = f"server {server.name}" if server is not None else f"machine {mac}"
    text = netboot_script(kernel_url=f"{base}/boot/ramdisk/vmlinuz", initrd_url=f"{base}/boot/ramdisk/initrd.img",
                          kernel_args=args, comment=f"Ingot: ramdisk for {who}")
    return BootScript(text, "ramdisk", "ramdisk")


def _installer_script(settings: Settings, name: str, install: InstallerBoot) -> BootScript:
    missing = missing_media(settings, install.spec)
    if missing:
        where = installers_dir(settings) / install.spec.media
        return BootScript(refusal_script(f"no installer to boot: {', '.join(missing)} missing in {where}"),
                          "refused", f"installer media missing in {where}")
    text = netboot_script(kernel_url=install.kernel_url, initrd_url=install.initrd_url,
                          kernel_args=[*settings.boot.kernel_args.split(), *install.kernel_args],
                          comment=f"Ingot: {install.spec.kind} installer for server {name}")
    return BootScript(text, "installer", f"{install.spec.kind} installer {install.spec.media}")
