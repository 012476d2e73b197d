"""End to end on the emulated rack (lab/rack.py), the path ``make demo`` takes: three QEMU servers,
two BIOS and one UEFI, are enrolled in Ingot by their BMC addresses only and inspected: Ingot
gives each a one-time PXE boot and powers it on over IPMI, it PXE-boots through Ingot's DHCP,
TFTP (the UEFI server's own PXE client fetches the iPXE loader) and HTTP into the deploy ramdisk,
its agent looks itself up by its MACs and reports the inventory, which must match the VM (CPUs,
memory, disk size and serial, MACs, SMBIOS serial and UUID); then Ingot powers it off and it is
available. Then HPE's SDK (hpeoneview 8.0.0, unchanged) creates a server profile for a BIOS and
the UEFI server with the demo golden image (extlinux from the MBR, or systemd-boot from its EFI
system partition), a build plan that writes the hostname and a static address, and values that
differ per server: Ingot clones, personalizes and exports a volume per server, the agent writes it to the
server's disk, and the server reboots from its own disk, whose first-boot report on the serial
console carries exactly the personalized values; the profiles have their osVolumeUri. Then the
BIOS server is captured (the agent streams its disk back; a capture build plan generalizes the
copy) and the new golden image is deployed to the other BIOS server: it boots with the file the
first server wrote on its first boot, but with its own host name, address and machine-id.
Then ``ingot lab down`` must leave no namespace, interface, process or file behind.

Boot timings per phase are written to test-artifacts/e2e-rack-timings.json; serial logs are
copied there too when a boot fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hpeOneView.oneview_client import OneViewClient

from lab import demo_plans, rack
from lab.demo import PHASES, Server, boot_all
from lab.images import build_demo_disk
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
    state = rack.up(home, name=name, servers=3, uefi=1, cache=artifacts_dir / "cache" / "lab-images")
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
    assert [s["power"] for s in powered["servers"]] == ["off"] * 3  # inspection ends powered off


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


DEPLOY_TIMEOUT_S = 900.0  # two servers at once under TCG: clone, guestfish, 1 GiB over virtio, two boots
CAPTURE_TIMEOUT_S = 900.0


def api_client(lab: dict[str, Any]) -> httpx.Client:
    api = httpx.Client(base_url=lab["url"], verify=ssl.create_default_context(cafile=lab["ca_cert"]), timeout=120,
                       headers={"X-API-Version": "4600"})
    login = api.post("/rest/login-sessions", json={"userName": lab["admin"]["user"],
                                                   "password": lab["admin"]["password"]})
    assert login.status_code == 200, login.text
    api.headers["auth"] = login.json()["sessionID"]
    return api


def test_sdk_profiles_deploy_personalized_servers_that_boot_from_their_own_disks(
        lab: dict[str, Any], artifacts_dir: Path) -> None:
    disk = build_demo_disk(artifacts_dir / "cache" / "lab-images")
    with contextlib.closing(api_client(lab)) as api:
        image = demo_plans.upload_golden_image(api, disk.path)
        lab["demo_build_plan"] = demo_plans.personalize_plan(api)
        osdp = demo_plans.deployment_plan(api, "demo", lab["demo_build_plan"], image)
        servers = {m["mpHostInfo"]["mpHostName"]: m for m in api.get("/rest/server-hardware").json()["members"]}
    network = ipaddress.IPv4Network(lab["provisioning_network"])
    # One server of each firmware: the same image boots through extlinux on one and through its
    # EFI system partition on the other.
    chosen = [next(vm for vm in lab["servers"] if vm["firmware"] == firmware) for firmware in ("bios", "uefi")]
    wanted = {vm["name"]: {"name": vm["name"], "hostname": f"deployed-{vm['name']}",
                           "address": str(network.network_address + 240 + i),
                           "server": servers[vm["bmc"]["address"]], "serial_log": Path(vm["serial_log"])}
              for i, vm in enumerate(chosen)}
    ov = OneViewClient({"ip": lab["url"].removeprefix("https://"),
                        "credentials": {"userName": lab["admin"]["user"], "password": lab["admin"]["password"]},
                        "api_version": 4600})
    errors: dict[str, BaseException] = {}

    def deploy(name: str, want: dict[str, Any]) -> None:
        try:
            want["profile"] = ov.server_profiles.create({
                "type": "ServerProfileV12", "name": f"profile-{name}", "serverHardwareUri": want["server"]["uri"],
                "osDeploymentSettings": {"osDeploymentPlanUri": osdp, "osCustomAttributes": [
                    {"name": "Hostname", "value": want["hostname"]}, {"name": "Address", "value": want["address"]}]}},
                timeout=DEPLOY_TIMEOUT_S).data
        except BaseException as exc:  # reported below, with the server's name
            errors[name] = exc

    threads = [threading.Thread(target=deploy, args=item) for item in wanted.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEPLOY_TIMEOUT_S + 60)
    for name, want in wanted.items():
        shutil.copyfile(want["serial_log"], artifacts_dir / f"e2e-deploy-{name}.serial.log")
    assert not errors, errors
    for want in wanted.values():
        profile = want["profile"]
        assert profile["osDeploymentSettings"]["osVolumeUri"].startswith("/rest/os-volumes/"), profile
        assert ov.server_hardware.get_by_uri(want["server"]["uri"]).data["provisionState"] == "deployed"
        found = demo_plans.wait_for_line(want["serial_log"], 300)
        line = found.group(0)
        assert found.group(1) == want["hostname"], line  # exactly the personalized values
        ipv4 = [a for a in found.group(2).split(",") if "." in a]  # (IPv6: the lab's router advertisements)
        assert ipv4 == [f"{want['address']}/24"], line  # the static address only: DHCP is off
        want["machine_id"] = found.group(3)
        assert found.group(4) == f"{want['hostname']}/{found.group(3)}", line  # the file its first boot wrote
    assert len({w["machine_id"] for w in wanted.values()}) == len(wanted)  # each server made its own
    lab["deployed"] = {firmware: wanted[vm["name"]] for firmware, vm in zip(("bios", "uefi"), chosen, strict=True)}


def test_a_captured_server_deployed_to_another_carries_its_files_not_its_identity(
        lab: dict[str, Any], artifacts_dir: Path) -> None:
    """Server 1 (deployed above) is captured through a capture build plan that generalizes the copy,
    and the new golden image is deployed to server 2: server 2 has the file server 1 wrote on its
    first boot, but its own host name, address and machine-id; server 1 runs on as itself."""
    first = lab.get("deployed", {}).get("bios")
    assert first is not None, "the deploy test runs first and deploys a BIOS server"
    second = next(vm for vm in lab["servers"] if vm["firmware"] == "bios" and vm["name"] != first["name"])
    network = ipaddress.IPv4Network(lab["provisioning_network"])
    hostname, address = f"deployed-{second['name']}", str(network.network_address + 242)
    serial1, serial2 = first["serial_log"], Path(second["serial_log"])
    with contextlib.closing(api_client(lab)) as api:
        generalize = demo_plans.generalize_plan(api)
        seen = serial1.stat().st_size
        r = api.post("/rest/golden-images", json=demo_plans.capture_body("captured-demo", first["server"]["uri"],
                                                                         generalize))
        assert r.status_code == 202, r.text
        task = demo_plans.wait_for_task(api, r.json()["uri"], CAPTURE_TIMEOUT_S)
        shutil.copyfile(serial1, artifacts_dir / "e2e-capture-server1.serial.log")
        assert task["taskState"] == "Completed", task["taskErrors"]
        assert [c["name"] for c in task["childTasks"]] == ["Boot the deploy agent", "Read the disk",
                                                           "Boot the operating system"]
        image = api.get(task["associatedResource"]["resourceUri"]).json()
        assert image["imageCapture"] is True and image["buildPlanUri"] == generalize
        assert api.get(first["server"]["uri"]).json()["provisionState"] == "deployed"
        osdp = demo_plans.deployment_plan(api, "captured demo", lab["demo_build_plan"], image["uri"])
        servers = {m["mpHostInfo"]["mpHostName"]: m for m in api.get("/rest/server-hardware").json()["members"]}
        r = api.post("/rest/server-profiles", json=demo_plans.profile_body(
            f"profile-{second['name']}", servers[second["bmc"]["address"]]["uri"], osdp, hostname, address))
        assert r.status_code == 202, r.text
        deployed = demo_plans.wait_for_task(api, r.json()["uri"], DEPLOY_TIMEOUT_S)
        shutil.copyfile(serial2, artifacts_dir / "e2e-capture-server2.serial.log")
        assert deployed["taskState"] == "Completed", deployed["taskErrors"]
    # Server 1 booted its own disk again after the capture, as itself.
    again = demo_plans.wait_for_line(serial1, 300, after=seen)
    assert (again.group(1), again.group(3)) == (first["hostname"], first["machine_id"]), again.group(0)
    # Server 2: server 1's file, its own identity.
    found = demo_plans.wait_for_line(serial2, 300)
    line = found.group(0)
    assert found.group(4) == f"{first['hostname']}/{first['machine_id']}", line  # written on server 1
    assert found.group(1) == hostname and found.group(3) != first["machine_id"], line
    assert [a for a in found.group(2).split(",") if "." in a] == [f"{address}/24"], line


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
