"""OS build plans run against OS volumes by a live ``ingot serve`` with the real guestfish (TCG):
``POST /rest/os-volumes/{id}/personalize`` with a deployment plan and values (layered, validated,
tokens substituted) writes the files HPE-style plan scripts upload; the run's log, password masked,
is at ``/rest/os-volumes/archive/{id}``; bad values are 400s naming the attribute; a failing script
fails the task with its name and line. A capture with a capture build plan runs it on an overlay:
the golden image has the plan's marker file and the OS volume does not.

Every guestfish launch costs ~12 s under TCG, so the ext4 golden disk is made once for the module,
and each test reads everything back in one read-only session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import LiveAppliance
from tests.support.requirements import require_tools
from tests.support.runner import wait_task

# What runs here is guestfish on volumes, the same on either database (the plan resources are
# tested on both in test_plans_api), and each guestfish launch costs ~12 s under TCG.
pytestmark = [pytest.mark.slow, pytest.mark.one_backend]


@pytest.fixture(autouse=True, scope="module")
def _installed() -> None:
    require_tools("guestfish", "qemu-img")

PASSWORD = "Secr3t-r00t-pw"
MAC = "52:54:00:12:34:56"
TASK_TIMEOUT = 300.0

MOUNT = "mount /dev/sda1 /\n"
HOSTNAME = "upload -<<END /etc/hostname\n@Hostname@\nEND\necho ssh is @SSH@\n"
NETWORK = ("mkdir-p /etc/network\nupload -<<END /etc/network/mgmt.conf\naddress=@ManagementNIC.ipaddress@\n"
           "netmask=@ManagementNIC.netmask@\ngateway=@ManagementNIC.gateway@\nhwaddress=@ManagementNIC.mac@\nEND\n")
USERS = "mkdir-p /root\nupload -<<END /root/firstboot.sh\necho 'root:@RootPassword@' | chpasswd\nEND\n"
UMOUNT = "umount /\n"
FAILING = "mount /dev/sda1 /\necho about to fail\ncat /no/such/file\numount /\n"
CAPTURE = "mount /dev/sda1 /\nupload -<<END /ImageStreamerCapture\ncaptured by @CapturedBy:ingot@\nEND\numount /\n"

ATTRIBUTES = [
    {"name": "Hostname", "type": "hostname", "value": "", "description": "", "constraints": "{}"},
    {"name": "SSH", "type": "option", "value": "enabled", "description": "",
     "constraints": "{\"options\":[\"enabled\",\"disabled\"]}"},
    {"name": "RootPassword", "type": "password", "value": "", "description": "", "constraints": "{\"minlen\":8}"},
    {"name": "ManagementNIC", "type": "nic", "value": "", "description": "",
     "constraints": "{\"ipv4static\":true,\"parameters\":[\"ipaddress\",\"netmask\",\"gateway\",\"mac\"]}"},
]


def gf_env(cache: Path) -> dict[str, str]:
    cache.mkdir(parents=True, mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBGUESTFS_")}
    env.update(LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg", LIBGUESTFS_CACHEDIR=str(cache))
    return env


def guestfish(cache: Path, disks: list[Path], commands: list[str], *, ro: bool) -> str:
    argv = ["guestfish", "--ro" if ro else "--rw"]
    for disk in disks:
        argv += ["--format=qcow2", "-a", str(disk)]
    done = subprocess.run(argv, input="\n".join(["run", *commands, ""]), capture_output=True, text=True,
                          env=gf_env(cache), timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def ext4_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("personalize")
    disk = root / "golden-ext4.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True, timeout=30)
    guestfish(root / "cache", [disk], ["part-disk /dev/sda mbr", "mkfs ext4 /dev/sda1", "mount /dev/sda1 /",
                                       "mkdir-p /etc", 'write /etc/hostname "golden\\n"', "umount /"], ro=False)
    return disk


def read_back(live: LiveAppliance, disks: list[Path], wanted: list[str], out: Path) -> dict[tuple[int, str], str]:
    """Each file of ``wanted`` from the first partition of each disk, in one read-only session
    (missing files read as None); uses the appliance's own supermin cache (built already)."""
    out.mkdir()
    commands: list[str] = []
    for n, _ in enumerate(disks):
        commands.append(f"mount-ro /dev/sd{'abcdefgh'[n]}1 /")
        commands += [f"-download {path} {out}/{n}-{i}" for i, path in enumerate(wanted)]
        commands.append("umount /")
    guestfish(live.home / "guestfish" / "guestfs-cache", disks, commands, ro=True)
    found = {}
    for n, _ in enumerate(disks):
        for i, path in enumerate(wanted):
            local = out / f"{n}-{i}"
            if local.exists():
                found[(n, path)] = local.read_text()
    return found


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return response.json()  # type: ignore[no-any-return]


