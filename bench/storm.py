"""200 simulated clients DISCOVER and fetch their boot file at once; all succeed.

    .venv/bin/python -m bench.storm [--clients 200] [--client-timeout 120] [--timeout 240]

(As root: it builds network namespaces. Needs dnsmasq for the peer rows.)

What one simulated client does (a BIOS PXE ROM, then the iPXE it loads):

1. DHCP DISCOVER with option 93 = 0 (x86 BIOS), 94 (UNDI 2.1), 60 ``PXEClient:Arch:00000:UNDI:002001``,
   97 (a GUID), 55 and 57, its own MAC -> OFFER -> REQUEST (50 and 54 from the OFFER, same xid)
   -> ACK. Retransmission as PXE ROMs do it: after 4, 8, 16 and 32 s without a reply; a NAK starts
   over with a new DISCOVER (at most 4 times).
2. TFTP read (RFC 1350, with blksize 1456 and tsize as PXE ROMs ask) of the boot file named in the
   ACK (it must be ``undionly.kpxe``) from ``siaddr``; lock-step, the last packet resent after 1 s
   of silence, at most 5 times in a row; a transfer that ends in an ERROR or a timeout is started
   again after 1 s, at most 3 attempts. The bytes must equal ``/usr/lib/ipxe/undionly.kpxe``.
3. (Ingot only: dnsmasq serves no HTTP) the iPXE stage: DISCOVER/REQUEST again with user class
   (77) ``iPXE``; the ACK's boot file must be an ``http://`` URL; HTTP GET it (at most 3 tries)
   and the body must be an iPXE script (``#!ipxe``) that boots the ramdisk with a token.

All clients start at the same instant, in ONE asyncio process inside the lab's client namespace,
which acts as a DHCP relay agent, like perfdhcp: every request carries giaddr = the client
namespace's address (hops 1) and is sent to the server's port 67, and replies come back to
giaddr:67, where one socket dispatches them to the clients by xid and chaddr. TFTP and HTTP go
from that address too (one UDP socket or TCP connection per client).

Servers, one after another in the same lab (:class:`bench.netboot_lab.WideLab`, a ``/20`` segment
that exists only in namespaces this run creates; every server binds to the lab veth only):

- Ingot: the real ``ingot serve`` (SQLite under a temporary INGOT_HOME, a placeholder ramdisk so
  the iPXE script is the real "boot the ramdisk" script with a one-time token);
- dnsmasq 2.90 ``--enable-tftp --tftp-root=DIR --dhcp-boot=undionly.kpxe`` at its default
  ``--tftp-max`` (50 concurrent transfers), then with ``--tftp-max=300``; both with ``--no-ping``
  (its default ICMP check blocks the daemon up to 3 s per new address: 200 new clients would take
  minutes, see ``bench.dhcp``) and the same pool.

Printed per server: clients that completed DHCP, TFTP (bytes verified), the iPXE DHCP and the HTTP
script; the wall time until the last client finished; p50/p95 of the per-client time from the
start to its verified boot loader ("to loader", comparable across servers) and to its last stage
("all stages"); retries: DHCP retransmissions, NAKs, TFTP retransmissions and TFTP attempts beyond
the first; leases in the server's store afterwards (Ingot: ``GET /rest/dhcp/leases``, dnsmasq: its
lease file); and "UDP drops": datagrams the kernel dropped in the server's namespace because a
socket's receive buffer was full (``RcvbufErrors`` in /proc/net/snmp) - a DHCP retransmission
usually answers one of those. Every client has a deadline (``--client-timeout``) and the whole
storm one too (``--timeout``). Exit status 1 if any Ingot client failed a stage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import httpx

from bench.netboot_lab import (
    WideLab,
    copy_bootloader,
    dnsmasq_argv,
    in_netns,
    start_ingot,
    start_server,
    stop_pid,
    total,
    udp_rcvbuf_errors,
)
from bench.tftp_client import ClientOptions, Expected, fetch
from pxe.dhcp.codec import DecodeError, DhcpPacket, MessageType, Op, Option, decode, encode
from tests.support.netns import unavailable_reason

BOOT_FILE = "undionly.kpxe"
LOADER = Path("/usr/lib/ipxe") / BOOT_FILE
PXE_VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
PRL = bytes([1, 3, 6, 15, 43, 60, 66, 67, 93, 97])
DHCP_TIMEOUTS = (4.0, 8.0, 16.0, 32.0)  # PXE 2.1 §2.2.1: DISCOVER/REQUEST retransmission
MAX_DHCP_STARTS = 4
TFTP_OPTIONS = ClientOptions(blksize=1456, tsize=True, timeout=1.0, retries=5)
TFTP_DEADLINE = 30.0
TFTP_ATTEMPTS = 3
HTTP_ATTEMPTS = 3
RELAY_RCVBUF = 4 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # asm-generic/socket.h; root may exceed rmem_max


class StageError(Exception):
    """A client could not complete a stage; the message says which and why."""


@dataclass
class Client:
    index: int
    mac: bytes
    guid: bytes
    stages: str = ""  # letters of the stages done: D(HCP) T(FTP) I(PXE DHCP) H(TTP)
    ip: str = ""
    finished: float | None = None  # seconds after the storm started
    booted_loader: float | None = None  # ... when its TFTP transfer was verified
    dhcp_retransmits: int = 0
    naks: int = 0
    tftp_retransmits: int = 0
    tftp_extra_attempts: int = 0
    http_extra_attempts: int = 0
    error: str = ""

    @property
    def mac_text(self) -> str:
        return self.mac.hex(":")


# --- DHCP through one relay socket -----------------------------------------------------------


class Relay(asyncio.DatagramProtocol):
    """The relay agent's port 67: replies are handed to whoever waits for their xid."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Queue[DhcpPacket]] = {}
        self.malformed = 0
        self.stray = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            packet = decode(data)
        except DecodeError:
            self.malformed += 1
            return
        queue = self.waiting.get(packet.xid)
        if queue is None or packet.op != Op.BOOTREPLY:
            self.stray += 1
            return
        queue.put_nowait(packet)


