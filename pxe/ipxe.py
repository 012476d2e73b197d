"""iPXE scripts, rendered as plain text (no I/O): what a machine running iPXE does next.

Three outcomes cover every case the appliance decides:

* :func:`netboot_script` - fetch a kernel and initrd over HTTP and boot them, with kernel
  arguments that carry the node's one-time token and the appliance's address;
* :func:`local_disk_script` - boot the first local disk (``sanboot`` to BIOS drive 0x80, and if
  that is not possible, ``exit`` so the firmware moves on to its next boot device);
* :func:`refusal_script` - print why there is nothing to boot, wait a little so a person at the
  console can read it, and ``exit``.

Every value placed in a script is checked: iPXE expands ``${...}`` settings and splits on
whitespace, so a URL or argument containing either would change what the script does.
"""

from __future__ import annotations

import re

__all__ = ["ScriptError", "local_disk_script", "netboot_script", "refusal_script"]

# What may appear in a kernel argument or URL we put in a script: no whitespace, no ${}
# expansion, no quotes and nothing that is not printable ASCII.
_SAFE = re.compile(r"^[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=%-]+$")
# Messages are echoed; allow spaces but still no expansion or control characters.
_SAFE_MESSAGE = re.compile(r"^[ -#%-~]*$")  # printable ASCII without '$'


class ScriptError(ValueError):
    """A value cannot be placed in an iPXE script safely."""


def _checked(value: str, what: str) -> str:
    if not value or not _SAFE.match(value) or "${" in value:
        raise ScriptError(f"{what} {value!r} cannot go into an iPXE script")
    return value


def netboot_script(*, kernel_url: str, initrd_url: str, kernel_args: list[str], comment: str = "") -> str:
    """Boot ``kernel_url`` with ``initrd_url``; ``kernel_args`` are passed through in order.

    The initrd is named ``initrd.img`` so that EFI-stub kernels find it through
    ``initrd=initrd.img`` (iPXE registers downloaded images under their name for the EFI stub).
    """
    args = " ".join(_checked(arg, "kernel argument") for arg in kernel_args)
    lines = ["#!ipxe"]
    if comment:
        lines.append(f"# {_message(comment)}")
    lines += [
        f"kernel {_checked(kernel_url, 'kernel URL')} initrd=initrd.img {args}".rstrip(),
        f"initrd --name initrd.img {_checked(initrd_url, 'initrd URL')}",
        "boot",
    ]
    return "\n".join(lines) + "\n"


def local_disk_script(comment: str = "") -> str:
    """Boot from the first local disk, or leave iPXE so the firmware tries its next device."""
    lines = ["#!ipxe"]
    if comment:
        lines.append(f"# {_message(comment)}")
    lines += ["sanboot --no-describe --drive 0x80 || exit 0"]
    return "\n".join(lines) + "\n"


def refusal_script(reason: str, *, pause_s: int = 10) -> str:
    """Tell the console why there is nothing to boot, then give the machine back to its firmware."""
    return f"#!ipxe\necho Ingot: {_message(reason)}\nsleep {int(pause_s)}\nexit 1\n"


def _message(text: str) -> str:
    flat = " ".join(text.split())
    if not _SAFE_MESSAGE.match(flat):
        flat = flat.encode("ascii", "replace").decode().replace("$", "?")
        flat = "".join(ch if " " <= ch <= "~" else "?" for ch in flat)
    return flat
