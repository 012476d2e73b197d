"""Power-status sweep of a fleet of simulated BMCs: Ingot versus ipmitool, in one run.

    .venv/bin/python -m bench.power_sweep [--count 500] [--dead 50] [--parallel 16]

What runs (all on loopback addresses inside 127.0.0.0/8, nothing else):
- two ``python -m lab.bmc`` fleets (pyghmi-based IPMI 2.0 BMCs): COUNT-DEAD BMCs that stay up,
  and DEAD BMCs that are stopped (by PID) for the second half;
- ``ingot serve`` on a temporary INGOT_HOME, with COUNT servers enrolled through the REST API.

Peers, same BMCs, same question ("chassis power status"):
- a sequential loop of ``ipmitool -I lanplus -C 3`` (one process per BMC, as scripts do it);
- ``xargs -P PARALLEL ipmitool …``.

Ingot is measured from the client's side: POST /rest/server-hardware/power-sync until the task
is finished (polled every 20 ms), which includes the API, the task runner and the database
write of every reading. "warm" sweeps reuse the sessions the appliance keeps; the "cold" sweep is
the first after a restart of the appliance, so it logs in to every BMC, as ipmitool does.

Then DEAD BMCs are stopped: the sweep must still finish, report exactly those, and the API must
keep answering; the latency of GET /rest/server-hardware?count=1 during that sweep is printed.
Exit status 1 if any correctness check fails. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.fleet import FleetProcess
from tests.support.live import LiveAppliance

USER, PASSWORD = "admin", "bench-secret"
# Bench patience for dead BMCs: 2 s per try, one retry, breaker open after those two failures
# (ipmitool's own default is 1 s x 4 tries).
APPLIANCE_ENV = {
    "INGOT_BMC__TIMEOUT_S": "2", "INGOT_BMC__RETRIES": "1", "INGOT_BMC__BACKOFF_S": "0.2",
    "INGOT_BMC__CIRCUIT_FAILURES": "2", "INGOT_BMC__SYNC_INTERVAL_S": "0", "INGOT_BMC__SYNC_PARALLELISM": "128",
    "INGOT_BMC__WORKER_THREADS": "160",
    "INGOT_TASKS__MAX_CONCURRENT": "32", "INGOT_LOG_LEVEL": "WARNING",
}


def ipmitool_argv(bmc: dict[str, Any]) -> list[str]:
    return ["ipmitool", "-I", "lanplus", "-C", "3", "-H", bmc["address"], "-p", str(bmc["port"]),
            "-U", USER, "-P", PASSWORD, "chassis", "power", "status"]


def sequential_ipmitool(bmcs: list[dict[str, Any]]) -> tuple[float, int]:
    started = time.monotonic()
    ok = 0
    for bmc in bmcs:
        result = subprocess.run(ipmitool_argv(bmc), capture_output=True, text=True, timeout=30, check=False)
        ok += "Chassis Power is" in result.stdout
    return time.monotonic() - started, ok


def xargs_ipmitool(bmcs: list[dict[str, Any]], parallel: int) -> tuple[float, int]:
    lines = "".join(shlex.join(ipmitool_argv(bmc)[1:]) + "\n" for bmc in bmcs)
    started = time.monotonic()
    result = subprocess.run(["xargs", "-P", str(parallel), "-L", "1", "ipmitool"], input=lines, text=True,
                            capture_output=True, timeout=600, check=False)
    return time.monotonic() - started, result.stdout.count("Chassis Power is")


def wait_task(client: httpx.Client, uri: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = client.get(uri).json()
        if task["taskState"] not in ("New", "Starting", "Running", "Pending", "Stopping"):
            return task
        time.sleep(0.02)
    raise RuntimeError(f"{uri} did not finish within {timeout} s")


def ingot_sweep(client: httpx.Client) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    response = client.post("/rest/server-hardware/power-sync")
    response.raise_for_status()
    task = wait_task(client, response.json()["uri"])
    return time.monotonic() - started, task


def enroll(client: httpx.Client, bmcs: list[dict[str, Any]]) -> float:
    started = time.monotonic()
    uris = []
    for bmc in bmcs:
        response = client.post("/rest/server-hardware", json={
            "hostname": bmc["address"], "port": bmc["port"], "username": USER, "password": PASSWORD,
            "driver": "ipmi", "name": f"bmc-{bmc['address']}"})
        response.raise_for_status()
        uris.append(response.json()["uri"])
    failed = [t for t in (wait_task(client, uri) for uri in uris) if t["taskState"] != "Completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} servers failed to enrol, e.g. {failed[0]['taskErrors']}")
    return time.monotonic() - started


class LatencyProbe(threading.Thread):
    """GET a small page every 50 ms (bounded in count) and record how long each took."""

    def __init__(self, appliance: LiveAppliance, session: str, limit: int = 6000) -> None:
        super().__init__(daemon=True)
        self.appliance, self.session, self.limit = appliance, session, limit
        self.samples: list[float] = []
        self.errors = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        with self.appliance.client(self.session) as client:
            while not self.stop_event.is_set() and len(self.samples) < self.limit:
                started = time.monotonic()
                try:
                    client.get("/rest/server-hardware", params={"count": 1}).raise_for_status()
                    self.samples.append(time.monotonic() - started)
                except httpx.HTTPError:
                    self.errors += 1
                self.stop_event.wait(0.05)


def quantiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms over {len(ordered)} requests")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--dead", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=16, help="xargs -P for the parallel peer")
    parser.add_argument("--warm-sweeps", type=int, default=3)
    args = parser.parse_args(argv)
    if not 0 <= args.dead < args.count <= 4000:
        parser.error("need 0 <= --dead < --count <= 4000")
    failures: list[str] = []

    live_fleet = FleetProcess(args.count - args.dead, "127.20.0.1", USER, PASSWORD)
    doomed_fleet = FleetProcess(args.dead, "127.28.0.1", USER, PASSWORD) if args.dead else None
    bmcs = live_fleet.bmcs + (doomed_fleet.bmcs if doomed_fleet else [])
    home = Path(tempfile.mkdtemp(prefix="ingot-bench-"))
    appliance = LiveAppliance(home, None, extra_env=APPLIANCE_ENV, with_test_handlers=False)
    try:
        appliance.start()
        session = appliance.login()
        with appliance.client(session) as client:
            print(f"power_sweep: {len(bmcs)} simulated IPMI BMCs (lab.bmc), cpu count {os.cpu_count()}")
            print(f"  enrolled {len(bmcs)} servers through the API in {enroll(client, bmcs):.1f} s")

            seq_s, seq_ok = sequential_ipmitool(bmcs)
            par_s, par_ok = xargs_ipmitool(bmcs, args.parallel)
            for name, ok in (("sequential ipmitool", seq_ok), (f"xargs -P {args.parallel}", par_ok)):
                if ok != len(bmcs):
                    failures.append(f"{name} read {ok} of {len(bmcs)}")

            warm, reads = [], []
            for _ in range(args.warm_sweeps):
                seconds, task = ingot_sweep(client)
                warm.append(seconds)
                reads.append(task["data"].get("seconds", 0.0))
                if task["data"].get("reachable") != len(bmcs):
                    failures.append(f"warm sweep read {task['data'].get('reachable')} of {len(bmcs)}")
        appliance.stop()
        appliance.start()  # a fresh process: no sessions, every BMC needs a login again
        session = appliance.login()
        with appliance.client(session) as client:
            cold_s, task = ingot_sweep(client)
            if task["data"].get("reachable") != len(bmcs):
                failures.append(f"cold sweep read {task['data'].get('reachable')} of {len(bmcs)}")

            best_warm = min(warm)
            print(f"  sequential ipmitool loop    {seq_s:8.2f} s   ({seq_s / len(bmcs) * 1000:.1f} ms per BMC)")
            print(f"  xargs -P {args.parallel:<3d} ipmitool      {par_s:8.2f} s")
            print(f"  Ingot sweep, cold (logins)  {cold_s:8.2f} s   "
                  f"{seq_s / cold_s:6.1f}x sequential, {par_s / cold_s:5.2f}x xargs -P {args.parallel}")
            print(f"  Ingot sweep, warm (best of {len(warm)}) {best_warm:6.2f} s   "
                  f"{seq_s / best_warm:6.1f}x sequential, {par_s / best_warm:5.2f}x xargs -P {args.parallel}")
            print(f"    (all warm sweeps: {', '.join(f'{s:.2f}' for s in warm)} s; of which reading the BMCs: "
                  f"{', '.join(f'{s:.2f}' for s in reads)} s; the rest is the API, task runner and database)")

            if doomed_fleet is not None:
                # Warm the sessions of the doomed BMCs too, then stop them: the BMCs die under Ingot.
                baseline = LatencyProbe(appliance, session, limit=40)
                baseline.start()
                baseline.join(30)
                doomed_fleet.stop()
                probe = LatencyProbe(appliance, session)
                probe.start()
                dead_s, task = ingot_sweep(client)
                probe.stop_event.set()
                probe.join(30)
                unreachable = {u["name"] for u in task["data"].get("unreachable", [])}
                expected = {f"bmc-{b['address']}" for b in doomed_fleet.bmcs}
                if unreachable != expected:
                    failures.append(f"dead sweep reported {len(unreachable)} unreachable, expected {len(expected)}")
                again_s, again = ingot_sweep(client)
                print(f"  with {args.dead} of {len(bmcs)} BMCs dead: sweep {dead_s:.2f} s, task {task['taskState']}, "
                      f"{task['data'].get('reachable')} read, {len(unreachable)} reported unreachable "
                      f"({'exactly the dead ones' if unreachable == expected else 'MISMATCH'})")
                print(f"  next sweep (breakers open for the dead): {again_s:.2f} s, "
                      f"{len(again['data'].get('unreachable', []))} unreachable")
                print(f"  API latency idle:            {quantiles(baseline.samples)}")
                print(f"  API latency during the sweep: {quantiles(probe.samples)}; {probe.errors} errors")
                if probe.errors:
                    failures.append(f"{probe.errors} API requests failed during the sweep")
    finally:
        appliance.stop()
        live_fleet.stop()
        if doomed_fleet is not None:
            doomed_fleet.stop()
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
