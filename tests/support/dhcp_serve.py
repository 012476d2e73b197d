"""Run :class:`pxe.dhcp.server.DhcpServer` with a :class:`~pxe.backend.MemoryBackend` for tests.

Meant to be started inside a lab namespace (``tests/support/netns.py``)::

    ip netns exec NS python -m tests.support.dhcp_serve --interface veth-srv \\
        --server-ip 10.1.2.1 --range 10.1.2.100-10.1.2.199 --events ev.jsonl --state state.json

It prints one line ``READY <port>`` once the sockets are bound, appends every
:class:`~pxe.dhcp.server.DhcpEvent` to ``--events`` as a JSON line, and keeps ``--state``
(a JSON object with ``stats``, ``leases`` and ``persists``) up to date: it is rewritten by
every persist (the group commit under test) and at least every 0.1 s while counters change.

It exits on SIGTERM/SIGINT, when its stdin reaches EOF (the test process went away), or after
``--max-seconds``, so it can never outlive the test by long.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pxe.backend import HostConfig, MemoryBackend
from pxe.dhcp.policy import SubnetConfig
from pxe.dhcp.server import DhcpEvent, DhcpServer


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dhcp_serve", description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--server-ip", required=True, type=IPv4Address)
    parser.add_argument("--prefix", type=int, default=24)
    parser.add_argument("--range", required=True, help="first-last pool addresses")
    parser.add_argument("--mode", choices=("server", "proxy"), default="server")
    parser.add_argument("--unknown", choices=("ignore", "discovery", "address-only"), default="discovery")
    parser.add_argument("--router", type=IPv4Address)
    parser.add_argument("--dns", default="", help="comma-separated DNS servers")
    parser.add_argument("--domain")
    parser.add_argument("--lease-time", type=int, default=3600)
    parser.add_argument("--http-base")
    parser.add_argument("--host", action="append", default=[], help="MAC=IP[,boot]; IP may be empty")
    parser.add_argument("--port", type=int, default=67)
    parser.add_argument("--proxy-port", type=int, default=4011)
    parser.add_argument("--persist-delay", type=float, default=0.005, help="seconds each persist takes")
    parser.add_argument("--no-persist", action="store_true")
    parser.add_argument("--events", required=True, type=Path)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--max-seconds", type=float, default=180.0)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def _hosts(specs: list[str]) -> list[HostConfig]:
    hosts = []
    for spec in specs:
        mac, _, rest = spec.partition("=")
        ip, _, boot = rest.partition(",")
        hosts.append(HostConfig(mac, IPv4Address(ip) if ip else None, boot=boot or "netboot"))  # type: ignore[arg-type]
    return hosts


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        first, _, last = args.range.partition("-")
        self.args = args
        self.backend = MemoryBackend([(first, last)], _hosts(args.host))
        config = SubnetConfig(
            server_ip=args.server_ip,
            network=IPv4Network(f"{args.server_ip}/{args.prefix}", strict=False),
            router=args.router,
            dns=tuple(IPv4Address(a) for a in args.dns.split(",") if a),
            domain=args.domain,
            lease_time=args.lease_time,
            mode=args.mode,
            http_base=args.http_base,
            unknown_mac=args.unknown,
        )
        self.persists = 0
        self.events = args.events.open("a", encoding="utf-8")
        self.server = DhcpServer(
            config,
            self.backend,
            interface=args.interface,
            port=args.port,
            proxy_port=args.proxy_port,
            persist=None if args.no_persist else self.persist,
            on_event=self.on_event,
        )
        self._last_state: dict[str, Any] | None = None

    async def persist(self) -> None:
        await asyncio.sleep(self.args.persist_delay)  # a durable write takes a while
        self.persists += 1
        self.write_state()

    def on_event(self, event: DhcpEvent) -> None:
        self.events.write(json.dumps(asdict(event)) + "\n")
        self.events.flush()

    def state(self) -> dict[str, Any]:
        return {
            "stats": self.server.stats,
            "persists": self.persists,
            "leases": [
                {"mac": lease.mac, "ip": str(lease.ip), "expires": lease.expires}
                for lease in self.backend.leases.values()
            ],
        }

    def write_state(self) -> None:
        state = self.state()
        if state == self._last_state:
            return
        tmp = self.args.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self.args.state)
        self._last_state = state

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        # EOF on stdin: the test process is gone (or closed the pipe to stop us).
        loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not os.read(sys.stdin.fileno(), 4096) else None)
        await self.server.start()
        self.write_state()
        print(f"READY {self.args.port}", flush=True)
        deadline = time.monotonic() + self.args.max_seconds
        try:
            while not done.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.1)
                self.write_state()
        finally:
            loop.remove_reader(sys.stdin.fileno())
            await self.server.stop()
            self.write_state()
            self.events.close()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(Runner(args).run())


if __name__ == "__main__":
    main()