@dataclass
class Storm:
    relay: Relay
    relay_ip: IPv4Address
    server: tuple[str, int]
    expected: bytes
    http: httpx.AsyncClient | None
    started: float = field(default_factory=time.monotonic)

    @property
    def expected_digest(self) -> Expected:
        return Expected(len(self.expected), hashlib.sha256(self.expected).hexdigest())

    def request(self, client: Client, xid: int, message: MessageType, *, ipxe: bool,
                offer: DhcpPacket | None = None) -> DhcpPacket:
        options: dict[int, bytes] = {Option.MESSAGE_TYPE: bytes((message,))}
        if offer is not None:
            options[Option.REQUESTED_IP] = offer.yiaddr.packed
            server_id = offer.options.get(Option.SERVER_ID)
            if server_id is not None:
                options[Option.SERVER_ID] = server_id
        options[Option.MAX_MESSAGE_SIZE] = (1260).to_bytes(2, "big")
        options[Option.PARAMETER_REQUEST_LIST] = PRL
        options[Option.CLIENT_ARCH] = b"\x00\x00"
        options[Option.CLIENT_NDI] = b"\x01\x02\x01"
        options[Option.CLIENT_MACHINE_ID] = b"\x00" + client.guid
        options[Option.VENDOR_CLASS] = PXE_VENDOR_CLASS
        if ipxe:
            options[Option.USER_CLASS] = b"iPXE"
        secs = min(0xFFFF, int(time.monotonic() - self.started))
        return DhcpPacket(op=Op.BOOTREQUEST, htype=1, hlen=6, hops=1, xid=xid, secs=secs, giaddr=self.relay_ip,
                          chaddr=client.mac, options=options)

    async def exchange(self, client: Client, packet: DhcpPacket, wanted: set[MessageType]) -> DhcpPacket:
        assert self.relay.transport is not None
        queue: asyncio.Queue[DhcpPacket] = asyncio.Queue()
        self.relay.waiting[packet.xid] = queue
        wire = encode(packet)
        loop = asyncio.get_running_loop()
        try:
            for attempt, wait in enumerate(DHCP_TIMEOUTS):
                if attempt:
                    client.dhcp_retransmits += 1
                self.relay.transport.sendto(wire, self.server)
                deadline = loop.time() + wait + random.uniform(-0.5, 0.5) * (attempt > 0)
                while (left := deadline - loop.time()) > 0:
                    try:
                        reply = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                    if reply.chaddr[:6] == client.mac and reply.message_type in wanted:
                        return reply
        finally:
            self.relay.waiting.pop(packet.xid, None)
        names = "/".join(sorted(m.name for m in wanted))
        raise StageError(f"no {names} after {len(DHCP_TIMEOUTS)} tries")

    async def dhcp(self, client: Client, *, ipxe: bool) -> DhcpPacket:
        for _ in range(MAX_DHCP_STARTS):
            xid = random.getrandbits(32)
            offer = await self.exchange(client, self.request(client, xid, MessageType.DISCOVER, ipxe=ipxe),
                                        {MessageType.OFFER})
            reply = await self.exchange(client, self.request(client, xid, MessageType.REQUEST, ipxe=ipxe,
                                                             offer=offer), {MessageType.ACK, MessageType.NAK})
            if reply.message_type is MessageType.ACK:
                if reply.yiaddr != offer.yiaddr:
                    raise StageError(f"ACK for {reply.yiaddr}, OFFER was {offer.yiaddr}")
                client.ip = str(reply.yiaddr)
                return reply
            client.naks += 1
        raise StageError(f"NAKed {MAX_DHCP_STARTS} times")

    async def run(self, client: Client, stages: str) -> None:
        ack = await self.dhcp(client, ipxe=False)
        client.stages += "D"
        boot_file = ack.bootfile_name or ack.boot_file
        if boot_file != BOOT_FILE:
            raise StageError(f"boot file {boot_file!r}, expected {BOOT_FILE!r}")
        next_server = ack.siaddr if int(ack.siaddr) else ack.server_id
        if next_server is None:
            raise StageError("no TFTP server (siaddr) in the ACK")
        await self.tftp(client, str(next_server), boot_file)
        client.stages += "T"
        client.booted_loader = time.monotonic() - self.started
        if "I" not in stages:
            return
        ack = await self.dhcp(client, ipxe=True)
        client.stages += "I"
        url = ack.bootfile_name or ack.boot_file
        if not url.startswith("http://"):
            raise StageError(f"iPXE got boot file {url!r}, expected an http:// URL")
        await self.script(client, url)
        client.stages += "H"

    async def tftp(self, client: Client, server: str, filename: str) -> None:
        error = StageError("not tried")
        for attempt in range(TFTP_ATTEMPTS):
            if attempt:
                client.tftp_extra_attempts += 1
                await asyncio.sleep(1.0)
            result = await fetch((server, 69), filename, self.expected_digest, TFTP_OPTIONS,
                                 deadline=TFTP_DEADLINE)
            client.tftp_retransmits += result.retransmits
            if result.ok:  # size, tsize and sha256 checked by the client
                return
            error = StageError(f"TFTP: {result.error}")
        raise StageError(f"TFTP failed {TFTP_ATTEMPTS} times, last: {error}")

    async def script(self, client: Client, url: str) -> None:
        assert self.http is not None
        last = ""
        for attempt in range(HTTP_ATTEMPTS):
            if attempt:
                client.http_extra_attempts += 1
                await asyncio.sleep(1.0)
            try:
                response = await self.http.get(url)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            text = response.text
            if response.status_code != 200:
                last = f"HTTP {response.status_code}"
                continue
            if not text.startswith("#!ipxe") or "ingot.token=" not in text or "kernel http://" not in text:
                raise StageError(f"not a ramdisk iPXE script: {text[:120]!r}")
            return
        raise StageError(f"HTTP GET {url} failed {HTTP_ATTEMPTS} times, last: {last}")


