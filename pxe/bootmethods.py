"""The boot-method table: which first-stage loader a network-booting client gets, and how.

Theory of operation
-------------------
A netbooting client tells the DHCP server what it is with three options:

* option 93, Client System Architecture (RFC 4578 §2.1; codes from the IANA "Processor
  Architecture Types" registry): a 16-bit code such as 0 (x86 BIOS) or 7 (x64 UEFI);
* option 60, Vendor Class Identifier (RFC 2132 §9.13): ``PXEClient:Arch:xxxxx:UNDI:yyyzzz`` from
  PXE firmware, ``HTTPClient:Arch:xxxxx:...`` from UEFI HTTP boot (UEFI spec §24.7);
* option 77, User Class (RFC 3004): iPXE sends the bare string ``iPXE`` once it is running.

:func:`classify` maps those to one :class:`BootMethod` from :data:`BOOT_METHODS`. The DHCP policy
uses the result to fill option 67 / ``file`` (and echo option 60); the TFTP and HTTP servers use
:func:`by_bootloader` on the requested path to learn which method a file belongs to. Both sides
read this one table (STYLE.md §7), so adding an architecture is one entry here.

The chain is: firmware (PXE or HTTP boot) -> iPXE binary from this table -> iPXE DHCPs again,
now with user class ``iPXE`` -> it gets the per-node iPXE script URL and the chainload stops.
That is why the user class is checked before the architecture: otherwise iPXE would be handed
itself again, forever.

Bootloader names
----------------
The files are iPXE builds, renamed so every architecture can share one TFTP root:

* ``undionly.kpxe``       iPXE ``bin/undionly.kpxe`` (uses the BIOS PXE ROM's UNDI driver);
* ``snponly.efi``         iPXE ``bin-x86_64-efi/snponly.efi``;
* ``snponly-arm64.efi``   iPXE ``bin-arm64-efi/snponly.efi``.

``snponly`` rather than the full ``ipxe.efi`` because it drives the NIC through the firmware's
own SNP driver, so it works on any NIC the firmware can PXE from, including ones iPXE has no
native driver for. Sites that need iPXE's native drivers can swap the file under the same name.

Unknown architectures
---------------------
:func:`classify` raises :class:`UnknownArchitecture` when nothing in the table fits (an
architecture code we do not ship a loader for, a missing option 93 with no usable option 60,
or an option 60 that contradicts the architecture). It never guesses: handing an arm64 machine
an x86 binary wastes a boot attempt and hides the real problem. The DHCP policy is expected to
catch it, log it, and answer without boot options (plain DHCP) or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = [
    "BIOS_PXE",
    "BOOT_METHODS",
    "IPXE",
    "UEFI_ARM64_HTTP",
    "UEFI_ARM64_PXE",
    "UEFI_X64_HTTP",
    "UEFI_X64_PXE",
    "Arch",
    "BootMethod",
    "Transport",
    "UnknownArchitecture",
    "arch_from_vendor_class",
    "by_bootloader",
    "by_name",
    "classify",
]


class Arch(IntEnum):
    """Option 93 values we know by name (IANA Processor Architecture Types, RFC 4578 §2.1)."""

    X86_BIOS = 0  # Intel x86PC, legacy BIOS PXE
    X86_UEFI = 6  # EFI IA32
    X64_UEFI = 7  # EFI x86-64
    EFI_BC = 9  # EFI Byte Code; RFC 4578 erratum 4017: much x64 firmware sends 9 instead of 7
    ARM32_UEFI = 10  # ARM 32-bit UEFI
    ARM64_UEFI = 11  # ARM 64-bit UEFI
    X86_UEFI_HTTP = 15  # x86 UEFI HTTP boot
    X64_UEFI_HTTP = 16  # x64 UEFI HTTP boot
    ARM64_UEFI_HTTP = 19  # ARM 64-bit UEFI HTTP boot


class Transport(StrEnum):
    """How the client fetches :attr:`BootMethod.bootloader`."""

    TFTP = "tftp"  # option 67 / BOOTP ``file`` holds a bare TFTP path; option 66 / siaddr the server
    HTTP = "http"  # option 67 / ``file`` holds a full http:// URL (UEFI HTTP boot, iPXE)


@dataclass(frozen=True, slots=True)
class BootMethod:
    """One row of the table. Immutable; compare and hash by value.

    :param name: short stable identifier, used in logs, metrics and the API.
    :param arch_codes: option 93 codes (RFC 4578 §2.1) this row serves. Empty means "any
        architecture", used only by rows selected by user class.
    :param user_class: option 77 value (RFC 3004) the client must send, or ``None`` when the
        row does not depend on it. Compared for exact equality.
    :param vendor_class: prefix option 60 (RFC 2132 §9.13) must start with, or ``None`` when
        the row does not depend on it.
    :param reply_vendor_class: option 60 the server puts in its reply, or ``None``. UEFI HTTP boot
        ignores offers that do not echo ``HTTPClient`` (UEFI spec §24.7.2); PXE ROMs look for
        ``PXEClient`` (PXE 2.1 §2.2).
    :param bootloader: for TFTP, the path in the TFTP root; for HTTP, the path under the boot
        HTTP server's base URL. May contain ``{mac}``, replaced by :meth:`boot_file`.
    :param transport: how the client fetches :attr:`bootloader`.
    """

    name: str
    arch_codes: frozenset[int]  # option 93
    user_class: bytes | None  # option 77
    vendor_class: bytes | None  # option 60 (request, prefix match)
    reply_vendor_class: bytes | None  # option 60 (reply)
    bootloader: str  # option 67 / BOOTP file (RFC 2132 §9.5, RFC 2131 §2)
    transport: Transport

    def boot_file(self, *, http_base: str | None = None, mac: str | None = None) -> str:
        """The value for option 67 / BOOTP ``file``.

        :param http_base: base URL of the boot HTTP server, e.g. ``http://10.0.0.1:8080``.
            Required for HTTP methods, ignored for TFTP ones.
        :param mac: client MAC as ``aa-bb-cc-dd-ee-ff`` (the form iPXE script URLs use);
            required when :attr:`bootloader` contains ``{mac}``.
        :raises ValueError: a needed argument is missing.
        :returns: a TFTP path or an absolute http:// URL.
        """
        path = self.bootloader
        if "{mac}" in path:
            if mac is None:
                raise ValueError(f"boot method {self.name!r} needs the client MAC")
            path = path.replace("{mac}", mac.lower().replace(":", "-"))
        if self.transport is Transport.TFTP:
            return path
        if not http_base:
            raise ValueError(f"boot method {self.name!r} is HTTP and needs http_base")
        return f"{http_base.rstrip('/')}/{path}"


class UnknownArchitecture(ValueError):
    """No row of :data:`BOOT_METHODS` fits the client. The caller should not offer a boot file.

    :ivar arch: the option 93 code (after the option 60 fallback), or ``None`` if unknown.
    :ivar vendor_class: the option 60 value as received.
    """

    def __init__(self, arch: int | None, vendor_class: bytes | None, reason: str) -> None:
        self.arch = arch
        self.vendor_class = vendor_class
        super().__init__(f"no boot method for arch={arch!r} vendor_class={vendor_class!r}: {reason}")


BIOS_PXE = BootMethod(
    name="bios-pxe",
    arch_codes=frozenset({Arch.X86_BIOS}),
    user_class=None,
    vendor_class=None,  # PXE ROMs send "PXEClient:...", but 93 alone is enough to pick the loader
    reply_vendor_class=b"PXEClient",
    bootloader="undionly.kpxe",
    transport=Transport.TFTP,
)
UEFI_X64_PXE = BootMethod(
    name="uefi-x64-pxe",
    arch_codes=frozenset({Arch.X64_UEFI, Arch.EFI_BC}),
    user_class=None,
    vendor_class=None,  # PXE ROMs send "PXEClient:...", but 93 alone is enough to pick the loader
    reply_vendor_class=b"PXEClient",
    bootloader="snponly.efi",
    transport=Transport.TFTP,
)
UEFI_ARM64_PXE = BootMethod(
    name="uefi-arm64-pxe",
    arch_codes=frozenset({Arch.ARM64_UEFI}),
    user_class=None,
    vendor_class=None,  # PXE ROMs send "PXEClient:...", but 93 alone is enough to pick the loader
    reply_vendor_class=b"PXEClient",
    bootloader="snponly-arm64.efi",
    transport=Transport.TFTP,
)
UEFI_X64_HTTP = BootMethod(
    name="uefi-x64-http",
    arch_codes=frozenset({Arch.X64_UEFI_HTTP}),
    user_class=None,
    vendor_class=b"HTTPClient",
    reply_vendor_class=b"HTTPClient",
    bootloader="boot/snponly.efi",
    transport=Transport.HTTP,
)
UEFI_ARM64_HTTP = BootMethod(
    name="uefi-arm64-http",
    arch_codes=frozenset({Arch.ARM64_UEFI_HTTP}),
    user_class=None,
    vendor_class=b"HTTPClient",
    reply_vendor_class=b"HTTPClient",
    bootloader="boot/snponly-arm64.efi",
    transport=Transport.HTTP,
)
IPXE = BootMethod(
    name="ipxe",
    arch_codes=frozenset(),  # the script is architecture independent; iPXE is already running
    user_class=b"iPXE",
    vendor_class=None,
    reply_vendor_class=None,
    bootloader="ipxe/{mac}/boot.ipxe",
    transport=Transport.HTTP,
)

#: Every boot method, in match order: user-class rows first (see the module docstring).
BOOT_METHODS: tuple[BootMethod, ...] = (IPXE, BIOS_PXE, UEFI_X64_PXE, UEFI_ARM64_PXE, UEFI_X64_HTTP, UEFI_ARM64_HTTP)

# PXE 2.1 §2.1 / UEFI §24.7: "PXEClient:Arch:xxxxx:UNDI:yyyzzz", xxxxx the decimal option 93 code.
_VENDOR_ARCH = re.compile(rb"^(?:PXEClient|HTTPClient):Arch:(\d{5})(?::|$)")


def arch_from_vendor_class(vendor_class: bytes | None) -> int | None:
    """The architecture code embedded in a PXE/HTTP boot option 60, or ``None``."""
    if vendor_class is None:
        return None
    match = _VENDOR_ARCH.match(vendor_class)
    return int(match.group(1)) if match else None


def classify(arch: int | None, vendor_class: bytes | None, user_class: bytes | None) -> BootMethod:
    """Pick the boot method for a client. Pure; no I/O.

    :param arch: option 93 (first code if the client sent several; RFC 4578 §2.1 lists them in
        preference order), or ``None`` if absent. When absent, the code embedded in option 60 is
        used instead (some old PXE ROMs omit 93).
    :param vendor_class: option 60 as received, or ``None``.
    :param user_class: option 77 as received, or ``None``.
    :raises UnknownArchitecture: nothing in :data:`BOOT_METHODS` fits. Never guessed around.
    :returns: the first matching row of :data:`BOOT_METHODS`.
    """
    if arch is None:
        arch = arch_from_vendor_class(vendor_class)
    for method in BOOT_METHODS:
        if method.user_class is not None:
            if user_class == method.user_class:
                return method
            continue
        if arch is None or arch not in method.arch_codes:
            continue
        if method.vendor_class is not None and not (vendor_class or b"").startswith(method.vendor_class):
            # e.g. arch 16 (HTTP boot) but option 60 says PXEClient: contradictory, do not guess.
            raise UnknownArchitecture(arch, vendor_class, f"option 60 must start with {method.vendor_class!r}")
        return method
    reason = "no option 93 and no architecture in option 60" if arch is None else "no loader for this architecture"
    raise UnknownArchitecture(arch, vendor_class, reason)


def by_name(name: str) -> BootMethod | None:
    """The row called ``name``, or ``None``."""
    return next((m for m in BOOT_METHODS if m.name == name), None)


def by_bootloader(path: str) -> BootMethod | None:
    """The row whose loader is ``path`` (as requested over TFTP or HTTP), or ``None``.

    Leading slashes are ignored because some firmware asks for ``/snponly.efi``. Templated rows
    (``{mac}``) match any single path segment in place of the placeholder.
    """
    path = path.lstrip("/")
    for method in BOOT_METHODS:
        if "{mac}" in method.bootloader:
            head, _, tail = method.bootloader.partition("{mac}")
            middle = path[len(head) : len(path) - len(tail)] if len(path) > len(head) + len(tail) else ""
            if path.startswith(head) and path.endswith(tail) and middle and "/" not in middle:
                return method
        elif path == method.bootloader:
            return method
    return None
