"""Export of OS volumes for deploy, against a real ``ingot serve``: flattened raw and qcow2 files
with their sha256, downloaded whole and by Range, discarded once the volume is written; and the
live volume over NBD (real qemu-nbd, real qemu-io as the client), read-write to one client, which
blocks delete, capture and file export while it lasts and dies with the appliance."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from golden_images import qemu_img
from tests.support.live import LiveAppliance
from tests.support.runner import wait_task

pytestmark = pytest.mark.slow
MIB = 1 << 20


def qemu_io(target: str, *commands: str, fmt: str = "qcow2") -> str:
    argv = ["qemu-io", "-f", fmt]
    for command in commands:
        argv += ["-c", command]
    done = subprocess.run([*argv, target], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "Pattern verification failed" not in done.stdout, done.stdout + done.stderr
    return done.stdout


def make_volume(live: LiveAppliance, api: httpx.Client, tmp_path: Path, name: str) -> tuple[dict[str, Any], bytes]:
    """An OS volume of 8 MiB cloned from a 4 MiB random image, with 64 KiB of 0xab written at 1 MiB;
    returns it and what its guest reads."""
    disk = tmp_path / f"{name}.raw"
    disk.write_bytes(os.urandom(4 * MIB))
    with disk.open("rb") as f:
        uploaded = api.post("/rest/golden-images", params={"name": f"{name}-image"},
                            files={"file": ("disk.raw", f, "application/octet-stream")})
    assert uploaded.status_code == 202, uploaded.text
    image = wait_task(api, {}, uploaded.headers["location"])["associatedResource"]["resourceUri"]
    created = api.post("/rest/os-volumes", json={"name": name, "goldenImageUri": image, "size": 8 * MIB})
    task = wait_task(api, {}, created.headers["location"])
    assert task["taskState"] == "Completed", task
    volume: dict[str, Any] = api.get(task["associatedResource"]["resourceUri"]).json()
    qemu_io(str(volume_file(live, volume)), "write -P 0xab 1M 64k")
    content = bytearray(disk.read_bytes() + bytes(4 * MIB))
    content[MIB:MIB + (64 << 10)] = b"\xab" * (64 << 10)
    return volume, bytes(content)


def volume_file(live: LiveAppliance, volume: dict[str, Any]) -> Path:
    return live.home / "images" / "volumes" / f"{volume['id']}.qcow2"


def export(api: httpx.Client, volume: dict[str, Any], fmt: str) -> dict[str, Any]:
    started = api.post(f"{volume['uri']}/export", json={"format": fmt})
    assert started.status_code == 202, started.text
    task: dict[str, Any] = wait_task(api, {}, started.headers["location"])
    return task


def test_export_raw_and_qcow2_with_range_and_checksum(live: LiveAppliance, tmp_path: Path) -> None:
    with live.client(live.login()) as api:
        volume, content = make_volume(live, api, tmp_path, "node-1-os")
        before = api.get(f"{volume['uri']}/export/raw")
        assert before.status_code == 404 and "/export" in " ".join(before.json()["recommendedActions"])

        task = export(api, volume, "raw")
        assert task["taskState"] == "Completed", task
        assert task["percentComplete"] == 100
        whole = api.get(f"{volume['uri']}/export/raw")
        assert whole.status_code == 200 and whole.content == content
        assert whole.headers["x-checksum-sha256"] == hashlib.sha256(content).hexdigest()
        assert whole.headers["accept-ranges"] == "bytes"

        part = api.get(f"{volume['uri']}/export/raw", headers={"Range": f"bytes={MIB}-{MIB + 99}"})
        assert part.status_code == 206 and part.content == b"\xab" * 100
        assert part.headers["content-range"] == f"bytes {MIB}-{MIB + 99}/{8 * MIB}"
        resumed = api.get(f"{volume['uri']}/export/raw", headers={"Range": f"bytes={7 * MIB}-"})
        assert resumed.status_code == 206 and resumed.content == content[7 * MIB:]
        beyond = api.get(f"{volume['uri']}/export/raw", headers={"Range": f"bytes={9 * MIB}-"})
        assert beyond.status_code == 416
        head = api.head(f"{volume['uri']}/export/raw")
        assert head.status_code == 200 and head.headers["content-length"] == str(8 * MIB) and head.content == b""

        assert export(api, volume, "qcow2")["taskState"] == "Completed"
        downloaded = tmp_path / "node-1.qcow2"
        got = api.get(f"{volume['uri']}/export/qcow2")
        downloaded.write_bytes(got.content)
        assert got.headers["x-checksum-sha256"] == hashlib.sha256(got.content).hexdigest()
        info = qemu_img.info(downloaded)
        assert info["format"] == "qcow2" and "backing-filename" not in info  # self-contained
        assert qemu_img.check(downloaded)["check-errors"] == 0
        flat = tmp_path / "node-1.raw"
        flat.write_bytes(content)
        assert qemu_img.identical(downloaded, flat, b_format="raw")

        # Written since: the exports describe a disk that no longer exists, so they are not served.
        qemu_io(str(volume_file(live, volume)), "write -P 0xcd 0 4k")
        stale = api.get(f"{volume['uri']}/export/qcow2")
        assert stale.status_code == 404, stale.text
        assert api.get(f"{volume['uri']}/export/vmdk").status_code == 400
        assert api.post(f"{volume['uri']}/export", json={"format": "vmdk"}).status_code == 400

        assert api.delete(volume["uri"]).status_code == 204
    assert list((live.home / "images" / "exports").iterdir()) == []


def nbd_greeting(port: int, timeout: float) -> tuple[socket.socket, bytes]:
    """Connect as an NBD client and read what the server says first (b'' if nothing in time)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(timeout)
    try:
        return sock, sock.recv(8)
    except TimeoutError:
        return sock, b""


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def qemu_nbd_pids(volume_id: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"qemu-nbd") and f"--export-name={volume_id}".encode() in argv:
                found.append(int(proc.name))
    return found


