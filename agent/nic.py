"""The machine's network interfaces, read from sysfs and the kernel (no ``ip`` tool needed).

The boot NIC is the one whose MAC ``BOOTIF`` names; without ``BOOTIF`` (or when no interface
has that MAC) it is the first Ethernet interface by name that is up, else the first by name.
Addresses come from the ``SIOCGIFADDR``/``SIOCGIFNETMASK`` ioctls: the primary IPv4 address.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

SYS_CLASS_NET = "/sys/class/net"
SIOCGIFADDR = 0x8915  # linux/sockios.h
SIOCGIFNETMASK = 0x891B
ARPHRD_ETHER = "1"  # /sys/class/net/<if>/type for Ethernet (linux/if_arp.h)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def interfaces(root: str = SYS_CLASS_NET) -> list[tuple[str, str, bool]]:
    """(name, MAC, is up) of every Ethernet interface, sorted by name."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    found = []
    for name in names:
        base = os.path.join(root, name)
        if _read(os.path.join(base, "type")) != ARPHRD_ETHER or name == "lo":
            continue
        mac = _read(os.path.join(base, "address")).lower()
        state = _read(os.path.join(base, "operstate"))
        found.append((name, mac, state in ("up", "unknown")))
    return found


def boot_interface(bootif: str | None, root: str = SYS_CLASS_NET) -> tuple[str, str] | None:
    """(name, MAC) of the NIC the machine booted from, as the module docstring says, or None
    when the machine has no Ethernet interface."""
    found = interfaces(root)
    if bootif:
        for name, mac, _up in found:
            if mac == bootif:
                return name, mac
    for name, mac, up in found:
        if up:
            return name, mac
    return (found[0][0], found[0][1]) if found else None


def ipv4_address(name: str) -> str | None:
    """``a.b.c.d/prefix`` of interface ``name``, or None when it has no IPv4 address."""
    request = struct.pack("256s", name.encode()[:15])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            addr = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
            mask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, request)
    except OSError:
        return None
    address = socket.inet_ntoa(addr[20:24])  # struct ifreq: 16-byte name, then a sockaddr_in
    prefix = bin(struct.unpack("!I", mask[20:24])[0]).count("1")
    return f"{address}/{prefix}"
