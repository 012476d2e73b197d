"""web.uploads.receive_file behind a real uvicorn server, driven by raw sockets, the HPE SDK's encoder and curl.

A tiny FastAPI app (``web.errors.install`` + one ``POST /upload`` route) runs under uvicorn on a
background thread, bound to 127.0.0.1 on an ephemeral port. The client side writes HTTP/1.1 by
hand so that chunking, truncation and framing are exactly what each test says. After every refused
upload the upload directory must be empty (no partial file left), and nothing may ever appear
outside it. Every socket, thread join and subprocess has a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from hpeOneView.connection import connection as SdkConnection

from web import errors
from web.uploads import receive_file

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
SOCK_TIMEOUT = 5.0
CLEANUP_TIMEOUT = 5.0
CURL_TIMEOUT = 30.0
KiB = 1 << 10
MiB = 1 << 20
DEFAULT_LIMIT = 16 * MiB
SMALL_LIMIT = 64 * KiB

SDK_BOUNDARY = b"----------ThIs_Is_tHe_bouNdaRY_$"
BROWSER_BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
ERROR_KEYS = {"errorCode", "message", "details", "recommendedActions", "nestedErrors", "errorSource", "data"}


# --- the server ------------------------------------------------------------------------------------
@dataclass
class UploadState:
    """What the route uses; each test points it at its own directory and limit."""

    directory: Path | None = None
    limit: int = DEFAULT_LIMIT
    chunks: list[int] = field(default_factory=list)  # body chunk sizes the app received, latest request


class RecordChunks:
    """ASGI middleware noting the size of every body chunk the app is handed (to check the splitting)."""

    def __init__(self, app: FastAPI, state: UploadState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sizes: list[int] = []
        self.state.chunks = sizes

        async def recording() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                sizes.append(len(message["body"]))
            return message

        await self.app(scope, recording, send)


def make_app(state: UploadState) -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        assert state.directory is not None
        received = await receive_file(request, state.directory, max_bytes=state.limit)
        data = await asyncio.to_thread(received.path.read_bytes)
        return {
            "filename": received.filename,
            "size": received.size,
            "stored": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(received.path),
        }

    return app


@dataclass
class Target:
    state: UploadState
    port: int
    root: Path = field(default_factory=Path)  # the test's tmp_path
    jail: Path = field(default_factory=Path)  # the upload directory's parent: must only ever hold it
    directory: Path = field(default_factory=Path)


@pytest.fixture(scope="module")
def server() -> Iterator[Target]:
    state = UploadState()
    config = uvicorn.Config(RecordChunks(make_app(state), state), host=HOST, port=0, log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=5)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="uvicorn-uploads", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert thread.is_alive(), "uvicorn exited before it started"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield Target(state, port)
    finally:
        srv.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture
def target(server: Target, tmp_path: Path) -> Iterator[Target]:
    jail = tmp_path / "jail"
    directory = jail / "uploads"
    directory.mkdir(parents=True)
    server.state.directory = directory
    server.state.limit = DEFAULT_LIMIT
    try:
        yield Target(server.state, server.port, tmp_path, jail, directory)
    finally:
        server.state.directory = None
        server.state.limit = DEFAULT_LIMIT


# --- bodies ---------------------------------------------------------------------------------------
def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sdk_body(data: bytes, base_name: str) -> bytes:
    """What hpeOneView's encode_multipart_formdata writes into ``<file>.b64``, byte for byte."""
    return (b"--" + SDK_BOUNDARY + b"\r\n"
            + b'Content-Disposition: form-data; name="file"; filename="' + base_name.encode() + b'"\r\n'
            + b"Content-Type: application/octet-stream\r\n"
            + b"\r\n" + data + b"\r\n"
            + b"--" + SDK_BOUNDARY + b"--\r\n"
            + b"\r\n")


def sdk_encode(src: Path, base_name: str) -> tuple[str, bytes]:
    """Run the real SDK encoder (an unbound method; it only needs ``self._open``)."""
    dummy = SimpleNamespace(_open=open)
    content_type = SdkConnection.encode_multipart_formdata(dummy, None, str(src), base_name)
    encoded = Path(str(src) + ".b64")
    try:
        return content_type, encoded.read_bytes()
    finally:
        encoded.unlink()