# --- one storm ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    label: str
    clients: list[Client]
    stages: str
    wall: float
    leases: int | None = None
    relay_malformed: int = 0
    server_rcvbuf_drops: int = 0  # UDP datagrams the kernel dropped in the server namespace (buffer full)
    note: str = ""

    def count(self, stage: str) -> int:
        return sum(1 for c in self.clients if stage in c.stages)

    @property
    def complete(self) -> list[Client]:
        return [c for c in self.clients if c.stages == self.stages and not c.error]

    @property
    def failed(self) -> list[Client]:
        return [c for c in self.clients if c.stages != self.stages or c.error]


async def storm(relay_ip: IPv4Address, server_ip: str, count: int, stages: str, expected: bytes,
                client_timeout: float, timeout: float) -> tuple[list[Client], float, int]:
    loop = asyncio.get_running_loop()
    relay = Relay()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RELAY_RCVBUF)  # the simulated relay never drops
    sock.bind((str(relay_ip), 67))
    transport, _ = await loop.create_datagram_endpoint(lambda: relay, sock=sock)
    salt = random.getrandbits(16)
    clients = [Client(i, bytes((0x02, 0x5B, salt >> 8, salt & 0xFF, i >> 8, i & 0xFF)), random.randbytes(16))
               for i in range(count)]
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    http = httpx.AsyncClient(timeout=20.0, limits=limits) if "H" in stages else None
    runner = Storm(relay, relay_ip, (server_ip, 67), expected, http)

    async def one(client: Client) -> None:
        try:
            await asyncio.wait_for(runner.run(client, stages), client_timeout)
        except TimeoutError:
            client.error = f"client deadline of {client_timeout:.0f} s passed"
        except StageError as exc:
            client.error = str(exc)
        except Exception as exc:
            client.error = f"{type(exc).__name__}: {exc}"
        client.finished = time.monotonic() - runner.started

    try:
        runner.started = time.monotonic()
        tasks = [asyncio.ensure_future(one(c)) for c in clients]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for client in clients:
            if client.finished is None:
                client.error = client.error or f"storm deadline of {timeout:.0f} s passed"
        wall = max((c.finished or timeout) for c in clients)
    finally:
        transport.close()
        if http is not None:
            await http.aclose()
    return clients, wall, relay.malformed


