"""Pure DHCP policy: one decoded request in, at most one reply (and where to send it) out.

Theory of operation
-------------------
:func:`decide` is the whole DHCP server minus the socket. The transport decodes a datagram,
calls ``decide(request, config, backend, now)`` and, when a :class:`Decision` comes back, sends
``decision.encode()`` to ``decision.destination``. No clock, socket or logger is touched here;
state lives in the :class:`~pxe.backend.DhcpBackend`.

Two modes (:attr:`SubnetConfig.mode`):

``server``
    An authoritative DHCP server for one subnet. DISCOVER -> OFFER, REQUEST -> ACK/NAK,
    INFORM -> ACK without an address, RELEASE and DECLINE update the backend and get no reply.
    Netboot clients also get boot options (see below).

``proxy``
    ProxyDHCP (PXE 2.1 §2.2.3, RFC 4578): another server hands out addresses; we only tell
    PXE/HTTP-boot clients what to boot. The OFFER carries no ``yiaddr`` and creates no lease.
    A PXE client then usually sends a REQUEST to port 4011 (PXE 2.1 §2.2.4, "Boot Server
    request"); pass ``local_port=4011`` and it gets an ACK with the same boot options, sent back
    to its source address (:attr:`DestinationKind.SOURCE`). Port-4011 requests are answered the
    same way in server mode. Offers to PXEClient firmware (proxy and server mode alike) carry
    option 43 with ``PXE_DISCOVERY_CONTROL`` (sub-option 6) = 0x08: "the boot file in this offer
    is the one to use; skip boot server discovery and menus". We chose bit 3 rather than bits 0/1
    ("no broadcast/multicast discovery") because bit 3 alone already stops discovery and is what
    every PXE ROM we know of handles; without option 43 at all some ROMs wait for a discovery
    that never comes, and UEFI's own PXE client (EDK2, OVMF) takes a PXEClient offer without it
    for one that needs a boot-server request first, then gives up ("PXE-E16: No valid offer
    received") - seen with the lab's UEFI servers.

Boot options
------------
A client is a netboot client if option 60 starts with ``PXEClient`` or ``HTTPClient`` or option
77 is ``iPXE``. :func:`pxe.bootmethods.classify` picks the loader; the reply then carries:

* option 60 echoed as the method's ``reply_vendor_class`` (PXE ROMs and UEFI HTTP boot ignore
  offers without it);
* TFTP methods: ``siaddr`` and option 66 = TFTP server, ``file`` and option 67 = loader path;
* HTTP methods (UEFI HTTP boot, iPXE): ``file`` and option 67 = absolute URL under
  :attr:`SubnetConfig.http_base` (iPXE gets its per-MAC script);
* option 97 echoed when the client sent it (PXE 2.1 requires the UUID in replies).

Both the BOOTP ``file`` field and option 67 are set because old PXE ROMs read only ``file``
and some UEFI firmware only option 67. :class:`~pxe.bootmethods.UnknownArchitecture` (and an
HTTP method without ``http_base``) means no boot options: the client still gets an address in
server mode, and nothing in proxy mode.

Which machines are answered
---------------------------
Known hosts follow :attr:`HostConfig.boot`: ``netboot`` (address and boot options), ``local``
(address only), ``none`` (silence). Unknown MACs follow :attr:`SubnetConfig.unknown_mac`:
``ignore`` (silence), ``discovery`` (treated as ``netboot`` so they boot the discovery image),
``address-only`` (treated as ``local``).

Reply size and option order
---------------------------
Options go out as 53, 54, then the codes of option 55 in the client's order, then the rest
(RFC 2131 §4.3.1 asks for the requested ones; some PXE ROMs only look at the first few). The
reply must fit option 57 minus 28 bytes of IP/UDP header, never less than 548 (RFC 2131 §2);
if it does not, options are dropped from the end, unrequested ones first, never 53/54/51 or a
boot option. A reply that still does not fit is not sent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from typing import Final, Literal

from pxe.backend import DhcpBackend, HostConfig
from pxe.bootmethods import BootMethod, Transport, UnknownArchitecture, classify
from pxe.dhcp.codec import (
    BROADCAST_FLAG,
    DEFAULT_MAX_MESSAGE_SIZE,
    DhcpPacket,
    EncodeError,
    MessageType,
    Op,
    Option,
    encode,
    encode_ip,
    encode_ips,
    encode_text,
    encode_u32,
)

__all__ = [
    "CLIENT_PORT",
    "PROXY_PORT",
    "SERVER_PORT",
    "Decision",
    "Destination",
    "DestinationKind",
    "SubnetConfig",
    "boot_method",
    "decide",
    "is_netboot_client",
    "max_reply_size",
    "reply_destination",
]

SERVER_PORT: Final = 67  # RFC 2131 §4.1
CLIENT_PORT: Final = 68  # RFC 2131 §4.1
PROXY_PORT: Final = 4011  # PXE 2.1 §2.2.4: Boot Server / ProxyDHCP REQUEST port
_IP_UDP_HEADERS: Final = 28  # IPv4 (20, no options) + UDP (8): option 57 counts the whole datagram
_INFINITE: Final = 0xFFFFFFFF  # RFC 2132 §9.2
_LIMITED_BROADCAST: Final = IPv4Address("255.255.255.255")
_ZERO: Final = IPv4Address(0)
T1_OPTION: Final = 58  # RFC 2132 §9.11 renewal time
T2_OPTION: Final = 59  # RFC 2132 §9.12 rebinding time
_MESSAGE: Final = 56  # RFC 2132 §9.9 error text in a NAK
# PXE 2.1 §2.4, table 2-1: option 43 sub-option 6 PXE_DISCOVERY_CONTROL, bit 3 = use this boot
# file, no discovery; then END (255) of the encapsulated options.
_PXE_VENDOR_OPTIONS: Final = bytes((6, 1, 0x08, 255))
_NETBOOT_VENDOR_PREFIXES: Final = (b"PXEClient", b"HTTPClient")
#: Options never dropped to make a reply fit: without them the reply is useless or invalid.
_ESSENTIAL: Final = frozenset(
    {
        Option.MESSAGE_TYPE,
        Option.SERVER_ID,
        Option.LEASE_TIME,
        Option.VENDOR_CLASS,
        Option.TFTP_SERVER_NAME,
        Option.BOOTFILE_NAME,
        Option.VENDOR_SPECIFIC,
        Option.CLIENT_MACHINE_ID,
    }
)


@dataclass(frozen=True, slots=True)
class SubnetConfig:
    """Everything the policy needs to know about the one subnet it serves.

    :param server_ip: our address on the subnet; option 54 and the default TFTP server.
    :param network: the subnet, e.g. ``IPv4Network("10.0.0.0/24")``; gives option 1 and 28 and
        bounds which requested addresses are acceptable.
    :param router: option 3, or ``None``.
    :param dns: option 6 (empty: not sent).
    :param domain: option 15, or ``None``.
    :param lease_time: option 51 seconds; T1/T2 (58/59) are 1/2 and 7/8 of it (RFC 2131 §4.4.5).
    :param mode: ``server`` (authoritative) or ``proxy`` (ProxyDHCP, boot options only).
    :param http_base: base URL for HTTP boot and iPXE scripts, e.g. ``http://10.0.0.1:8080``.
        Without it, HTTP boot methods get no boot options.
    :param tftp_server: TFTP server for ``siaddr``/option 66; defaults to ``server_ip``.
    :param unknown_mac: what unknown MACs get: ``ignore``, ``discovery`` or ``address-only``.
    """

    server_ip: IPv4Address
    network: IPv4Network
    router: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    domain: str | None = None
    lease_time: int = 3600
    mode: Literal["server", "proxy"] = "server"
    http_base: str | None = None
    tftp_server: IPv4Address | None = None
    unknown_mac: Literal["ignore", "discovery", "address-only"] = "discovery"

    def __post_init__(self) -> None:
        if not 0 < self.lease_time <= _INFINITE:
            raise ValueError(f"lease_time must be 1..{_INFINITE} seconds, got {self.lease_time}")

    @property
    def netmask(self) -> IPv4Address:
        """Option 1."""
        return self.network.netmask

    @property
    def next_server(self) -> IPv4Address:
        """``siaddr`` / option 66 for TFTP boot."""
        return self.tftp_server if self.tftp_server is not None else self.server_ip


class DestinationKind(StrEnum):
    """How the transport delivers a reply (RFC 2131 §4.1)."""

    RELAY = "relay"  # unicast to giaddr, port 67
    UNICAST = "unicast"  # unicast to ciaddr, port 68: the client has a working address
    BROADCAST = "broadcast"  # 255.255.255.255:68
    #: Unicast to yiaddr at the client's MAC, port 68. The client cannot answer ARP yet, so the
    #: transport must insert an ARP entry (or send on a raw socket), or fall back to broadcast.
    HARDWARE = "hardware"
    SOURCE = "source"  # back to the request's source address and port (PXE port-4011 path)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a reply goes. ``ip``/``port`` are meaningless for :attr:`DestinationKind.SOURCE`."""

    kind: DestinationKind
    ip: IPv4Address
    port: int
    mac: str | None = None  # the client's MAC, for HARDWARE