def finished(api: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return wait_task(api, {}, response.headers["location"], timeout=TASK_TIMEOUT)  # type: ignore[arg-type]


def script(api: httpx.Client, name: str, plan_type: str, content: str) -> dict[str, Any]:
    return created(api.post("/rest/plan-scripts", json={"type": "PlanScript", "name": name, "description": "",
                                                        "planType": plan_type, "content": content}))


def build_plan(api: httpx.Client, name: str, plan_type: str, scripts: list[dict[str, Any]],
               attributes: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [{"serialNumber": str(n), "planScriptUri": s["uri"], "parameters": ""} for n, s in enumerate(scripts, 1)]
    return created(api.post("/rest/build-plans", json={"name": name, "description": "", "oeBuildPlanType": plan_type,
                                                       "buildStep": steps, "customAttributes": attributes}))


def volume_from(api: httpx.Client, live: LiveAppliance, disk: Path, name: str) -> tuple[dict[str, Any], Path]:
    with disk.open("rb") as f:
        upload = api.post("/rest/golden-images", params={"name": f"{name}-golden"},
                          files={"file": ("golden.qcow2", f, "application/octet-stream")}, timeout=120)
    task = finished(api, upload)
    assert task["taskState"] == "Completed", task
    image_uri = task["associatedResource"]["resourceUri"]
    task = finished(api, api.post("/rest/os-volumes", json={"name": name, "goldenImageUri": image_uri}))
    assert task["taskState"] == "Completed", task
    volume = api.get(task["associatedResource"]["resourceUri"]).json()
    return volume, live.home / "images" / "volumes" / f"{volume['id']}.qcow2"


def test_personalize_layers_values_logs_masked_and_fails_with_script_and_line(
        live: LiveAppliance, ext4_disk: Path, tmp_path: Path) -> None:
    api = live.client(live.login())
    volume, volume_path = volume_from(api, live, ext4_disk, "node-17-os")
    archive = f"/rest/os-volumes/archive/{volume['id']}"
    assert api.get(archive).status_code == 404  # nothing run yet

    scripts = [script(api, "mount", "general", MOUNT), script(api, "hostname", "deploy", HOSTNAME),
               script(api, "network", "deploy", NETWORK), script(api, "users", "deploy", USERS),
               script(api, "umount", "general", UMOUNT)]
    bp = build_plan(api, "linux deploy", "deploy", scripts, ATTRIBUTES)
    dp = created(api.post("/rest/deployment-plans", json={
        "name": "linux", "description": "", "oeBuildPlanURI": bp["uri"], "customAttributes": [
            {"name": "Hostname", "value": "dp-host"},
            {"name": "SSH", "value": "disabled", "editable": False},
            {"name": "ManagementNIC", "value": {"ipaddress": "10.0.0.99", "netmask": "255.255.255.0",
                                                "gateway": "10.0.0.1"}},
        ]}))
    personalize = f"/rest/os-volumes/{volume['id']}/personalize"
    values = [{"name": "Hostname", "value": "node-17"}, {"name": "RootPassword", "value": PASSWORD}]
    nic = [{"name": "ManagementNIC.ipaddress", "value": "10.0.0.17"}, {"name": "ManagementNIC.mac", "value": MAC}]

    # Refusals at request time: a bad value, a non-editable attribute, a missing required value.
    bad = api.post(personalize, json={"deploymentPlanUri": dp["uri"],
                                      "customAttributes": [{"name": "Hostname", "value": "bad_host!"}]})
    assert bad.status_code == 400 and "Hostname" in bad.json()["message"], bad.text
    locked = api.post(personalize, json={"deploymentPlanUri": dp["uri"],
                                         "customAttributes": [*values, {"name": "SSH", "value": "enabled"}]})
    assert locked.status_code == 400 and "SSH" in locked.json()["message"], locked.text
    missing = api.post(personalize, json={"deploymentPlanUri": dp["uri"], "customAttributes": values[:1]})
    assert missing.status_code == 400 and "RootPassword" in missing.json()["message"], missing.text
    # Refused while the volume is exported over NBD (its server may be writing it).
    assert api.post(f"/rest/os-volumes/{volume['id']}/nbd").status_code == 201
    busy = api.post(personalize, json={"deploymentPlanUri": dp["uri"], "customAttributes": values})
    assert busy.status_code == 409, busy.text
    assert api.delete(f"/rest/os-volumes/{volume['id']}/nbd").status_code == 204

    task = finished(api, api.post(personalize, json={"deploymentPlanUri": dp["uri"], "customAttributes": values,
                                                     "osCustomAttributes": nic}))
    assert task["taskState"] == "Completed", task
    assert task["associatedResource"]["resourceUri"] == volume["uri"]
    assert any("guestfish" in p["statusUpdate"] for p in task["progressUpdates"]), task["progressUpdates"]

    log = api.get(archive)
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    assert "upload -<<END /etc/hostname" in log.text and "node-17" in log.text and "ssh is disabled" in log.text
    assert "echo 'root:********' | chpasswd" in log.text and PASSWORD not in log.text

    # A failing script fails the task with its name and line; its log replaces the archive.
    failing = build_plan(api, "failing deploy", "deploy", [script(api, "fail", "deploy", FAILING)], [])
    dp_fail = created(api.post("/rest/deployment-plans", json={"name": "fails", "description": "",
                                                               "oeBuildPlanURI": failing["uri"]}))
    task = finished(api, api.post(personalize, json={"deploymentPlanUri": dp_fail["uri"]}))
    assert task["taskState"] == "Error", task
    error = task["taskErrors"][0]
    assert "script fail, line 3" in error["message"] and "/no/such/file" in error["message"], error
    assert "PLAN FAILED" in api.get(archive).text

    files = read_back(live, [volume_path], ["/etc/hostname", "/etc/network/mgmt.conf", "/root/firstboot.sh"],
                      tmp_path / "readback")
    assert files[(0, "/etc/hostname")] == "node-17\n"
    assert files[(0, "/etc/network/mgmt.conf")] == (
        f"address=10.0.0.17\nnetmask=255.255.255.0\ngateway=10.0.0.1\nhwaddress={MAC}\n")
    assert files[(0, "/root/firstboot.sh")] == f"echo 'root:{PASSWORD}' | chpasswd\n"

    assert api.delete(volume["uri"]).status_code == 204
    assert not (live.home / "images" / "logs" / f"volume-{volume['id']}.log").exists()
    api.close()


def test_capture_runs_the_capture_plan_on_an_overlay(live: LiveAppliance, ext4_disk: Path, tmp_path: Path) -> None:
    api = live.client(live.login())
    volume, volume_path = volume_from(api, live, ext4_disk, "node-9-os")
    before = volume_path.stat().st_mtime_ns
    images = "/rest/golden-images"

    def capture(name: str, plan: dict[str, Any]) -> dict[str, Any]:
        return finished(api, api.post(images, json={"name": name, "imageCapture": True, "osVolumeURI": volume["uri"],
                                                    "buildPlanUri": plan["uri"]}))

    # Refused before anything runs: a shell escape (off by default) fails the task, nothing is published.
    refused = capture("never", build_plan(api, "shell capture", "capture",
                                          [script(api, "shell", "capture", "!echo hi\n")], []))
    assert refused["taskState"] == "Error" and "script shell, line 1" in refused["taskErrors"][0]["message"]
    # HPE's "capture OS Volume as is": no steps, no guestfish.
    as_is = capture("as-is", build_plan(api, "as is", "capture", [], []))
    assert as_is["taskState"] == "Completed", as_is
    assert "no plan steps" in api.get(f"{images}/archive/{as_is['associatedResource']['resourceUri'].split('/')[-1]}"
                                      ).text

    task = capture("generalized", build_plan(api, "generalize", "capture",
                                             [script(api, "marker", "capture", CAPTURE)], []))
    assert task["taskState"] == "Completed", task
    image = api.get(task["associatedResource"]["resourceUri"]).json()
    log = api.get(f"{images}/archive/{image['id']}").text
    assert "upload -<<END /ImageStreamerCapture" in log and "captured by ingot" in log
    assert sorted(i["name"] for i in api.get(images).json()["members"]) == [
        "as-is", "generalized", "node-9-os-golden"]

    assert volume_path.stat().st_mtime_ns == before  # the plan wrote the overlay, not the volume
    golden = live.home / "images" / "golden" / f"{image['checkSum']}.qcow2"
    files = read_back(live, [golden, volume_path], ["/ImageStreamerCapture", "/etc/hostname"], tmp_path / "readback")
    assert files[(0, "/ImageStreamerCapture")] == "captured by ingot\n"
    assert files[(0, "/etc/hostname")] == files[(1, "/etc/hostname")] == "golden\n"
    assert (1, "/ImageStreamerCapture") not in files
    assert not list((live.home / "images" / "incoming").iterdir())  # the overlay is gone
    api.close()
