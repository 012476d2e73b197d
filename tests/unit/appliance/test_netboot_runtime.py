"""Pieces of the boot services' runtime that need no network: boot loader installation, zone
names, and the refusal to run DHCP on an interface without an address."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.netboot.runtime import InterfaceError, _qualify, install_bootloaders, interface_address


def test_bootloaders_are_copied_and_refreshed(tmp_path: Path) -> None:
    source, root = tmp_path / "ipxe", tmp_path / "tftp"
    source.mkdir()
    (source / "undionly.kpxe").write_bytes(b"bios loader")
    (source / "snponly.efi").write_bytes(b"uefi loader")
    assert install_bootloaders(source, root) == ["ipxe.efi"]
    assert (root / "undionly.kpxe").read_bytes() == b"bios loader"
    (source / "snponly.efi").write_bytes(b"a newer uefi loader")
    os.utime(source / "snponly.efi", (2_000_000_000, 2_000_000_000))
    install_bootloaders(source, root)
    assert (root / "snponly.efi").read_bytes() == b"a newer uefi loader"
    assert not list(root.glob(".*.tmp")), "no temp file is left behind"


@pytest.mark.parametrize(("name", "expected"), [
    ("node7", "node7.lab.test"), ("NODE7.", "node7.lab.test"), ("a.lab.test", "a.lab.test"),
    ("lab.test", "lab.test"), ("5.0.10.10.in-addr.arpa", "5.0.10.10.in-addr.arpa"),
    ("evil-lab.test", "evil-lab.test.lab.test"),
])
def test_zone_names_are_qualified(name: str, expected: str) -> None:
    assert _qualify(name, "lab.test") == expected


def test_dhcp_interface_without_address_is_a_clear_error() -> None:
    with pytest.raises(InterfaceError, match="no-such-if0"):
        interface_address("no-such-if0")
    assert str(interface_address("lo").ip) == "127.0.0.1"
