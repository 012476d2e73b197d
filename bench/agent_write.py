"""The deploy agent's image write against ``wget | dd`` in the same ramdisk, one run.

    .venv/bin/python -m bench.agent_write [--rounds 2] [--timeout 900] [--cache DIR]

Needs what the lab needs (QEMU, the lab's image builders; root for the builds). One QEMU machine
(``-accel tcg``, 1 GiB, one virtio NIC on QEMU's user-mode network, one virtio disk: a fresh
sparse raw file of 8 GiB each run) boots the lab's deploy ramdisk (lab/images.py) with
``-kernel``/``-initrd``. The image is the demo golden disk (lab/images.py) flattened to raw, served
from this process on loopback: the guest reaches it as 10.0.2.2 (QEMU's user network hands that
address's connections to the host's loopback); nothing else is reachable or listened on.

- **Ingot's agent**: the ramdisk's agent looks itself up with this process, which plays the
  appliance's agent API (docs/agent-api.md: lookup, inventory, heartbeat, commands, image with
  Range) and hands it one ``write_image``: the agent streams the image over HTTP onto the disk,
  SHA-256 checked as it writes, fsync at the end, and reports. Timed from the image request to
  the ``succeeded`` report.
- **Peer** (``ingot.peer_write=URL`` on the kernel command line): the same ramdisk runs
  ``busybox wget -O - URL | busybox dd of=/dev/vda bs=4M conv=fsync`` instead of the agent, then
  powers off. Timed from the image request to the end line on the serial console.

Each round runs both, in alternating order. Throughput is MB (10^6 bytes) of the image per second
of wall time; the best round of each is compared. The disk is compared with the image after each
run (the write must be right to count). Timings are reported, never asserted. Exit status 1 if a
run fails or the run passes ``--timeout``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import load_average
from lab.images import build_demo_disk, build_ramdisk

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
DISK_BYTES = 8 << 30  # sparse; the agent picks a disk of at least 4 GiB when it has no hints
TOKEN = "bench-boot-token"
PEER_DONE = re.compile(r"INGOT-PEER-WRITE done status=(\d+)")


class Image:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(MiB):
                digest.update(chunk)
        self.sha256 = digest.hexdigest()


class FakeAppliance:
    """Just enough of the agent API for one write_image; records when the image was asked for and
    when the write was reported."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.image_asked: float | None = None
        self.succeeded: float | None = None
        self.failed: str | None = None
        self.handed = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, body: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/agent/v1/lookup":
                    self._json({"node": "n1", "agentToken": "bench-agent-token", "heartbeatIntervalS": 1})
                elif self.path.endswith("/heartbeat"):
                    commands = []
                    if not app.handed:
                        app.handed = True
                        commands = [{"id": "w1", "name": "write_image", "params": {
                            "url": "/agent/v1/nodes/n1/image", "sha256": app.image.sha256, "size": app.image.size,
                            "rootDeviceHints": None}}]
                    elif app.succeeded is not None or app.failed is not None:
                        commands = [{"id": "p1", "name": "poweroff", "params": {}}]
                    self._json({"heartbeatIntervalS": 1, "commands": commands})
                elif self.path.endswith("/commands/w1"):
                    if body.get("state") == "succeeded":
                        app.succeeded = time.monotonic()
                    elif body.get("state") == "failed":
                        app.failed = str(body.get("error"))
                    self._json({"status": "OK"})
                else:
                    self._json({"status": "OK"})

            def do_GET(self) -> None:
                if not self.path.endswith("/image"):
                    self._json({"errorCode": "RESOURCE_NOT_FOUND", "message": self.path}, 404)
                    return
                if app.image_asked is None:
                    app.image_asked = time.monotonic()
                start = 0
                found = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if found:
                    start = int(found.group(1))
                self.send_response(206 if found else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(app.image.size - start))
                if found:
                    self.send_header("Content-Range", f"bytes {start}-{app.image.size - 1}/{app.image.size}")
                self.end_headers()
                with app.image.path.open("rb") as f:
                    f.seek(start)
                    while chunk := f.read(4 * MiB):
                        self.wfile.write(chunk)

        return Handler


