"""The OS build plans the demo golden image (lab/images.py) is deployed and captured with, made
through the REST API as staff would make them: ``make demo`` and the lab's end-to-end test use
these same plans.

* **demo personalize** (deploy): a plan script writes ``/etc/hostname`` from ``@Hostname@``, another
  a systemd-networkd file with the static ``@Address@/@Prefix:24@`` (DHCP off).
* **demo generalize** (capture): what made the copy one machine goes: the host name (back to the
  image's), ``/etc/machine-id`` (emptied: each new server makes its own on its first boot), SSH host
  keys, the static address (back to DHCP), the journal and the random seed. What was written on
  the server stays.

The demo disk's report line (``INGOT-DEMO booted ...``, :data:`DEMO_LINE`) shows on each boot
the host name, addresses, machine-id and who first booted the disk, so both plans can be seen at
work on the serial console.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx

from lab.images import DEMO_HOSTNAME

HOSTNAME_SCRIPT = "mount /dev/sda1 /\nupload -<<END /etc/hostname\n@Hostname@\nEND\n"
NETWORK_SCRIPT = ("upload -<<END /etc/systemd/network/20-wired.network\n[Match]\nName=en* eth*\n\n[Network]\n"
                  "Address=@Address@/@Prefix:24@\nDHCP=no\nEND\numount /\n")
GENERALIZE_SCRIPT = (f"mount /dev/sda1 /\nupload -<<END /etc/hostname\n{DEMO_HOSTNAME}\nEND\n"
                     "write /etc/machine-id \"\"\n"
                     "upload -<<END /etc/systemd/network/20-wired.network\n[Match]\nName=en* eth*\n\n[Network]\n"
                     "DHCP=yes\nEND\nglob rm-f /etc/ssh/ssh_host_*\nglob rm-rf /var/log/journal/*\n"
                     "rm-f /var/lib/systemd/random-seed\numount /\n")
DEMO_LINE = re.compile(r"INGOT-DEMO booted hostname=(\S+) addresses=(\S+) machine_id=([0-9a-f]{32}) .*"
                       r"first_boot=(\S+)")
ACTIVE = ("New", "Starting", "Pending", "Running", "Stopping")


class PlanError(RuntimeError):
    """The appliance refused a step or a task failed; the message has its answer."""


def wait_for_task(api: httpx.Client, uri: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = api.get(uri).json()
        if task["taskState"] not in ACTIVE:
            return task
        if time.monotonic() > deadline:
            raise PlanError(f"{uri} still {task['taskState']} after {timeout:.0f} s: {task.get('taskStatus')}")
        time.sleep(0.5)


def task_error(task: dict[str, Any]) -> str:
    """What a failed task says: its errors' messages, else its state."""
    return "; ".join(str(e.get("message")) for e in task.get("taskErrors") or []) or task["taskState"]


def _created(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code not in (200, 201, 202):
        raise PlanError(f"creating {what} was refused: {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def upload_golden_image(api: httpx.Client, image: Path, name: str = "demo", timeout: float = 600) -> str:
    """Upload the demo disk as a golden image; its URI."""
    with image.open("rb") as f:
        upload = api.post("/rest/golden-images", params={"name": name, "description": "lab demo disk"},
                          files={"file": (image.name, f, "application/octet-stream")})
    _created(upload, f"the golden image {name}")
    task = wait_for_task(api, upload.headers["location"], timeout)
    if task["taskState"] != "Completed":
        raise PlanError(f"the upload of {name} failed: {task['taskErrors']}")
    return str(task["associatedResource"]["resourceUri"])


def _build_plan(api: httpx.Client, name: str, kind: str, scripts: dict[str, str],
                attributes: list[dict[str, Any]]) -> str:
    uris = [_created(api.post("/rest/plan-scripts", json={
        "name": script, "description": "", "planType": kind, "content": content}), f"the plan script {script}")["uri"]
        for script, content in scripts.items()]
    build = _created(api.post("/rest/build-plans", json={
        "name": name, "description": "", "oeBuildPlanType": kind, "customAttributes": attributes,
        "buildStep": [{"serialNumber": str(n), "planScriptUri": uri, "parameters": ""}
                      for n, uri in enumerate(uris, 1)]}), f"the build plan {name}")
    return str(build["uri"])


def personalize_plan(api: httpx.Client) -> str:
    """The deploy build plan (host name, static address); its URI."""
    return _build_plan(api, "demo personalize", "deploy", {"hostname": HOSTNAME_SCRIPT, "network": NETWORK_SCRIPT}, [
        {"name": "Hostname", "type": "hostname", "value": "", "description": "", "constraints": "{}"},
        {"name": "Address", "type": "ipv4", "value": "", "description": "", "constraints": "{}"},
        {"name": "Prefix", "type": "number", "value": "24", "description": "",
         "constraints": json.dumps({"minimum": 8, "maximum": 30})}])


def generalize_plan(api: httpx.Client) -> str:
    """The capture build plan; its URI."""
    return _build_plan(api, "demo generalize", "capture", {"generalize": GENERALIZE_SCRIPT}, [])


def deployment_plan(api: httpx.Client, name: str, build_plan: str, golden_image: str) -> str:
    """A deployment plan of ``build_plan`` and ``golden_image``; its OneView URI (what a server
    profile's ``osDeploymentPlanUri`` names)."""
    plan = _created(api.post("/rest/deployment-plans", json={
        "name": name, "description": "", "oeBuildPlanURI": build_plan, "goldenImageURI": golden_image}),
        f"the deployment plan {name}")
    return f"/rest/os-deployment-plans/{plan['id']}"


def profile_body(name: str, server_uri: str, osdp: str, hostname: str, address: str) -> dict[str, Any]:
    return {"type": "ServerProfileV12", "name": name, "serverHardwareUri": server_uri,
            "osDeploymentSettings": {"osDeploymentPlanUri": osdp, "osCustomAttributes": [
                {"name": "Hostname", "value": hostname}, {"name": "Address", "value": address}]}}


def capture_body(name: str, server_uri: str, build_plan: str) -> dict[str, Any]:
    return {"type": "GoldenImage", "name": name, "description": "captured from a running server",
            "imageCapture": True, "serverHardwareUri": server_uri, "buildPlanUri": build_plan}


def wait_for_line(path: Path, timeout: float, after: int = 0) -> re.Match[str]:
    """The last demo report line in a lab server's serial log from byte ``after`` on, waiting for
    one (the log lives as long as the server's QEMU process: power cycles append to it)."""
    deadline = time.monotonic() + timeout
    while True:
        text = ""
        try:
            with path.open("rb") as f:
                f.seek(after)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            pass
        found = [m for m in (DEMO_LINE.search(line) for line in text.splitlines()) if m]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise PlanError(f"no INGOT-DEMO report in {path} after {timeout:.0f} s")
        time.sleep(1)