def part(boundary: bytes, disposition: str, payload: bytes, content_type: str | None = None) -> bytes:
    head = b"--" + boundary + b"\r\nContent-Disposition: form-data; " + disposition.encode() + b"\r\n"
    if content_type:
        head += b"Content-Type: " + content_type.encode() + b"\r\n"
    return head + b"\r\n" + payload + b"\r\n"


def closing(boundary: bytes) -> bytes:
    return b"--" + boundary + b"--\r\n"


def file_body(data: bytes, filename: str = "image.qcow2", boundary: bytes = SDK_BOUNDARY) -> bytes:
    return part(boundary, f'name="file"; filename="{filename}"', data, "application/octet-stream") + closing(boundary)


def mp_type(boundary: bytes = SDK_BOUNDARY) -> str:
    return "multipart/form-data; boundary=" + boundary.decode()


def tricky_content(size: int, seed: int) -> tuple[bytes, list[int]]:
    """Random bytes with prefixes of the SDK's delimiter planted in them (legal data: none completes it).

    Returns the content and the offsets inside each plant where a chunk edge is most interesting.
    """
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    delimiter = b"\r\n--" + SDK_BOUNDARY
    plants = [
        b"\r",
        b"\r\r\n",
        b"\r\n-",
        b"\r\n--",
        b"\r\n--" + SDK_BOUNDARY[:5] + b"x",
        b"\r\n-\r\n--" + SDK_BOUNDARY[:12] + b"\r\n--" + SDK_BOUNDARY[:20] + b"X",
        delimiter[:-1] + b"%",  # everything but the last character of the delimiter
        delimiter[:-1] + b"\r\n--" + SDK_BOUNDARY[:-1] + b"\n",
    ]
    cuts: list[int] = []
    step = size // (len(plants) + 2)
    for n, plant in enumerate(plants, start=1):
        at = n * step
        data[at:at + len(plant)] = plant
        cuts.extend(at + k for k in range(len(plant) + 1))
    # The file ends with a partial delimiter, right before the real one.
    tail = b"\r\n--" + SDK_BOUNDARY[:10]
    data[-len(tail):] = tail
    cuts.extend(size - len(tail) + k for k in range(len(tail)))
    return bytes(data), cuts


