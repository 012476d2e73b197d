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