def run_storm(lab: WideLab, relay_ip: IPv4Address, server_ip: str, count: int, stages: str, expected: bytes,
              client_timeout: float, timeout: float, label: str) -> Outcome:
    cli, srv = lab.hosts["cli"], lab.hosts["srv"]
    drops_before = udp_rcvbuf_errors(lab, srv)

    def work() -> tuple[list[Client], float, int]:
        return asyncio.run(storm(relay_ip, server_ip, count, stages, expected, client_timeout, timeout))

    clients, wall, malformed = in_netns(cli.ns, work, timeout=timeout + 60)
    return Outcome(label, clients, stages, wall, relay_malformed=malformed,
                   server_rcvbuf_drops=udp_rcvbuf_errors(lab, srv) - drops_before)


def ingot_storm(lab: WideLab, work: Path, pool: tuple[IPv4Address, IPv4Address], args: argparse.Namespace,
                expected: bytes) -> Outcome:
    srv, cli = lab.hosts["srv"], lab.hosts["cli"]
    assert srv.ip is not None and cli.ip is not None
    home = work / "ingot-home"
    ramdisk = home / "boot" / "ramdisk"
    ramdisk.mkdir(parents=True)
    (ramdisk / "vmlinuz").write_bytes(b"placeholder kernel" * 100)
    (ramdisk / "initrd.img").write_bytes(b"placeholder initrd" * 100)
    appliance = start_ingot(lab, srv, home, *pool)
    try:
        outcome = run_storm(lab, cli.ip, str(srv.ip), args.clients, "DTIH", expected, args.client_timeout,
                            args.timeout, "Ingot")
        with contextlib.suppress(Exception):
            outcome.leases = total(appliance, "/rest/dhcp/leases", "state='bound'")
        warnings = [line for line in appliance.log_text().splitlines() if '"WARNING"' in line or '"ERROR"' in line]
        if warnings:
            outcome.note = f"{len(warnings)} WARNING/ERROR log lines, e.g. {warnings[0][:300]}"
    finally:
        appliance.stop(timeout=30)
    return outcome


