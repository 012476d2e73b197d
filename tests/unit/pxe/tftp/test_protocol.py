"""ReadTransfer driven by a simulated client over a lossy, in-memory "network".

The client follows the receiver rules of RFC 1350 and RFC 7440: ACK after every ``windowsize``
in-order blocks or on the final short block, and on any unexpected block re-ACK the last block
received in order (that is how a lost DATA or a lost ACK is reported back to the sender).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pxe.tftp.files import BytesReader
from pxe.tftp.options import OptionLimits
from pxe.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OptionAck,
    ReadRequest,
    decode,
    encode,
)
from pxe.tftp.protocol import Action, Finished, ReadTransfer, RetryPolicy, Send, SetTimer, TransferState


def pattern(size: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(size))


def sends(actions: list[Action]) -> list[object]:
    return [decode(a.data) for a in actions if isinstance(a, Send)]


@dataclass
class Client:
    blksize: int = 512
    windowsize: int = 1
    received: bytearray = field(default_factory=bytearray)
    next: int = 1  # absolute number of the next block expected
    in_window: int = 0
    done: bool = False
    oack: dict[str, str] | None = None

    def receive(self, datagram: bytes) -> list[bytes]:
        packet = decode(datagram)
        if isinstance(packet, OptionAck):
            self.oack = packet.options
            self.blksize = int(packet.options.get("blksize", self.blksize))
            self.windowsize = int(packet.options.get("windowsize", self.windowsize))
            return [encode(Ack(0))]
        assert isinstance(packet, Data)
        if self.done or packet.block != self.next & 0xFFFF:
            self.in_window = 0
            return [encode(Ack((self.next - 1) & 0xFFFF))]
        self.received += packet.data
        self.next += 1
        self.in_window += 1
        if len(packet.data) < self.blksize:
            self.done = True
        if self.done or self.in_window == self.windowsize:
            self.in_window = 0
            return [encode(Ack((self.next - 1) & 0xFFFF))]
        return []


@dataclass
class Trace:
    finished: Finished
    data_sent: list[Data]
    timers: list[float]
    timeouts: int


# A loss rule sees (direction, packet, index of that packet among all in that direction).
Loss = Callable[[str, object, int], bool]


def run(transfer: ReadTransfer, request: ReadRequest, client: Client, lose: Loss | None = None) -> Trace:
    lose = lose or (lambda direction, packet, n: False)
    counts = {"down": 0, "up": 0}
    data_sent: list[Data] = []
    timers: list[float] = []
    timeouts = 0
    actions = transfer.start(request)
    for _ in range(10_000_000):
        replies: list[bytes] = []
        for action in actions:
            if isinstance(action, Finished):
                return Trace(action, data_sent, timers, timeouts)
            if isinstance(action, SetTimer):
                timers.append(action.seconds)
                continue
            packet = decode(action.data)
            if isinstance(packet, Data):
                data_sent.append(packet)
            counts["down"] += 1
            if not lose("down", packet, counts["down"] - 1):
                replies += client.receive(action.data)
        actions = []
        for reply in replies:
            counts["up"] += 1
            if not lose("up", decode(reply), counts["up"] - 1):
                actions += transfer.datagram(reply)
        if not actions:  # nothing in flight answered: the timer fires
            timeouts += 1
            actions = transfer.timeout()
    raise AssertionError("transfer did not finish")


def test_plain_transfer_512() -> None:
    content = pattern(1300)
    client = Client()
    trace = run(ReadTransfer(BytesReader(content)), ReadRequest("f"), client)
    assert trace.finished == Finished()
    assert bytes(client.received) == content
    assert [(d.block, len(d.data)) for d in trace.data_sent] == [(1, 512), (2, 512), (3, 276)]
    assert client.oack is None
    assert trace.timeouts == 0


def test_blksize_1468_with_tsize() -> None:
    content = pattern(10_000)
    client = Client()
    request = ReadRequest("f", "octet", {"blksize": "1468", "tsize": "0"})
    trace = run(ReadTransfer(BytesReader(content)), request, client)
    assert trace.finished.ok
    assert client.oack == {"blksize": "1468", "tsize": "10000"}
    assert bytes(client.received) == content
    assert [len(d.data) for d in trace.data_sent] == [1468] * 6 + [10_000 - 6 * 1468]


def test_blksize_clamped_to_server_maximum() -> None:
    client = Client()
    transfer = ReadTransfer(BytesReader(pattern(5000)), limits=OptionLimits(max_blksize=1024))
    run(transfer, ReadRequest("f", "octet", {"blksize": "8192"}), client)
    assert client.oack == {"blksize": "1024"}
    assert bytes(client.received) == pattern(5000)


def test_windowsize_16_sends_whole_windows_between_acks() -> None:
    content = pattern(40 * 512 + 100)
    transfer = ReadTransfer(BytesReader(content))
    actions = transfer.start(ReadRequest("f", "octet", {"windowsize": "16"}))
    assert sends(actions) == [OptionAck({"windowsize": "16"})]
    actions = transfer.datagram(encode(Ack(0)))
    assert [d.block for d in sends(actions)] == list(range(1, 17))  # type: ignore[attr-defined]
    assert actions[-1] == SetTimer(1.0)
    assert transfer.datagram(encode(Ack(16)))[0] == Send(encode(Data(17, content[16 * 512 : 17 * 512])))
    client = Client()
    trace = run(ReadTransfer(BytesReader(content)), ReadRequest("f", "octet", {"windowsize": "16"}), client)
    assert bytes(client.received) == content
    assert len(trace.data_sent) == 41
    assert trace.timeouts == 0


def test_lost_ack_retransmits_with_backoff() -> None:
    content = pattern(3 * 512 + 1)
    client = Client()

    def lose(direction: str, packet: object, n: int) -> bool:
        return direction == "up" and packet == Ack(2) and n == 1  # the first ACK of block 2

    trace = run(ReadTransfer(BytesReader(content)), ReadRequest("f"), client, lose)
    assert trace.finished.ok
    assert bytes(client.received) == content
    assert [d.block for d in trace.data_sent] == [1, 2, 2, 3, 4]
    assert trace.timeouts == 1
    # The retransmission waits twice as long; progress afterwards resets the timeout.
    assert trace.timers == [1.0, 1.0, 2.0, 1.0, 1.0]


def test_lost_data_in_window_resends_from_acked_block_without_timeout() -> None:
    content = pattern(48 * 512 + 5)
    client = Client()

    def lose(direction: str, packet: object, n: int) -> bool:
        return direction == "down" and packet == Data(5, content[4 * 512 : 5 * 512]) and n == 5

    request = ReadRequest("f", "octet", {"windowsize": "16"})
    trace = run(ReadTransfer(BytesReader(content)), request, client, lose)
    assert trace.finished.ok
    assert bytes(client.received) == content
    assert trace.timeouts == 0
    blocks = [d.block for d in trace.data_sent]
    # First window 1..16 (5 lost); the client ACKs 4, so the next window starts at 5.
    assert blocks[:32] == list(range(1, 17)) + list(range(5, 21))
    # The client's repeated ACK 4s (one per out-of-order block) did not trigger extra windows.
    assert blocks[32:] == list(range(21, 37)) + list(range(37, 50))


def test_duplicate_ack_is_ignored() -> None:
    transfer = ReadTransfer(BytesReader(pattern(2000)))
    transfer.start(ReadRequest("f"))
    assert sends(transfer.datagram(encode(Ack(1)))) == [Data(2, pattern(2000)[512:1024])]
    assert transfer.datagram(encode(Ack(1))) == []
    assert transfer.datagram(encode(Ack(0))) == []
    assert transfer.datagram(encode(Ack(9))) == []  # not yet sent


def test_rollover_past_65535_blocks() -> None:
    blksize = 8
    content = pattern((65535 + 700) * blksize + 3)
    client = Client()
    request = ReadRequest("big", "octet", {"blksize": str(blksize), "windowsize": "16"})
    trace = run(ReadTransfer(BytesReader(content)), request, client)
    assert trace.finished.ok
    assert bytes(client.received) == content
    blocks = [d.block for d in trace.data_sent]
    assert len(blocks) == 65535 + 701
    assert blocks[65533:65537] == [65534, 65535, 0, 1]


def test_rollover_with_loss_across_the_wrap() -> None:
    blksize = 8
    content = pattern(65540 * blksize)
    client = Client()

    def lose(direction: str, packet: object, n: int) -> bool:
        return isinstance(packet, Data) and packet.block == 0 and direction == "down" and n == 65535

    request = ReadRequest("big", "octet", {"blksize": str(blksize), "windowsize": "4"})
    trace = run(ReadTransfer(BytesReader(content)), request, client, lose)
    assert trace.finished.ok
    assert bytes(client.received) == content


@pytest.mark.parametrize(("size", "expected"), [(1024, [512, 512, 0]), (0, [0]), (511, [511])])
def test_final_block_is_short_or_empty(size: int, expected: list[int]) -> None:
    client = Client()
    trace = run(ReadTransfer(BytesReader(pattern(size))), ReadRequest("f"), client)
    assert trace.finished.ok
    assert [len(d.data) for d in trace.data_sent] == expected
    assert bytes(client.received) == pattern(size)


def test_exact_multiple_in_a_window_ends_with_empty_block() -> None:
    client = Client()
    request = ReadRequest("f", "octet", {"windowsize": "4", "blksize": "100"})
    trace = run(ReadTransfer(BytesReader(pattern(800))), request, client)
    assert [len(d.data) for d in trace.data_sent] == [100] * 8 + [0]
    assert trace.finished.ok


def test_retries_exhausted_sends_error() -> None:
    transfer = ReadTransfer(BytesReader(pattern(100)), retry=RetryPolicy(timeout=1, max_retries=4, max_timeout=5))
    assert transfer.start(ReadRequest("f"))[-1] == SetTimer(1.0)
    timers = []
    for _ in range(4):
        actions = transfer.timeout()
        assert sends(actions) == [Data(1, pattern(100))]
        assert isinstance(actions[-1], SetTimer)
        timers.append(actions[-1].seconds)
    assert timers == [2.0, 4.0, 5.0, 5.0]
    actions = transfer.timeout()
    assert sends(actions) == [Error(ErrorCode.NOT_DEFINED, "timed out waiting for ACK")]
    assert actions[-1] == Finished(0, "timed out waiting for ACK")
    assert transfer.state is TransferState.DONE
    assert transfer.timeout() == []
    assert transfer.datagram(encode(Ack(1))) == []


def test_progress_resets_retry_count() -> None:
    transfer = ReadTransfer(BytesReader(pattern(2000)), retry=RetryPolicy(max_retries=1))
    transfer.start(ReadRequest("f"))
    transfer.timeout()
    transfer.datagram(encode(Ack(1)))
    assert sends(transfer.timeout()) == [Data(2, pattern(2000)[512:1024])]


def test_negotiated_timeout_is_the_base_timer() -> None:
    transfer = ReadTransfer(BytesReader(b"x"))
    assert transfer.start(ReadRequest("f", "octet", {"timeout": "3"}))[-1] == SetTimer(3.0)
    assert transfer.timeout()[-1] == SetTimer(6.0)
    assert transfer.datagram(encode(Ack(0)))[-1] == SetTimer(3.0)


def test_oack_waits_for_ack_zero_and_is_retransmitted() -> None:
    transfer = ReadTransfer(BytesReader(pattern(10)))
    oack = OptionAck({"tsize": "10"})
    assert sends(transfer.start(ReadRequest("f", "octet", {"tsize": "0"}))) == [oack]
    assert transfer.state is TransferState.OACK
    assert transfer.datagram(encode(Ack(1))) == []
    assert sends(transfer.timeout()) == [oack]
    assert sends(transfer.datagram(encode(Ack(0)))) == [Data(1, pattern(10))]
    assert transfer.datagram(encode(Ack(1))) == [Finished()]


def test_client_error_ends_transfer() -> None:
    transfer = ReadTransfer(BytesReader(pattern(10)))
    transfer.start(ReadRequest("f", "octet", {"tsize": "0"}))
    actions = transfer.datagram(encode(Error(ErrorCode.OPTION_NEGOTIATION, "tsize refused")))
    assert actions == [Finished(8, "tsize refused", by_peer=True)]
    assert not actions[0].ok  # type: ignore[union-attr]
    assert transfer.state is TransferState.DONE
    assert transfer.timeout() == []


def test_client_error_mid_transfer() -> None:
    transfer = ReadTransfer(BytesReader(pattern(2000)))
    transfer.start(ReadRequest("f"))
    assert transfer.datagram(encode(Error(0, "user abort"))) == [Finished(0, "user abort", by_peer=True)]


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x00\x09", b"\x00\x04\x00", encode(Data(1, b"x")), encode(ReadRequest("f")), encode(OptionAck({"a": "b"}))],
)
def test_noise_is_ignored(datagram: bytes) -> None:
    transfer = ReadTransfer(BytesReader(pattern(2000)))
    transfer.start(ReadRequest("f"))
    assert transfer.datagram(datagram) == []
    assert transfer.state is TransferState.SENDING


def test_events_before_start_are_ignored_and_start_twice_is_a_bug() -> None:
    transfer = ReadTransfer(BytesReader(b""))
    assert transfer.datagram(encode(Ack(0))) == []
    assert transfer.timeout() == []
    transfer.start(ReadRequest("f"))
    with pytest.raises(RuntimeError):
        transfer.start(ReadRequest("f"))


def test_mail_mode_is_refused() -> None:
    transfer = ReadTransfer(BytesReader(b"x"))
    actions = transfer.start(ReadRequest("root", "mail"))
    assert sends(actions) == [Error(ErrorCode.ILLEGAL_OPERATION, "mail mode is not supported")]
    assert actions[-1] == Finished(ErrorCode.ILLEGAL_OPERATION, "mail mode is not supported")


class BrokenReader:
    size = None

    def read(self, offset: int, size: int) -> bytes:
        raise OSError("disk on fire")


def test_read_error_ends_with_error_0_without_leaking_details() -> None:
    actions = ReadTransfer(BrokenReader()).start(ReadRequest("f", "octet", {"tsize": "0"}))
    # Unknown size: tsize is not offered, so no OACK and the read happens immediately.
    assert sends(actions) == [Error(0, "read error")]
    assert actions[-1] == Finished(0, "read error")


class StreamReader:
    """Generated content whose size is not known up front."""

    size = None

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


def test_unknown_size_reader_streams_until_short_block() -> None:
    client = Client()
    request = ReadRequest("f", "octet", {"tsize": "0", "blksize": "1000"})
    trace = run(ReadTransfer(StreamReader(pattern(2500))), request, client)
    assert client.oack == {"blksize": "1000"}
    assert bytes(client.received) == pattern(2500)
    assert trace.finished.ok


@pytest.mark.parametrize("seed", range(5))
def test_lossy_network_still_delivers(seed: int) -> None:
    content = pattern(30 * 700 + 11)
    # Seeded random loss: a periodic rule can line up with the window length and drop the same
    # block forever, which tests the rule rather than the protocol.
    rng = random.Random(seed)

    def lose(direction: str, packet: object, n: int) -> bool:
        return rng.random() < 0.15

    client = Client()
    request = ReadRequest("f", "octet", {"blksize": "700", "windowsize": "8"})
    trace = run(ReadTransfer(BytesReader(content), retry=RetryPolicy(max_retries=50)), request, client, lose)
    assert trace.finished.ok
    assert bytes(client.received) == content