def boot(ramdisk: Any, disk: Path, serial: Path, port: int, peer: bool) -> subprocess.Popen[bytes]:
    base = f"http://10.0.2.2:{port}"
    args = f"console=ttyS0,115200 ingot.url={base} ingot.token={TOKEN}"
    if peer:
        args += f" ingot.peer_write={base}/agent/v1/nodes/n1/image ingot.peer_disk=/dev/vda"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-nographic", "-nodefaults", "-no-reboot",
            "-kernel", str(ramdisk.kernel), "-initrd", str(ramdisk.initrd), "-append", args,
            "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
            "-drive", f"file={disk},format=raw,if=virtio,cache=none", "-serial", f"file:{serial}"]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_run(ramdisk: Any, image: Image, work: Path, peer: bool, timeout: float) -> float:
    """Seconds from the image request to the write's end; the disk is checked against the image."""
    disk, serial = work / "disk.raw", work / "serial.log"
    disk.unlink(missing_ok=True)
    serial.unlink(missing_ok=True)  # the last run's end line must not end this one
    with disk.open("wb") as f:
        f.truncate(DISK_BYTES)
    app = FakeAppliance(image)
    vm = boot(ramdisk, disk, serial, app.port, peer)
    ended: float | None = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if peer:
                found = PEER_DONE.search(serial.read_text(errors="replace")) if serial.exists() else None
                if found:
                    ended = time.monotonic()
                    if found.group(1) != "0":
                        raise RuntimeError(f"the peer's dd ended with status {found.group(1)}")
                    break
            elif app.succeeded is not None or app.failed is not None:
                if app.failed:
                    raise RuntimeError(f"the agent's write failed: {app.failed}")
                ended = app.succeeded
                break
            if vm.poll() is not None:
                raise RuntimeError(f"QEMU ended first (exit {vm.returncode}); see {serial}")
            time.sleep(0.05)
        if ended is None or app.image_asked is None:
            raise RuntimeError(f"no write within {timeout:.0f} s; see {serial}")
        vm.wait(timeout=120)  # both power off at the end: the disk file is complete
    finally:
        if vm.poll() is None:
            vm.kill()
            vm.wait(timeout=30)
        app.close()
    with disk.open("rb") as f, image.path.open("rb") as g:
        while chunk := g.read(MiB):
            if f.read(len(chunk)) != chunk:
                raise RuntimeError("the disk does not hold the image after the write")
    shutil.copyfile(serial, work / f"serial-{'peer' if peer else 'agent'}.log")
    return ended - app.image_asked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, choices=range(1, 6), help="rounds of both (1-5)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "lab" / "cache",
                        help="built lab images, kept between runs (default: make demo's, %(default)s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"machine: {os.cpu_count()} CPUs, kernel {os.uname().release}, load average {load_average()}")
    ramdisk = build_ramdisk(args.cache, log=lambda line: None)
    demo = build_demo_disk(args.cache, log=lambda line: None)
    times: dict[str, list[float]] = {"agent": [], "peer": []}
    with tempfile.TemporaryDirectory(prefix="ingot-bench-write-") as tmp:
        work = Path(tmp)
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(demo.path), str(work / "image.raw")],
                       check=True, timeout=300)
        image = Image(work / "image.raw")
        print(f"image: the demo golden disk as raw, {image.size / 1e6:.1f} MB, sha256 {image.sha256[:16]}...")
        try:
            for round_no in range(args.rounds):
                order = (False, True) if round_no % 2 == 0 else (True, False)
                for peer in order:
                    left = args.timeout - (time.monotonic() - started)
                    if left <= 0:
                        raise RuntimeError(f"out of time ({args.timeout:.0f} s)")
                    seconds = one_run(ramdisk, image, work, peer, left)
                    times["peer" if peer else "agent"].append(seconds)
                    print(f"  round {round_no + 1} {'wget | dd' if peer else 'agent'}: {seconds:.2f} s, "
                          f"{image.size / 1e6 / seconds:.1f} MB/s")
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            print(f"bench.agent_write: {exc}", file=sys.stderr)
            return 1
    best = {name: min(values) for name, values in times.items()}
    rate = {name: image.size / 1e6 / seconds for name, seconds in best.items()}
    print(f"\n  write of {image.size / 1e6:.1f} MB in the deploy ramdisk (TCG), best of {args.rounds}:")
    print(f"  Ingot agent (HTTP, SHA-256 checked, fsync)   {best['agent']:7.2f} s  {rate['agent']:7.1f} MB/s")
    print(f"  busybox wget | dd bs=4M conv=fsync (peer)    {best['peer']:7.2f} s  {rate['peer']:7.1f} MB/s")
    print(f"  agent / peer throughput: {rate['agent'] / rate['peer']:.2f}x")
    print(f"  run took {time.monotonic() - started:.0f} s; load average at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
