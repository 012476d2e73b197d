"""A test playing the deploy agent over its HTTP API (docs/agent-api.md), in place of a machine:
fetch the iPXE script for the MAC (the boot token), look up, post an inventory, then take commands
from heartbeats and report on them. Works with the in-process boot app (a Starlette TestClient)
and with a live appliance's boot listener (an httpx.Client): both have the same request methods.

The real agent code is exercised elsewhere: tests/unit/agent (against a fake appliance),
tests/integration/test_deploy_agent.py (against a live appliance) and tests/e2e (on QEMU).
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any, Protocol

TIMEOUT_S = 30.0
INVENTORY: dict[str, Any] = {
    "cpu": {"model": "Test CPU", "count": 2, "architecture": "x86_64"}, "memory_bytes": 1 << 30,
    "disks": [{"name": "sda", "size_bytes": 64 << 30, "rotational": False, "removable": False}], "nics": [],
}


class BootClient(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any: ...

    def post(self, url: str, **kwargs: Any) -> Any: ...

    def put(self, url: str, **kwargs: Any) -> Any: ...


def stub_ramdisk(home: Path) -> None:
    """Kernel and initrd files: the iPXE script hands out boot tokens only when there is a ramdisk."""
    ramdisk = home / "boot" / "ramdisk"
    ramdisk.mkdir(parents=True, exist_ok=True)
    (ramdisk / "vmlinuz").write_bytes(b"kernel")
    (ramdisk / "initrd.img").write_bytes(b"initrd")


def boot_token(boot: BootClient, mac: str) -> str:
    """The one-time token in the iPXE script the appliance gives ``mac``."""
    script = boot.get(f"/ipxe/{mac.replace(':', '-')}/boot.ipxe").text
    found = re.search(r"ingot\.token=(\S+)", script)
    assert found, script
    return found.group(1)


class PlayedAgent:
    """One boot of one machine's agent: looked up and inventory posted on creation."""

    def __init__(self, boot: BootClient, mac: str, inventory: dict[str, Any] | None = None) -> None:
        self.boot = boot
        found = boot.post("/agent/v1/lookup", json={"token": boot_token(boot, mac), "macs": [mac]}).json()
        self.node: str = found["node"]
        self.headers = {"X-Ingot-Agent-Token": found["agentToken"]}
        posted = boot.post(f"/agent/v1/nodes/{self.node}/inventory", json=inventory or INVENTORY,
                           headers=self.headers)
        assert posted.status_code == 200, posted.text

    def next_command(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """Heartbeat until a command comes."""
        deadline = time.monotonic() + timeout
        while True:
            beat = self.boot.post(f"/agent/v1/nodes/{self.node}/heartbeat", json={"uptimeS": 1.0},
                                  headers=self.headers)
            commands: list[dict[str, Any]] = beat.json()["commands"]
            if commands:
                return commands[0]
            assert time.monotonic() < deadline, "no command for the agent"
            time.sleep(0.05)

    def report(self, command: dict[str, Any], **body: Any) -> None:
        r = self.boot.post(f"/agent/v1/nodes/{self.node}/commands/{command['id']}", json=body, headers=self.headers)
        assert r.status_code == 200, r.text

    def fetch_image(self, url: str) -> bytes:
        """The image in two pieces, the second resumed with Range as after a dropped connection."""
        first = self.boot.get(url, headers={**self.headers, "Range": "bytes=0-999999"})
        rest = self.boot.get(url, headers={**self.headers, "Range": "bytes=1000000-"})
        assert (first.status_code, rest.status_code) == (206, 206)
        return bytes(first.content) + bytes(rest.content)

    def write_image(self, *, corrupt: bool = False) -> dict[str, Any]:
        """Take the write_image command, fetch the image, report progress and the outcome (a
        SHA-256 mismatch when ``corrupt``); returns the command and the image."""
        command = self.next_command()
        assert command["name"] == "write_image", command
        image = self.fetch_image(command["params"]["url"])
        self.report(command, state="running", percent=50, message="Wrote half of the image.")
        if corrupt:
            self.report(command, state="failed", error="SHA-256 mismatch: the image read is not the image sent")
        else:
            self.report(command, state="succeeded", result={"device": "/dev/sda", "bytes": len(image),
                                                             "sha256": command["params"]["sha256"]})
        return {**command, "image": image}

    def read_disk(self, disk: bytes, *, chunk: int = 1 << 20, cut: bool = False,
                  corrupt: bool = False) -> dict[str, Any]:
        """Take the read_disk command and send ``disk`` back as the agent does: chunk by chunk,
        all-zero chunks left out, then the end. With ``cut``, the second chunk sent first arrives
        short (a dropped connection): the upload's status says where to go on from. With
        ``corrupt``, the SHA-256 reported is not the disk's."""
        command = self.next_command()
        assert command["name"] == "read_disk", command
        url = f"/agent/v1/nodes/{self.node}/disk/{command['id']}"
        total = len(disk)
        sent = 0
        offset = 0
        while offset < total:
            piece = disk[offset:offset + chunk]
            if piece.count(0) != len(piece):
                if cut and sent == 1:
                    cut = False
                    short = self.boot.put(url, content=piece[:100], headers={
                        **self.headers, "Content-Range": f"bytes {offset}-{offset + len(piece) - 1}/{total}"})
                    assert short.status_code == 400, short.text
                    status = self.boot.get(url, headers=self.headers).json()
                    assert status["total"] == total and 0 < status["committed"] <= offset, status
                    offset = status["committed"]
                    continue
                r = self.boot.put(url, content=piece, headers={
                    **self.headers, "Content-Range": f"bytes {offset}-{offset + len(piece) - 1}/{total}"})
                assert r.status_code == 200, r.text
                assert r.json()["committed"] == offset + len(piece)
                sent += 1
            offset += len(piece)
        done = self.boot.put(url, content=b"", headers={**self.headers, "Content-Range": f"bytes */{total}"})
        assert done.status_code == 200 and done.json() == {"committed": total, "total": total, "complete": True}
        digest = hashlib.sha256(disk if not corrupt else disk + b"x").hexdigest()
        self.report(command, state="succeeded", result={"device": "/dev/sda", "bytes": total, "sha256": digest,
                                                         "sent": sent * chunk, "layout": "mbr"})
        return command

    def run(self, name: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
        """Take the next command, which must be ``name``, and report it succeeded with ``result``."""
        command = self.next_command()
        assert command["name"] == name, command
        self.report(command, state="succeeded", result=result or {})
        return command