@dataclass(frozen=True, slots=True)
class Decision:
    """A reply and where to send it.

    :ivar reply: the packet; ``encode(reply, max_size=max_size)`` is known to succeed.
    :ivar destination: see :func:`reply_destination`.
    :ivar max_size: the largest message the client accepts (option 57, clamped).
    :ivar boot_method: the boot method whose options are in the reply, or ``None``.
    :ivar note: why boot options were left out, for the transport's log, or ``""``.
    """

    reply: DhcpPacket
    destination: Destination
    max_size: int
    boot_method: BootMethod | None = None
    note: str = ""

    def encode(self) -> bytes:
        """The wire bytes of :attr:`reply`."""
        return encode(self.reply, max_size=self.max_size)


@dataclass(frozen=True, slots=True)
class _Boot:
    reply: DhcpPacket
    method: BootMethod | None = None
    note: str = ""


# --- helpers ------------------------------------------------------------------------------------


def is_netboot_client(request: DhcpPacket) -> bool:
    """Option 60 says PXE or UEFI HTTP boot firmware, or option 77 says iPXE."""
    vendor = request.vendor_class or b""
    return vendor.startswith(_NETBOOT_VENDOR_PREFIXES) or request.user_class == b"iPXE"


def boot_method(request: DhcpPacket) -> BootMethod:
    """:func:`pxe.bootmethods.classify` on the request's options 93, 60 and 77.

    :raises UnknownArchitecture: no boot method fits.
    """
    return classify(request.client_arch, request.vendor_class, request.user_class)


