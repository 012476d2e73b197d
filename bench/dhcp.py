"""perfdhcp DORA rate against Ingot, dnsmasq and kea-dhcp4 (memfile) in the same netns setup, one run,
ratios printed; goal: at least dnsmasq's rate with durable leases.

    .venv/bin/python -m bench.dhcp [--rates 250,500,...,16000] [--period 10] [--clients 3000]

(As root: it builds network namespaces. Needs ``perfdhcp`` and ``kea-dhcp4`` from Kea, and dnsmasq.)

The lab (:class:`bench.netboot_lab.WideLab`): one bridge segment ``10.x.y.0/20`` that exists only in
namespaces this run creates; a server namespace (``.1``) and a client namespace (``.10``). Every
server binds to the server's lab veth only; nothing touches an interface of the machine.

Servers, one after another on the same lab, each on a fresh, empty lease store, pool
``.100`` - ``.100+POOL-1`` (3900 addresses by default):

- Ingot: the real ``ingot serve`` (SQLite under a temporary INGOT_HOME; an ACK leaves only after
  its lease is committed with ``synchronous=FULL``, i.e. fsync'd, group-committed), DHCP on the lab
  veth, logging at WARNING;
- dnsmasq 2.90 ``--no-daemon --port=0 --bind-interfaces --dhcp-authoritative`` with its lease file
  (it rewrites the whole file and fsyncs it before every reply that changed a lease), plus
  ``--no-ping --quiet-dhcp --dhcp-lease-max=POOL``: with its default ICMP check dnsmasq waits up
  to 3 s for an echo reply before each new offer, blocking everything else (one row shows that
  configuration at the lowest rate), its default lease limit is 1000, and per-packet logging
  would cost it what Ingot's WARNING level saves;
- kea-dhcp4 (single-threaded, its default) with the memfile backend, ``persist: true``: it appends
  each lease change to a CSV file with ``write(2)`` but never fsyncs, so its leases survive a
  crash of the process but not of the machine.

Client: ``perfdhcp -4 -r RATE -R CLIENTS -p PERIOD -d 2 -W 1500000`` in the client namespace. It acts
as a relay agent (giaddr = its own address), so the replies come back unicast to it. CLIENTS
distinct MACs (less than the pool): a client chosen again renews or repeats its DORA and gets its
own address back. An exchange is lost if its reply is not in within 2 s; a NAK counts as a drop.

Each server climbs the ladder of target rates (``--rates``), a fresh server per step, until a step
is saturated (ACKs/s below 80 % of the target) and no better than its best so far; the servers
take each rate in turn, so their steps at one rate run back to back under the same conditions of
the machine. A server still unsaturated at the top of the ladder is faster than perfdhcp, which
shares the two cores with it, can measure. "ACK/s" is REQUEST-ACK replies received over the test
period; perfdhcp's own "Rate" (also printed) divides by the period plus the exit wait, so it
reads lower. "leases" is what the server's own store
holds at the end: Ingot's ``GET /rest/dhcp/leases`` (state bound), the lines of dnsmasq's lease
file after it exited, the live addresses of kea's CSV. "NAKs" (Ingot only) counts its REQUEST/NAK
boot events (a lower bound once more than the 20000 kept events were written). "ACK ms" is
perfdhcp's REQUEST-ACK delay, average and maximum. "sock drops" are requests the kernel dropped in
the server namespace because the server's socket buffer was full (``RcvbufErrors``). "CPU %" is the
server process's CPU time over the period, in % of one core; perfdhcp runs on the same two cores,
and "load" (the 1-minute load average at the end of the step) shows whether anything else ran.

Ratios: Ingot's best ACK/s over dnsmasq's best and kea's best. Exit status 1 if a server could
not be measured at all. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from bench.netboot_lab import (
    KEA_DHCP4,
    WideLab,
    dnsmasq_argv,
    kea_config,
    kea_env,
    start_ingot,
    start_server,
    stop_pid,
    total,
    udp_rcvbuf_errors,
)
from tests.support.netns import Host, unavailable_reason

_BLOCK = re.compile(r"\*\*\*Statistics for: (?P<name>[A-Z-]+)\*\*\*\n(?P<body>.*?)(?=\*\*\*|\Z)", re.S)
_RATE = re.compile(r"Rate: ([0-9.]+) 4-way exchanges/second")
SATURATED = 0.8  # a step whose ACK/s is below this share of its target rate is saturated


@dataclass
class Step:
    """One perfdhcp run against one fresh server."""

    server: str
    target: int
    rate: float = 0.0  # perfdhcp's "Rate"
    acks: int = 0
    offers: int = 0
    discovers: int = 0
    requests: int = 0
    discover_drops: int = 0
    request_drops: int = 0
    ack_delay_ms: tuple[float, float] = (0.0, 0.0)  # REQUEST-ACK average and max, as perfdhcp saw them
    leases: int | None = None
    naks: str = "-"
    cpu_s: float = 0.0
    rcvbuf_drops: int = 0  # requests the kernel dropped at the server's socket (receive buffer full)
    load: float = 0.0  # 1-minute load average when the step ended
    period: float = 10.0
    error: str = ""

    @property
    def ack_rate(self) -> float:
        return self.acks / self.period

    @property
    def saturated(self) -> bool:
        return self.ack_rate < SATURATED * self.target


@dataclass
class Server:
    name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        measured = [s for s in self.steps if not s.error]
        return max(measured, key=lambda s: s.ack_rate) if measured else None


def perfdhcp_stats(output: str) -> dict[str, dict[str, str]]:
    return {m["name"]: dict(line.split(": ", 1) for line in m["body"].splitlines() if ": " in line)
            for m in _BLOCK.finditer(output)}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_perfdhcp(lab: WideLab, cli: Host, srv: Host, step: Step, clients: int, pid: int) -> None:
    assert srv.ip is not None
    argv = ["perfdhcp", "-4", "-r", str(step.target), "-R", str(clients), "-p", str(int(step.period)), "-d", "2",
            "-W", "1500000", "-l", cli.ifname, str(srv.ip)]
    cpu_before, drops_before = cpu_seconds(pid), udp_rcvbuf_errors(lab, srv)
    result = lab.run_in(cli, argv, timeout=step.period + 60)
    step.cpu_s = cpu_seconds(pid) - cpu_before
    step.rcvbuf_drops = udp_rcvbuf_errors(lab, srv) - drops_before
    step.load = os.getloadavg()[0]
    stats = perfdhcp_stats(result.stdout)
    rate = _RATE.search(result.stdout)
    if rate is None or "DISCOVER-OFFER" not in stats:
        step.error = f"perfdhcp exited {result.returncode}: {(result.stdout + result.stderr)[-500:]}"
        return
    step.rate = float(rate.group(1))
    do, ra = stats["DISCOVER-OFFER"], stats.get("REQUEST-ACK", {})
    step.discovers, step.offers = int(do["sent packets"]), int(do["received packets"])
    step.discover_drops = int(do["drops"])
    step.requests, step.acks = int(ra.get("sent packets", 0)), int(ra.get("received packets", 0))
    step.request_drops = int(ra.get("drops", 0))
    step.ack_delay_ms = (_ms(ra.get("avg delay", "0")), _ms(ra.get("max delay", "0")))


def _ms(text: str) -> float:
    number = text.split()[0] if text.split() else "0"
    try:
        return float(number)
    except ValueError:  # "n/a" when nothing was received
        return 0.0


def measure_ingot(lab: WideLab, srv: Host, cli: Host, step: Step, pool: tuple[IPv4Address, IPv4Address],
                  clients: int, work: Path) -> None:
    appliance = start_ingot(lab, srv, work / "home", *pool)
    try:
        assert appliance.proc is not None
        run_perfdhcp(lab, cli, srv, step, clients, appliance.proc.pid)
        step.leases = total(appliance, "/rest/dhcp/leases", "state='bound'")
        time.sleep(1.5)  # boot events are written once a second
        naks = total(appliance, "/rest/boot-events", "action='REQUEST/NAK'")
        kept = total(appliance, "/rest/boot-events")
        step.naks = f"{'>=' if kept >= 20000 else ''}{naks}"  # events beyond 20000 are pruned
    finally:
        appliance.stop(timeout=30)


def measure_process(lab: WideLab, srv: Host, cli: Host, step: Step, clients: int, argv: list[str], log: Path,
                    env: dict[str, str] | None, count: Callable[[], int]) -> None:
    process = start_server(lab, srv, argv, log, env=env)
    try:
        run_perfdhcp(lab, cli, srv, step, clients, process.pid)
    finally:
        stop_pid(process)
    step.leases = count()


def dnsmasq_leases(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def kea_leases(path: Path) -> int:
    """Addresses whose latest record in kea's memfile CSV is a live, default-state lease."""
    latest: dict[str, dict[str, str]] = {}
    for candidate in (path.with_name(path.name + ".2"), path.with_name(path.name + ".1"), path):
        if candidate.exists():
            with candidate.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    latest[row["address"]] = row
    now = time.time()
    return sum(1 for row in latest.values()
               if row.get("state") == "0" and int(row.get("valid_lifetime") or 0) > 0
               and int(row.get("expire") or 0) > now)