def test_nbd_export_read_write_one_client(live: LiveAppliance, tmp_path: Path) -> None:
    with live.client(live.login()) as api:
        volume, _ = make_volume(live, api, tmp_path, "node-2-os")
        assert api.get(f"{volume['uri']}/nbd").status_code == 404
        started = api.post(f"{volume['uri']}/nbd")
        assert started.status_code == 201, started.text
        export = started.json()
        assert export["uri"] == f"nbd://127.0.0.1:{export['port']}/{volume['id']}"
        assert (export["readOnly"], export["maxClients"]) == (False, 1)
        assert api.get(volume["uri"]).json()["nbdUri"] == export["uri"]
        assert api.post(f"{volume['uri']}/nbd").status_code == 409

        # The client sees the whole guest disk (image + overlay) and writes through to the volume.
        url = export["uri"]
        qemu_io(url, "read -P 0xab 1M 64k", "write -P 0x5a 2M 64k", fmt="raw")
        assert qemu_io(url, "read -P 0x5a 2M 64k", fmt="raw")

        first, hello = nbd_greeting(export["port"], 5)
        assert hello == b"NBDMAGIC"
        second, nothing = nbd_greeting(export["port"], 1.0)
        assert nothing == b""  # one client at a time: the second is not served while the first is on
        first.close()
        second.close()

        for refused in (api.delete(volume["uri"]),
                        api.post(f"{volume['uri']}/export", json={"format": "raw"}),
                        api.post("/rest/golden-images", json={"name": "from-live", "imageCapture": True,
                                                              "osVolumeURI": volume["uri"]})):
            assert refused.status_code == 409, refused.text
            assert "NBD" in refused.json()["message"]

        assert api.delete(f"{volume['uri']}/nbd").status_code == 204
        assert api.delete(f"{volume['uri']}/nbd").status_code == 404
        assert api.get(volume["uri"]).json()["nbdUri"] is None
        assert qemu_nbd_pids(volume["id"]) == []
        qemu_io(str(volume_file(live, volume)), "read -P 0x5a 2M 64k", "read -P 0xab 1M 64k")

        # qemu-nbd dies with the appliance, even when the appliance is killed.
        again = api.post(f"{volume['uri']}/nbd").json()
    pids = qemu_nbd_pids(volume["id"])
    assert len(pids) == 1 and again["port"]
    live.kill()
    deadline = time.monotonic() + 10
    while pid_alive(pids[0]):
        assert time.monotonic() < deadline, "qemu-nbd outlived the appliance"
        time.sleep(0.05)
    live.start()
    with live.client(live.login()) as api:
        assert api.get(f"{volume['uri']}/nbd").status_code == 404  # nothing is exported after a restart
        assert api.delete(volume["uri"]).status_code == 204