def dnsmasq_storm(lab: WideLab, work: Path, pool: tuple[IPv4Address, IPv4Address], args: argparse.Namespace,
                  expected: bytes, tftp_max: int | None) -> Outcome:
    srv, cli = lab.hosts["srv"], lab.hosts["cli"]
    assert srv.ip is not None and cli.ip is not None
    run_dir = work / f"dnsmasq-{tftp_max or 'default'}"
    root = run_dir / "tftp"
    copy_bootloader(BOOT_FILE, root)
    extra = ["--no-ping", "--enable-tftp", f"--tftp-root={root}", f"--dhcp-boot={BOOT_FILE}",
             *([f"--tftp-max={tftp_max}"] if tftp_max else [])]
    log = run_dir / "dnsmasq.log"
    process = start_server(lab, srv, dnsmasq_argv(srv, *pool, run_dir, *extra), log)
    label = f"dnsmasq --tftp-max={tftp_max}" if tftp_max else "dnsmasq (tftp-max 50)"
    try:
        outcome = run_storm(lab, cli.ip, str(srv.ip), args.clients, "DT", expected, args.client_timeout,
                            args.timeout, label)
    finally:
        stop_pid(process)
    leases = run_dir / "dnsmasq.leases"
    outcome.leases = len(leases.read_text().splitlines()) if leases.exists() else 0
    text = log.read_text(errors="replace")
    sent = text.count(f"sent {root / BOOT_FILE}")
    failed = sum(1 for line in text.splitlines() if "dnsmasq-tftp" in line and "failed" in line)
    outcome.note = f"dnsmasq log: {sent} TFTP transfers sent, {failed} failed"
    return outcome


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def _quantiles(values: list[float]) -> str:
    if not values:
        return f"{'-':>6} {'-':>6}"
    return f"{statistics.median(values):6.2f} {percentile(values, 0.95):6.2f}"


