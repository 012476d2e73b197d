"""RMCP codec: round trips, known bytes, malformed input, and a fuzz test that only DecodeError escapes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.discovery import rmcp
from appliance.discovery.rmcp import (
    AuthCapsRequest,
    AuthCapsResponse,
    DecodeError,
    PresencePing,
    PresencePong,
    decode,
    encode,
)

# An ASF Presence Ping as sent by common tools (rmcpping, nmap's asf-rmcp-version), seq 0xff, tag 0.
PING_BYTES = bytes.fromhex("0600ff06000011be80000000")
# Get Channel Authentication Capabilities, channel 0x0e + v2.0 bit, admin, as ipmitool lanplus sends it.
AUTH_CAPS_REQUEST_BYTES = bytes.fromhex("0600ff07" "00" "00000000" "00000000" "09" "2018c8" "810038" "8e04" "b5")


def test_ping_encodes_to_known_bytes() -> None:
    assert rmcp.encode_presence_ping() == PING_BYTES
    assert decode(PING_BYTES) == PresencePing()


def test_auth_caps_request_encodes_to_known_bytes() -> None:
    assert rmcp.encode_auth_caps_request() == AUTH_CAPS_REQUEST_BYTES
    assert decode(AUTH_CAPS_REQUEST_BYTES) == AuthCapsRequest()


@pytest.mark.parametrize("message", [
    PresencePing(),
    PresencePing(tag=7, sequence=3),
    PresencePong(),
    PresencePong(tag=9, iana=343, oem=0x01020304, entities=0x01, interactions=0x20),
    AuthCapsRequest(),
    AuthCapsRequest(channel=1, privilege=2, ipmi20=False, sequence=63),
    AuthCapsResponse(),
    AuthCapsResponse(channel=2, auth_types=0x17, status=0x0C, extended=0x01, oem_id=0x123456, oem_aux=9, sequence=5),
])
def test_round_trip(message: rmcp.Message) -> None:
    assert decode(encode(message)) == message


def test_pong_properties() -> None:
    assert PresencePong(entities=0x81).ipmi_supported
    assert PresencePong(entities=0x81).asf_version == "1.0"
    assert not PresencePong(entities=0x01).ipmi_supported


def test_auth_caps_versions() -> None:
    assert AuthCapsResponse(auth_types=0x80, extended=0x02).ipmi_version == "2.0"
    assert AuthCapsResponse(auth_types=0x80, extended=0x03).supports_ipmi15
    v15 = AuthCapsResponse(auth_types=0x17, extended=0x00)
    assert v15.ipmi_version == "1.5" and v15.supports_ipmi15


def test_decodes_pyghmi_servers_answer() -> None:
    # Bytes pyghmi's IpmiServer.send_auth_cap produces: v2.0 extended, RMCP+ only, seq 0.
    reply = bytes.fromhex("0600ff07" "00" "00000000" "00000000" "10" "811c63" "200038" "0001800402000000" "00" "21")
    message = decode(reply)
    assert isinstance(message, AuthCapsResponse)
    assert message.ipmi_version == "2.0" and message.channel == 1


def test_error_completion_code_is_a_response() -> None:
    body = bytes([0xC1])
    head = bytes([0x81, 0x07 << 2])
    tail = bytes([0x20, 0, 0x38]) + body
    msg = head + bytes([rmcp.checksum(head)]) + tail + bytes([rmcp.checksum(tail)])
    data = bytes.fromhex("0600ff07" "00" "00000000" "00000000") + bytes([len(msg)]) + msg
    message = decode(data)
    assert isinstance(message, AuthCapsResponse) and message.completion_code == 0xC1


def test_rmcp_plus_framed_response() -> None:
    inner = rmcp.encode_auth_caps_response(AuthCapsResponse())[14:]  # the bare IPMI message
    data = bytes.fromhex("0600ff07" "06" "00" "00000000" "00000000") + len(inner).to_bytes(2, "little") + inner
    assert decode(data) == AuthCapsResponse()


@pytest.mark.parametrize("data, needle", [
    (b"", "4 bytes"),
    (b"\x06\x00\xff", "4 bytes"),
    (b"\x05\x00\xff\x06" + bytes(8), "version"),
    (b"\x06\x00\xff\x86", "ACK"),
    (b"\x06\x00\xff\x08", "class"),
    (PING_BYTES[:-1], "ASF header"),
    (PING_BYTES[:4] + b"\x00\x00\x00\x01" + PING_BYTES[8:], "IANA"),
    (PING_BYTES[:8] + b"\x99" + PING_BYTES[9:], "type"),
    (PING_BYTES[:11] + b"\x10", "truncated"),
    (rmcp.encode_presence_pong(PresencePong())[:12] + b"\x04" + bytes(4), "16 data bytes"),
    (AUTH_CAPS_REQUEST_BYTES[:-1], "truncated"),
    (AUTH_CAPS_REQUEST_BYTES[:-1] + b"\x00", "data checksum"),
    (AUTH_CAPS_REQUEST_BYTES[:16] + b"\x00" + AUTH_CAPS_REQUEST_BYTES[17:], "header checksum"),
    (b"\x06\x00\xff\x07", "header missing"),
    (b"\x06\x00\xff\x07\x06\xc0" + bytes(10), "encrypted"),
])
def test_malformed_input_raises_decode_error(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        decode(data)


def test_other_ipmi_command_is_refused() -> None:
    head = bytes([0x20, 0x06 << 2])
    tail = bytes([0x81, 0, 0x01])  # Get Device ID
    msg = head + bytes([rmcp.checksum(head)]) + tail + bytes([rmcp.checksum(tail)])
    data = bytes.fromhex("0600ff07" "00" "00000000" "00000000") + bytes([len(msg)]) + msg
    with pytest.raises(DecodeError, match="unsupported IPMI command"):
        decode(data)


def test_encoder_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        rmcp.encode_presence_ping(PresencePing(tag=256))
    with pytest.raises(ValueError):
        rmcp.encode_auth_caps_request(AuthCapsRequest(channel=16))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_random_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([PING_BYTES, AUTH_CAPS_REQUEST_BYTES, rmcp.encode_presence_pong(PresencePong()),
                        rmcp.encode_auth_caps_response(AuthCapsResponse())]),
       st.data())
def test_fuzz_mutated_messages_only_raise_decode_error(base: bytes, data: st.DataObject) -> None:
    mutated = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    with contextlib.suppress(DecodeError):
        decode(bytes(mutated[:cut]))
