"""The boot-method table and classify(): table-driven, pure."""

from __future__ import annotations

import dataclasses

import pytest

from pxe import bootmethods
from pxe.bootmethods import (
    BIOS_PXE,
    BOOT_METHODS,
    IPXE,
    UEFI_ARM64_HTTP,
    UEFI_ARM64_PXE,
    UEFI_X64_HTTP,
    UEFI_X64_PXE,
    Transport,
    UnknownArchitecture,
    arch_from_vendor_class,
    by_bootloader,
    by_name,
    classify,
)


@pytest.mark.parametrize(
    ("arch", "vendor_class", "user_class", "expected"),
    [
        (0, b"PXEClient:Arch:00000:UNDI:002001", None, BIOS_PXE),
        (7, b"PXEClient:Arch:00007:UNDI:003016", None, UEFI_X64_PXE),
        (9, b"PXEClient:Arch:00009:UNDI:003016", None, UEFI_X64_PXE),  # RFC 4578 erratum: x64 sending 9
        (11, b"PXEClient:Arch:00011:UNDI:003000", None, UEFI_ARM64_PXE),
        (16, b"HTTPClient:Arch:00016:UNDI:003001", None, UEFI_X64_HTTP),
        (19, b"HTTPClient:Arch:00019:UNDI:003001", None, UEFI_ARM64_HTTP),
        (0, None, None, BIOS_PXE),  # option 93 alone is enough for PXE
        # iPXE wins over the architecture, otherwise it would be handed itself again.
        (0, b"PXEClient:Arch:00000:UNDI:002001", b"iPXE", IPXE),
        (7, b"PXEClient:Arch:00007:UNDI:003010", b"iPXE", IPXE),
        (None, None, b"iPXE", IPXE),
        (1234, None, b"iPXE", IPXE),
        # No option 93: the code embedded in option 60 is used.
        (None, b"PXEClient:Arch:00000:UNDI:002001", None, BIOS_PXE),
        (None, b"PXEClient:Arch:00007", None, UEFI_X64_PXE),
        (None, b"HTTPClient:Arch:00016:UNDI:003001", None, UEFI_X64_HTTP),
    ],
)
def test_classify(arch: int | None, vendor_class: bytes | None, user_class: bytes | None, expected: object) -> None:
    assert classify(arch, vendor_class, user_class) is expected


@pytest.mark.parametrize(
    ("arch", "vendor_class", "user_class"),
    [
        (None, None, None),  # nothing to go on
        (None, b"MSFT 5.0", None),  # ordinary DHCP client
        (6, b"PXEClient:Arch:00006:UNDI:003016", None),  # IA32 UEFI: no loader shipped
        (10, None, None),  # ARM32 UEFI: no loader shipped
        (0xFFFF, None, None),
        (16, b"PXEClient:Arch:00016", None),  # HTTP boot arch without HTTPClient: contradictory
        (16, None, None),
        (12345, None, b"gPXE"),  # a user class other than exactly "iPXE" does not rescue an unknown arch
    ],
)
def test_classify_unknown(arch: int | None, vendor_class: bytes | None, user_class: bytes | None) -> None:
    with pytest.raises(UnknownArchitecture) as info:
        classify(arch, vendor_class, user_class)
    assert isinstance(info.value, ValueError)
    assert info.value.vendor_class == vendor_class
    assert "no boot method" in str(info.value)


def test_classify_unknown_keeps_arch_from_vendor_class() -> None:
    with pytest.raises(UnknownArchitecture) as info:
        classify(None, b"PXEClient:Arch:00010:UNDI:003000", None)
    assert info.value.arch == 10


def test_user_class_other_than_ipxe_falls_through_to_arch() -> None:
    assert classify(0, None, b"gPXE") is BIOS_PXE
    assert classify(0, None, b"ipxe") is BIOS_PXE  # exact match: iPXE sends "iPXE"


@pytest.mark.parametrize(
    ("vendor_class", "expected"),
    [
        (b"PXEClient:Arch:00000:UNDI:002001", 0),
        (b"PXEClient:Arch:00007", 7),
        (b"HTTPClient:Arch:00016:UNDI:003001", 16),
        (b"PXEClient", None),
        (b"PXEClient:Arch:7:UNDI:003001", None),
        (b"PXEClient:Arch:000070", None),
        (b"MSFT 5.0", None),
        (None, None),
    ],
)
def test_arch_from_vendor_class(vendor_class: bytes | None, expected: int | None) -> None:
    assert arch_from_vendor_class(vendor_class) == expected


def test_table_is_consistent() -> None:
    names = [m.name for m in BOOT_METHODS]
    assert len(names) == len(set(names))
    # No architecture code may be claimed by two rows, or classify() order would silently decide.
    seen: set[int] = set()
    for method in BOOT_METHODS:
        assert not seen & method.arch_codes, method.name
        seen |= method.arch_codes
    # Rows selected by user class come first (iPXE chainload loop).
    first_arch_row = next(i for i, m in enumerate(BOOT_METHODS) if m.user_class is None)
    assert all(m.user_class is None for m in BOOT_METHODS[first_arch_row:])
    for method in BOOT_METHODS:
        if method.transport is Transport.HTTP and method.user_class is None:
            assert method.reply_vendor_class == b"HTTPClient"  # UEFI HTTP boot ignores offers without it


def test_boot_method_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BIOS_PXE.bootloader = "other"  # type: ignore[misc]


def test_boot_file_tftp_and_http() -> None:
    assert BIOS_PXE.boot_file() == "undionly.kpxe"
    assert UEFI_X64_PXE.boot_file(http_base="http://ignored") == "snponly.efi"
    assert UEFI_X64_HTTP.boot_file(http_base="http://10.0.0.1:8080/") == "http://10.0.0.1:8080/boot/snponly.efi"
    assert IPXE.boot_file(http_base="http://10.0.0.1", mac="AA:BB:CC:00:11:22") == (
        "http://10.0.0.1/ipxe/aa-bb-cc-00-11-22/boot.ipxe"
    )


def test_boot_file_missing_arguments() -> None:
    with pytest.raises(ValueError, match="http_base"):
        UEFI_X64_HTTP.boot_file()
    with pytest.raises(ValueError, match="MAC"):
        IPXE.boot_file(http_base="http://10.0.0.1")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("undionly.kpxe", BIOS_PXE),
        ("/snponly.efi", UEFI_X64_PXE),
        ("snponly-arm64.efi", UEFI_ARM64_PXE),
        ("boot/snponly.efi", UEFI_X64_HTTP),
        ("ipxe/aa-bb-cc-00-11-22/boot.ipxe", IPXE),
        ("ipxe//boot.ipxe", None),
        ("ipxe/a/b/boot.ipxe", None),
        ("ipxe/boot.ipxe", None),
        ("pxelinux.0", None),
        ("", None),
    ],
)
def test_by_bootloader(path: str, expected: object) -> None:
    assert by_bootloader(path) is expected


def test_by_bootloader_round_trips_every_row() -> None:
    for method in BOOT_METHODS:
        served = method.boot_file(http_base="http://h", mac="00:11:22:33:44:55").removeprefix("http://h/")
        assert by_bootloader(served) is method


def test_by_name() -> None:
    assert by_name("bios-pxe") is BIOS_PXE
    assert by_name("nope") is None
    assert set(bootmethods.__all__) >= {"classify", "BootMethod", "UnknownArchitecture"}
