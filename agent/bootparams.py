"""What the appliance tells the agent through the kernel command line.

The appliance's iPXE script (``appliance/netboot/scripts.py``) boots the ramdisk with::

    <settings.boot.kernel_args> ingot.url=<appliance base URL> ingot.token=<one-time token>
    BOOTIF=01-<mac with dashes>

``BOOTIF`` is the PXELINUX/iPXE convention for the NIC the machine booted from (``01`` is the
ARP hardware type, Ethernet). ``ingot.poweroff`` (a flag) asks the ramdisk to power the machine
off once the agent has finished, which scripted tests use.

This module runs on the target inside the ramdisk (``python3-minimal`` plus
``libpython3-stdlib``): standard library modules only.
The token is a secret: it is never part of a ``repr`` or a report, only its length.
"""

from __future__ import annotations

URL_ARG = "ingot.url"
TOKEN_ARG = "ingot.token"  # noqa: S105 - the argument name, not a token
POWEROFF_ARG = "ingot.poweroff"
LLDP_ARG = "ingot.lldp"  # seconds to listen for each NIC's LLDP neighbour before the inventory
MAX_LLDP_S = 300.0
BOOTIF_ARG = "BOOTIF"
_HEX = "0123456789abcdef"


def split_cmdline(text: str) -> list[str]:
    """The kernel's own splitting (``lib/cmdline.c`` ``next_arg``): whitespace separates
    arguments except inside double quotes, and the quotes themselves are dropped."""
    args: list[str] = []
    current: list[str] = []
    quoted = False
    started = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            started = True
        elif ch.isspace() and not quoted:
            if started:
                args.append("".join(current))
            current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        args.append("".join(current))
    return args


def parse_cmdline(text: str) -> dict[str, str]:
    """``key=value`` arguments as a dict (a later one wins, as for most kernel parameters);
    a bare flag maps to ``""``."""
    params: dict[str, str] = {}
    for arg in split_cmdline(text):
        key, _, value = arg.partition("=")
        if key:
            params[key] = value
    return params


def normalize_mac(value: str) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` from a MAC written with ``:`` or ``-`` (any case), or None."""
    parts = value.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in _HEX for c in p) for p in parts):
        return None
    return ":".join(parts)


def bootif_mac(value: str) -> str | None:
    """The MAC in a ``BOOTIF=01-aa-bb-cc-dd-ee-ff`` value, or None if it is not an Ethernet
    one. A bare MAC with colons (no hardware type) is accepted too."""
    value = value.strip()
    parts = value.split("-")
    if len(parts) == 7:
        return normalize_mac(":".join(parts[1:])) if parts[0] == "01" else None
    return normalize_mac(value) if "-" not in value else None


def lldp_seconds(value: str | None) -> float:
    """``ingot.lldp=SECONDS`` as a number of seconds in [0, :data:`MAX_LLDP_S`]; 0 (off) when absent or
    not a number."""
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        return 0.0
    return min(MAX_LLDP_S, seconds) if seconds > 0 else 0.0  # also NaN -> 0


class BootParams:
    """The agent's settings from the kernel command line. The token stays out of ``repr``."""

    __slots__ = ("bootif", "lldp_s", "poweroff", "token", "url")

    def __init__(self, url: str | None = None, token: str | None = None, bootif: str | None = None,
                 poweroff: bool = False, lldp_s: float = 0.0) -> None:
        self.url = url
        self.token = token
        self.bootif = bootif
        self.poweroff = poweroff
        self.lldp_s = lldp_s

    @classmethod
    def from_cmdline(cls, text: str) -> BootParams:
        params = parse_cmdline(text)
        bootif = params.get(BOOTIF_ARG)
        return cls(url=params.get(URL_ARG) or None, token=params.get(TOKEN_ARG) or None,
                   bootif=bootif_mac(bootif) if bootif else None, poweroff=POWEROFF_ARG in params,
                   lldp_s=lldp_seconds(params.get(LLDP_ARG)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BootParams):
            return NotImplemented
        return (self.url, self.token, self.bootif, self.poweroff, self.lldp_s) == (
            other.url, other.token, other.bootif, other.poweroff, other.lldp_s)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (f"BootParams(url={self.url!r}, token={mask_token(self.token)}, bootif={self.bootif!r}, "
                f"poweroff={self.poweroff!r}, lldp_s={self.lldp_s!r})")


def mask_token(token: str | None) -> str:
    """How a token is shown anywhere: ``none``, or ``<masked:N>`` with only its length."""
    return "none" if not token else f"<masked:{len(token)}>"


def printable(value: str | None, limit: int = 200) -> str:
    """``value`` safe for one ``key=value`` field of a console line: ``none`` when unset, no
    whitespace or control characters, no user:password in a URL, at most ``limit`` characters."""
    if not value:
        return "none"
    scheme, sep, rest = value.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = "***@" + authority.rsplit("@", 1)[1]
        value = scheme + sep + authority + slash + path
    cleaned = "".join(c if c.isprintable() and not c.isspace() else "?" for c in value)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."
