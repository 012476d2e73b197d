"""agent.runner end to end against a fake appliance on 127.0.0.1 (tests/unit/agent/conftest.py),
with a fake /sys and /proc, a temp file as the disk, a fake clock and ``sleep``, and a fake
System that records what the agent asked of the machine."""

from __future__ import annotations

import hashlib
import io
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from agent import client as client_module
from agent import imagewrite
from agent.client import AgentClient
from agent.runner import Runner, RunnerConfig
from tests.unit.agent.conftest import MACS, NODE, FakeAppliance

IMAGE = os.urandom(512 << 10)
SHA = hashlib.sha256(IMAGE).hexdigest()
GIB_SECTORS = (1 << 30) // 512


class FakeClock:
    """Monotonic time that moves ``step`` seconds on every reading."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class FakeSystem:
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.calls: list[str] = []

    def sync(self) -> None:
        self.calls.append("sync")
        self.events.append("sync")

    def reboot(self) -> None:
        self.calls.append("reboot")
        self.events.append("reboot")

    def poweroff(self) -> None:
        self.calls.append("poweroff")
        self.events.append("poweroff")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """A fake root: /proc, /sys with a 40 GiB virtio disk ``vda`` (and a 2 GiB ``vdb``), one
    NIC, and /dev with ``vda`` and ``vdb`` as empty files."""
    root = tmp_path / "root"
    write(root / "proc/uptime", "42.50 80.00\n")
    write(root / "proc/meminfo", "MemTotal: 1024 kB\n")
    write(root / "proc/cpuinfo", "processor\t: 0\nmodel name\t: Fake CPU\n")
    for name, gib in (("vda", 40), ("vdb", 2)):
        write(root / f"sys/block/{name}/size", f"{gib * GIB_SECTORS}\n")
        write(root / f"sys/block/{name}/removable", "0\n")
        write(root / f"sys/block/{name}/queue/rotational", "1\n")
        write(root / f"sys/block/{name}/serial", f"serial-{name}\n")
        (root / f"sys/block/{name}/device").mkdir()
        write(root / f"dev/{name}", "")
    write(root / "sys/class/net/eth0/address", MACS[0] + "\n")
    write(root / "sys/class/net/eth0/carrier", "1\n")
    (root / "sys/class/net/eth0/device").mkdir()
    return root


class Agent:
    """A Runner wired to the fake appliance and machine, and what it printed and slept."""

    def __init__(self, appliance: FakeAppliance, root: Path, *, clock_step: float = 0.0, **config: Any) -> None:
        self.out = io.StringIO()
        self.sleeps: list[float] = []
        self.system = FakeSystem(appliance.events)
        self.appliance = appliance
        self.root = root
        config.setdefault("max_iterations", 3)
        self.runner = Runner(AgentClient(appliance.url, timeout=5), appliance.boot_token, macs=MACS,
                             address=lambda: "10.78.0.23/24", system=self.system, out=self.out, root=str(root),
                             dev_dir=str(root / "dev"), clock=FakeClock(clock_step), sleep=self.sleeps.append,
                             config=RunnerConfig(**config))

    def run(self) -> int:
        status = self.runner.run()
        text = self.out.getvalue()
        assert self.appliance.boot_token not in text and self.appliance.agent_token not in text
        return status

    @property
    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()


def final(appliance: FakeAppliance, command_id: str) -> dict[str, Any]:
    reports = appliance.reports_for(command_id)
    assert reports, f"no report for {command_id}"
    assert [r["state"] for r in reports[:-1]] == ["running"] * (len(reports) - 1)
    return reports[-1]


# -- lookup and inventory --------------------------------------------------------------------

def test_lookup_then_inventory_then_heartbeats(appliance: FakeAppliance, machine: Path) -> None:
    agent = Agent(appliance, machine, max_iterations=2)
    assert agent.run() == 0
    assert agent.lines == [f"INGOT-AGENT lookup ok node={NODE} heartbeat=0.05 s",
                           "INGOT-AGENT inventory posted disks=2 nics=1"]
    [inventory] = appliance.inventories
    assert [d["name"] for d in inventory["disks"]] == ["vda", "vdb"]
    assert inventory["nics"][0]["mac"] == MACS[0]
    assert appliance.heartbeats == [{"uptimeS": 42.5, "address": "10.78.0.23/24", "busy": None}] * 2
    assert agent.sleeps == [0.05, 0.05]


def test_lldp_neighbours_join_the_inventory_when_listening_is_on(appliance: FakeAppliance, machine: Path) -> None:
    neighbour = {"chassis_id": "0c:42:a1:00:10:07", "port_id": "Ethernet1/7", "ttl_s": 120, "vlan_id": 110,
                 "port_description": None, "system_name": "tor-a", "system_description": None,
                 "management_address": None}
    asked: list[tuple[list[str], float]] = []

    def listen(names: list[str], wait_s: float) -> tuple[dict[str, Any], dict[str, str]]:
        asked.append((names, wait_s))
        return {"eth0": neighbour}, {"eth9": "No such device"}

    agent = Agent(appliance, machine, max_iterations=1, lldp_wait_s=30.0)
    agent.runner.lldp_listen = listen
    assert agent.run() == 0
    assert asked == [(["eth0"], 30.0)]  # the NICs with a link, for the time the kernel argument gave
    assert appliance.inventories[0]["nics"][0]["lldp"] == neighbour
    assert "INGOT-AGENT lldp: cannot listen on eth9: No such device" in agent.lines
    assert any(line.startswith("INGOT-AGENT lldp neighbours=1 of 1 in ") for line in agent.lines)
    quiet = Agent(appliance, machine, max_iterations=1)  # off by default: no wait, no field
    quiet.runner.lldp_listen = listen
    assert quiet.run() == 0 and len(asked) == 1 and "lldp" not in appliance.inventories[1]["nics"][0]


def test_lookup_retries_404_and_5xx_with_a_growing_pause(appliance: FakeAppliance, machine: Path) -> None:
    appliance.lookup_statuses.extend([404, 503, 404])
    agent = Agent(appliance, machine, max_iterations=0, backoff_initial_s=1, backoff_max_s=3)
    assert agent.run() == 0
    assert len(appliance.lookups) == 4 and appliance.inventories
    assert agent.lines[:3] == [
        "INGOT-AGENT lookup failed: HTTP 404 RESOURCE_NOT_FOUND: the boot token is unknown; retry in 1 s",
        "INGOT-AGENT lookup failed: HTTP 503 INTERNAL_ERROR: the boot token is unknown; retry in 2 s",
        "INGOT-AGENT lookup failed: HTTP 404 RESOURCE_NOT_FOUND: the boot token is unknown; retry in 3 s",
    ]
    assert agent.sleeps == [1, 2, 3]
    assert agent.lines[3].startswith("INGOT-AGENT lookup ok")


def test_lookup_gives_up_after_its_attempts(appliance: FakeAppliance, machine: Path) -> None:
    appliance.lookup_statuses.extend([404] * 5)
    agent = Agent(appliance, machine, lookup_attempts=3)
    assert agent.run() == 1
    assert len(appliance.lookups) == 3 and not appliance.inventories and not appliance.heartbeats
    assert agent.lines[-1] == ("INGOT-AGENT lookup failed: HTTP 404 RESOURCE_NOT_FOUND: the boot token is unknown; "
                               "giving up after 3 attempts")


def test_lookup_gives_up_at_its_deadline(appliance: FakeAppliance, machine: Path) -> None:
    appliance.lookup_statuses.extend([503] * 10)
    agent = Agent(appliance, machine, clock_step=10, lookup_deadline_s=25)
    assert agent.run() == 1
    assert len(appliance.lookups) == 3  # the clock reads 10 s later each time it is asked
    assert agent.lines[-1].endswith("giving up after 3 attempts")


def test_lookup_does_not_retry_a_mismatch(appliance: FakeAppliance, machine: Path) -> None:
    agent = Agent(appliance, machine)
    agent.runner.macs = ["52:54:00:99:99:99"]
    assert agent.run() == 1
    assert agent.lines == ["INGOT-AGENT lookup failed: HTTP 409 AGENT_LOOKUP_MISMATCH: none of the MACs is the "
                           "token's; giving up"]


def test_an_unreachable_appliance_is_retried(machine: Path, appliance: FakeAppliance) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connecting is refused
    agent = Agent(appliance, machine, lookup_attempts=2)
    agent.runner.client = AgentClient(f"http://127.0.0.1:{port}", timeout=2)
    assert agent.run() == 1
    assert agent.lines[0].startswith("INGOT-AGENT lookup failed: POST /agent/v1/lookup: ConnectionRefusedError")
    assert agent.lines[0].endswith("; retry in 1 s")
    assert agent.sleeps == [1.0]


def test_a_failing_heartbeat_is_retried_with_backoff(appliance: FakeAppliance, machine: Path) -> None:
    appliance.heartbeat_statuses.extend([503, 500])
    agent = Agent(appliance, machine, max_iterations=3)
    assert agent.run() == 0
    assert len(appliance.heartbeats) == 1
    assert agent.lines[2:] == [
        "INGOT-AGENT heartbeat failed: HTTP 503 INTERNAL_ERROR: the database is away; retry in 1 s",
        "INGOT-AGENT heartbeat failed: HTTP 500 INTERNAL_ERROR: the database is away; retry in 2 s",
    ]
    assert agent.sleeps == [1, 2, 0.05]


def test_a_failed_inventory_does_not_stop_the_agent(appliance: FakeAppliance, machine: Path) -> None:
    agent = Agent(appliance, machine, max_iterations=1)
    agent.runner.client.lookup(appliance.boot_token, MACS)
    appliance.agent_token = "agent-replaced-by-another-lookup"
    assert not agent.runner.post_inventory()
    assert agent.lines == ["INGOT-AGENT inventory failed: HTTP 401 AUTHENTICATION_FAILED: a missing or wrong agent "
                           "token; giving up"]


# -- commands --------------------------------------------------------------------------------

def test_write_image_picks_the_disk_streams_it_and_reports(appliance: FakeAppliance, machine: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagewrite, "PROGRESS_EVERY", 64 << 10)
    monkeypatch.setattr(client_module, "CHUNK", 64 << 10)
    appliance.images["/exports/golden.raw"] = IMAGE
    appliance.before_image = lambda: appliance.busy_seen.wait(2)  # heartbeats go on during the write
    command = appliance.command("write_image", url="/exports/golden.raw", sha256=SHA.upper(), size=len(IMAGE))
    appliance.batches.append([command])
    agent = Agent(appliance, machine, clock_step=1.0, max_iterations=2)
    assert agent.run() == 0
    disk = machine / "dev/vda"  # no hints: the smallest fixed disk of at least 4 GiB
    assert disk.read_bytes() == IMAGE
    reports = appliance.reports_for(command["id"])
    running = [r for r in reports if r["state"] == "running"]
    assert running[0] == {"state": "running", "percent": 0, "message": "Started.", "result": None, "error": None}
    assert len(running) >= 4, running  # progress at most once per (fake) second: here every 64 KiB
    assert [r["percent"] for r in running] == sorted(r["percent"] for r in running) and running[-1]["percent"] < 100
    assert running[1]["message"] == "Wrote 0.1 of 0.5 MiB."
    assert final(appliance, command["id"]) == {
        "state": "succeeded", "percent": 100, "message": f"Wrote 0.5 MiB to {disk}; SHA-256 verified.",
        "result": {"device": str(disk), "bytes": len(IMAGE), "sha256": SHA}, "error": None}
    assert any(h["busy"] == command["id"] for h in appliance.heartbeats)
    assert [token for _, _, token in appliance.image_gets] == [appliance.agent_token]
    assert agent.lines[2] == f"INGOT-AGENT command write_image {command['id']} started"
    assert agent.lines[-1] == (f"INGOT-AGENT command write_image {command['id']} succeeded: Wrote 0.5 MiB to "
                               f"{disk}; SHA-256 verified.")


def test_progress_is_reported_at_most_once_a_second(appliance: FakeAppliance, machine: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagewrite, "PROGRESS_EVERY", 64 << 10)
    monkeypatch.setattr(client_module, "CHUNK", 64 << 10)
    appliance.images["/img"] = IMAGE
    command = appliance.command("write_image", url=appliance.url + "/img", sha256=SHA, size=len(IMAGE),
                                rootDeviceHints={"serial": "serial-vdb"})
    appliance.batches.append([command])
    agent = Agent(appliance, machine, clock_step=0.0)  # the clock stands still: no progress after the start
    assert agent.run() == 0
    assert [r["state"] for r in appliance.reports_for(command["id"])] == ["running", "succeeded"]
    assert (machine / "dev/vdb").read_bytes() == IMAGE  # the hint chose vdb, small as it is


def test_a_dropped_download_resumes_where_it_stopped(appliance: FakeAppliance, machine: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "CHUNK", 64 << 10)
    appliance.images["/img"] = IMAGE
    appliance.drop_after = 200_000
    command = appliance.command("write_image", url="/img", sha256=SHA, size=len(IMAGE),
                                rootDeviceHints={"name": "/dev/vda"})
    appliance.batches.append([command])
    agent = Agent(appliance, machine, write_backoff_s=0.5)
    assert agent.run() == 0
    assert [offset for _, offset, _ in appliance.image_gets] == [0, 200_000]
    assert 0.5 in agent.sleeps  # imagewrite's pause before the second request
    assert final(appliance, command["id"])["state"] == "succeeded"
    assert (machine / "dev/vda").read_bytes() == IMAGE


def test_a_checksum_mismatch_fails_the_command_and_the_loop_goes_on(appliance: FakeAppliance,
                                                                    machine: Path) -> None:
    appliance.images["/img"] = IMAGE
    command = appliance.command("write_image", url="/img", sha256="0" * 64, size=len(IMAGE))
    appliance.batches.append([command])
    agent = Agent(appliance, machine, max_iterations=3)
    assert agent.run() == 0
    report = final(appliance, command["id"])
    assert report["state"] == "failed" and report["result"] is None
    assert report["error"] == report["message"]
    assert report["message"] == (f"the {len(IMAGE)} bytes written have SHA-256 {SHA}, not the export's {'0' * 64}")
    assert agent.lines[-1] == f"INGOT-AGENT command write_image {command['id']} failed: {report['message']}"
    assert len(appliance.heartbeats) - sum(1 for h in appliance.heartbeats if h["busy"]) == 3


@pytest.mark.parametrize(("params", "message"), [
    ({"sha256": SHA}, "write_image needs the image's url"),
    ({"url": "/img", "sha256": "abc"}, "write_image needs the image's sha256 (64 hex digits)"),
    ({"url": "/img", "sha256": SHA, "size": "big"}, "write_image: size='big' is not a number of bytes"),
    ({"url": "/img", "sha256": SHA, "rootDeviceHints": {"serial": "nope"}},
     "no disk matches the root device hints serial='nope'; disks seen: vda (40 GiB, serial serial-vda), "
     "vdb (2 GiB, serial serial-vdb)"),
    ({"url": "/img", "sha256": SHA, "rootDeviceHints": {"hctl": "0:0:0:0"}},
     "unknown root device hint 'hctl' (known: name, serial, wwn, model, vendor, size, rotational)"),
    ({"url": "/img", "sha256": SHA, "size": 3 << 30, "rootDeviceHints": {"name": "vdb"}},
     f"the image ({3 << 30} bytes) does not fit on vdb ({2 << 30} bytes)"),
    ({"url": "/missing", "sha256": SHA},
     "HTTP 404 RESOURCE_NOT_FOUND: GET http://127.0.0.1:{port}/missing from byte 0: no image /missing"),
])
def test_write_image_failures_are_clear(appliance: FakeAppliance, machine: Path, params: dict[str, Any],
                                        message: str) -> None:
    command = appliance.command("write_image", **params)
    appliance.batches.append([command])
    agent = Agent(appliance, machine, max_iterations=2)
    assert agent.run() == 0
    port = appliance.url.rsplit(":", 1)[1]
    assert final(appliance, command["id"])["error"] == message.replace("{port}", port)
    assert (machine / "dev/vda").read_bytes() == b"" and (machine / "dev/vdb").read_bytes() == b""


def test_an_unknown_command_fails_and_the_next_one_runs(appliance: FakeAppliance, machine: Path) -> None:
    unknown, inventory = appliance.command("frobnicate"), appliance.command("inventory")
    appliance.batches.append([unknown, inventory])
    agent = Agent(appliance, machine, max_iterations=2)
    assert agent.run() == 0
    assert final(appliance, unknown["id"])["error"] == "unknown command frobnicate"
    assert final(appliance, inventory["id"]) == {
        "state": "succeeded", "percent": 100, "message": "Posted the inventory (2 disks, 1 NICs).", "result": {},
        "error": None}
    assert len(appliance.inventories) == 2  # the first one, and the command's
    assert f"INGOT-AGENT command frobnicate {unknown['id']} failed: unknown command frobnicate" in agent.lines
    assert f"INGOT-AGENT command inventory {inventory['id']} succeeded: Posted the inventory (2 disks, 1 NICs)." \
        in agent.lines


@pytest.mark.parametrize("name", ["poweroff", "reboot"])
def test_poweroff_and_reboot_report_success_first(appliance: FakeAppliance, machine: Path, name: str) -> None:
    command = appliance.command(name)
    appliance.batches.append([command, appliance.command("inventory")])
    agent = Agent(appliance, machine, max_iterations=10)
    assert agent.run() == 0  # and it stops there: the machine is going down
    assert appliance.events == ["report running", "report succeeded", "sync", name]
    assert agent.system.calls == ["sync", name]
    assert len(appliance.heartbeats) == 1
    said = "Powering off." if name == "poweroff" else "Rebooting."
    assert agent.lines[-2:] == [f"INGOT-AGENT command {name} {command['id']} succeeded: {said}",
                                f"INGOT-AGENT {name}: syncing the disks"]


def test_a_failed_poweroff_keeps_the_agent_running(appliance: FakeAppliance, machine: Path) -> None:
    command = appliance.command("poweroff")
    appliance.batches.append([command])
    agent = Agent(appliance, machine, max_iterations=2)

    def broken() -> None:
        raise OSError("/usr/bin/busybox poweroff -f exited with status 1: no")

    agent.system.poweroff = broken  # type: ignore[method-assign]
    assert agent.run() == 0
    assert len(appliance.heartbeats) == 2
    assert agent.lines[-1].endswith(f"poweroff {command['id']} did not take effect: "
                                    "OSError: /usr/bin/busybox poweroff -f exited with status 1: no")


def test_the_appliance_ending_a_command_stops_it(appliance: FakeAppliance, machine: Path) -> None:
    command = appliance.command("inventory")
    appliance.ended.add(command["id"])  # aborted before the agent got to it: the first report is 409
    appliance.batches.append([command])
    agent = Agent(appliance, machine, max_iterations=2)
    assert agent.run() == 0
    assert appliance.reports_for(command["id"]) == [] and len(appliance.inventories) == 1
    assert agent.lines[-1] == (f"INGOT-AGENT command inventory {command['id']} failed: the appliance ended the "
                               "command (HTTP 409 AGENT_COMMAND_ENDED: command " + command["id"] + " has ended)")


def test_erase_zeroes_both_ends_of_every_fixed_disk(appliance: FakeAppliance, machine: Path) -> None:
    for name in ("vda", "vdb"):
        (machine / f"dev/{name}").write_bytes(b"\xff" * (3 << 20))  # a partition table and data at the start
    command = appliance.command("erase")
    appliance.batches.append([command])
    agent = Agent(appliance, machine, max_iterations=2)
    assert agent.run() == 0
    assert final(appliance, command["id"])["result"] == {"disks": ["vda", "vdb"]}
    for name, gib in (("vda", 40), ("vdb", 2)):
        disk = machine / f"dev/{name}"
        assert disk.stat().st_size == gib << 30  # the last MiB was written too
        with disk.open("rb") as f:
            head = f.read(3 << 20)
            f.seek((gib << 30) - (1 << 20))
            tail = f.read()
        assert head[:1 << 20] == bytes(1 << 20) and head[1 << 20:] == b"\xff" * (2 << 20)
        assert tail == bytes(1 << 20)


def test_erase_of_a_disk_that_cannot_be_opened_fails_clearly(appliance: FakeAppliance, machine: Path) -> None:
    (machine / "dev/vdb").unlink()
    command = appliance.command("erase")
    appliance.batches.append([command])
    assert Agent(appliance, machine, max_iterations=2).run() == 0
    error = final(appliance, command["id"])["error"]
    assert "cannot open" in error and "vdb" in error


# -- read_disk -------------------------------------------------------------------------------

MiB = 1 << 20
CAPTURE_SIZE = 12 * MiB
PART_END = 9 * MiB - 1000 * 512  # the MBR partition's end: 9 MiB rounded up
HEAD = os.urandom(64 << 10)  # at 1 MiB: in the first 4 MiB chunk
MIDDLE = os.urandom(100 << 10)  # at 8 MiB: in the last chunk, [8, 9) MiB
TAIL = os.urandom(512 << 10)  # at 10 MiB: past the partition, not captured


def mbr_sector(*entries: tuple[int, int, int]) -> bytes:
    sector = bytearray(512)
    for i, (kind, first, sectors) in enumerate(entries):
        sector[446 + 16 * i + 4] = kind
        sector[446 + 16 * i + 8:446 + 16 * i + 16] = first.to_bytes(4, "little") + sectors.to_bytes(4, "little")
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def add_disk(machine: Path, name: str, size: int, pieces: dict[int, bytes], *, sector: int | None = None) -> Path:
    """One more disk in /sys and /dev: a sparse file of ``size`` bytes with ``pieces`` written at
    their offsets."""
    write(machine / f"sys/block/{name}/size", f"{size // 512}\n")
    write(machine / f"sys/block/{name}/removable", "0\n")
    write(machine / f"sys/block/{name}/queue/rotational", "0\n")
    if sector is not None:
        write(machine / f"sys/block/{name}/queue/logical_block_size", f"{sector}\n")
    (machine / f"sys/block/{name}/device").mkdir()
    device = machine / f"dev/{name}"
    with device.open("wb") as f:
        f.truncate(size)
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
    return device


def capture_disk(machine: Path) -> Path:
    """``vdc``: 12 MiB, an MBR partition from 1 MiB to just short of 9 MiB, data at 1 MiB and at
    8 MiB, zeros from 4 to 8 MiB, and data at 10 MiB past the partition."""
    first = MiB // 512
    return add_disk(machine, "vdc", CAPTURE_SIZE, {0: mbr_sector((0x83, first, PART_END // 512 - first)),
                                                   MiB: HEAD, 8 * MiB: MIDDLE, 10 * MiB: TAIL})


def read_disk_command(appliance: FakeAppliance, **params: Any) -> dict[str, Any]:
    command = appliance.command("read_disk", **params)
    appliance.batches.append([command])
    return command


def test_read_disk_streams_the_used_part_without_the_zero_chunks(appliance: FakeAppliance, machine: Path) -> None:
    device = capture_disk(machine)
    command = read_disk_command(appliance, rootDeviceHints={"name": "/dev/vdc"}, whole=False)
    agent = Agent(appliance, machine, clock_step=1.0, max_iterations=2)
    assert agent.run() == 0
    total = 9 * MiB
    captured = device.read_bytes()[:total]
    sha = hashlib.sha256(captured).hexdigest()
    token, cid = appliance.agent_token, command["id"]
    assert appliance.disk_puts == [  # [4, 8) MiB is zeros: not sent
        (cid, f"bytes 0-{4 * MiB - 1}/{total}", 4 * MiB, "application/octet-stream", token),
        (cid, f"bytes {8 * MiB}-{total - 1}/{total}", MiB, "application/octet-stream", token),
        (cid, f"bytes */{total}", 0, "application/octet-stream", token)]
    assert appliance.disk_gets == []
    assert bytes(appliance.disks[cid]) == captured
    assert appliance.disk_state[cid] == {"committed": total, "total": total, "complete": True}
    message = f"Read 9.0 MiB of {device} (5.0 MiB sent); SHA-256 {sha}."
    assert final(appliance, cid) == {
        "state": "succeeded", "percent": 100, "message": message, "error": None,
        "result": {"device": str(device), "bytes": total, "sha256": sha, "sent": 5 * MiB, "layout": "mbr",
                   "gptBackupOmitted": False}}
    running = [(r["percent"], r["message"]) for r in appliance.reports_for(cid) if r["state"] == "running"]
    assert running == [(0, "Started."), (44, "Read 4.0 of 9.0 MiB (4.0 MiB sent)."),
                       (88, "Read 8.0 of 9.0 MiB (4.0 MiB sent).")]
    assert f"INGOT-AGENT read_disk: {device} {total} of {CAPTURE_SIZE} bytes (mbr)" in agent.lines
    assert agent.lines[-1] == f"INGOT-AGENT command read_disk {cid} succeeded: {message}"


def test_read_disk_whole_reads_past_the_partitions(appliance: FakeAppliance, machine: Path) -> None:
    device = capture_disk(machine)
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"}, whole=True)
    assert Agent(appliance, machine, max_iterations=2).run() == 0
    result = final(appliance, command["id"])["result"]
    assert result["bytes"] == CAPTURE_SIZE and result["layout"] == "whole" and not result["gptBackupOmitted"]
    assert result["sha256"] == hashlib.sha256(device.read_bytes()).hexdigest()
    assert bytes(appliance.disks[command["id"]]) == device.read_bytes()
    assert [put[1] for put in appliance.disk_puts] == [f"bytes 0-{4 * MiB - 1}/{CAPTURE_SIZE}",
                                                       f"bytes {8 * MiB}-{CAPTURE_SIZE - 1}/{CAPTURE_SIZE}",
                                                       f"bytes */{CAPTURE_SIZE}"]


def test_read_disk_of_a_gpt_disk_leaves_the_backup_gpt_out(appliance: FakeAppliance, machine: Path) -> None:
    from tests.unit.agent.test_disklayout import gpt

    table = gpt([(2048, 4095), (4096, 6 * 2048 - 100)], CAPTURE_SIZE)
    device = add_disk(machine, "vdc", CAPTURE_SIZE, {0: bytes(table), 5 * MiB: HEAD,
                                                     CAPTURE_SIZE - 33 * 512: b"backup GPT"})
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"})
    assert Agent(appliance, machine, max_iterations=2).run() == 0
    result = final(appliance, command["id"])["result"]
    assert (result["bytes"], result["layout"], result["gptBackupOmitted"]) == (6 * MiB, "gpt", True)
    assert bytes(appliance.disks[command["id"]]) == device.read_bytes()[:6 * MiB]


def test_read_disk_counts_the_sectors_of_a_4kn_disk(appliance: FakeAppliance, machine: Path) -> None:
    add_disk(machine, "vdc", CAPTURE_SIZE, {0: mbr_sector((0x83, 256, 512))}, sector=4096)  # 1 MiB + 2 MiB
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"})
    assert Agent(appliance, machine, max_iterations=2).run() == 0
    assert final(appliance, command["id"])["result"]["bytes"] == 3 * MiB


def test_read_disk_of_an_empty_disk_sends_only_the_end(appliance: FakeAppliance, machine: Path) -> None:
    add_disk(machine, "vdc", 0, {})
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"})
    assert Agent(appliance, machine, max_iterations=2).run() == 0
    result = final(appliance, command["id"])["result"]
    assert (result["bytes"], result["sent"], result["layout"]) == (0, 0, "whole")
    assert result["sha256"] == hashlib.sha256(b"").hexdigest()
    assert [put[1] for put in appliance.disk_puts] == ["bytes */0"]


def test_read_disk_resumes_a_dropped_upload_from_what_the_appliance_has(appliance: FakeAppliance,
                                                                         machine: Path) -> None:
    device = capture_disk(machine)
    # The first range is cut off (not committed): sent again. The second arrives, its answer does
    # not: the status says so, and it is not sent again.
    appliance.put_faults.extend(["cut", "ok", "lost"])
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"})
    agent = Agent(appliance, machine, max_iterations=2, write_backoff_s=0.5)
    assert agent.run() == 0
    total = 9 * MiB
    cid = command["id"]
    assert [put[1] for put in appliance.disk_puts] == [f"bytes 0-{4 * MiB - 1}/{total}",
                                                       f"bytes {8 * MiB}-{total - 1}/{total}", f"bytes */{total}"]
    assert appliance.disk_gets == [(cid, appliance.agent_token)] * 2
    assert agent.sleeps.count(0.5) == 2  # one pause per failure: each followed progress
    report = final(appliance, cid)
    assert report["state"] == "succeeded"
    assert report["result"]["sha256"] == hashlib.sha256(device.read_bytes()[:total]).hexdigest()
    assert bytes(appliance.disks[cid]) == device.read_bytes()[:total]


def test_read_disk_retries_server_errors(appliance: FakeAppliance, machine: Path) -> None:
    device = capture_disk(machine)
    appliance.put_faults.append(503)
    appliance.status_faults.append(500)
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"})
    agent = Agent(appliance, machine, max_iterations=2, write_backoff_s=0.5)
    assert agent.run() == 0
    assert final(appliance, command["id"])["state"] == "succeeded"
    assert [s for s in agent.sleeps if s != appliance.interval_s] == [0.5, 1.0]
    assert len(appliance.disk_gets) == 2
    assert bytes(appliance.disks[command["id"]]) == device.read_bytes()[:9 * MiB]


def test_read_disk_gives_up_after_its_retries(appliance: FakeAppliance, machine: Path) -> None:
    capture_disk(machine)
    appliance.put_faults.extend([503] * 3)
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"})
    assert Agent(appliance, machine, max_iterations=2, write_retries=2).run() == 0
    assert final(appliance, command["id"])["error"] == (
        f"the upload failed 3 times in a row at byte 0 of {9 * MiB}: HTTP 503 UPLOAD_FAILED: the range was not "
        "taken (HTTP 503)")


def test_a_409_to_an_upload_aborts_the_command(appliance: FakeAppliance, machine: Path) -> None:
    capture_disk(machine)
    appliance.put_faults.extend(["ok", 409])
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"})
    agent = Agent(appliance, machine, max_iterations=2)
    assert agent.run() == 0
    assert [r["state"] for r in appliance.reports_for(command["id"])] == ["running"]  # no final report
    assert len(appliance.disk_puts) == 2 and appliance.disk_gets == []
    assert agent.lines[-1] == (f"INGOT-AGENT command read_disk {command['id']} failed: the appliance ended the "
                               "command (HTTP 409 AGENT_COMMAND_ENDED: the range was not taken (HTTP 409))")


def test_a_4xx_to_an_upload_fails_the_command_with_its_message(appliance: FakeAppliance, machine: Path) -> None:
    capture_disk(machine)
    appliance.put_faults.append(413)
    command = read_disk_command(appliance, rootDeviceHints={"name": "vdc"})
    assert Agent(appliance, machine, max_iterations=2).run() == 0
    assert final(appliance, command["id"])["error"] == ("the appliance refused the disk upload: HTTP 413 "
                                                        "UPLOAD_FAILED: the range was not taken (HTTP 413)")
    assert appliance.disk_gets == []


@pytest.mark.parametrize(("params", "message"), [
    ({"rootDeviceHints": "vdc"}, "read_disk: rootDeviceHints is not an object"),
    ({"rootDeviceHints": ["name", "vdc"]}, "read_disk: rootDeviceHints is not an object"),
    ({"whole": "yes"}, "read_disk: whole='yes' is not a bool"),
    ({"whole": 1}, "read_disk: whole=1 is not a bool"),
    ({"whole": "x" * 1000}, "read_disk: whole='" + "x" * 99 + "... is not a bool"),
    ({"rootDeviceHints": {"serial": "nope"}},
     "no disk matches the root device hints serial='nope'; disks seen: vda (40 GiB, serial serial-vda), "
     "vdb (2 GiB, serial serial-vdb)"),
    ({"rootDeviceHints": {"name": "vdb"}}, "cannot open {dev}/vdb for reading: No such file or directory"),
])
def test_read_disk_failures_are_clear(appliance: FakeAppliance, machine: Path, params: dict[str, Any],
                                      message: str) -> None:
    (machine / "dev/vdb").unlink()
    command = read_disk_command(appliance, **params)
    assert Agent(appliance, machine, max_iterations=2).run() == 0
    assert final(appliance, command["id"])["error"] == message.replace("{dev}", str(machine / "dev"))
    assert appliance.disk_puts == [] and appliance.disk_gets == []
