"""End to end on the emulated rack (lab/rack.py), the path ``make demo`` takes: two QEMU servers,
one BIOS and one UEFI, are enrolled in Ingot by their BMC addresses only and inspected: Ingot
gives each a one-time PXE boot and powers it on over IPMI, it PXE-boots through Ingot's DHCP,
TFTP (the UEFI server's own PXE client fetches the iPXE loader) and HTTP into the deploy ramdisk,
its agent looks itself up by its MACs and reports the inventory, which must match the VM (CPUs,
memory, disk size and serial, MACs, SMBIOS serial and UUID); then Ingot powers it off and it is
available. Then ``ingot lab down`` must leave no namespace, interface, process or file behind.

Boot timings per phase are written to test-artifacts/e2e-rack-timings.json; serial logs are
copied there too when a boot fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab import rack
from lab.demo import PHASES, Server, boot_all
from lab.netns import list_namespaces
from tests.support.requirements import require_lab, require_tools

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _installed() -> None:
    require_lab()
    require_tools("qemu-system-x86_64", "qemu-img", "ipmitool", "mmdebstrap")


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("rack-home")
    links = host_links()
    name = f"ingot-e2e{os.getpid() % 100000}"
    state = rack.up(home, name=name, servers=2, uefi=1, cache=artifacts_dir / "cache" / "lab-images")
    state["home"], state["host_links"] = home, links
    try:
        yield state
    finally:
        with contextlib.suppress(rack.LabError):
            rack.down(home, name=name)


def test_servers_enrolled_by_bmc_address_are_inspected_by_the_agent(lab: dict[str, Any], artifacts_dir: Path) -> None:
    servers = [Server(s["name"], s["firmware"], s["bmc"], s["macs"][0].lower(), Path(s["serial_log"]))
               for s in lab["servers"]]
    assert {s.firmware for s in servers} == {"bios", "uefi"}
    with httpx.Client(base_url=lab["url"], verify=ssl.create_default_context(cafile=lab["ca_cert"]), timeout=30,
                      headers={"X-API-Version": "4600"}) as api:
        login = api.post("/rest/login-sessions", json={"userName": lab["admin"]["user"],
                                                       "password": lab["admin"]["password"]})
        assert login.status_code == 200, login.text
        api.headers["auth"] = login.json()["sessionID"]
        boot_all(api, servers)
        enrolled = api.get("/rest/server-hardware").json()["members"]
    timings = {s.name: {p: round(s.at[p] - s.at["power-on"], 2) for p in PHASES if p in s.at and "power-on" in s.at}
               for s in servers}
    (artifacts_dir / "e2e-rack-timings.json").write_text(json.dumps(timings, indent=2))
    failed = [s for s in servers if not s.inspected]
    for server in failed:
        shutil.copyfile(server.serial_log, artifacts_dir / f"e2e-rack-{server.name}.serial.log")
    assert not failed, {s.name: s.error for s in failed}
    assert sorted(m["mpHostInfo"]["mpHostName"] for m in enrolled) == sorted(s.bmc["address"] for s in servers)
    for server, vm in zip(servers, lab["servers"], strict=True):
        text = server.serial_log.read_text(errors="replace")
        assert f"INGOT-AGENT started mac={server.mac}" in text
        assert server.ip is not None and server.ip.startswith(lab["provisioning_network"].rsplit(".", 1)[0])
        assert_inventory_matches(server.inventory, vm)
    by_uri = {m["uri"]: m for m in enrolled}
    for server in servers:
        assert server.uri is not None
        assert by_uri[server.uri]["provisionState"] == "available", by_uri[server.uri]["lastError"]
        assert by_uri[server.uri]["memoryMb"] == lab["servers"][0]["memory_mb"]
    uefi = next(s for s in servers if s.firmware == "uefi")
    assert "Start PXE over IPv4" in uefi.serial_log.read_text(errors="replace")  # the firmware's own PXE client
    powered = rack.status(lab["home"], name=lab["name"])
    assert [s["power"] for s in powered["servers"]] == ["off", "off"]  # inspection ends powered off


def assert_inventory_matches(inventory: dict[str, Any] | None, vm: dict[str, Any]) -> None:
    """What the agent found is what the lab built: the VM's CPUs, memory, disk, NICs and SMBIOS identity."""
    assert inventory is not None
    assert inventory["cpu"]["count"] == 1 and inventory["cpu"]["architecture"] == "x86_64"
    assert inventory["physical_memory_bytes"] == vm["memory_mb"] << 20
    assert 0 < inventory["memory_bytes"] < vm["memory_mb"] << 20  # what the kernel keeps back is not usable
    [disk] = inventory["disks"]
    assert (disk["name"], disk["size_bytes"], disk["serial"]) == ("vda", vm["disk_bytes"], vm["disk_serial"])
    assert [n["mac"] for n in inventory["nics"]] == [m.lower() for m in vm["macs"]]
    assert inventory["nics"][0]["link"] is True and inventory["nics"][0]["driver"] == "virtio_net"
    assert inventory["system"]["product_serial"] == vm["serial"]
    assert inventory["system"]["product_uuid"].lower() == vm["uuid"].lower()


def test_lab_down_leaves_nothing_behind(lab: dict[str, Any]) -> None:
    home, name = lab["home"], lab["name"]
    pids = [p["pid"] for p in rack.status(home, name=name, power=False)["processes"]]
    instance = rack.LabPaths(home, name).instance
    rack.down(home, name=name)
    assert name not in list_namespaces()
    assert host_links() == lab["host_links"]
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert processes_mentioning(str(instance)) == []  # no QEMU, BMC, appliance or forwarder of this lab
    assert not instance.exists()
    assert list((home / "lab" / "state").iterdir()) == []
    with pytest.raises(rack.LabError, match="not up"):
        rack.status(home, name=name)
