"""Codec tests: exact wire bytes, round trips, every malformed shape, and fuzzing of decode."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxe.tftp.packets import (
    MAX_DATAGRAM,
    Ack,
    Data,
    DecodeError,
    Error,
    ErrorCode,
    OptionAck,
    Packet,
    ReadRequest,
    WriteRequest,
    decode,
    encode,
)

WIRE: list[tuple[bytes, Packet]] = [
    (b"\x00\x01pxelinux.0\x00octet\x00", ReadRequest("pxelinux.0", "octet")),
    (
        b"\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00blksize\x001468\x00",
        ReadRequest("undionly.kpxe", "octet", {"tsize": "0", "blksize": "1468"}),
    ),
    (b"\x00\x02up.bin\x00netascii\x00", WriteRequest("up.bin", "netascii")),
    (b"\x00\x03\x00\x01hello", Data(1, b"hello")),
    (b"\x00\x03\xff\xff", Data(65535, b"")),
    (b"\x00\x04\x00\x00", Ack(0)),
    (b"\x00\x04\x12\x34", Ack(0x1234)),
    (b"\x00\x05\x00\x01File not found\x00", Error(ErrorCode.FILE_NOT_FOUND, "File not found")),
    (b"\x00\x05\x00\x08\x00", Error(8, "")),
    (b"\x00\x06blksize\x001468\x00tsize\x00123\x00", OptionAck({"blksize": "1468", "tsize": "123"})),
]


@pytest.mark.parametrize(("wire", "packet"), WIRE)
def test_decode_known_bytes(wire: bytes, packet: Packet) -> None:
    assert decode(wire) == packet


@pytest.mark.parametrize(("wire", "packet"), WIRE)
def test_encode_known_bytes(wire: bytes, packet: Packet) -> None:
    assert encode(packet) == wire


def test_mode_and_option_names_are_case_insensitive() -> None:
    packet = decode(b"\x00\x01Boot/X.efi\x00OcTeT\x00BLKSIZE\x00512\x00")
    assert packet == ReadRequest("Boot/X.efi", "octet", {"blksize": "512"})


def test_error_message_with_junk_after_nul_or_non_ascii_is_tolerated() -> None:
    assert decode(b"\x00\x05\x00\x00bad\xffthing\x00junk\x00") == Error(0, "bad\ufffdthing")


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00", id="half-opcode"),
        pytest.param(b"\x00\x00", id="opcode-0"),
        pytest.param(b"\x00\x07\x00\x00", id="opcode-7"),
        pytest.param(b"\xff\xff", id="opcode-65535"),
        pytest.param(b"\x00\x01", id="rrq-no-body"),
        pytest.param(b"\x00\x01file\x00octet", id="rrq-mode-no-nul"),
        pytest.param(b"\x00\x01file", id="rrq-filename-no-nul"),
        pytest.param(b"\x00\x01file\x00", id="rrq-no-mode"),
        pytest.param(b"\x00\x01\x00octet\x00", id="rrq-empty-filename"),
        pytest.param(b"\x00\x01fil\xe9\x00octet\x00", id="rrq-non-ascii-filename"),
        pytest.param(b"\x00\x01file\x00binary\x00", id="rrq-bad-mode"),
        pytest.param(b"\x00\x01file\x00octet\x00blksize\x00", id="rrq-option-without-value"),
        pytest.param(b"\x00\x01file\x00octet\x00\x001\x00", id="rrq-empty-option-name"),
        pytest.param(b"\x00\x01file\x00octet\x00a\x001\x00A\x002\x00", id="rrq-duplicate-option"),
        pytest.param(b"\x00\x02file\x00mode\x00", id="wrq-bad-mode"),
        pytest.param(b"\x00\x03\x00", id="data-short-block"),
        pytest.param(b"\x00\x03" + b"\x00\x01" + b"x" * 65465, id="data-oversize"),
        pytest.param(b"\x00\x04\x00", id="ack-short"),
        pytest.param(b"\x00\x04\x00\x01\x00", id="ack-long"),
        pytest.param(b"\x00\x05\x00\x01", id="error-no-message"),
        pytest.param(b"\x00\x05\x00\x01oops", id="error-no-nul"),
        pytest.param(b"\x00\x06", id="oack-empty"),
        pytest.param(b"\x00\x06blksize\x00", id="oack-odd"),
        pytest.param(b"\x00\x06blksize\x00512", id="oack-no-nul"),
    ],
)
def test_malformed_raises_decode_error(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(wire)


def test_largest_data_packet_decodes_and_one_more_byte_does_not() -> None:
    biggest = b"\x00\x03\x00\x01" + b"x" * (MAX_DATAGRAM - 4)
    assert decode(biggest) == Data(1, b"x" * (MAX_DATAGRAM - 4))
    with pytest.raises(DecodeError, match="exceeds"):
        decode(biggest + b"x")


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


@pytest.mark.parametrize(
    "packet",
    [
        Data(65536, b""),
        Ack(-1),
        Error(70000, "x"),
        Data(1, b"x" * 65465),
        ReadRequest("", "octet"),
        ReadRequest("file", "binary"),
        ReadRequest("fi\x00le", "octet"),
        ReadRequest("fichier-é", "octet"),
        OptionAck({}),
    ],
)
def test_encode_refuses_unrepresentable_packets(packet: Packet) -> None:
    with pytest.raises(ValueError):  # UnicodeEncodeError is a ValueError too
        encode(packet)


@given(st.binary(max_size=600))
def test_fuzz_decode_only_raises_decode_error(data: bytes) -> None:
    try:
        packet = decode(data)
    except DecodeError:
        return
    # Whatever decodes must re-encode; requests and OACK normalise case, so compare decoded forms.
    assert decode(encode(packet)) == packet


@given(st.integers(0, 6).map(lambda n: n.to_bytes(2, "big")), st.lists(st.binary(max_size=12), max_size=8))
def test_fuzz_decode_structured_near_misses(opcode: bytes, fields: list[bytes]) -> None:
    # Random opcodes followed by NUL-separated fields reach the option and mode parsers far more
    # often than uniform random bytes do.
    with contextlib.suppress(DecodeError):
        decode(opcode + b"\0".join(fields))


_ascii_text = st.text(st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=20)
_options = st.dictionaries(_ascii_text.map(str.lower), _ascii_text, max_size=5)


@given(
    st.one_of(
        st.builds(ReadRequest, _ascii_text, st.sampled_from(["octet", "netascii", "mail"]), _options),
        st.builds(WriteRequest, _ascii_text, st.sampled_from(["octet", "netascii"]), _options),
        st.builds(Data, st.integers(0, 65535), st.binary(max_size=1500)),
        st.builds(Ack, st.integers(0, 65535)),
        st.builds(Error, st.integers(0, 65535), st.text(st.characters(min_codepoint=1, max_codepoint=127))),
        st.builds(OptionAck, _options.filter(bool)),
    )
)
def test_round_trip(packet: Packet) -> None:
    assert decode(encode(packet)) == packet