def max_reply_size(request: DhcpPacket) -> int:
    """Option 57 as a DHCP message size (minus IP/UDP headers), at least 548 (RFC 2131 §2)."""
    sent = request.max_message_size
    if sent is None:
        return DEFAULT_MAX_MESSAGE_SIZE
    return max(DEFAULT_MAX_MESSAGE_SIZE, sent - _IP_UDP_HEADERS)


def reply_destination(request: DhcpPacket, reply: DhcpPacket, *, local_port: int = SERVER_PORT) -> Destination:
    """RFC 2131 §4.1 (and §4.3.2 for NAKs): where ``reply`` to ``request`` must go."""
    if local_port == PROXY_PORT:
        # PXE 2.1 §2.2.4: the client talks to the boot server directly; answer where it asked from.
        return Destination(DestinationKind.SOURCE, _ZERO, 0)
    if request.giaddr != _ZERO:
        return Destination(DestinationKind.RELAY, request.giaddr, SERVER_PORT)
    if reply.message_type is MessageType.NAK:
        return Destination(DestinationKind.BROADCAST, _LIMITED_BROADCAST, CLIENT_PORT)
    if request.ciaddr != _ZERO:
        return Destination(DestinationKind.UNICAST, request.ciaddr, CLIENT_PORT)
    if request.broadcast or reply.yiaddr == _ZERO:
        # No yiaddr (a proxy offer) means there is nothing to unicast to: broadcast instead.
        return Destination(DestinationKind.BROADCAST, _LIMITED_BROADCAST, CLIENT_PORT)
    return Destination(DestinationKind.HARDWARE, reply.yiaddr, CLIENT_PORT, request.mac)