# --- raw HTTP client ------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes
    send_error: BaseException | None = None

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def request_head(port: int, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = ["POST /upload HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def multipart_head(port: int, body_length: int | None, content_type: str = mp_type(),
                   extra: Iterable[tuple[str, str]] = ()) -> bytes:
    headers = [("Content-Type", content_type)]
    if body_length is not None:
        headers.append(("Content-Length", str(body_length)))
    return request_head(port, [*headers, *extra])


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=SOCK_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_reply(sock: socket.socket) -> Reply:
    """Read one response: until Content-Length is satisfied or the server closes the connection."""
    buf = bytearray()
    while True:
        try:
            chunk = sock.recv(64 * KiB)
        except ConnectionResetError:
            break
        except TimeoutError as exc:
            raise AssertionError(f"no complete response within {SOCK_TIMEOUT} s; got {bytes(buf[:200])!r}") from exc
        if not chunk:
            break
        buf += chunk
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", bytes(buf[:end]))
            if match and len(buf) >= end + 4 + int(match.group(1)):
                break
    if not buf:
        return Reply(None, {}, b"")
    end = buf.find(b"\r\n\r\n")
    assert end >= 0, f"incomplete response head: {bytes(buf[:200])!r}"
    status_line, *header_lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = bytes(buf[end + 4:])
    if "content-length" in headers:
        assert len(body) == int(headers["content-length"]), "response body shorter than its Content-Length"
    return Reply(int(status), headers, body)


Piece = bytes | float | Callable[[socket.socket], None]


def exchange(port: int, pieces: Iterable[Piece]) -> Reply:
    """Send ``pieces`` (bytes; a float is a pause; a callable gets the socket) on a thread while
    reading the response here, so that a server answering early never deadlocks the client."""
    sock = connect(port)
    failure: list[BaseException] = []

    def send() -> None:
        try:
            for piece in pieces:
                if isinstance(piece, float):
                    time.sleep(piece)
                elif isinstance(piece, bytes):
                    sock.sendall(piece)
                else:
                    piece(sock)
        except BaseException as exc:  # re-raised (or reported) on the test's thread
            failure.append(exc)

    sender = threading.Thread(target=send, name="upload-client", daemon=True)
    sender.start()
    try:
        reply = read_reply(sock)
    finally:
        sender.join(SOCK_TIMEOUT * 2)
        sock.close()
    assert not sender.is_alive(), "the client thread is stuck"
    if failure and not isinstance(failure[0], OSError):
        raise failure[0]
    reply.send_error = failure[0] if failure else None
    return reply


def post(port: int, body: bytes, content_type: str = mp_type(),
         extra: Iterable[tuple[str, str]] = (), *, length: int | None = None) -> Reply:
    head = multipart_head(port, len(body) if length is None else length, content_type, extra)
    return exchange(port, [head + body])


def chunked(*payloads: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads if p)


CHUNKED_END = b"0\r\n\r\n"


# --- checks ---------------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], bool], what: str, timeout: float = CLEANUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_clean(target: Target) -> None:
    assert entries(target.directory) == [], "a partial upload was left behind"
    assert entries(target.jail) == ["uploads"], "something was written beside the upload directory"


def wait_clean(target: Target) -> None:
    wait_until(lambda: not any(target.directory.iterdir()), "the server to remove the partial upload")
    assert_clean(target)


def assert_error(reply: Reply, status: int, code: str, pattern: str) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.headers.get("content-type", "").startswith("application/json")
    body = reply.json()
    assert body.keys() >= ERROR_KEYS
    assert body["errorCode"] == code
    assert re.search(pattern, body["message"], re.IGNORECASE), body["message"]
    return body


def assert_stored(target: Target, reply: Reply, data: bytes, filename: str) -> None:
    """A good upload: the reply describes ``data``, the file is in the directory; then remove it."""
    assert reply.status == 200, (reply.status, reply.body[:500])
    body = reply.json()
    assert body["filename"] == filename
    assert body["size"] == body["stored"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    stored = Path(body["path"])
    assert stored.parent == target.directory
    assert stored.resolve().parent == target.directory.resolve()
    assert stored.read_bytes() == data
    assert entries(target.directory) == [stored.name]
    stored.unlink()
    assert_clean(target)


def assert_still_serving(target: Target) -> None:
    data = random_bytes(100 * KiB + 7, seed=99)
    assert_stored(target, post(target.port, file_body(data, "after.iso")), data, "after.iso")


def wait_for_partial(target: Target) -> Callable[[socket.socket], None]:
    """A piece that waits until the server has started writing the upload to disk."""
    def wait(_: socket.socket) -> None:
        wait_until(lambda: any(p.name.startswith("upload-") for p in target.directory.iterdir()),
                   "the server to create the partial file")
    return wait


# --- 1. the SDK's body ------------------------------------------------------------------------------
def test_sdk_encoder_bytes_match_replica(tmp_path: Path) -> None:
    src = tmp_path / "src" / "golden.qcow2"
    src.parent.mkdir()
    data, _ = tricky_content(200 * KiB, seed=1)
    src.write_bytes(data)
    content_type, body = sdk_encode(src, "golden.qcow2")
    assert content_type == mp_type(SDK_BOUNDARY)
    assert body == sdk_body(data, "golden.qcow2")
    assert body.endswith(b"\r\n--" + SDK_BOUNDARY + b"--\r\n\r\n")


def sdk_request(target: Target, size: int = 3 * MiB, name: str = "golden.qcow2", seed: int = 3) -> tuple[bytes, bytes]:
    src = target.root / "src" / "image.bin"
    src.parent.mkdir(exist_ok=True)
    data, _ = tricky_content(size, seed)
    src.write_bytes(data)
    content_type, body = sdk_encode(src, name)
    assert body == sdk_body(data, name)
    head = multipart_head(target.port, len(body), content_type,
                          [("uploadfilename", name), ("auth", "session-token"), ("X-API-Version", "4600")])
    return data, head + body


def test_sdk_body_in_one_go(target: Target) -> None:
    data, request = sdk_request(target)
    reply = exchange(target.port, [request])
    assert_stored(target, reply, data, "golden.qcow2")
    assert everything_under(target.root) == ["jail", "jail/uploads", "src", "src/image.bin"]


# --- 2. the same body in tiny pieces --------------------------------------------------------------
def split(request: bytes, interesting: Iterable[int], rng: random.Random) -> list[Piece]:
    """Tiny (1..13 byte) pieces; every interesting offset is a piece edge followed by a short pause,
    so the server reads it as a chunk edge."""
    pauses = sorted(set(interesting))
    pieces: list[Piece] = []
    pos = 0
    for stop in [*pauses, len(request)]:
        while pos < stop:
            n = min(rng.randint(1, 13), stop - pos)
            pieces.append(request[pos:pos + n])
            pos += n
        if stop < len(request):
            pieces.append(0.003)
    return pieces


def batched(pieces: list[Piece], batch: int = 64 * KiB) -> list[Piece]:
    """Join consecutive byte pieces (no pause between them) into sends of at most ``batch`` bytes."""
    out: list[Piece] = []
    run: list[bytes] = []
    size = 0
    for piece in pieces:
        if isinstance(piece, bytes) and size + len(piece) <= batch:
            run.append(piece)
            size += len(piece)
            continue
        if run:
            out.append(b"".join(run))
            run, size = [], 0
        if isinstance(piece, bytes):
            run, size = [piece], len(piece)
        else:
            out.append(piece)
    if run:
        out.append(b"".join(run))
    return out


def test_sdk_body_in_tiny_pieces(target: Target) -> None:
    name = "golden.qcow2"
    data, request = sdk_request(target, seed=4)
    _, cuts = tricky_content(len(data), seed=4)
    head_len = request.index(b"\r\n\r\n") + 4
    data_at = request.index(b"\r\n\r\n", head_len) + 4  # the part's headers end here
    interesting = [*range(1, data_at + 2), *(data_at + c for c in cuts),
                   *range(data_at + len(data) - 2, len(request))]
    pieces = split(request, interesting, random.Random(5))
    assert b"".join(p for p in pieces if isinstance(p, bytes)) == request
    # Around the headers, the planted delimiter prefixes and the closing delimiter every piece is
    # sent on its own (a pause after each); the megabytes in between go out in 1..13 byte pieces too,
    # but batched per sendall, because the kernel would coalesce them anyway.
    reply = exchange(target.port, batched(pieces))
    assert_stored(target, reply, data, name)
    # The pauses did split the body for the server: it was handed hundreds of tiny chunks.
    tiny = [n for n in target.state.chunks if 0 < n <= 13]
    assert len(tiny) > len(set(interesting)) // 4, (len(tiny), len(set(interesting)), len(target.state.chunks))


def test_sdk_body_one_byte_at_a_time_around_every_edge(target: Target) -> None:
    """A small file, every byte of the request a chunk of its own (each followed by a pause)."""
    data = b"\r\n--" + SDK_BOUNDARY[:-1] + b"\r\r\n-" + random_bytes(300, seed=6) + b"\r\n--" + SDK_BOUNDARY[:7]
    body = sdk_body(data, "tiny.img")
    request = multipart_head(target.port, len(body), extra=[("uploadfilename", "tiny.img")]) + body
    pieces: list[Piece] = []
    for i in range(len(request)):
        pieces += [request[i:i + 1], 0.0005]
    assert_stored(target, exchange(target.port, pieces), data, "tiny.img")
    assert sum(1 for n in target.state.chunks if n == 1) > len(body) // 2, target.state.chunks


# --- 3. browsers and curl -------------------------------------------------------------------------
def test_browser_style_body_with_a_text_field_first(target: Target) -> None:
    data = random_bytes(500 * KiB, seed=7)
    body = (part(BROWSER_BOUNDARY, 'name="description"', b"Ubuntu golden image\r\nsecond line")
            + part(BROWSER_BOUNDARY, 'name="file"; filename="ubuntu.qcow2"', data, "application/octet-stream")
            + closing(BROWSER_BOUNDARY))
    reply = post(target.port, body, "multipart/form-data; boundary=" + BROWSER_BOUNDARY.decode())
    assert_stored(target, reply, data, "ubuntu.qcow2")


def test_quoted_boundary_and_chunked_transfer_encoding(target: Target) -> None:
    data = random_bytes(300 * KiB + 1, seed=8)
    body = file_body(data, "q.iso", BROWSER_BOUNDARY)
    head = request_head(target.port, [("Content-Type", f'multipart/form-data; boundary="{BROWSER_BOUNDARY.decode()}"'),
                                    ("Transfer-Encoding", "chunked")])
    frames = [body[i:i + 10_000] for i in range(0, len(body), 10_000)]
    reply = exchange(target.port, [head, chunked(*frames) + CHUNKED_END])
    assert_stored(target, reply, data, "q.iso")


def test_real_curl(target: Target) -> None:
    src = target.root / "src" / "from curl.raw"
    src.parent.mkdir()
    data = random_bytes(2 * MiB + 3, seed=9)  # over 1 MiB: curl sends "Expect: 100-continue"
    src.write_bytes(data)
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", str(CURL_TIMEOUT),
         "-F", "note=made by curl", "-F", f"file=@{src}",
         "--write-out", "\n%{http_code}", f"http://{HOST}:{target.port}/upload"],
        capture_output=True, timeout=CURL_TIMEOUT + 10, check=False)
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition(b"\n")
    assert code == b"200", result.stdout[:500]
    reply = Reply(200, {"content-type": "application/json"}, body)
    assert_stored(target, reply, data, "from curl.raw")


