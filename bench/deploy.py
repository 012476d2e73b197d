"""Deploy on the emulated rack: apply → deployed for one server, then for three at once, one run.

    .venv/bin/python -m bench.deploy [--servers 3] [--timeout 2400] [--home DIR] [--cache DIR]

Needs root and what ``make demo`` needs (QEMU, the lab's image builders). Brings up a lab of
``--servers`` BIOS servers (lab/rack.py; a private namespace, nothing on the machine's own
interfaces), enrolls and inspects them (lab/demo.py), uploads the demo golden image and the demo
personalize plan (lab/demo_plans.py), then:

1. **One server**: a server profile for the first server; the time from the ``POST`` to its task
   ``Completed`` (the server is ``deployed``: the image written, the server power cycled into it),
   and to its own report on its serial console (the OS up, with its host name and address).
   Then the profile is deleted (the server released and erased) and is available again.
2. **All at once**: a profile for every server, posted together; the same times per server and
   the wall time until the last one is deployed.

Peer: the same deploys one after another, i.e. ``servers`` times the single deploy's time. The ratio
(peer / parallel wall time) is the speed-up of deploying together; divided by the number of
servers it is the parallel efficiency. ``provisioning.parallel_builds`` (printed) bounds how many
deploys build their images at once; under TCG on two cores the servers' own boots compete for the
same CPUs, so the efficiency says what this machine allows, not what real servers would.

Not measured yet: the agent's image-write throughput against ``curl | dd`` in the same ramdisk.

The machine's facts are printed first and the load average at the end; timings are reported,
never asserted. The lab is taken down at the end, on Ctrl-C and on SIGTERM. Exit status 1 if a
step fails or the run passes ``--timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from appliance.config import ProvisioningSettings
from bench.common import Terminated, load_average
from lab import demo_plans, rack
from lab.demo import Server, boot_all
from lab.images import build_demo_disk

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Timing:
    server: str
    deployed_s: float
    reported_s: float


def _deploy(api: httpx.Client, servers: list[dict[str, Any]], osdp: str, network: str, tag: str,
            timeout: float) -> tuple[list[Timing], float]:
    """Post a profile per server at once; per-server times and the wall time to the last deployed."""
    base = network.rsplit(".", 1)[0]
    started = time.monotonic()
    tasks = {}
    for i, server in enumerate(servers):
        seen = Path(server["serial_log"]).stat().st_size
        r = api.post("/rest/server-profiles", json=demo_plans.profile_body(
            f"{tag}-{server['name']}", server["uri"], osdp, f"{tag}-{server['name']}", f"{base}.{180 + i}"))
        if r.status_code != 202:
            raise demo_plans.PlanError(f"the profile for {server['name']} was refused: {r.text[:300]}")
        tasks[server["name"]] = (r.json()["uri"], seen)
    done: dict[str, float] = {}
    while len(done) < len(tasks):
        for name, (uri, _) in tasks.items():
            if name in done:
                continue
            task = api.get(uri).json()
            if task["taskState"] in demo_plans.ACTIVE:
                continue
            if task["taskState"] != "Completed":
                raise demo_plans.PlanError(f"deploying {name} failed: {task['taskErrors']}")
            done[name] = time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise demo_plans.PlanError(f"not every server was deployed within {timeout:.0f} s")
        time.sleep(0.5)
    wall = max(done.values())
    timings = []
    for server in servers:
        line = demo_plans.wait_for_line(Path(server["serial_log"]), 300, after=tasks[server["name"]][1])
        if line.group(1) != f"{tag}-{server['name']}":
            raise demo_plans.PlanError(f"{server['name']} reports {line.group(0)}")
        timings.append(Timing(server["name"], done[server["name"]], time.monotonic() - started))
    return timings, wall


def _release(api: httpx.Client, profile_name: str, timeout: float) -> None:
    found = api.get("/rest/server-profiles", params={"filter": f"name='{profile_name}'"}).json()["members"]
    r = api.delete(found[0]["uri"])
    task = demo_plans.wait_for_task(api, r.json()["uri"], timeout)
    if task["taskState"] != "Completed":
        raise demo_plans.PlanError(f"deleting {profile_name} failed: {task['taskErrors']}")


def run(args: argparse.Namespace) -> int:
    run_started = time.monotonic()
    print(f"machine: {os.cpu_count()} CPUs, kernel {os.uname().release}, load average {load_average()}")
    builds = ProvisioningSettings().parallel_builds  # the lab's appliance runs on the defaults
    state = rack.up(args.home, name="ingot-bench", servers=args.servers, uefi=0, cache=args.cache,
                    say=lambda line: None)
    try:
        with httpx.Client(base_url=state["url"], verify=ssl.create_default_context(cafile=state["ca_cert"]),
                          timeout=120, headers={"X-API-Version": "4600"}) as api:
            login = api.post("/rest/login-sessions", json={"userName": state["admin"]["user"],
                                                           "password": state["admin"]["password"]})
            api.headers["auth"] = login.json()["sessionID"]
            servers = [Server(s["name"], s["firmware"], s["bmc"], s["macs"][0].lower(), Path(s["serial_log"]))
                       for s in state["servers"]]
            boot_all(api, servers)
            if not all(s.inspected for s in servers):
                print(f"inspection failed: {[s.error for s in servers if not s.inspected]}")
                return 1
            listed = [{"name": s.name, "uri": s.uri, "serial_log": str(s.serial_log)} for s in servers]
            image = demo_plans.upload_golden_image(api, build_demo_disk(args.cache, log=lambda line: None).path)
            osdp = demo_plans.deployment_plan(api, "demo", demo_plans.personalize_plan(api), image)
            left = args.timeout - (time.monotonic() - run_started)
            single, single_wall = _deploy(api, listed[:1], osdp, state["provisioning_network"], "one", left)
            _release(api, f"one-{listed[0]['name']}", args.timeout)
            left = args.timeout - (time.monotonic() - run_started)
            together, wall = _deploy(api, listed, osdp, state["provisioning_network"], "all", left)
    finally:
        rack.down(args.home, name="ingot-bench", say=lambda line: None)
    print(f"\n  deploy of the demo golden image ({len(listed)} BIOS servers, TCG; provisioning.parallel_builds "
          f"{builds})   apply → deployed s   apply → OS report s")
    for label, timings in (("one server", single), ("all at once", together)):
        for t in timings:
            print(f"  {label:<12} {t.server:<10} {t.deployed_s:>30.1f} {t.reported_s:>21.1f}")
    peer = len(listed) * single_wall
    print(f"\n  one after another (peer, {len(listed)} x {single_wall:.1f} s): {peer:.1f} s; all at once: {wall:.1f} s")
    print(f"  speed-up {peer / wall:.2f}x, parallel efficiency {peer / wall / len(listed):.2f}")
    print(f"  run took {time.monotonic() - run_started:.0f} s; load average at the end {load_average()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=3, choices=range(2, 7), help="lab servers (2-6)")
    parser.add_argument("--timeout", type=float, default=2400.0, help="seconds for the whole run")
    parser.add_argument("--home", type=Path, default=None, help="where the lab lives (default: a temporary dir)")
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "lab" / "cache",
                        help="built lab images, kept between runs (default: make demo's, %(default)s)")
    args = parser.parse_args(argv)

    def stop(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, stop)
    with contextlib.ExitStack() as stack:
        if args.home is None:
            args.home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ingot-bench-deploy-")))
        try:
            return run(args)
        except (demo_plans.PlanError, rack.LabError, Terminated) as exc:
            print(f"bench.deploy: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