def print_outcomes(outcomes: list[Outcome], count: int) -> None:
    print(f"  {'':<24} {'clients that completed':^31} {'wall s':>7} {'to loader, s':^13} {'all stages, s':^20} "
          f"{'retries':^34} {'':>6} {'server':>9}")
    print(f"  {'server':<24} {'DHCP':>5} {'TFTP':>5} {'iPXE':>5} {'HTTP':>5} {'all':>7} {'to all':>7} "
          f"{'p50':>6} {'p95':>6} {'p50':>6} {'p95':>6} {'max':>6} {'DHCP rtx':>8} {'NAKs':>5} {'TFTP rtx':>8} "
          f"{'TFTP again':>10} {'leases':>6} {'UDP drops':>9}")
    for o in outcomes:
        cs = o.clients
        done = [c.finished for c in o.complete if c.finished is not None]
        loader = [c.booted_loader for c in cs if c.booted_loader is not None]

        def stage(letter: str, o: Outcome = o) -> str:
            return f"{o.count(letter)}" if letter in o.stages else "-"

        top = f"{max(done):6.2f}" if done else f"{'-':>6}"
        print(f"  {o.label:<24} {stage('D'):>5} {stage('T'):>5} {stage('I'):>5} {stage('H'):>5} "
              f"{len(o.complete):>3}/{count:<3} {o.wall:>7.2f} {_quantiles(loader)} {_quantiles(done)} {top} "
              f"{sum(c.dhcp_retransmits for c in cs):>8} {sum(c.naks for c in cs):>5} "
              f"{sum(c.tftp_retransmits for c in cs):>8} {sum(c.tftp_extra_attempts for c in cs):>10} "
              f"{o.leases if o.leases is not None else '-':>6} {o.server_rcvbuf_drops:>9}")
    for o in outcomes:
        reasons = Counter(c.error or f"stopped after stages {c.stages!r}" for c in o.failed)
        for reason, n in reasons.most_common(5):
            print(f"    {o.label}: {n} client(s) failed: {reason}")
        extra = sum(c.http_extra_attempts for c in o.clients)
        if extra:
            print(f"    {o.label}: {extra} HTTP retries")
        if o.relay_malformed:
            print(f"    {o.label}: {o.relay_malformed} undecodable replies at the relay")
        if o.note:
            print(f"    {o.label}: {o.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--client-timeout", type=float, default=120.0, help="seconds each client may take")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds the whole storm may take")
    parser.add_argument("--pool", type=int, default=1000, help="addresses in every server's pool")
    parser.add_argument("--servers", default="ingot,dnsmasq,dnsmasq-300")
    args = parser.parse_args(argv)
    kinds = [k for k in args.servers.split(",") if k]
    if not 1 <= args.clients <= min(args.pool, 1000) or not 0 < args.client_timeout <= args.timeout <= 900:
        parser.error("need 1 <= --clients <= min(--pool, 1000) and 0 < --client-timeout <= --timeout <= 900")
    if set(kinds) - {"ingot", "dnsmasq", "dnsmasq-300"}:
        parser.error("--servers: ingot, dnsmasq, dnsmasq-300")
    if (reason := unavailable_reason()) is not None:
        print(f"bench.storm: {reason}", file=sys.stderr)
        return 2
    expected = LOADER.read_bytes()
    outcomes: list[Outcome] = []
    ingot_failed = False
    with WideLab() as lab, tempfile.TemporaryDirectory(prefix="ingot-bench-storm-", dir="/var/tmp") as tmp:
        srv, cli = lab.add_host("srv", address=1), lab.add_host("cli", address=10)
        pool = lab.pool(100, args.pool)
        print(f"bench.storm: {args.clients} PXE clients at once via relay {cli.ip} -> {srv.ip}, lab {lab.network}, "
              f"pool {pool[0]}-{pool[1]}, {BOOT_FILE} {len(expected)} bytes "
              f"(sha256 {hashlib.sha256(expected).hexdigest()[:12]}), {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f}")
        for kind in kinds:
            work = Path(tmp) / kind
            work.mkdir()
            try:
                if kind == "ingot":
                    outcome = ingot_storm(lab, work, pool, args, expected)
                    ingot_failed = bool(outcome.failed)
                else:
                    outcome = dnsmasq_storm(lab, work, pool, args, expected, 300 if kind == "dnsmasq-300" else None)
            except Exception as exc:
                print(f"  {kind}: could not run: {type(exc).__name__}: {exc}")
                ingot_failed = ingot_failed or kind == "ingot"
                continue
            outcomes.append(outcome)
            print(f"  .. {outcome.label}: {len(outcome.complete)}/{args.clients} complete in {outcome.wall:.2f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    print()
    print_outcomes(outcomes, args.clients)
    if ingot_failed:
        print("FAILED: not every Ingot client completed DHCP, TFTP, iPXE DHCP and the HTTP script")
    return 1 if ingot_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
