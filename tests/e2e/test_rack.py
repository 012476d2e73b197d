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
console carries exactly the personalized values; the profiles have their osVolumeUri.
Then ``ingot lab down`` must leave no namespace, interface, process or file behind.

Boot timings per phase are written to test-artifacts/e2e-rack-timings.json; serial logs are
copied there too when a boot fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hpeOneView.oneview_client import OneViewClient

from lab import rack
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


HOSTNAME_SCRIPT = "mount /dev/sda1 /\nupload -<<END /etc/hostname\n@Hostname@\nEND\n"
NETWORK_SCRIPT = ("upload -<<END /etc/systemd/network/20-wired.network\n[Match]\nName=en* eth*\n\n[Network]\n"
                  "Address=@Address@/@Prefix:24@\nDHCP=no\nEND\numount /\n")
DEMO_LINE = re.compile(r"INGOT-DEMO booted hostname=(\S+) addresses=(\S+) machine_id=([0-9a-f]{32}) ")
DEPLOY_TIMEOUT_S = 900.0  # two servers at once under TCG: clone, guestfish, 1 GiB over virtio, two boots


def api_client(lab: dict[str, Any]) -> httpx.Client:
    api = httpx.Client(base_url=lab["url"], verify=ssl.create_default_context(cafile=lab["ca_cert"]), timeout=120,
                       headers={"X-API-Version": "4600"})
    login = api.post("/rest/login-sessions", json={"userName": lab["admin"]["user"],
                                                   "password": lab["admin"]["password"]})
    assert login.status_code == 200, login.text
    api.headers["auth"] = login.json()["sessionID"]
    return api


def wait_for_task(api: httpx.Client, uri: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = api.get(uri).json()
        if task["taskState"] not in ("New", "Starting", "Pending", "Running", "Stopping"):
            return task
        assert time.monotonic() < deadline, f"{uri} still {task['taskState']}: {task['taskStatus']}"
        time.sleep(1)


def deployment_plan(api: httpx.Client, image_path: Path) -> str:
    """The demo golden image, two plan scripts, a build plan and a deployment plan; its OneView URI."""
    with image_path.open("rb") as f:
        upload = api.post("/rest/golden-images", params={"name": "demo", "description": "lab demo disk"},
                          files={"file": ("demo.qcow2", f, "application/octet-stream")})
    assert upload.status_code == 202, upload.text
    image = wait_for_task(api, upload.headers["location"], 600)
    assert image["taskState"] == "Completed", image["taskErrors"]
    scripts = [api.post("/rest/plan-scripts", json={"name": name, "description": "", "planType": "deploy",
                                                     "content": content}).json()
               for name, content in (("hostname", HOSTNAME_SCRIPT), ("network", NETWORK_SCRIPT))]
    build = api.post("/rest/build-plans", json={
        "name": "demo personalize", "description": "", "oeBuildPlanType": "deploy",
        "buildStep": [{"serialNumber": str(n), "planScriptUri": s["uri"], "parameters": ""}
                      for n, s in enumerate(scripts, 1)],
        "customAttributes": [
            {"name": "Hostname", "type": "hostname", "value": "", "description": "", "constraints": "{}"},
            {"name": "Address", "type": "ipv4", "value": "", "description": "", "constraints": "{}"},
            {"name": "Prefix", "type": "number", "value": "24", "description": "",
             "constraints": json.dumps({"minimum": 8, "maximum": 30})}]})
    assert build.status_code == 201, build.text
    plan = api.post("/rest/deployment-plans", json={
        "name": "demo", "description": "", "oeBuildPlanURI": build.json()["uri"],
        "goldenImageURI": image["associatedResource"]["resourceUri"]})
    assert plan.status_code in (201, 202), plan.text
    return f"/rest/os-deployment-plans/{plan.json()['id']}"


def test_sdk_profiles_deploy_personalized_servers_that_boot_from_their_own_disks(
        lab: dict[str, Any], artifacts_dir: Path) -> None:
    disk = build_demo_disk(artifacts_dir / "cache" / "lab-images")
    with contextlib.closing(api_client(lab)) as api:
        osdp = deployment_plan(api, disk.path)
        servers = {m["mpHostInfo"]["mpHostName"]: m for m in api.get("/rest/server-hardware").json()["members"]}
    network = ipaddress.IPv4Network(lab["provisioning_network"])
    # One server of each firmware: the same image boots through extlinux on one and through its
    # EFI system partition on the other.
    chosen = [next(vm for vm in lab["servers"] if vm["firmware"] == firmware) for firmware in ("bios", "uefi")]
    wanted = {vm["name"]: {"hostname": f"deployed-{vm['name']}", "address": str(network.network_address + 240 + i),
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
        line = wait_for_line(want["serial_log"], DEMO_LINE, 300)
        found = DEMO_LINE.search(line)
        assert found, line
        assert found.group(1) == want["hostname"], line  # exactly the personalized values
        ipv4 = [a for a in found.group(2).split(",") if "." in a]  # (IPv6: the lab's router advertisements)
        assert ipv4 == [f"{want['address']}/24"], line  # the static address only: DHCP is off
    machine_ids = {DEMO_LINE.search(wait_for_line(w["serial_log"], DEMO_LINE, 1)).group(3)  # type: ignore[union-attr]
                   for w in wanted.values()}
    assert len(machine_ids) == len(wanted)  # each server made its own on its first boot


def wait_for_line(path: Path, pattern: re.Pattern[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        lines = [line for line in text.splitlines() if pattern.search(line)]
        if lines:
            return lines[-1]
        assert time.monotonic() < deadline, f"no {pattern.pattern!r} in {path} after {timeout:.0f} s"
        time.sleep(1)


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
