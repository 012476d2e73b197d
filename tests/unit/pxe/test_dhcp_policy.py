"""DHCP policy: DORA per boot method, renew/rebind, NAK, reservations, destinations, proxy mode, fuzzing."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pxe.backend import HostConfig, MemoryBackend
from pxe.bootmethods import BIOS_PXE, IPXE, UEFI_X64_HTTP, UEFI_X64_PXE
from pxe.dhcp.codec import (
    BROADCAST_FLAG,
    DEFAULT_MAX_MESSAGE_SIZE,
    DecodeError,
    DhcpPacket,
    EncodeError,
    MessageType,
    Op,
    Option,
    decode,
    encode,
    encode_ip,
    encode_u16,
)
from pxe.dhcp.policy import (
    PROXY_PORT,
    Decision,
    DestinationKind,
    SubnetConfig,
    decide,
    is_netboot_client,
    max_reply_size,
)

FUZZ = settings(database=None, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

SERVER = IPv4Address("10.0.0.1")
OTHER_SERVER = IPv4Address("10.0.0.254")
MAC = bytes.fromhex("525400123456")
MAC_TEXT = "52:54:00:12:34:56"
GUID = bytes(17)  # option 97: type 0 + 16-byte GUID
HTTP_BASE = "http://10.0.0.1:8080"

PXE_BIOS = {93: b"\x00\x00", 60: b"PXEClient:Arch:00000:UNDI:002001", 97: GUID}
PXE_UEFI = {93: b"\x00\x07", 60: b"PXEClient:Arch:00007:UNDI:003016", 97: GUID}
HTTP_UEFI = {93: b"\x00\x10", 60: b"HTTPClient:Arch:00016:UNDI:003001"}
IPXE_CLIENT = {93: b"\x00\x07", 60: b"PXEClient:Arch:00007:UNDI:003016", 77: b"iPXE"}
PLAIN: dict[int, bytes] = {}


def config(**kwargs: object) -> SubnetConfig:
    base: dict[str, object] = {
        "server_ip": SERVER,
        "network": IPv4Network("10.0.0.0/24"),
        "router": SERVER,
        "dns": (SERVER, IPv4Address("10.0.0.2")),
        "domain": "lab.example",
        "lease_time": 3600,
        "http_base": HTTP_BASE,
    }
    base.update(kwargs)
    return SubnetConfig(**base)  # type: ignore[arg-type]


def backend(*hosts: HostConfig) -> MemoryBackend:
    return MemoryBackend([("10.0.0.100", "10.0.0.102")], hosts)


def request(
    message: MessageType,
    extra: Mapping[Any, bytes] = PLAIN,  # Any: dicts keyed by Option and by int both fit
    *,
    chaddr: bytes = MAC,
    flags: int = 0,
    ciaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    xid: int = 0x1234ABCD,
    prl: bytes | None = None,
) -> DhcpPacket:
    options: dict[int, bytes] = {Option.MESSAGE_TYPE: bytes((message,))}
    if prl is not None:
        options[Option.PARAMETER_REQUEST_LIST] = prl
    options.update(extra)
    packet = DhcpPacket(
        xid=xid,
        flags=flags,
        ciaddr=IPv4Address(ciaddr),
        giaddr=IPv4Address(giaddr),
        chaddr=chaddr,
        options=options,
    )
    return decode(encode(packet))  # only what survives the wire reaches the policy


def wire(decision: Decision | None) -> DhcpPacket:
    """The reply as the client would see it."""
    assert decision is not None
    return decode(decision.encode())


def dora(
    client: Mapping[int, bytes], cfg: SubnetConfig, store: MemoryBackend, now: float = 1000
) -> tuple[DhcpPacket, DhcpPacket]:
    offer = wire(decide(request(MessageType.DISCOVER, client, flags=BROADCAST_FLAG), cfg, store, now))
    assert offer.message_type is MessageType.OFFER
    assert offer.xid == 0x1234ABCD and offer.op == Op.BOOTREPLY and offer.mac == MAC_TEXT
    selecting = {**client, Option.SERVER_ID: encode_ip(SERVER), Option.REQUESTED_IP: offer.yiaddr.packed}
    ack = wire(decide(request(MessageType.REQUEST, selecting, flags=BROADCAST_FLAG), cfg, store, now))
    assert ack.message_type is MessageType.ACK
    assert ack.yiaddr == offer.yiaddr != IPv4Address(0)
    assert store.leases[ack.yiaddr].mac == MAC_TEXT
    assert store.leases[ack.yiaddr].expires == now + 3600
    return offer, ack


# --- DORA per boot method ---------------------------------------------------------------------------


def test_bios_pxe_dora() -> None:
    for reply in dora(PXE_BIOS, config(), backend()):
        assert reply.file == b"undionly.kpxe"
        assert reply.bootfile_name == "undionly.kpxe"
        assert reply.siaddr == SERVER
        assert reply.tftp_server_name == "10.0.0.1"
        assert reply.vendor_class == b"PXEClient"
        assert reply.client_machine_id == bytes(16)
        assert reply.options[Option.VENDOR_SPECIFIC] == b"\x06\x01\x08\xff"  # use this file: no discovery


def test_uefi_pxe_dora_uses_tftp_server_override() -> None:
    offer, ack = dora(PXE_UEFI, config(tftp_server=IPv4Address("10.0.0.5")), backend())
    for reply in (offer, ack):
        assert reply.file == UEFI_X64_PXE.bootloader.encode()
        assert reply.siaddr == IPv4Address("10.0.0.5")
        assert reply.tftp_server_name == "10.0.0.5"


def test_uefi_http_dora() -> None:
    for reply in dora(HTTP_UEFI, config(), backend()):
        assert reply.bootfile_name == UEFI_X64_HTTP.boot_file(http_base=HTTP_BASE)
        assert reply.bootfile_name == "http://10.0.0.1:8080/boot/snponly.efi"
        assert reply.vendor_class == b"HTTPClient"
        assert Option.TFTP_SERVER_NAME not in reply.options
        assert Option.CLIENT_MACHINE_ID not in reply.options  # not sent, so not echoed


def test_ipxe_dora_gets_script_url() -> None:
    for reply in dora(IPXE_CLIENT, config(), backend()):
        assert reply.bootfile_name == "http://10.0.0.1:8080/ipxe/52-54-00-12-34-56/boot.ipxe"
        assert reply.file == reply.bootfile_name.encode()
        assert Option.VENDOR_CLASS not in reply.options


def test_decision_reports_boot_method() -> None:
    decision = decide(request(MessageType.DISCOVER, PXE_BIOS), config(), backend(), 0)
    assert decision is not None and decision.boot_method is BIOS_PXE
    decision = decide(request(MessageType.DISCOVER, IPXE_CLIENT), config(), backend(), 0)
    assert decision is not None and decision.boot_method is IPXE


def test_plain_client_gets_address_and_network_options_only() -> None:
    offer, ack = dora(PLAIN, config(), backend())
    for reply in (offer, ack):
        assert reply.file == b"" and reply.siaddr == IPv4Address(0)
        assert not {60, 66, 67, 43, 97} & set(reply.options)
        assert reply.subnet_mask == IPv4Address("255.255.255.0")
        assert reply.routers == (SERVER,)
        assert reply.dns_servers == (SERVER, IPv4Address("10.0.0.2"))
        assert reply.domain_name == "lab.example"
        assert reply.broadcast_address == IPv4Address("10.0.0.255")
        assert reply.lease_time == 3600
        assert reply.server_id == SERVER
        assert reply.options[58] == (1800).to_bytes(4, "big")
        assert reply.options[59] == (3150).to_bytes(4, "big")
    assert not is_netboot_client(request(MessageType.DISCOVER))


def test_unknown_architecture_gets_address_without_boot_options() -> None:
    client = {93: b"\x00\x02", 60: b"PXEClient:Arch:00002:UNDI:002001"}  # IA64: no loader shipped
    decision = decide(request(MessageType.DISCOVER, client), config(), backend(), 0)
    assert decision is not None and decision.boot_method is None and "no loader" in decision.note
    offer = wire(decision)
    assert offer.yiaddr == IPv4Address("10.0.0.100")
    assert not {60, 66, 67} & set(offer.options)


def test_http_method_without_http_base_gets_address_only() -> None:
    decision = decide(request(MessageType.DISCOVER, HTTP_UEFI), config(http_base=None), backend(), 0)
    assert decision is not None and decision.boot_method is None and "http_base" in decision.note
    assert Option.BOOTFILE_NAME not in wire(decision).options


# --- REQUEST states ---------------------------------------------------------------------------------


def test_renew_and_rebind() -> None:
    cfg, store = config(), backend()
    _, ack = dora(PLAIN, cfg, store, now=0)
    renew = request(MessageType.REQUEST, ciaddr=str(ack.yiaddr))
    decision = decide(renew, cfg, store, 1800)
    reply = wire(decision)
    assert reply.message_type is MessageType.ACK and reply.yiaddr == ack.yiaddr and reply.ciaddr == ack.yiaddr
    assert decision is not None and decision.destination.kind is DestinationKind.UNICAST
    assert decision.destination.ip == ack.yiaddr and decision.destination.port == 68
    assert store.leases[ack.yiaddr].expires == 1800 + 3600
    rebind = request(MessageType.REQUEST, ciaddr=str(ack.yiaddr), flags=BROADCAST_FLAG)
    reply = wire(decide(rebind, cfg, store, 3200))
    assert reply.message_type is MessageType.ACK and store.leases[ack.yiaddr].expires == 3200 + 3600


def test_init_reboot_with_known_address() -> None:
    cfg, store = config(), backend()
    _, ack = dora(PLAIN, cfg, store, now=0)
    reboot = request(MessageType.REQUEST, {Option.REQUESTED_IP: ack.yiaddr.packed})
    assert wire(decide(reboot, cfg, store, 100)).message_type is MessageType.ACK


def test_nak_for_wrong_requested_address() -> None:
    cfg, store = config(), backend()
    _, ack = dora(PLAIN, cfg, store, now=0)
    # INIT-REBOOT asking for a different address than its current binding
    decision = decide(request(MessageType.REQUEST, {50: encode_ip("10.0.0.102")}), cfg, store, 10)
    nak = wire(decision)
    assert nak.message_type is MessageType.NAK and nak.yiaddr == IPv4Address(0)
    assert nak.server_id == SERVER and Option.LEASE_TIME not in nak.options
    assert decision is not None and decision.destination.kind is DestinationKind.BROADCAST
    # moved to another network
    nak = wire(decide(request(MessageType.REQUEST, {50: encode_ip("192.168.1.5")}), cfg, store, 10))
    assert nak.message_type is MessageType.NAK and b"not on" in nak.options[56]
    assert store.leases[ack.yiaddr].mac == MAC_TEXT  # NAK changes nothing


def test_nak_when_address_leased_to_another_client() -> None:
    cfg, store = config(), backend()
    store.commit("52:54:00:99:99:99", IPv4Address("10.0.0.100"), 10_000, 0)
    selecting = {Option.SERVER_ID: encode_ip(SERVER), Option.REQUESTED_IP: encode_ip("10.0.0.100")}
    assert wire(decide(request(MessageType.REQUEST, selecting), cfg, store, 5)).message_type is MessageType.NAK


def test_relayed_nak_goes_to_relay_with_broadcast_bit() -> None:
    decision = decide(
        request(MessageType.REQUEST, {50: encode_ip("192.168.1.5")}, giaddr="10.0.0.254"), config(), backend(), 0
    )
    assert decision is not None and decision.destination.kind is DestinationKind.RELAY
    assert wire(decision).flags & BROADCAST_FLAG


def test_request_for_another_server_ignored() -> None:
    cfg, store = config(), backend()
    selecting = {Option.SERVER_ID: encode_ip(OTHER_SERVER), Option.REQUESTED_IP: encode_ip("10.0.0.100")}
    assert decide(request(MessageType.REQUEST, selecting), cfg, store, 0) is None
    assert store.leases == {}


def test_request_without_any_address_ignored() -> None:
    assert decide(request(MessageType.REQUEST), config(), backend(), 0) is None


# --- reservations, pools, decline, release -----------------------------------------------------------


def test_reservation_honoured_with_hostname() -> None:
    store = backend(HostConfig(MAC_TEXT, IPv4Address("10.0.0.50"), "node07"))
    offer, ack = dora(PXE_BIOS, config(), store)
    assert offer.yiaddr == ack.yiaddr == IPv4Address("10.0.0.50")
    assert ack.host_name == "node07"
    assert ack.bootfile_name == "undionly.kpxe"


def test_reserved_host_with_local_boot_gets_no_boot_options() -> None:
    store = backend(HostConfig(MAC_TEXT, None, boot="local"))
    offer, _ = dora(PXE_UEFI, config(), store)
    assert offer.yiaddr == IPv4Address("10.0.0.100") and Option.BOOTFILE_NAME not in offer.options


def test_reserved_host_with_boot_none_is_ignored() -> None:
    store = backend(HostConfig(MAC_TEXT, IPv4Address("10.0.0.50"), boot="none"))
    assert decide(request(MessageType.DISCOVER, PXE_BIOS), config(), store, 0) is None


def test_pool_exhaustion_means_no_offer() -> None:
    store = backend()
    for n in range(3):
        store.commit(f"52:54:00:00:00:0{n}", IPv4Address(f"10.0.0.{100 + n}"), 10_000, 0)
    assert decide(request(MessageType.DISCOVER), config(), store, 5) is None


def test_decline_marks_the_address() -> None:
    cfg, store = config(), backend()
    _, ack = dora(PLAIN, cfg, store, now=0)
    decline = {Option.SERVER_ID: encode_ip(SERVER), Option.REQUESTED_IP: ack.yiaddr.packed}
    assert decide(request(MessageType.DECLINE, decline), cfg, store, 10) is None
    assert ack.yiaddr in store.declined and ack.yiaddr not in store.leases
    offer = wire(decide(request(MessageType.DISCOVER), cfg, store, 20))
    assert offer.yiaddr != ack.yiaddr


def test_release_frees_the_lease() -> None:
    cfg, store = config(), backend()
    _, ack = dora(PLAIN, cfg, store, now=0)
    release = request(MessageType.RELEASE, {Option.SERVER_ID: encode_ip(SERVER)}, ciaddr=str(ack.yiaddr))
    assert decide(release, cfg, store, 10) is None
    assert store.leases == {}


def test_inform_acks_without_address_or_lease() -> None:
    decision = decide(request(MessageType.INFORM, PXE_BIOS, ciaddr="10.0.0.77"), config(), backend(), 0)
    reply = wire(decision)
    assert reply.message_type is MessageType.ACK and reply.yiaddr == IPv4Address(0)
    assert not {51, 58, 59} & set(reply.options)
    assert reply.subnet_mask is not None and reply.bootfile_name == "undionly.kpxe"
    assert decision is not None and decision.destination.ip == IPv4Address("10.0.0.77")


# --- unknown MACs ---------------------------------------------------------------------------------------


def test_unknown_mac_ignore() -> None:
    assert decide(request(MessageType.DISCOVER, PXE_BIOS), config(unknown_mac="ignore"), backend(), 0) is None


def test_unknown_mac_discovery_netboots() -> None:
    offer = wire(decide(request(MessageType.DISCOVER, PXE_BIOS), config(unknown_mac="discovery"), backend(), 0))
    assert offer.bootfile_name == "undionly.kpxe"


def test_unknown_mac_address_only() -> None:
    offer = wire(decide(request(MessageType.DISCOVER, PXE_BIOS), config(unknown_mac="address-only"), backend(), 0))
    assert offer.yiaddr == IPv4Address("10.0.0.100") and Option.BOOTFILE_NAME not in offer.options


def test_known_mac_answered_even_when_unknown_ignored() -> None:
    store = backend(HostConfig(MAC_TEXT))
    offer, _ = dora(PXE_BIOS, config(unknown_mac="ignore"), store)
    assert offer.bootfile_name == "undionly.kpxe"


# --- destinations --------------------------------------------------------------------------------------


def test_relay_destination() -> None:
    decision = decide(request(MessageType.DISCOVER, giaddr="10.0.0.254", flags=BROADCAST_FLAG), config(), backend(), 0)
    assert decision is not None
    assert decision.destination.kind is DestinationKind.RELAY
    assert (decision.destination.ip, decision.destination.port) == (IPv4Address("10.0.0.254"), 67)
    assert wire(decision).giaddr == IPv4Address("10.0.0.254")


def test_broadcast_flag_destination() -> None:
    decision = decide(request(MessageType.DISCOVER, flags=BROADCAST_FLAG), config(), backend(), 0)
    assert decision is not None and decision.destination.kind is DestinationKind.BROADCAST
    assert (decision.destination.ip, decision.destination.port) == (IPv4Address("255.255.255.255"), 68)
    assert wire(decision).flags == BROADCAST_FLAG


def test_unicast_to_hardware_address_without_broadcast_flag() -> None:
    decision = decide(request(MessageType.DISCOVER), config(), backend(), 0)
    assert decision is not None and decision.destination.kind is DestinationKind.HARDWARE
    assert decision.destination.ip == IPv4Address("10.0.0.100") and decision.destination.mac == MAC_TEXT


# --- option 55 and 57 -----------------------------------------------------------------------------------


def test_option_55_order_honoured() -> None:
    prl = bytes((6, 67, 3, 1, 15))
    offer = wire(decide(request(MessageType.DISCOVER, PXE_BIOS, prl=prl), config(), backend(), 0))
    codes = list(offer.options)
    assert codes[:2] == [53, 54]
    assert codes[2:7] == [6, 67, 3, 1, 15]


def test_max_size_respected_by_dropping_unrequested_options() -> None:
    long_domain = "d" * 250 + "." + "e" * 200
    dns = tuple(IPv4Address(f"10.0.1.{n}") for n in range(1, 60))
    cfg = config(domain=long_domain, dns=dns)
    prl = bytes((1, 3, 67, 66))
    decision = decide(request(MessageType.DISCOVER, PXE_BIOS, prl=prl), cfg, backend(), 0)
    assert decision is not None and decision.max_size == DEFAULT_MAX_MESSAGE_SIZE
    data = decision.encode()
    assert len(data) <= DEFAULT_MAX_MESSAGE_SIZE
    offer = decode(data)
    assert offer.bootfile_name == "undionly.kpxe" and offer.subnet_mask is not None and offer.routers == (SERVER,)
    assert offer.lease_time == 3600
    # a client announcing a bigger buffer gets everything
    big = {**PXE_BIOS, Option.MAX_MESSAGE_SIZE: encode_u16(1500)}
    decision = decide(request(MessageType.DISCOVER, big, prl=prl), cfg, backend(), 0)
    assert decision is not None and decision.max_size == 1472
    offer = wire(decision)
    assert offer.domain_name == long_domain and offer.dns_servers == dns


def test_max_size_below_rfc_minimum_clamped() -> None:
    tiny = request(MessageType.DISCOVER, {Option.MAX_MESSAGE_SIZE: encode_u16(300)})
    assert max_reply_size(tiny) == DEFAULT_MAX_MESSAGE_SIZE


# --- proxy mode -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", [PXE_BIOS, PXE_UEFI, HTTP_UEFI, IPXE_CLIENT])
def test_proxy_offer_has_boot_options_and_no_address(client: Mapping[int, bytes]) -> None:
    store = backend()
    decision = decide(request(MessageType.DISCOVER, client, flags=BROADCAST_FLAG), config(mode="proxy"), store, 0)
    offer = wire(decision)
    assert offer.message_type is MessageType.OFFER
    assert offer.yiaddr == IPv4Address(0)
    assert offer.server_id == SERVER and offer.bootfile_name
    assert not {1, 3, 6, 51, 58, 59} & set(offer.options)
    assert store.leases == {}
    assert decision is not None and decision.destination.kind is DestinationKind.BROADCAST
    if client.get(60, b"").startswith(b"PXEClient") and 77 not in client:
        assert offer.vendor_class == b"PXEClient"
        assert offer.options[Option.VENDOR_SPECIFIC] == bytes((6, 1, 8, 255))


def test_proxy_ignores_plain_clients_and_unknown_architectures() -> None:
    cfg = config(mode="proxy")
    assert decide(request(MessageType.DISCOVER), cfg, backend(), 0) is None
    weird = {93: b"\x00\x02", 60: b"PXEClient:Arch:00002:UNDI:002001"}
    assert decide(request(MessageType.DISCOVER, weird), cfg, backend(), 0) is None


def test_proxy_ignores_port_67_request_and_other_messages() -> None:
    cfg = config(mode="proxy")
    selecting = {**PXE_BIOS, Option.SERVER_ID: encode_ip(OTHER_SERVER), Option.REQUESTED_IP: encode_ip("10.0.0.9")}
    assert decide(request(MessageType.REQUEST, selecting), cfg, backend(), 0) is None
    assert decide(request(MessageType.INFORM, PXE_BIOS, ciaddr="10.0.0.9"), cfg, backend(), 0) is None


def test_proxy_respects_unknown_mac_policy() -> None:
    cfg = config(mode="proxy", unknown_mac="address-only")
    assert decide(request(MessageType.DISCOVER, PXE_BIOS), cfg, backend(), 0) is None


def test_port_4011_request_acked_to_source() -> None:
    store = backend()
    boot_request = request(MessageType.REQUEST, {**PXE_UEFI, Option.SERVER_ID: encode_ip(SERVER)}, ciaddr="10.0.0.9")
    decision = decide(boot_request, config(mode="proxy"), store, 0, local_port=PROXY_PORT)
    ack = wire(decision)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == IPv4Address(0)
    assert ack.ciaddr == IPv4Address("10.0.0.9")
    assert ack.bootfile_name == "snponly.efi" and ack.client_machine_id == bytes(16)
    assert decision is not None and decision.destination.kind is DestinationKind.SOURCE
    assert store.leases == {}
    plain = request(MessageType.REQUEST, ciaddr="10.0.0.9")
    assert decide(plain, config(mode="proxy"), store, 0, local_port=PROXY_PORT) is None


# --- robustness -----------------------------------------------------------------------------------------


def test_bootp_and_replies_ignored() -> None:
    bootp = decode(encode(DhcpPacket(chaddr=MAC, options={})))
    assert decide(bootp, config(), backend(), 0) is None
    reply = decode(encode(DhcpPacket(op=Op.BOOTREPLY, chaddr=MAC, options={53: b"\x01"})))
    assert decide(reply, config(), backend(), 0) is None
    no_mac = decode(encode(DhcpPacket(hlen=0, chaddr=b"", options={53: b"\x01"})))
    assert decide(no_mac, config(), backend(), 0) is None


def test_config_rejects_zero_lease() -> None:
    with pytest.raises(ValueError, match="lease_time"):
        config(lease_time=0)


_OPTION_VALUES = st.one_of(
    st.tuples(st.just(53), st.integers(1, 13).map(lambda n: bytes((n,)))),
    st.tuples(
        st.sampled_from([50, 54]), st.sampled_from(["10.0.0.1", "10.0.0.100", "10.0.0.254", "8.8.8.8"]).map(encode_ip)
    ),
    st.tuples(st.just(55), st.binary(max_size=40)),
    st.tuples(st.just(57), st.integers(0, 0xFFFF).map(encode_u16)),
    st.tuples(
        st.just(60), st.sampled_from([b"PXEClient:Arch:00000:UNDI:002001", b"HTTPClient:Arch:00016", b"PXEClient"])
    ),
    st.tuples(st.just(60), st.binary(max_size=40)),
    st.tuples(st.just(77), st.sampled_from([b"iPXE", b"", b"gPXE"])),
    st.tuples(
        st.just(93),
        st.lists(st.integers(0, 40), min_size=0, max_size=3).map(
            lambda codes: b"".join(c.to_bytes(2, "big") for c in codes)
        ),
    ),
    st.tuples(st.just(97), st.binary(min_size=16, max_size=16).map(lambda g: b"\x00" + g)),
    st.tuples(st.integers(1, 254), st.binary(max_size=300)),
)


@FUZZ
@given(
    message=st.one_of(st.none(), st.integers(1, 8), st.integers(1, 13)),
    options=st.lists(_OPTION_VALUES, max_size=12),
    op=st.sampled_from([1, 1, 1, 2]),
    hlen=st.integers(0, 16),
    flags=st.sampled_from([0, BROADCAST_FLAG]),
    ciaddr=st.sampled_from(["0.0.0.0", "10.0.0.100", "10.0.0.5", "172.16.0.1"]),
    giaddr=st.sampled_from(["0.0.0.0", "10.0.0.254"]),
    mode=st.sampled_from(["server", "proxy"]),
    unknown=st.sampled_from(["ignore", "discovery", "address-only"]),
    port=st.sampled_from([67, PROXY_PORT]),
    reserved=st.booleans(),
    http_base=st.sampled_from([HTTP_BASE, None, "http://" + "x" * 200]),
)
def test_decide_never_raises(
    message: int | None,
    options: list[tuple[int, bytes]],
    op: int,
    hlen: int,
    flags: int,
    ciaddr: str,
    giaddr: str,
    mode: str,
    unknown: str,
    port: int,
    reserved: bool,
    http_base: str | None,
) -> None:
    packet = DhcpPacket(
        op=op,
        hlen=hlen,
        flags=flags,
        ciaddr=IPv4Address(ciaddr),
        giaddr=IPv4Address(giaddr),
        chaddr=MAC.ljust(16, b"\x01"),
        # a valid option 53 most of the time, so most examples get past the first check
        options={**({} if message is None else {53: bytes((message,))}), **dict(options)},
    )
    try:
        decoded = decode(encode(packet))
    except (EncodeError, DecodeError):
        assume(False)
        return
    hosts = [HostConfig(MAC_TEXT, IPv4Address("10.0.0.50"), "h" * 200)] if reserved else []
    cfg = config(mode=mode, unknown_mac=unknown, http_base=http_base)
    decision = decide(decoded, cfg, MemoryBackend([("10.0.0.100", "10.0.0.101")], hosts), 0, local_port=port)
    if decision is not None:
        data = decision.encode()
        assert len(data) <= decision.max_size
        reply = decode(data)
        assert reply.xid == decoded.xid and reply.chaddr == decoded.chaddr
        if mode == "proxy" or port == PROXY_PORT:
            assert reply.yiaddr == IPv4Address(0)