# --- 4. cut short ---------------------------------------------------------------------------------
def test_half_sent_then_write_side_shut(target: Target) -> None:
    data = random_bytes(1 * MiB, seed=10)
    body = file_body(data)
    head = multipart_head(target.port, len(body))
    reply = exchange(target.port, [head + body[:len(body) // 2], wait_for_partial(target),
                                 lambda sock: sock.shutdown(socket.SHUT_WR)])
    # uvicorn treats the half-close as the client going away, so it may not answer at all; when
    # it does, the answer is a 400 saying so. Either way the partial file must go.
    if reply.status is not None:
        assert_error(reply, 400, "INVALID_INPUT", r"went away|cut short|incomplete")
    wait_clean(target)
    assert_still_serving(target)


@pytest.mark.parametrize("tail", [b"", b"\r\n", b"\r\n--" + SDK_BOUNDARY, b"\r\n--" + SDK_BOUNDARY + b"-"],
                         ids=["no-delimiter", "crlf", "delimiter-without-dashes", "one-dash"])
def test_body_complete_per_content_length_but_no_closing_boundary(target: Target, tail: bytes) -> None:
    data = random_bytes(200 * KiB, seed=11)
    body = part(SDK_BOUNDARY, 'name="file"; filename="x.img"', data)[:-2] + tail
    assert_error(post(target.port, body), 400, "INVALID_INPUT", r"cut short")
    assert_clean(target)


def test_closing_boundary_without_trailing_crlf_is_accepted(target: Target) -> None:
    data = random_bytes(10 * KiB, seed=12)
    body = file_body(data, "x.img").removesuffix(b"\r\n")
    assert_stored(target, post(target.port, body), data, "x.img")


# --- 5. the limit ---------------------------------------------------------------------------------
def test_over_the_limit_with_honest_content_length_is_refused_at_once(target: Target) -> None:
    target.state.limit = SMALL_LIMIT
    body = file_body(random_bytes(256 * KiB, seed=13))
    # Only the request head goes out: the answer must come before any of the body.
    reply = exchange(target.port, [multipart_head(target.port, len(body))])
    body_json = assert_error(reply, 413, "PAYLOAD_TOO_LARGE", str(SMALL_LIMIT))
    assert body_json["message"] == f"The request body exceeds the limit of {SMALL_LIMIT} bytes."
    assert_clean(target)
    target.state.limit = DEFAULT_LIMIT
    assert_still_serving(target)


def test_over_the_limit_chunked_is_refused_once_the_limit_is_passed(target: Target) -> None:
    target.state.limit = SMALL_LIMIT
    data = random_bytes(256 * KiB, seed=14)
    prologue = part(SDK_BOUNDARY, 'name="file"; filename="big.img"', b"")[:-2]  # up to the file's bytes
    head = request_head(target.port, [("Content-Type", mp_type()), ("Transfer-Encoding", "chunked")])
    sock = connect(target.port)
    try:
        sock.sendall(head + chunked(prologue, *(data[i:i + 4096] for i in range(0, SMALL_LIMIT, 4096))))
        wait_for_partial(target)(sock)
        # Exactly the limit is in: no answer yet, the upload is still streaming.
        readable, _, _ = select.select([sock], [], [], 0.3)
        assert not readable, sock.recv(500)
        sock.sendall(chunked(data[SMALL_LIMIT:SMALL_LIMIT + 1]))  # one byte over
        reply = read_reply(sock)
    finally:
        sock.close()
    assert_error(reply, 413, "PAYLOAD_TOO_LARGE", str(SMALL_LIMIT))
    assert_clean(target)


def test_over_the_limit_within_the_framing_allowance_is_refused_while_streaming(target: Target) -> None:
    target.state.limit = SMALL_LIMIT
    body = file_body(random_bytes(SMALL_LIMIT + 1, seed=15))
    assert_error(post(target.port, body), 413, "PAYLOAD_TOO_LARGE", str(SMALL_LIMIT))
    assert_clean(target)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_exactly_the_limit_is_accepted(target: Target, framing: str) -> None:
    target.state.limit = SMALL_LIMIT
    data = random_bytes(SMALL_LIMIT, seed=16)
    body = file_body(data, "exact.img")
    if framing == "chunked":
        head = request_head(target.port, [("Content-Type", mp_type()), ("Transfer-Encoding", "chunked")])
        reply = exchange(target.port, [head, chunked(*(body[i:i + 1000] for i in range(0, len(body), 1000))),
                                     CHUNKED_END])
    else:
        reply = post(target.port, body)
    assert_stored(target, reply, data, "exact.img")


# --- 6. not an upload we understand ---------------------------------------------------------------
def two_files() -> bytes:
    return (part(SDK_BOUNDARY, 'name="file"; filename="a.img"', random_bytes(50 * KiB, seed=17))
            + part(SDK_BOUNDARY, 'name="file"; filename="b.img"', b"second") + closing(SDK_BOUNDARY))


LONG_HEADER = (b"--" + SDK_BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.img\"\r\n"
               + b"X-Padding: " + b"p" * 5000 + b"\r\n\r\ndata\r\n" + closing(SDK_BOUNDARY))
MANY_HEADERS = (b"--" + SDK_BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.img\"\r\n"
                + b"".join(b"X-H%d: v\r\n" % n for n in range(20)) + b"\r\ndata\r\n" + closing(SDK_BOUNDARY))

BAD_REQUESTS = {
    "json": ("application/json", b'{"file": "not an upload"}', r"multipart/form-data"),
    "no-boundary": ("multipart/form-data", file_body(b"data"), r"no usable boundary"),
    "empty-boundary": ("multipart/form-data; boundary=", file_body(b"data"), r"no usable boundary"),
    "boundary-too-long": ("multipart/form-data; boundary=" + "b" * 71, file_body(b"data", boundary=b"b" * 71),
                          r"no usable boundary"),
    "only-a-text-field": (mp_type(), part(SDK_BOUNDARY, 'name="description"', b"hello") + closing(SDK_BOUNDARY),
                          r"no file part named 'file'"),
    "file-field-without-filename": (mp_type(), part(SDK_BOUNDARY, 'name="file"', b"hello") + closing(SDK_BOUNDARY),
                                    r"no file part named 'file'"),
    "file-under-another-name": (mp_type(), part(SDK_BOUNDARY, 'name="image"; filename="a.img"', b"x")
                                + closing(SDK_BOUNDARY), r"no file part named 'file'"),
    "no-parts": (mp_type(), closing(SDK_BOUNDARY), r"no file part named 'file'"),
    "two-files": (mp_type(), two_files(), r"more than one 'file' part"),
    "not-a-header": (mp_type(), b"--" + SDK_BOUNDARY + b"\r\nthis is not a header\r\n\r\ndata\r\n"
                     + closing(SDK_BOUNDARY), r"malformed"),
    "binary-after-boundary": (mp_type(), b"--" + SDK_BOUNDARY + b"\r\n\x00\x01\x02\xff\r\n\r\n"
                              + closing(SDK_BOUNDARY), r"malformed"),
    "no-crlf-after-boundary": (mp_type(), b"--" + SDK_BOUNDARY + b"XYZ" + file_body(b"data"), r"malformed"),
    "wrong-boundary": (mp_type(), file_body(b"data", boundary=BROWSER_BOUNDARY), r"malformed"),
    "header-over-4096": (mp_type(), LONG_HEADER, r"malformed"),
    "too-many-headers": (mp_type(), MANY_HEADERS, r"malformed"),
    "empty-body": (mp_type(), b"", r"cut short"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_requests_are_400(target: Target, case: str) -> None:
    content_type, body, pattern = BAD_REQUESTS[case]
    reply = post(target.port, body, content_type)
    assert_error(reply, 400, "INVALID_INPUT", pattern)
    assert_clean(target)


def test_server_still_serves_after_bad_requests(target: Target) -> None:
    for content_type, body, _ in BAD_REQUESTS.values():
        assert post(target.port, body, content_type).status == 400
    assert_clean(target)
    assert_still_serving(target)


# --- 7. hostile names -----------------------------------------------------------------------------
HOSTILE_NAMES = {
    "posix-traversal": ("../../etc/passwd", "passwd"),
    "absolute": ("/etc/cron.d/evil", "evil"),
    "windows-path": ("C:\\Windows\\evil.qcow2", "evil.qcow2"),
    "unc-path": ("\\\\server\\share\\evil.iso", "evil.iso"),
    "mixed-traversal": ("..\\..\\x/../../y\\z.img", "z.img"),
    "control-characters": ("ev\x00il\x01\x1b[31m\tna\x7fme\n.iso", "evil[31mname.iso"),
    "bidi-override": ("gpj\u202e.exe", "gpj.exe"),
    "unicode": ("Ünïcödé image ☃.qcow2", "Ünïcödé image ☃.qcow2"),
}


@pytest.mark.parametrize("case", HOSTILE_NAMES, ids=list(HOSTILE_NAMES))
def test_hostile_file_names(target: Target, case: str) -> None:
    raw, expected = HOSTILE_NAMES[case]
    data = random_bytes(20 * KiB, seed=18)
    # Built as the SDK builds it: the name goes into the header unescaped, UTF-8 encoded.
    body = sdk_body(data, raw)
    before = everything_under(target.root)
    reply = post(target.port, body)
    assert_stored(target, reply, data, expected)
    assert everything_under(target.root) == before
    assert not (target.root / "passwd").exists()
    assert not (target.jail / "passwd").exists()


def test_filename_falls_back_to_the_uploadfilename_header(target: Target) -> None:
    data = random_bytes(5 * KiB, seed=19)
    body = sdk_body(data, "")
    reply = post(target.port, body, extra=[("uploadfilename", "../../elsewhere/fallback.iso")])
    assert_stored(target, reply, data, "fallback.iso")


@pytest.mark.parametrize("raw", ["..", "../..", "x/..", "..\\..", "."])
def test_dot_names_are_not_returned_as_file_names(target: Target, raw: str) -> None:
    """A name that is only a path step ("." or "..") is no base name: using it to build a path
    (``directory / received.filename``) would escape. It must not come back as the file name."""
    data = random_bytes(1 * KiB, seed=20)
    reply = post(target.port, sdk_body(data, raw))
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["filename"] not in {".", ".."}
    Path(reply.json()["path"]).unlink()
    assert_clean(target)


# --- 8. the client goes away ----------------------------------------------------------------------
def abort(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("how", ["rst", "fin"])
def test_client_disconnect_mid_upload(target: Target, how: str) -> None:
    data = random_bytes(2 * MiB, seed=21)
    body = file_body(data)
    sock = connect(target.port)
    try:
        sock.sendall(multipart_head(target.port, len(body)) + body[:len(body) // 3])
        wait_for_partial(target)(sock)
    finally:
        if how == "rst":
            abort(sock)
        else:
            sock.close()
    wait_clean(target)
    assert_still_serving(target)


def test_client_disconnect_mid_chunked_upload(target: Target) -> None:
    body = file_body(random_bytes(1 * MiB, seed=22))
    head = request_head(target.port, [("Content-Type", mp_type()), ("Transfer-Encoding", "chunked")])
    sock = connect(target.port)
    try:
        sock.sendall(head + chunked(body[:300 * KiB]) + b"1000\r\n" + body[300 * KiB:300 * KiB + 100])
        wait_for_partial(target)(sock)
    finally:
        abort(sock)
    wait_clean(target)
