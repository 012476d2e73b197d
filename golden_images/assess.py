"""Whether an image may enter the library: a pure decision on what ``qemu-img info`` reported.

Nothing here touches a file. :func:`assess` takes the parsed ``qemu-img info --output=json`` of
an untrusted file, the format its uploader claimed (if any) and the library's limits, and either
returns the few facts the library keeps or raises :class:`ImageRefused` with the reason an
operator can act on. The rules are the ones cloud image services learnt the hard way (OpenStack
OSSA-2015-014, OSSA-2022-002, OSSA-2024-001): an image must be self-contained, so anything that
makes QEMU open a second file - a backing file, a qcow2 external data file, a VMDK extent or
descriptor naming another file - is refused, and so is a file whose contents are another format
than the one claimed (a "raw" upload that is really qcow2 would point at whatever its header names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What the library accepts, as qemu-img names the formats, and the names uploaders use for them.
ACCEPTED_FORMATS = frozenset({"qcow2", "raw", "vmdk", "vpc", "vhdx"})
CLAIM_ALIASES = {"qcow2": "qcow2", "qcow": "qcow2", "raw": "raw", "img": "raw", "vmdk": "vmdk",
                 "vhd": "vpc", "vpc": "vpc", "vhdx": "vhdx"}
# VMDK layouts kept in one file; the others (monolithicFlat, twoGbMaxExtent*, vmfs*) are a text
# descriptor that names extent files elsewhere.
SELF_CONTAINED_VMDK = frozenset({"monolithicSparse", "streamOptimized"})


class ImageRefused(Exception):
    """The image may not enter the library; ``reason`` says why, in words for the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageFacts:
    format: str  # qemu-img's name: qcow2, raw, vmdk, vpc or vhdx
    virtual_size: int  # bytes the guest sees
    actual_size: int  # bytes on disk (sparse files count what is allocated)


def normalise_claim(claim: str | None) -> str | None:
    """The qemu-img format name for what an uploader claimed (a format or a file extension)."""
    if claim is None or not claim.strip():
        return None
    key = claim.strip().lower().lstrip(".")
    if key not in CLAIM_ALIASES:
        raise ImageRefused(f"'{claim}' is not a format the library accepts (qcow2, raw, vmdk, vhd, vhdx)")
    return CLAIM_ALIASES[key]


def assess(info: Mapping[str, Any], *, claimed: str | None, max_virtual_size: int) -> ImageFacts:
    """Decide on one probed file. ``claimed`` is a qemu-img format name or None (take what it is)."""
    fmt = info.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise ImageRefused("qemu-img could not tell the image's format")
    if fmt not in ACCEPTED_FORMATS:
        raise ImageRefused(f"the image is {fmt}, which the library does not accept (qcow2, raw, vmdk, vhd, vhdx)")
    if claimed is not None and fmt != claimed:
        raise ImageRefused(f"the image was given as {claimed} but its contents are {fmt}")
    for key in ("backing-filename", "full-backing-filename", "backing-filename-format"):
        if info.get(key):
            raise ImageRefused(f"the image names a backing file ({info.get(key)!s}); images must be self-contained")
    if info.get("encrypted"):
        raise ImageRefused("the image is encrypted; upload it decrypted")
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, Mapping) else None
    if not isinstance(data, Mapping):
        data = {}
    if fmt == "qcow2":
        if data.get("data-file"):
            raise ImageRefused(f"the qcow2 image stores its data in another file ({data['data-file']!s})")
        if data.get("corrupt"):
            raise ImageRefused("the qcow2 image is marked corrupt")
    if fmt == "vmdk":
        create_type = data.get("create-type")
        if not isinstance(create_type, str) or create_type not in SELF_CONTAINED_VMDK:
            raise ImageRefused(f"the VMDK layout {create_type or 'unknown'!s} keeps its data in other files; "
                               "use monolithicSparse or streamOptimized")
        own = info.get("filename")
        extents = data.get("extents") or []
        if not isinstance(extents, list):
            raise ImageRefused("qemu-img reported the VMDK image's extents in a form it does not know")
        for extent in extents:
            if not isinstance(extent, Mapping) or extent.get("filename") != own:
                raise ImageRefused("the VMDK image names an extent in another file")
    virtual_size = info.get("virtual-size")
    if not isinstance(virtual_size, int) or isinstance(virtual_size, bool) or virtual_size <= 0:
        raise ImageRefused("qemu-img reported no usable virtual size")
    if virtual_size > max_virtual_size:
        raise ImageRefused(f"its virtual size, {virtual_size} bytes, is over the library's limit of "
                           f"{max_virtual_size} bytes")
    actual = info.get("actual-size")
    return ImageFacts(fmt, virtual_size, actual if isinstance(actual, int) and actual >= 0 else 0)