def _add_boot_options(reply: DhcpPacket, request: DhcpPacket, config: SubnetConfig, *, proxy: bool) -> _Boot:
    """``reply`` plus boot fields and options for a netboot client, or why there are none."""
    if not is_netboot_client(request):
        return _Boot(reply)
    try:
        method = boot_method(request)
        path = method.boot_file(http_base=config.http_base, mac=request.mac)
    except UnknownArchitecture as exc:
        return _Boot(reply, note=str(exc))
    except ValueError as exc:  # an HTTP method without http_base, or a template without MAC
        return _Boot(reply, note=str(exc))

    options: dict[int, bytes] = dict(reply.options)
    if method.reply_vendor_class is not None:
        options[Option.VENDOR_CLASS] = method.reply_vendor_class
    raw_path = encode_text(path)
    # The BOOTP file field holds 128 bytes; a longer URL goes in option 67 only.
    file = raw_path if len(raw_path) <= 128 else b""
    siaddr = reply.siaddr
    if method.transport is Transport.TFTP:
        siaddr = config.next_server
        options[Option.TFTP_SERVER_NAME] = encode_text(str(config.next_server))
    options[Option.BOOTFILE_NAME] = raw_path
    machine_id = request.options.get(Option.CLIENT_MACHINE_ID)
    if machine_id is not None:
        options[Option.CLIENT_MACHINE_ID] = machine_id
    if method.reply_vendor_class == b"PXEClient":
        options[Option.VENDOR_SPECIFIC] = _PXE_VENDOR_OPTIONS
    return _Boot(dataclasses.replace(reply, siaddr=siaddr, file=file, options=options), method)


def _ordered(candidates: dict[int, bytes], request: DhcpPacket) -> tuple[list[int], list[int]]:
    """(codes in send order, codes in the order they may be dropped to make the reply fit)."""
    prl = [c for c in dict.fromkeys(request.parameter_request_list or ()) if c in candidates]
    head = [c for c in (Option.MESSAGE_TYPE, Option.SERVER_ID) if c in candidates]
    requested = [c for c in prl if c not in head]
    rest = [c for c in candidates if c not in head and c not in requested]
    order = head + requested + rest
    droppable = [c for c in reversed(rest) if c not in _ESSENTIAL]
    droppable += [c for c in reversed(requested) if c not in _ESSENTIAL]
    return order, droppable


def _fit(reply: DhcpPacket, request: DhcpPacket, max_size: int) -> DhcpPacket | None:
    """``reply`` with options ordered per option 55 and trimmed to ``max_size``, or ``None``."""
    options = dict(reply.options)
    order, droppable = _ordered(options, request)
    while True:
        candidate = dataclasses.replace(reply, options={c: options[c] for c in order if c in options})
        try:
            encode(candidate, max_size=max_size)
        except EncodeError:
            if not droppable:
                return None
            del options[droppable.pop(0)]
            continue
        return candidate


def _base_reply(request: DhcpPacket, config: SubnetConfig, message: MessageType) -> DhcpPacket:
    """A BOOTREPLY echoing the request's identity fields (RFC 2131 §4.3.1, table 3)."""
    return DhcpPacket(
        op=Op.BOOTREPLY,
        htype=request.htype,
        hlen=request.hlen,
        xid=request.xid,
        flags=request.flags,
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        options={Option.MESSAGE_TYPE: bytes((message,)), Option.SERVER_ID: encode_ip(config.server_ip)},
    )


