"""pxe.tftp.server against real clients (curl, atftp if present) and a raw-socket client, on 127.0.0.1.

The server runs in its own event loop on a background thread so blocking clients (subprocesses,
plain sockets with timeouts) can drive it from the test thread. Every socket and subprocess has a
timeout; nothing listens beyond loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from pxe.tftp.files import BytesReader, FileNotFound
from pxe.tftp.options import OptionLimits
from pxe.tftp.protocol import RetryPolicy
from pxe.tftp.server import ClosableReader, TftpServer

HOST = "127.0.0.1"
SOCK_TIMEOUT = 5.0
CURL_TIMEOUT = 60.0

FILES = {
    "small.bin": 100_000,
    "exact.bin": 512 * 1468,  # a multiple of both block sizes: the transfer ends with an empty block
    "tiny.txt": 5,
    "big.bin": 2 * 1024 * 1024,
}


class ServerThread:
    """Runs a TftpServer in a private event loop on a daemon thread."""

    def __init__(self, server: TftpServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tftp-test-loop", daemon=True)
        self.port = 0

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.port = self.call(self.server.start())
        return self

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(SOCK_TIMEOUT)

    def stats(self, *, settle: bool = True) -> dict[str, int]:
        """Counters read on the loop's thread, so they are consistent with each other.

        With ``settle``, first wait (bounded) until no transfer is running: a client may exit
        right after sending its final ACK, before the server's loop has read it.
        """
        deadline = time.monotonic() + SOCK_TIMEOUT
        while True:
            stats = self._read_stats()
            if not settle or stats["active"] == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.01)

    def _read_stats(self) -> dict[str, int]:

        async def read() -> dict[str, int]:
            s = self.server
            return {
                "started": s.transfers_started,
                "completed": s.transfers_completed,
                "failed": s.transfers_failed,
                "refused": s.requests_refused,
                "active": s.active_transfers,
                "polled": s.datagrams_polled,
            }

        return self.call(read())  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(SOCK_TIMEOUT)
            self.loop.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tftproot")
    rng = random.Random(1350)
    for name, size in FILES.items():
        (path / name).write_bytes(rng.randbytes(size))
    (path / "sub").mkdir()
    (path / "sub" / "nested.cfg").write_bytes(b"#!ipxe\nchain http://x/y\n")
    return path


BUSY_POLL_S = 200e-6  # the appliance's default (tftp.busy_poll_us)


@pytest.fixture(params=[0.0, BUSY_POLL_S], ids=["sleeping", "busy-poll"])
def tftp(root: Path, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """The server as it waits for ACKs: asleep in the selector, or polling while a transfer is alone."""
    with ServerThread(TftpServer(root, host=HOST, port=0, busy_poll_s=request.param)) as st:
        yield st


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def curl_cmd(port: int, name: str, out: Path, blksize: int | None) -> list[str]:
    cmd = ["curl", "-s", "-S", "--max-time", str(int(CURL_TIMEOUT)), "-o", str(out)]
    if blksize is not None:
        cmd += ["--tftp-blksize", str(blksize)]
    return [*cmd, f"tftp://{HOST}:{port}/{name}"]


def curl(port: int, name: str, out: Path, blksize: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        curl_cmd(port, name, out, blksize), capture_output=True, text=True, timeout=CURL_TIMEOUT + 5, check=False
    )


def rrq(name: bytes, **options: str) -> bytes:
    parts = [name, b"octet", *(s.encode() for kv in options.items() for s in kv)]
    return b"\x00\x01" + b"".join(p + b"\0" for p in parts)


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block & 0xFFFF)


def udp(timeout: float = SOCK_TIMEOUT) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(timeout)
    return sock


def expect_error(sock: socket.socket, listen_port: int) -> tuple[int, str]:
    """Receive one ERROR; it must come from an ephemeral port, not the listening one."""
    data, addr = sock.recvfrom(70000)
    assert data[:2] == b"\x00\x05", data[:20]
    assert addr[1] != listen_port
    code = struct.unpack("!H", data[2:4])[0]
    return code, data[4:-1].decode()


def raw_fetch(sock: socket.socket, port: int, name: str, *, blksize: int, windowsize: int) -> tuple[bytes, int]:
    """A tiny windowed RFC 7440 client: ACK the last block of each window (or the final one).

    Returns the content and how many ACKs were sent for data (to prove windowing happened).
    """
    sock.sendto(rrq(name.encode(), blksize=str(blksize), windowsize=str(windowsize), tsize="0"), (HOST, port))
    data, tid = sock.recvfrom(70000)
    assert data[:2] == b"\x00\x06", data[:40]
    fields = data[2:-1].split(b"\0")
    oack = dict(zip(fields[::2], fields[1::2], strict=True))
    want = {"blksize": str(blksize), "windowsize": str(windowsize), "tsize": str(FILES[name])}
    assert oack == {k.encode(): v.encode() for k, v in want.items()}
    sock.sendto(ack(0), tid)
    chunks: list[bytes] = []
    acked = 0
    acks = 0
    stalls = 0
    while True:
        try:
            data, addr = sock.recvfrom(70000)
        except TimeoutError:
            stalls += 1
            assert stalls < 3, "server stopped sending"
            sock.sendto(ack(acked), tid)  # lost something: restart the window after the last good block
            continue
        stalls = 0
        assert addr == tid
        opcode, block = struct.unpack("!HH", data[:4])
        assert opcode == 3, data[:40]
        expected = (len(chunks) + 1) & 0xFFFF
        if block != expected:
            continue  # out of order: the window will be resent after our next ACK or its timeout
        chunks.append(data[4:])
        last = len(data) - 4 < blksize
        if last or len(chunks) - acked == windowsize:
            acked = len(chunks)
            acks += 1
            sock.sendto(ack(acked), tid)
        if last:
            return b"".join(chunks), acks


# -- real clients --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("blksize", [None, 512, 1468])
@pytest.mark.parametrize("name", ["small.bin", "exact.bin", "tiny.txt", "sub/nested.cfg"])
def test_curl_fetch_matches(tftp: ServerThread, root: Path, tmp_path: Path, name: str, blksize: int | None) -> None:
    out = tmp_path / "out"
    result = curl(tftp.port, name, out, blksize)
    assert result.returncode == 0, result.stderr
    assert sha(out.read_bytes()) == sha((root / name).read_bytes())
    stats = tftp.stats()
    assert stats["completed"] == 1 and stats["failed"] == 0 and stats["active"] == 0


@pytest.mark.slow
def test_curl_missing_file_is_an_error(tftp: ServerThread, tmp_path: Path) -> None:
    result = curl(tftp.port, "nope.bin", tmp_path / "out")
    assert result.returncode != 0
    assert tftp.stats()["refused"] == 1


@pytest.mark.slow
def test_twenty_concurrent_curl_transfers(tftp: ServerThread, root: Path, tmp_path: Path) -> None:
    want = sha((root / "big.bin").read_bytes())
    outs = [tmp_path / f"out{i}" for i in range(20)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, out in enumerate(outs):
            blksize = 1468 if i % 2 else 512
            procs.append(
                subprocess.Popen(curl_cmd(tftp.port, "big.bin", out, blksize), stderr=subprocess.PIPE)
            )
        for proc in procs:
            _, err = proc.communicate(timeout=CURL_TIMEOUT + 5)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(SOCK_TIMEOUT)
    for out in outs:
        assert sha(out.read_bytes()) == want
    stats = tftp.stats()
    assert stats["completed"] == 20 and stats["failed"] == 0 and stats["active"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("blksize", [None, 1468])
def test_atftp_fetch_matches(tftp: ServerThread, root: Path, tmp_path: Path, blksize: int | None) -> None:
    out = tmp_path / "out"
    cmd = ["atftp", "--get", "-r", "small.bin", "-l", str(out)]
    if blksize is not None:
        cmd += ["--option", f"blksize {blksize}"]
    result = subprocess.run(
        [*cmd, HOST, str(tftp.port)], capture_output=True, text=True, timeout=CURL_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert sha(out.read_bytes()) == sha((root / "small.bin").read_bytes())


# -- hostile and odd requests ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["../etc/passwd", "/../../etc/passwd", "..%2f..%2fetc%2fpasswd", "sub/../../x"])
def test_curl_traversal_refused_then_still_serving(tftp: ServerThread, root: Path, tmp_path: Path, name: str) -> None:
    # curl would normalise "../" in a URL path itself, so the raw names go out over a UDP socket too.
    with udp() as sock:
        sock.sendto(rrq(name.encode()), (HOST, tftp.port))
        code, _ = expect_error(sock, tftp.port)
        assert code in (1, 2)
    result = curl(tftp.port, "tiny.txt", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == (root / "tiny.txt").read_bytes()


@pytest.mark.parametrize(
    "datagram",
    [
        rrq(b"../etc/passwd"),
        rrq(b"/../../etc/passwd"),
        rrq(b"\\..\\..\\etc\\passwd"),
        # The classic NUL-truncation trick: the name ends at the first NUL, so "../../etc/passwd"
        # is what the server sees (the rest decodes as an option) and refuses.
        b"\x00\x01../../etc/passwd\x00octet\x00.bin\x00octet\x00",
        b"\x00\x01..\x00octet\x00/etc/passwd\x00octet\x00",
        rrq(b"sub"),  # a directory
        rrq(b"x" * 300),
    ],
)
def test_raw_bad_names_get_error_1_or_2(tftp: ServerThread, root: Path, datagram: bytes) -> None:
    with udp() as sock:
        sock.sendto(datagram, (HOST, tftp.port))
        code, message = expect_error(sock, tftp.port)
        assert code in (1, 2)
        assert str(root) not in message  # never leaks the server-side path
        # and the server still serves a good request afterwards
        content, _ = raw_fetch(sock, tftp.port, "small.bin", blksize=1468, windowsize=4)
    assert len(content) == FILES["small.bin"]


def test_wrq_is_refused_with_access_violation(tftp: ServerThread) -> None:
    with udp() as sock:
        sock.sendto(b"\x00\x02upload.bin\x00octet\x00", (HOST, tftp.port))
        assert expect_error(sock, tftp.port)[0] == 2
    assert tftp.stats()["started"] == 0


GARBAGE = [
    b"",
    b"\x00",
    b"\x00\x01",
    b"\x00\x01file",  # RRQ without terminator
    b"\x00\x01file\x00",  # RRQ without mode
    b"\x00\x01file\x00octet",  # mode not terminated
    b"\x00\x01file\x00bogus\x00",
    b"\x00\x01file\x00octet\x00blksize\x00",  # option without value
    b"\x00\x01\xff\xfe\x00octet\x00",  # non-ASCII name
    b"\x00\x01\x00octet\x00",  # empty name
    b"\x00\x04\x00\x01",  # ACK to the listening port
    b"\x00\x03\x00\x01hello",  # DATA to the listening port
    b"\x00\x05\x00\x00oops\x00",  # ERROR to the listening port
    b"\x00\x09whatever",
    b"\xff" * 1000,
    b"\x00\x01" + b"a" * 70000,  # longer than any TFTP datagram
]


@pytest.mark.parametrize("datagram", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_dropped_silently(tftp: ServerThread, datagram: bytes) -> None:
    with udp(timeout=0.3) as sock:
        sock.sendto(datagram[:65507], (HOST, tftp.port))  # 65507: the largest UDP payload over IPv4
        with pytest.raises(TimeoutError):
            sock.recvfrom(70000)
    assert tftp.stats()["started"] == 0


@pytest.mark.slow
def test_random_garbage_never_stops_serving(tftp: ServerThread, root: Path, tmp_path: Path) -> None:
    rng = random.Random(7440)
    with udp() as sock:
        for _ in range(500):
            kind = rng.randrange(3)
            if kind == 0:
                payload = rng.randbytes(rng.randrange(0, 600))
            elif kind == 1:
                full = rrq(b"small.bin", blksize="1468")
                payload = full[: rng.randrange(0, len(full))]  # truncated RRQ
            else:
                payload = b"\x00" + bytes([rng.randrange(1, 8)]) + rng.randbytes(rng.randrange(0, 40))
            sock.sendto(payload, (HOST, tftp.port))
    result = curl(tftp.port, "small.bin", tmp_path / "out", 1468)
    assert result.returncode == 0, result.stderr
    assert sha((tmp_path / "out").read_bytes()) == sha((root / "small.bin").read_bytes())


# -- transfer mechanics -----------------------------------------------------------------------


@pytest.mark.parametrize("gso", [True, False], ids=["segmentation-offload", "one-by-one"])
@pytest.mark.parametrize("windowsize", [1, 16, 64])
def test_windowed_raw_client(root: Path, windowsize: int, gso: bool) -> None:
    """A window leaves as one segmented send (64 x 1472 bytes is over GSO's 64 KiB: two sends)
    or datagram by datagram; the client sees the same packets either way."""
    server = TftpServer(root, host=HOST, port=0, limits=OptionLimits(max_windowsize=64))
    server._gso = gso
    with ServerThread(server) as tftp, udp() as sock:
        content, acks = raw_fetch(sock, tftp.port, "big.bin", blksize=1468, windowsize=windowsize)
        assert sha(content) == sha((root / "big.bin").read_bytes())
        blocks = FILES["big.bin"] // 1468 + 1
        assert acks == -(-blocks // windowsize)
        stats = tftp.stats()
        assert stats["completed"] == 1 and stats["active"] == 0
        assert tftp.server.bytes_sent >= FILES["big.bin"]
        assert server._gso == gso, "the kernel refused UDP segmentation offload"


@pytest.mark.slow
def test_lone_lock_step_transfer_is_busy_polled(root: Path, tmp_path: Path) -> None:
    """curl's ACKs for a lone transfer are caught by the poll (not by waking from the selector)."""
    with ServerThread(TftpServer(root, host=HOST, port=0, busy_poll_s=0.05)) as st:
        result = curl(st.port, "big.bin", tmp_path / "big.bin", blksize=1468)
        assert result.returncode == 0, result.stderr
        stats = st.stats()
    assert sha((tmp_path / "big.bin").read_bytes()) == sha((root / "big.bin").read_bytes())
    assert stats["completed"] == 1
    # 50 ms outlasts any round trip on loopback, so (nearly) every ACK after the first is polled;
    # a scheduler hiccup can still send one through the selector.
    assert stats["polled"] > (FILES["big.bin"] // 1468) // 2


def test_busy_poll_gives_way_to_timers_and_new_clients(root: Path) -> None:
    """A polled transfer whose client went quiet still retransmits on time, and a second client
    is served meanwhile: the poll never keeps the loop."""
    retry = RetryPolicy(timeout=0.3, max_retries=2, max_timeout=0.3)
    with ServerThread(TftpServer(root, host=HOST, port=0, retry=retry, busy_poll_s=0.05)) as st:
        with udp() as quiet, udp() as second:
            quiet.sendto(rrq(b"small.bin"), (HOST, st.port))
            _, tid = quiet.recvfrom(70000)
            quiet.sendto(ack(1), tid)  # then silence, while the server polls
            block2, _ = quiet.recvfrom(70000)
            assert block2[:4] == b"\x00\x03\x00\x02"
            again, _ = quiet.recvfrom(70000)  # the retransmission timer went off despite the poll
            assert again == block2
            second.sendto(rrq(b"tiny.txt"), (HOST, st.port))
            data, tid2 = second.recvfrom(70000)
            assert data == b"\x00\x03\x00\x01" + (root / "tiny.txt").read_bytes()
            second.sendto(ack(1), tid2)
            while quiet.recvfrom(70000)[0][:2] != b"\x00\x05":  # retries exhausted: ERROR, not a hang
                pass
        stats = st.stats()
    assert (stats["completed"], stats["failed"]) == (1, 1)


def test_stranger_gets_unknown_tid_and_transfer_continues(tftp: ServerThread) -> None:
    with udp() as client, udp() as stranger:
        client.sendto(rrq(b"small.bin"), (HOST, tftp.port))
        data, tid = client.recvfrom(70000)
        assert data[:4] == b"\x00\x03\x00\x01"
        stranger.sendto(ack(1), tid)
        reply, addr = stranger.recvfrom(70000)
        assert addr == tid and reply[:4] == b"\x00\x05\x00\x05"
        chunks = [data[4:]]
        while len(chunks[-1]) == 512:
            client.sendto(ack(len(chunks)), tid)
            data, addr = client.recvfrom(70000)
            assert addr == tid and data[:2] == b"\x00\x03"
            chunks.append(data[4:])
        client.sendto(ack(len(chunks)), tid)
    assert len(b"".join(chunks)) == FILES["small.bin"]
    stats = tftp.stats()
    assert stats["completed"] == 1 and stats["failed"] == 0


def test_duplicate_rrq_is_ignored(tftp: ServerThread) -> None:
    with udp() as client:
        client.sendto(rrq(b"tiny.txt"), (HOST, tftp.port))
        client.sendto(rrq(b"tiny.txt"), (HOST, tftp.port))
        data, tid = client.recvfrom(70000)
        assert data[:4] == b"\x00\x03\x00\x01"
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):  # a second transfer would send its own DATA 1
            client.recvfrom(70000)
        client.sendto(ack(1), tid)
    stats = tftp.stats()
    assert stats["started"] == 1 and stats["completed"] == 1


def test_busy_beyond_max_transfers(root: Path) -> None:
    retry = RetryPolicy(timeout=0.2, max_retries=1, max_timeout=0.2)
    with ServerThread(TftpServer(root, host=HOST, port=0, retry=retry, max_transfers=1)) as st:
        with udp() as first, udp() as second:
            first.sendto(rrq(b"small.bin"), (HOST, st.port))
            data, _ = first.recvfrom(70000)  # transfer running, never ACKed
            assert data[:2] == b"\x00\x03"
            second.sendto(rrq(b"small.bin"), (HOST, st.port))
            assert expect_error(second, st.port) == (0, "server busy")
            # The stalled transfer gives up after its retries, freeing the slot.
            while True:
                data, _ = first.recvfrom(70000)
                if data[:2] == b"\x00\x05":
                    break
            second.sendto(rrq(b"tiny.txt"), (HOST, st.port))
            data, tid = second.recvfrom(70000)
            assert data == b"\x00\x03\x00\x01" + (root / "tiny.txt").read_bytes()
            second.sendto(ack(1), tid)
        stats = st.stats()
    assert stats["failed"] == 1 and stats["refused"] == 1


def test_generated_source_and_stop_closes_everything() -> None:
    opened: list[BytesReader] = []

    class Generated:
        def open(self, name: str) -> ClosableReader:
            if name != "boot.ipxe":
                raise FileNotFound("no such config")
            reader = BytesReader(b"#!ipxe\n" * 200)
            opened.append(reader)
            return reader

    server = TftpServer(Generated(), host=HOST, port=0)
    with ServerThread(server) as st, udp() as client:
        client.sendto(rrq(b"missing"), (HOST, st.port))
        assert expect_error(client, st.port)[0] == 1
        client.sendto(rrq(b"boot.ipxe"), (HOST, st.port))
        data, _ = client.recvfrom(70000)
        assert data[:4] == b"\x00\x03\x00\x01"
        assert st.stats(settle=False)["active"] == 1
        # leave it hanging: stop() must abort it, tell the client and release its socket
    assert server.active_transfers == 0 and server.transfers_failed == 1
    assert len(opened) == 1


def test_start_twice_and_bad_cap(root: Path) -> None:
    with pytest.raises(ValueError):
        TftpServer(root, host=HOST, port=0, max_transfers=0)
    with ServerThread(TftpServer(root, host=HOST, port=0)) as st:
        fut: Future[int] = asyncio.run_coroutine_threadsafe(st.server.start(), st.loop)
        with pytest.raises(RuntimeError):
            fut.result(SOCK_TIMEOUT)
