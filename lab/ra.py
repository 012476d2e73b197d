"""Router advertisements on the lab's provisioning bridge, so iPXE does not wait for IPv6.

Why this exists: iPXE configures IPv6 alongside DHCPv4 and, on a segment without a router, waits
about 13 s for an advertisement before it goes on with the boot. The lab's segment has no router,
so every emulated server would lose those seconds on every network boot. This module advertises a
ULA prefix (not a default route) once a second, so iPXE finishes autoconfiguration at once. It is
not a boot service: DHCP, TFTP, the iPXE script, kernel and initrd all come from Ingot.

Run it inside the lab namespace (it opens a raw ICMPv6 socket on INTERFACE)::

    ip netns exec NS python -m lab.ra INTERFACE PREFIX [--interval 1] [--duration 3600]

:func:`router_advertisement` is the packet alone (bytes out, no I/O), :func:`advertise` the loop;
the loop is bounded by ``duration`` and ends by itself.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import sys
import time
from pathlib import Path

__all__ = ["advertise", "main", "router_advertisement"]

# RFC 4861 §4.2 / §4.6: message type and option types.
ICMPV6_ROUTER_ADVERTISEMENT = 134
OPTION_SOURCE_LINK_LAYER_ADDRESS = 1
OPTION_PREFIX_INFORMATION = 3
PREFIX_FLAGS_ON_LINK_AUTONOMOUS = 0xC0  # L (on-link) and A (autonomous address configuration)
VALID_LIFETIME_S = 3600
PREFERRED_LIFETIME_S = 1800
CUR_HOP_LIMIT = 64


def router_advertisement(mac: bytes, prefix: ipaddress.IPv6Network) -> bytes:
    """ICMPv6 Router Advertisement (RFC 4861 §4.2): not a default router, one on-link autonomous
    prefix, our MAC as source link-layer address.

    The checksum is left 0: the kernel fills it in for raw ICMPv6 sockets (RFC 3542 §3.1).

    :param mac: the sending interface's 6-byte MAC.
    :param prefix: the /64 to advertise.
    """
    if len(mac) != 6:
        raise ValueError("mac must be 6 bytes")
    # type, code, checksum, cur hop limit, flags (M=0 O=0), router lifetime 0 (not a default
    # router), reachable time 0 and retrans timer 0 (unspecified)
    header = struct.pack("!BBHBBHII", ICMPV6_ROUTER_ADVERTISEMENT, 0, 0, CUR_HOP_LIMIT, 0, 0, 0, 0)
    # §4.6.1: type, length in units of 8 octets, link-layer address
    source_lla = struct.pack("!BB6s", OPTION_SOURCE_LINK_LAYER_ADDRESS, 1, mac)
    # §4.6.2: type, length 4, prefix length, L|A flags, valid, preferred lifetime, reserved, prefix
    prefix_info = struct.pack("!BBBBIII16s", OPTION_PREFIX_INFORMATION, 4, prefix.prefixlen,
                              PREFIX_FLAGS_ON_LINK_AUTONOMOUS, VALID_LIFETIME_S, PREFERRED_LIFETIME_S, 0,
                              prefix.network_address.packed)
    return header + source_lla + prefix_info


def advertise(interface: str, prefix: ipaddress.IPv6Network, interval: float = 1.0,
              duration: float = 3600.0) -> None:
    """Send :func:`router_advertisement` to all-nodes (ff02::1) on ``interface`` every ``interval``
    seconds for ``duration`` seconds. Send errors are reported on stderr and retried: the bridge
    has no carrier, hence no link-local address, until the first server's tap joins it."""
    mac = bytes.fromhex(Path(f"/sys/class/net/{interface}/address").read_text().strip().replace(":", ""))
    packet = router_advertisement(mac, prefix)
    index = socket.if_nametoindex(interface)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # RFC 4861 §6.1.2
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                sock.sendto(packet, ("ff02::1", 0, 0, index))
            except OSError as exc:
                print(f"RA not sent: {exc}", file=sys.stderr, flush=True)
            time.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.ra",
                                     description="Advertise a ULA prefix on INTERFACE (run in the lab namespace).")
    parser.add_argument("interface")
    parser.add_argument("prefix", type=ipaddress.IPv6Network)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between advertisements")
    parser.add_argument("--duration", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    advertise(args.interface, args.prefix, args.interval, args.duration)


if __name__ == "__main__":
    main()