def _network_options(config: SubnetConfig, host: HostConfig | None, *, with_lease: bool) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    if with_lease:
        options[Option.LEASE_TIME] = encode_u32(config.lease_time)
        if config.lease_time != _INFINITE:
            options[T1_OPTION] = encode_u32(config.lease_time // 2)
            options[T2_OPTION] = encode_u32(config.lease_time * 7 // 8)
    options[Option.SUBNET_MASK] = encode_ip(config.netmask)
    if config.router is not None:
        options[Option.ROUTER] = encode_ip(config.router)
    if config.dns:
        options[Option.DNS_SERVERS] = encode_ips(config.dns)
    if host is not None and host.hostname:
        options[Option.HOST_NAME] = encode_text(host.hostname)
    if config.domain:
        options[Option.DOMAIN_NAME] = encode_text(config.domain)
    options[Option.BROADCAST_ADDRESS] = encode_ip(config.network.broadcast_address)
    return options


def _finish(
    request: DhcpPacket,
    reply: DhcpPacket,
    *,
    local_port: int,
    method: BootMethod | None = None,
    note: str = "",
) -> Decision | None:
    max_size = max_reply_size(request)
    fitted = _fit(reply, request, max_size)
    if fitted is None:
        return None
    return Decision(fitted, reply_destination(request, fitted, local_port=local_port), max_size, method, note)


def _access(host: HostConfig | None, config: SubnetConfig) -> Literal["netboot", "local", "none"]:
    """What this MAC may get, combining its reservation and the unknown-MAC policy."""
    if host is not None:
        return host.boot
    if config.unknown_mac == "ignore":
        return "none"
    return "netboot" if config.unknown_mac == "discovery" else "local"


# --- decide ---------------------------------------------------------------------------------------


def decide(
    request: DhcpPacket,
    config: SubnetConfig,
    backend: DhcpBackend,
    now: float,
    *,
    local_port: int = SERVER_PORT,
) -> Decision | None:
    """The reply to ``request``, or ``None`` for silence.

    :param request: a decoded packet (anything :func:`pxe.dhcp.codec.decode` returns).
    :param config: the subnet it arrived on.
    :param backend: host and lease store; :meth:`~DhcpBackend.commit` is called before any ACK.
    :param now: current time on the backend's clock, seconds.
    :param local_port: the port the request arrived on; 4011 selects the PXE boot server path.
    :returns: a :class:`Decision`, or ``None`` when the request is ignored. Never raises for a
        decoded request (backend errors propagate).
    """
    message = request.message_type
    if request.op != Op.BOOTREQUEST or message is None or not request.mac.replace(":", ""):
        return None  # BOOTP without option 53 and malformed hardware addresses are not served
    host = backend.lookup(request.mac)
    access = _access(host, config)
    if access == "none":
        return None

    if local_port == PROXY_PORT:
        if message in (MessageType.REQUEST, MessageType.INFORM) and access == "netboot":
            return _proxy_reply(request, config, MessageType.ACK, local_port)
        return None
    if config.mode == "proxy":
        if message is MessageType.DISCOVER and access == "netboot":
            return _proxy_reply(request, config, MessageType.OFFER, local_port)
        return None

    server_id = request.server_id
    if server_id is not None and server_id != config.server_ip:
        return None  # RFC 2131 §4.3.2: the client chose (or is talking to) another server
    netboot = access == "netboot"
    if message is MessageType.DISCOVER:
        return _offer(request, config, backend, host, now, netboot=netboot)
    if message is MessageType.REQUEST:
        return _request(request, config, backend, host, now, netboot=netboot)
    if message is MessageType.INFORM:
        return _inform(request, config, host, netboot=netboot)
    if message is MessageType.RELEASE:
        if request.ciaddr != _ZERO:
            backend.release(request.mac, request.ciaddr)
        return None
    if message is MessageType.DECLINE:
        declined = request.requested_ip
        if declined is not None:
            backend.decline(request.mac, declined, now)
        return None
    return None  # server-to-client types and lease queries are not ours to answer


def _address_for(
    request: DhcpPacket, backend: DhcpBackend, host: HostConfig | None, requested: IPv4Address | None, now: float
) -> IPv4Address | None:
    if host is not None and host.ip is not None:
        return host.ip
    return backend.lease(request.mac, requested, now)


def _with_boot(
    request: DhcpPacket, reply: DhcpPacket, config: SubnetConfig, *, netboot: bool, proxy: bool = False
) -> tuple[DhcpPacket, BootMethod | None, str]:
    if not netboot:
        return reply, None, ""
    boot = _add_boot_options(reply, request, config, proxy=proxy)
    return boot.reply, boot.method, boot.note


def _offer(
    request: DhcpPacket,
    config: SubnetConfig,
    backend: DhcpBackend,
    host: HostConfig | None,
    now: float,
    *,
    netboot: bool,
) -> Decision | None:
    address = _address_for(request, backend, host, request.requested_ip, now)
    if address is None:
        return None  # pool exhausted: no offer (RFC 2131 §4.3.1 leaves silence to the server)
    reply = _base_reply(request, config, MessageType.OFFER)
    reply = dataclasses.replace(
        reply, yiaddr=address, options={**reply.options, **_network_options(config, host, with_lease=True)}
    )
    reply, method, note = _with_boot(request, reply, config, netboot=netboot)
    return _finish(request, reply, local_port=SERVER_PORT, method=method, note=note)


def _nak(request: DhcpPacket, config: SubnetConfig, reason: str) -> Decision | None:
    reply = _base_reply(request, config, MessageType.NAK)
    reply = dataclasses.replace(reply, options={**reply.options, _MESSAGE: encode_text(reason)})
    if request.giaddr != _ZERO:
        # RFC 2131 §4.3.2: a relayed NAK asks the relay to broadcast it; the client has no address.
        reply = dataclasses.replace(reply, flags=reply.flags | BROADCAST_FLAG)
    return _finish(request, reply, local_port=SERVER_PORT, note=reason)


def _request(
    request: DhcpPacket,
    config: SubnetConfig,
    backend: DhcpBackend,
    host: HostConfig | None,
    now: float,
    *,
    netboot: bool,
) -> Decision | None:
    # RFC 2131 §4.3.2: SELECTING has option 54 and 50; INIT-REBOOT has 50 and no ciaddr;
    # RENEWING/REBINDING have ciaddr and neither 54 nor 50.
    requested = request.requested_ip
    if requested is None:
        if request.ciaddr == _ZERO:
            return None  # no address named anywhere: not a valid REQUEST
        requested = request.ciaddr
    if requested not in config.network:
        return _nak(request, config, f"{requested} is not on {config.network}")
    address = _address_for(request, backend, host, requested, now)
    if address != requested:
        return _nak(request, config, f"{requested} is not available to this client")
    if not backend.commit(request.mac, address, now + config.lease_time, now):
        return _nak(request, config, f"{requested} is leased to another client")
    reply = _base_reply(request, config, MessageType.ACK)
    reply = dataclasses.replace(
        reply,
        ciaddr=request.ciaddr,
        yiaddr=address,
        options={**reply.options, **_network_options(config, host, with_lease=True)},
    )
    reply, method, note = _with_boot(request, reply, config, netboot=netboot)
    return _finish(request, reply, local_port=SERVER_PORT, method=method, note=note)


def _inform(request: DhcpPacket, config: SubnetConfig, host: HostConfig | None, *, netboot: bool) -> Decision | None:
    # RFC 2131 §4.3.5: no yiaddr, no lease time; sent to ciaddr.
    reply = _base_reply(request, config, MessageType.ACK)
    reply = dataclasses.replace(
        reply,
        ciaddr=request.ciaddr,
        options={**reply.options, **_network_options(config, host, with_lease=False)},
    )
    reply, method, note = _with_boot(request, reply, config, netboot=netboot)
    return _finish(request, reply, local_port=SERVER_PORT, method=method, note=note)


def _proxy_reply(request: DhcpPacket, config: SubnetConfig, message: MessageType, local_port: int) -> Decision | None:
    # Proxy answers carry boot information only: no yiaddr, no lease, no network options.
    reply = _base_reply(request, config, message)
    if message is MessageType.ACK:
        reply = dataclasses.replace(reply, ciaddr=request.ciaddr)
    reply, method, note = _with_boot(request, reply, config, netboot=True, proxy=True)
    if method is None:
        return None  # a proxy reply without a boot file tells the client nothing
    return _finish(request, reply, local_port=local_port, method=method, note=note)
