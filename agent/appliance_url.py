"""Where the appliance is (``docs/agent-api.md``, "Finding the appliance").

1. ``ingot.url=`` on the kernel command line: the appliance's iPXE script puts it there, so a
   machine booted by the appliance always has it;
2. else the DHCP server that gave the boot NIC its lease, on the boot listener's default port:
   a machine booted some other way (a USB stick, a hand-made iPXE script) on a network the
   appliance serves still finds it. The ramdisk's udhcpc script writes the lease to
   ``/run/ingot/dhcp.env`` as ``key=value`` lines (``serverid``, ``siaddr``, ``ip``, ``mask``).

Only an IPv4 address is accepted as the server id: the file is plain text a script wrote, and
whatever it holds goes into a URL.
"""

from __future__ import annotations

import ipaddress

DHCP_ENV = "/run/ingot/dhcp.env"
DEFAULT_PORT = 8080  # INGOT_HTTP_PORT's default: the plain-HTTP boot listener


def read_env(path: str = DHCP_ENV) -> dict[str, str]:
    """The ``key=value`` lines of ``path`` (blank values and other lines skipped); ``{}`` when
    the file is missing (no lease, or not the ramdisk)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and value.strip():
            found[key.strip()] = value.strip()
    return found


def dhcp_server_url(path: str = DHCP_ENV, port: int = DEFAULT_PORT) -> str | None:
    """``http://<server id>:<port>`` from the lease file, or None."""
    server = read_env(path).get("serverid")
    if server is None:
        return None
    try:
        address = ipaddress.IPv4Address(server)
    except ValueError:
        return None
    return f"http://{address}:{port}"


def appliance_url(cmdline_url: str | None, dhcp_env: str = DHCP_ENV) -> str | None:
    """The appliance's base URL by the module docstring's order, or None when unknown."""
    return cmdline_url or dhcp_server_url(dhcp_env)
