"""DHCPv4 codec: hand-built real-world packets, overload, RFC 3396 long options, malformed input, fuzzing."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pxe.bootmethods import BIOS_PXE, IPXE, UEFI_X64_HTTP, classify
from pxe.dhcp.codec import (
    BOOTP_MIN_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    MAGIC_COOKIE,
    DecodeError,
    DhcpPacket,
    EncodeError,
    MessageType,
    Op,
    Option,
    decode,
    encode,
    encode_ip,
    encode_ips,
    encode_text,
    encode_u16,
    encode_u32,
)

FUZZ = settings(database=None, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

MAC = bytes.fromhex("525400123456")
GUID = bytes.fromhex("4c4c4544004d3510804bb4c04f4e4432")


def header(
    *, xid: bytes, secs: bytes = b"\x00\x04", flags: bytes = b"\x80\x00", sname: bytes = b"", file: bytes = b""
) -> bytes:
    """The 236-byte BOOTP header of a client request plus the magic cookie, written out field by field."""
    return (
        b"\x01"  # op BOOTREQUEST
        + b"\x01"  # htype Ethernet
        + b"\x06"  # hlen
        + b"\x00"  # hops
        + xid
        + secs
        + flags
        + bytes(4)  # ciaddr
        + bytes(4)  # yiaddr
        + bytes(4)  # siaddr
        + bytes(4)  # giaddr
        + MAC
        + bytes(10)  # chaddr padding to 16
        + sname.ljust(64, b"\x00")
        + file.ljust(128, b"\x00")
        + b"\x63\x82\x53\x63"  # magic cookie
    )


# A BIOS PXE ROM (Intel UNDI 2.1) DISCOVER, broadcast flag set.
BIOS_DISCOVER = (
    header(xid=b"\x5a\x3c\x9e\x01")
    + (
        b"\x35\x01\x01"  # 53 message type: DISCOVER
        b"\x39\x02\x05\xc0"  # 57 max message size: 1472
        b"\x5d\x02\x00\x00"  # 93 client arch: 0 (x86 BIOS)
        b"\x5e\x03\x01\x02\x01"  # 94 client NDI: UNDI 2.1
        b"\x61\x11\x00"
        + GUID  # 97 client machine id: type 0 + GUID
        + b"\x3c\x20PXEClient:Arch:00000:UNDI:002001"  # 60 vendor class
        b"\x37\x18"  # 55 parameter request list, 24 codes:
        b"\x01\x02\x03\x05\x06\x0b\x0c\x0d\x0f\x10\x11\x12\x2b\x36\x3c\x43\x80\x81\x82\x83\x84\x85\x86\x87"
        b"\xff"  # END
    )
)

# An EDK2 UEFI HTTP boot DISCOVER (x64, arch 16).
HTTP_DISCOVER = (
    header(xid=b"\x11\x22\x33\x44", secs=b"\x00\x00", flags=b"\x00\x00")
    + (
        b"\x35\x01\x01"  # 53 DISCOVER
        b"\x39\x02\x05\xc0"  # 57 1472
        b"\x37\x07\x01\x03\x06\x0f\x3c\x42\x43"  # 55: 1 3 6 15 60 66 67
        b"\x5e\x03\x01\x03\x01"  # 94 UNDI 3.1
        b"\x5d\x02\x00\x10"  # 93 arch 16 (x64 UEFI HTTP)
        b"\x61\x11\x00"
        + GUID  # 97
        + b"\x3c\x21HTTPClient:Arch:00016:UNDI:003001"  # 60
        b"\xff"
    )
)
HTTP_DISCOVER = HTTP_DISCOVER.ljust(BOOTP_MIN_SIZE, b"\x00")

# iPXE (already chainloaded over UEFI x64 PXE) asking again, now with user class "iPXE".
IPXE_DISCOVER = (
    header(xid=b"\xde\xad\xbe\xef", secs=b"\x00\x00", flags=b"\x00\x00")
    + (
        b"\x35\x01\x01"  # 53 DISCOVER
        b"\x39\x02\x05\xdc"  # 57 1500
        b"\x5d\x02\x00\x07"  # 93 arch 7
        b"\x5e\x03\x01\x03\x0a"  # 94 UNDI 3.10
        b"\x3c\x20PXEClient:Arch:00007:UNDI:003010"  # 60
        b"\x4d\x04iPXE"  # 77 user class "iPXE" (bare, as iPXE sends it)
        b"\x3d\x07\x01"
        + MAC  # 61 client id: type 1 + MAC
        + b"\xaf\x07\xb1\x05\x01\x80\x86\x10\x0e"  # 175 iPXE encapsulated options (opaque to the codec)
        b"\x37\x0a\x01\x03\x06\x07\x0c\x0f\x11\x1a\x2b\x3c"  # 55
        b"\xff"
    )
)
IPXE_DISCOVER = IPXE_DISCOVER.ljust(BOOTP_MIN_SIZE, b"\x00")


# --- hand-built real-world packets ---------------------------------------------------------------


def test_bios_pxe_discover() -> None:
    assert len(BIOS_DISCOVER) == 336
    packet = decode(BIOS_DISCOVER)
    assert packet.op == Op.BOOTREQUEST
    assert (packet.htype, packet.hlen, packet.hops) == (1, 6, 0)
    assert packet.xid == 0x5A3C9E01
    assert packet.secs == 4
    assert packet.broadcast
    assert packet.mac == "52:54:00:12:34:56"
    assert packet.ciaddr == packet.yiaddr == packet.siaddr == packet.giaddr == IPv4Address("0.0.0.0")
    assert packet.sname == packet.file == b""
    assert list(packet.options) == [53, 57, 93, 94, 97, 60, 55]
    assert packet.message_type is MessageType.DISCOVER
    assert packet.max_message_size == 1472
    assert packet.client_archs == (0,)
    assert packet.client_arch == 0
    assert packet.client_ndi == (1, 2, 1)
    assert packet.client_machine_id == GUID
    assert packet.vendor_class == b"PXEClient:Arch:00000:UNDI:002001"
    assert packet.parameter_request_list is not None
    assert packet.parameter_request_list[:5] == (1, 2, 3, 5, 6)
    assert packet.user_class is None
    assert classify(packet.client_arch, packet.vendor_class, packet.user_class) is BIOS_PXE
    # Byte-exact round trip: the ROM's packet is already canonical (>300 bytes, no padding).
    assert encode(packet) == BIOS_DISCOVER


def test_bios_pxe_discover_with_trailing_padding() -> None:
    padded = BIOS_DISCOVER.ljust(548, b"\x00")
    assert decode(padded) == decode(BIOS_DISCOVER)


def test_uefi_http_boot_discover_and_offer() -> None:
    packet = decode(HTTP_DISCOVER)
    assert not packet.broadcast
    assert packet.client_arch == 16
    assert packet.vendor_class == b"HTTPClient:Arch:00016:UNDI:003001"
    method = classify(packet.client_arch, packet.vendor_class, packet.user_class)
    assert method is UEFI_X64_HTTP
    assert encode(packet) == HTTP_DISCOVER

    assert method.reply_vendor_class is not None
    url = method.boot_file(http_base="http://192.0.2.1:8080")
    offer = dataclasses.replace(
        packet,
        op=Op.BOOTREPLY,
        yiaddr=IPv4Address("192.0.2.50"),
        file=url.encode(),
        options={
            Option.MESSAGE_TYPE: bytes([MessageType.OFFER]),
            Option.SERVER_ID: encode_ip("192.0.2.1"),
            Option.LEASE_TIME: encode_u32(3600),
            Option.SUBNET_MASK: encode_ip("255.255.255.0"),
            Option.ROUTER: encode_ips(["192.0.2.254"]),
            Option.VENDOR_CLASS: method.reply_vendor_class,  # UEFI HTTP boot requires the echo
            Option.BOOTFILE_NAME: encode_text(url),
        },
    )
    wire = encode(offer, max_size=packet.max_message_size)
    back = decode(wire)
    assert back == offer
    assert back.message_type is MessageType.OFFER
    assert back.vendor_class == b"HTTPClient"
    assert back.bootfile_name == back.boot_file == "http://192.0.2.1:8080/boot/snponly.efi"
    assert back.server_id == IPv4Address("192.0.2.1")
    assert back.lease_time == 3600
    assert back.routers == (IPv4Address("192.0.2.254"),)


def test_ipxe_discover() -> None:
    packet = decode(IPXE_DISCOVER)
    assert packet.user_class == b"iPXE"
    assert packet.client_id == b"\x01" + MAC
    assert packet.options[175] == bytes.fromhex("b105 0180 86100e")  # unknown: kept raw
    assert packet.max_message_size == 1500
    assert classify(packet.client_arch, packet.vendor_class, packet.user_class) is IPXE
    assert encode(packet) == IPXE_DISCOVER


# --- accessors, header helpers, construction -----------------------------------------------------


def test_typed_accessors() -> None:
    packet = DhcpPacket(
        op=Op.BOOTREPLY,
        chaddr=MAC,
        options={
            Option.MESSAGE_TYPE: b"\x05",
            Option.SUBNET_MASK: encode_ip("255.255.0.0"),
            Option.ROUTER: encode_ips(["10.0.0.1", "10.0.0.2"]),
            Option.DNS_SERVERS: encode_ips(["10.0.0.53"]),
            Option.HOST_NAME: b"node-1\x00",  # Windows-style trailing NUL
            Option.DOMAIN_NAME: b"lab.example",
            Option.BROADCAST_ADDRESS: encode_ip("10.0.255.255"),
            Option.NTP_SERVERS: encode_ips(["10.0.0.123"]),
            Option.REQUESTED_IP: encode_ip("10.0.0.9"),
            Option.LEASE_TIME: encode_u32(0xFFFFFFFF),
            Option.SERVER_ID: encode_ip("10.0.0.1"),
            Option.PARAMETER_REQUEST_LIST: bytes([1, 3, 6]),
            Option.MAX_MESSAGE_SIZE: encode_u16(576),
            Option.TFTP_SERVER_NAME: b"10.0.0.1",
            Option.BOOTFILE_NAME: b"undionly.kpxe",
            Option.CLIENT_ARCH: b"\x00\x07\x00\x09",
        },
    )
    back = decode(encode(packet))
    assert back == packet
    assert back.message_type is MessageType.ACK
    assert back.subnet_mask == IPv4Address("255.255.0.0")
    assert back.routers == (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))
    assert back.dns_servers == (IPv4Address("10.0.0.53"),)
    assert back.host_name == "node-1"
    assert back.domain_name == "lab.example"
    assert back.broadcast_address == IPv4Address("10.0.255.255")
    assert back.ntp_servers == (IPv4Address("10.0.0.123"),)
    assert back.requested_ip == IPv4Address("10.0.0.9")
    assert back.lease_time == 0xFFFFFFFF
    assert back.server_id == IPv4Address("10.0.0.1")
    assert back.parameter_request_list == (1, 3, 6)
    assert back.max_message_size == 576
    assert back.tftp_server_name == "10.0.0.1"
    assert back.bootfile_name == "undionly.kpxe"
    assert back.client_archs == (7, 9)
    assert back.client_arch == 7


def test_absent_options_are_none() -> None:
    packet = DhcpPacket()
    names = [
        "message_type", "subnet_mask", "routers", "dns_servers", "host_name", "domain_name", "broadcast_address",
        "ntp_servers", "requested_ip", "lease_time", "server_id", "parameter_request_list", "max_message_size",
        "vendor_class", "client_id", "tftp_server_name", "bootfile_name", "user_class", "client_archs",
        "client_arch", "client_ndi", "client_machine_id",
    ]  # fmt: skip
    for name in names:
        assert getattr(packet, name) is None, name


def test_accessor_on_malformed_constructed_packet_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="option 50"):
        _ = DhcpPacket(options={Option.REQUESTED_IP: b"\x01\x02\x03"}).requested_ip


def test_broadcast_flag_and_mac() -> None:
    assert DhcpPacket(flags=0x8000).broadcast
    assert not DhcpPacket(flags=0x7FFF).broadcast
    assert DhcpPacket(chaddr=MAC).mac == "52:54:00:12:34:56"
    assert DhcpPacket(chaddr=MAC, hlen=20).mac == "52:54:00:12:34:56:00:00:00:00:00:00:00:00:00:00"


def test_packet_normalises_and_is_immutable() -> None:
    packet = DhcpPacket(chaddr=MAC, sname=b"srv\x00\x00", file=b"boot\x00", options={1: b"\xff\xff\xff\x00"})
    assert len(packet.chaddr) == 16
    assert packet.sname == b"srv"
    assert packet.server_name == "srv"
    assert packet.file == b"boot"
    with pytest.raises(dataclasses.FrozenInstanceError):
        packet.xid = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        packet.options[1] = b""  # type: ignore[index]
    with pytest.raises(ValueError, match="chaddr"):
        DhcpPacket(chaddr=bytes(17))


# --- overload (option 52) and RFC 3396 long options ----------------------------------------------


def test_option_overload_file_and_sname() -> None:
    file_area = b"\x0c\x04node" + b"\x3c\x05Class" + b"\xff"  # 12 host name; 60 (second part)
    sname_area = b"\x0f\x0bexample.org" + b"\xff"  # 15 domain name
    data = header(xid=b"\x00\x00\x00\x01", sname=sname_area, file=file_area) + (
        b"\x35\x01\x03"  # 53 REQUEST
        b"\x34\x01\x03"  # 52 overload: file and sname
        b"\x3c\x06Vendor"  # 60, first part
        b"\xff"
    )
    packet = decode(data)
    assert packet.file == packet.sname == b""  # they carried options, not names
    assert Option.OVERLOAD not in packet.options
    assert list(packet.options) == [53, 60, 12, 15]
    assert packet.vendor_class == b"VendorClass"  # options field first, then file (RFC 3396 §5)
    assert packet.host_name == "node"
    assert packet.domain_name == "example.org"
    # Re-encoding puts everything in the options field: same logical packet.
    assert decode(encode(packet)) == packet


def test_option_overload_file_only_keeps_sname() -> None:
    data = header(xid=b"\x00\x00\x00\x02", sname=b"bootserver", file=b"\x43\x04boot\xff") + b"\x34\x01\x01\xff"
    packet = decode(data)
    assert packet.server_name == "bootserver"
    assert packet.file == b""
    assert packet.bootfile_name == "boot"


def test_option_overload_sname_only_keeps_file() -> None:
    data = header(xid=b"\x00\x00\x00\x03", sname=b"\x0c\x02ab\xff", file=b"pxelinux.0") + b"\x34\x01\x02\xff"
    packet = decode(data)
    assert packet.boot_file == "pxelinux.0"
    assert packet.host_name == "ab"


def test_long_option_split_on_encode_and_joined_on_decode() -> None:
    value = bytes(range(256)) + bytes(44)  # 300 bytes
    wire = encode(DhcpPacket(options={Option.VENDOR_SPECIFIC: value, Option.MESSAGE_TYPE: b"\x02"}))
    options = wire[240:]
    assert options[:2] == b"\x2b\xff" and options[2:257] == value[:255]
    assert options[257:259] == b"\x2b\x2d" and options[259:304] == value[255:]
    assert options[304:307] == b"\x35\x01\x02"
    assert options[307] == Option.END
    assert decode(wire).options[Option.VENDOR_SPECIFIC] == value


def test_long_option_instances_need_not_be_adjacent() -> None:
    data = header(xid=b"\x00\x00\x00\x04") + b"\x0c\x03abc\x35\x01\x01\x0c\x03def\xff"
    packet = decode(data)
    assert packet.host_name == "abcdef"
    assert list(packet.options) == [12, 53]


def test_empty_option_value_round_trips() -> None:
    packet = DhcpPacket(options={Option.USER_CLASS: b""})
    wire = encode(packet)
    assert wire[240:243] == b"\x4d\x00\xff"
    assert decode(wire) == packet


def test_pad_options_are_skipped() -> None:
    data = header(xid=b"\x00\x00\x00\x05") + b"\x00\x00\x35\x01\x01\x00\xff" + b"junk after END is padding"
    assert decode(data).options == {53: b"\x01"}


# --- encode: sizes and errors ----------------------------------------------------------------------


def test_encode_pads_to_bootp_minimum() -> None:
    wire = encode(DhcpPacket(options={Option.MESSAGE_TYPE: b"\x01"}))
    assert len(wire) == BOOTP_MIN_SIZE
    assert wire[236:240] == MAGIC_COOKIE
    assert wire[240:244] == b"\x35\x01\x01\xff"
    assert wire[244:] == bytes(BOOTP_MIN_SIZE - 244)


def test_encode_respects_max_size() -> None:
    packet = DhcpPacket(options={Option.VENDOR_SPECIFIC: bytes(400)})
    assert len(encode(packet)) == 240 + 400 + 2 * 2 + 1
    with pytest.raises(EncodeError, match="at most 548"):
        encode(packet, max_size=DEFAULT_MAX_MESSAGE_SIZE)
    assert len(encode(packet, max_size=1472)) == 645


@pytest.mark.parametrize(
    ("packet", "match"),
    [
        (DhcpPacket(op=256), "op=256"),
        (DhcpPacket(xid=-1), "xid"),
        (DhcpPacket(xid=1 << 32), "xid"),
        (DhcpPacket(secs=70000), "secs"),
        (DhcpPacket(flags=1 << 16), "flags"),
        (DhcpPacket(sname=b"x" * 65), "sname"),
        (DhcpPacket(file=b"x" * 129), "file"),
        (DhcpPacket(options={0: b""}), "option code 0"),
        (DhcpPacket(options={255: b""}), "option code 255"),
        (DhcpPacket(options={256: b""}), "option code 256"),
        (DhcpPacket(options={52: b"\x01"}), "option 52"),
        (DhcpPacket(options={43: bytes(70000)}), "at most 65535"),
    ],
)
def test_encode_errors(packet: DhcpPacket, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        encode(packet)


# --- decode: malformed input -----------------------------------------------------------------------

GOOD = header(xid=b"\x00\x00\x00\x09")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than the 240-byte"),
        (BIOS_DISCOVER[:239], "shorter than the 240-byte"),
        (GOOD[:236] + b"\x63\x82\x53\x64" + b"\xff", "bad magic cookie"),
        (GOOD, "no END"),  # no options at all
        (GOOD + b"\x35\x01\x01", "no END"),
        (GOOD + b"\x00\x00\x00", "no END"),
        (GOOD + b"\x35", "no length byte"),
        (GOOD + b"\x35\x05\x01\xff", "runs past the end"),
        (GOOD + b"\x35\x01\x01\xff" + bytes(65536), "more than a UDP datagram"),
        (GOOD + b"\x34\x01\x00\xff", "overload"),
        (GOOD + b"\x34\x01\x04\xff", "overload"),
        (GOOD + b"\x34\x02\x01\x02\xff", "overload"),
        (GOOD + b"\x34\x00\xff", "overload"),
        (GOOD + b"\x34\x01\x01\x34\x01\x01\xff", "overload"),  # repeated: concatenates to 2 bytes
        (header(xid=b"\x00\x00\x00\x09", file=b"\x34\x01\x02\xff") + b"\x34\x01\x01\xff", "only appear"),
        (header(xid=b"\x00\x00\x00\x09", file=b"\x0c\x02ab") + b"\x34\x01\x01\xff", "file .overloaded.: no END"),
        (header(xid=b"\x00\x00\x00\x09", sname=b"\x0c\x7fab\xff") + b"\x34\x01\x02\xff", "sname .overloaded."),
        (GOOD[:2] + b"\x11" + GOOD[3:] + b"\xff", "hlen 17"),
        (GOOD + b"\x35\x02\x01\x01\xff", "option 53"),
        (GOOD + b"\x35\x01\x63\xff", "unknown DHCP message type 99"),
        (GOOD + b"\x32\x03\x0a\x00\x00\xff", "option 50"),
        (GOOD + b"\x36\x00\xff", "option 54"),
        (GOOD + b"\x01\x05\xff\xff\xff\x00\x00\xff", "option 1"),
        (GOOD + b"\x03\x06\x0a\x00\x00\x01\x0a\x00\xff", "option 3"),
        (GOOD + b"\x33\x02\x00\x01\xff", "option 51"),
        (GOOD + b"\x39\x01\x05\xff", "option 57"),
        (GOOD + b"\x5d\x03\x00\x00\x07\xff", "option 93"),
        (GOOD + b"\x5d\x00\xff", "option 93"),
        (GOOD + b"\x5e\x02\x01\x02\xff", "option 94"),
        (GOOD + b"\x61\x11\x01" + GUID + b"\xff", "option 97"),
        (GOOD + b"\x61\x10" + GUID + b"\xff", "option 97"),
    ],
)
def test_decode_errors(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(data)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)
    assert issubclass(EncodeError, ValueError)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(BIOS_DISCOVER)) == decode(memoryview(BIOS_DISCOVER)) == decode(BIOS_DISCOVER)


# --- fuzzing -------------------------------------------------------------------------------------

SAMPLES = (BIOS_DISCOVER, HTTP_DISCOVER, IPXE_DISCOVER)


def _decode_or_reject(data: bytes) -> DhcpPacket | None:
    try:
        return decode(data)
    except DecodeError:
        return None


def _assert_stable(packet: DhcpPacket) -> None:
    wire = encode(packet)
    again = decode(wire)
    assert again == packet
    assert encode(again) == wire


@FUZZ
@given(st.binary(max_size=1500))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    packet = _decode_or_reject(data)
    if packet is not None:
        _assert_stable(packet)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_options_after_valid_header(options: bytes) -> None:
    packet = _decode_or_reject(GOOD + options)
    if packet is not None:
        _assert_stable(packet)


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_mutated_real_packets(sample: bytes, data: st.DataObject) -> None:
    mutated = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        index = data.draw(st.integers(0, len(mutated) - 1), label="index")
        mutated[index] = data.draw(st.integers(0, 255), label="byte")
    packet = _decode_or_reject(bytes(mutated))
    if packet is not None:
        _assert_stable(packet)


@FUZZ
@given(st.sampled_from(SAMPLES), st.integers(0, 600))
def test_fuzz_truncated_real_packets(sample: bytes, length: int) -> None:
    packet = _decode_or_reject(sample[:length])
    if packet is not None:
        _assert_stable(packet)


_ips = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
# Fixed-format options are validated on decode, so arbitrary values for them are not valid packets.
_STRICT: frozenset[int] = frozenset({1, 3, 6, 28, 42, 50, 51, 53, 54, 57, 93, 94, 97})
_option_codes: st.SearchStrategy[int] = st.integers(1, 254).filter(lambda c: c != Option.OVERLOAD and c not in _STRICT)

packets = st.builds(
    DhcpPacket,
    op=st.sampled_from(Op),
    htype=st.integers(0, 255),
    hlen=st.integers(0, 16),
    hops=st.integers(0, 255),
    xid=st.integers(0, 2**32 - 1),
    secs=st.integers(0, 2**16 - 1),
    flags=st.integers(0, 2**16 - 1),
    ciaddr=_ips,
    yiaddr=_ips,
    siaddr=_ips,
    giaddr=_ips,
    chaddr=st.binary(max_size=16),
    sname=st.binary(max_size=64),
    file=st.binary(max_size=128),
    options=st.dictionaries(_option_codes, st.binary(max_size=600), max_size=8),
)


@FUZZ
@given(packets)
def test_fuzz_valid_packets_round_trip(packet: DhcpPacket) -> None:
    _assert_stable(packet)