def measure(kind: str, lab: WideLab, srv: Host, cli: Host, step: Step, pool: tuple[IPv4Address, IPv4Address],
            clients: int, pool_size: int, work: Path) -> None:
    if kind == "ingot":
        measure_ingot(lab, srv, cli, step, pool, clients, work)
    elif kind in ("dnsmasq", "dnsmasq-ping"):
        extra = [] if kind == "dnsmasq-ping" else ["--no-ping", "--quiet-dhcp", f"--dhcp-lease-max={pool_size}"]
        measure_process(lab, srv, cli, step, clients, dnsmasq_argv(srv, *pool, work, *extra), work / "dnsmasq.log",
                        None, lambda: dnsmasq_leases(work / "dnsmasq.leases"))
    else:
        config = kea_config(srv, lab.network, *pool, work)
        measure_process(lab, srv, cli, step, clients, [KEA_DHCP4, "-c", str(config)], work / "kea.out",
                        kea_env(work), lambda: kea_leases(work / "kea-leases4.csv"))


LABELS = {
    "ingot": "Ingot (SQLite, fsync)",
    "dnsmasq": "dnsmasq --no-ping",
    "dnsmasq-ping": "dnsmasq (ping check)",
    "kea": "kea-dhcp4 memfile",
}


def print_steps(servers: list[Server]) -> None:
    print(f"  {'server':<22} {'target/s':>8} {'ACK/s':>8} {'perfdhcp':>9} {'DISC':>7} {'OFFER':>7} "
          f"{'REQ':>7} {'ACK':>7} {'REQ drops':>9} {'NAKs':>7} {'ACK ms avg/max':>15} {'sock drops':>10} "
          f"{'leases':>7} {'CPU %':>6} {'load':>5}")
    for server in servers:
        for s in server.steps:
            if s.error:
                print(f"  {LABELS[s.server]:<22} {s.target:>8} FAILED: {s.error[:200]}")
                continue
            mark = " sat" if s.saturated else ""
            print(f"  {LABELS[s.server]:<22} {s.target:>8} {s.ack_rate:>8.1f} {s.rate:>9.1f} {s.discovers:>7} "
                  f"{s.offers:>7} {s.requests:>7} {s.acks:>7} {s.request_drops:>9} {s.naks:>7} "
                  f"{f'{s.ack_delay_ms[0]:.0f}/{s.ack_delay_ms[1]:.0f}':>15} "
                  f"{s.rcvbuf_drops:>10} {s.leases if s.leases is not None else '-':>7} "
                  f"{100 * s.cpu_s / s.period:>6.0f} {s.load:>5.1f}{mark}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="250,500,1000,2000,4000,8000,16000", help="target DORA/s ladder")
    parser.add_argument("--period", type=int, default=10, help="seconds perfdhcp sends for (-p)")
    parser.add_argument("--clients", type=int, default=3000, help="simulated clients (perfdhcp -R)")
    parser.add_argument("--pool", type=int, default=3900, help="addresses in every server's pool")
    parser.add_argument("--servers", default="ingot,dnsmasq,kea,dnsmasq-ping")
    args = parser.parse_args(argv)
    rates = sorted(int(r) for r in args.rates.split(","))
    kinds = [k for k in args.servers.split(",") if k]
    if not 1 <= args.period <= 60 or not 1 <= args.clients <= args.pool <= 3900 or not rates or rates[0] < 1:
        parser.error("need 1 <= --period <= 60, 1 <= --clients <= --pool <= 3900 and positive rates")
    if unknown := set(kinds) - set(LABELS):
        parser.error(f"unknown servers {sorted(unknown)}")
    if (reason := unavailable_reason()) is not None:
        print(f"bench.dhcp: {reason}", file=sys.stderr)
        return 2
    for tool in ("perfdhcp", KEA_DHCP4, "dnsmasq"):
        if shutil.which(tool) is None:
            print(f"bench.dhcp: {tool} is not installed", file=sys.stderr)
            return 2

    servers = [Server(kind) for kind in kinds]
    started = time.monotonic()
    with WideLab() as lab, tempfile.TemporaryDirectory(prefix="ingot-bench-dhcp-", dir="/var/tmp") as tmp:
        srv, cli = lab.add_host("srv", address=1), lab.add_host("cli", address=10)
        pool = lab.pool(100, args.pool)
        fs = subprocess.run(["stat", "-f", "-c", "%T", tmp], capture_output=True, text=True, check=False).stdout
        print(f"bench.dhcp: lab {lab.network}, pool {pool[0]}-{pool[1]} ({args.pool}), {args.clients} perfdhcp "
              f"clients via relay {cli.ip}, {args.period} s per step, {os.cpu_count()} CPUs, "
              f"state on {tmp} ({fs.strip()})")
        # Rate by rate, every server still climbing takes its step: servers measured at the same
        # target run back to back, under the same conditions of the machine.
        climbing = list(servers)
        for target in rates:
            for server in list(climbing):
                if server.name == "dnsmasq-ping" and target != rates[0]:
                    climbing.remove(server)  # one step shows it; more would take minutes each
                    continue
                step = Step(server.name, target, period=float(args.period))
                work = Path(tmp) / f"{server.name}-{target}"
                work.mkdir()
                previous = server.best
                try:
                    measure(server.name, lab, srv, cli, step, pool, args.clients, args.pool, work)
                except Exception as exc:
                    step.error = f"{type(exc).__name__}: {exc}"
                server.steps.append(step)
                print(f"  .. {LABELS[server.name]} at {target}/s: "
                      f"{step.error[:300] if step.error else f'{step.ack_rate:.1f} ACK/s, {step.leases} leases'}",
                      flush=True)
                # Saturated and no better than the best step so far: a higher target only overloads it.
                if step.error or (step.saturated and previous is not None and step.ack_rate < 1.1 * previous.ack_rate):
                    climbing.remove(server)

    print()
    print_steps(servers)
    print()
    best = {s.name: s.best for s in servers}
    for server in servers:
        top = best[server.name]
        if top is not None:
            print(f"  {LABELS[server.name]:<22} best {top.ack_rate:8.1f} ACK/s at target {top.target}/s, "
                  f"{top.leases} leases in its store")
    ingot = best.get("ingot")
    for peer in ("dnsmasq", "kea"):
        other = best.get(peer)
        if ingot is not None and other is not None and other.ack_rate > 0:
            ratio = ingot.ack_rate / other.ack_rate
            print(f"  Ingot / {LABELS[peer]:<20} {ratio:6.2f}x")
    if ingot is not None and best.get("dnsmasq") is not None:
        dnsmasq = best["dnsmasq"]
        assert dnsmasq is not None
        met = ingot.ack_rate >= dnsmasq.ack_rate
        print(f"  goal (Ingot >= dnsmasq, both durable): {'met' if met else 'NOT met'}")
    print(f"  total wall time {time.monotonic() - started:.0f} s")
    failed = [s.name for s in servers if s.best is None]
    for name in failed:
        print(f"FAILED: {LABELS[name]} could not be measured")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
