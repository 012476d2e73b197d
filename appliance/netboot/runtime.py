"""The network boot services inside ``ingot serve``: DHCP, TFTP and DNS on the appliance's event
loop, fed from the database and reporting what machines fetched as boot events.

Theory of operation
-------------------
The protocol servers in :mod:`pxe` know nothing of the database. This module is the glue:

* at start it makes the provisioning subnet match the settings (``INGOT_DHCP_RANGE`` ...), loads
  leases and reservations into a :class:`~appliance.netboot.leases.DurableBackend`, fills the
  TFTP root with the iPXE boot loaders and builds the DNS zone;
* a reload loop re-reads subnets, reservations, enrolled servers' MACs and DNS records whenever
  the API changed them (``ctx.netboot_changed``) and at least every ``RELOAD_EVERY_S``;
* boot events from every service land in a thread-safe queue and are written in batches, so a
  boot storm costs one insert per batch rather than one per packet.

DHCP runs only when ``INGOT_DHCP_INTERFACE`` names an interface, and binds only to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import shutil
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.db.session import unit_of_work
from appliance.netboot.leases import DurableBackend
from appliance.services.netboot import NetbootService
from pxe.dhcp.policy import SubnetConfig
from pxe.tftp.options import OptionLimits
from pxe.tftp.server import TftpServer

if TYPE_CHECKING:
    from appliance.config import Settings
    from appliance.context import AppContext
    from appliance.models import Subnet
    from pxe.dhcp.server import DhcpEvent, DhcpServer
    from pxe.dns.server import DnsServer

log = logging.getLogger(__name__)

BOOTLOADERS = ("undionly.kpxe", "ipxe.efi", "snponly.efi")
RELOAD_EVERY_S = 10.0
EVENT_FLUSH_S = 1.0
EVENT_PRUNE_EVERY = 60  # flushes between prunes: the prune's ordered scan is the costly part
_SIOCGIFADDR, _SIOCGIFNETMASK = 0x8915, 0x891B


class InterfaceError(RuntimeError):
    """The DHCP interface is missing or has no IPv4 address."""


def tftp_root(settings: Settings) -> Path:
    """Where the TFTP server (and HTTP boot, for the same loaders) serves files from."""
    return settings.tftp.root or settings.home / "tftp"


def interface_address(name: str) -> IPv4Interface:
    """The IPv4 address and prefix of interface ``name`` (SIOCGIFADDR / SIOCGIFNETMASK)."""
    packed = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            addr = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, packed)[20:24]
            mask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, packed)[20:24]
        except OSError as exc:
            raise InterfaceError(f"DHCP interface {name!r}: no IPv4 address ({exc.strerror})") from None
    return IPv4Interface(f"{socket.inet_ntoa(addr)}/{socket.inet_ntoa(mask)}")


def install_bootloaders(source: Path, root: Path) -> list[str]:
    """Copy the iPXE boot loaders into the TFTP root (if newer); returns the names missing at source."""
    root.mkdir(parents=True, exist_ok=True)
    missing = []
    for name in BOOTLOADERS:
        src, dst = source / name, root / name
        if not src.is_file():
            missing.append(name)
            continue
        if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime or dst.stat().st_size != src.stat().st_size:
            tmp = dst.with_name(f".{name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
    return missing


@dataclass
class _DhcpState:
    server: DhcpServer
    backend: DurableBackend
    address: IPv4Interface


class NetbootRuntime:
    """Starts and stops the boot services of one appliance process."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.events = ctx.boot_events
        self.tftp: TftpServer | None = None
        self.dns: DnsServer | None = None
        self.dhcp: _DhcpState | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def tftp_root(self) -> Path:
        return tftp_root(self.settings)

    async def start(self) -> None:
        await self._start_tftp()
        await self._start_dhcp()
        await self._start_dns()
        loop = asyncio.get_running_loop()
        self.ctx.netboot_changed.attach(loop, changed := asyncio.Event())
        self._tasks = [asyncio.create_task(self._reload_loop(changed), name="netboot-reload"),
                       asyncio.create_task(self._event_loop(), name="boot-events")]

    async def stop(self) -> None:
        self.ctx.netboot_changed.detach()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.dhcp is not None:
            await self.dhcp.server.stop()
            try:
                await self.dhcp.backend.persist()
            except Exception:
                log.exception("could not write the last lease changes")
        if self.dns is not None:
            await self.dns.stop()
        if self.tftp is not None:
            await self.tftp.stop()
        await asyncio.to_thread(self._flush_events)

    # -- TFTP --

    async def _start_tftp(self) -> None:
        tftp = self.settings.tftp
        missing = await asyncio.to_thread(install_bootloaders, tftp.bootloader_dir, self.tftp_root)
        if missing:
            log.warning("boot loaders not found in %s: %s (install Debian's ipxe package)",
                        tftp.bootloader_dir, ", ".join(missing))
        limits = OptionLimits(max_blksize=tftp.max_blksize, max_windowsize=tftp.max_windowsize)
        self.tftp = TftpServer(self.tftp_root, host=self.settings.api.bind_address, port=tftp.port,
                               limits=limits, max_transfers=tftp.max_transfers,
                               busy_poll_s=tftp.busy_poll_us / 1e6,
                               on_finished=self._on_tftp_finished)
        port = await self.tftp.start()
        log.info("TFTP serving %s on %s:%d", self.tftp_root, self.settings.api.bind_address, port)

    def _on_tftp_finished(self, client: tuple[str, int], filename: str, ok: bool, detail: str) -> None:
        self.events.add(service="tftp", action="RRQ", mac=self._mac_of(client[0]), client_ip=client[0],
                        detail=f"{filename} {detail}".strip(), ok=ok)

    # -- DHCP --

    async def _start_dhcp(self) -> None:
        dhcp = self.settings.dhcp
        if not dhcp.interface:
            log.info("DHCP off: no INGOT_DHCP_INTERFACE")
            return
        from pxe.dhcp.server import DhcpServer  # only processes that serve DHCP load it

        address = interface_address(dhcp.interface)
        subnet, hosts = await asyncio.to_thread(self._apply_dhcp_settings, address)
        backend = DurableBackend(self.ctx.engine, _pools(subnet), hosts)
        bound = await asyncio.to_thread(backend.load, self.ctx.clock().timestamp())
        config = self._subnet_config(subnet, address)
        server = DhcpServer(config, backend, interface=dhcp.interface, port=dhcp.port,
                            proxy_port=dhcp.proxy_port if subnet.mode == "proxy" else None,
                            persist=backend.persist, on_event=self._on_dhcp_event)
        await server.start()
        self.dhcp = _DhcpState(server, backend, address)
        log.info("DHCP (%s mode) on %s as %s: pool %s-%s, %d live leases", subnet.mode, dhcp.interface,
                 address, subnet.range_first, subnet.range_last, bound)

    def _apply_dhcp_settings(self, address: IPv4Interface) -> tuple[Subnet, list[Any]]:
        dhcp, dns = self.settings.dhcp, self.settings.dns
        api_names = {"range": "range", "router": "router", "dns": "dnsServers", "mode": "mode",
                     "lease_time_s": "leaseTime", "unknown_mac": "unknownMacPolicy"}
        given = {api: getattr(dhcp, field) for field, api in api_names.items() if field in dhcp.model_fields_set}
        defaults = {api: getattr(dhcp, field) for field, api in api_names.items()
                    if field not in ("range", "router", "dns") and getattr(dhcp, field) is not None}
        if dns.enabled:
            defaults["domain"] = dns.domain
        with unit_of_work(self.ctx.session_factory) as db:
            service = NetbootService(db, self.ctx.clock)
            subnet = service.apply_settings(address.network, given, defaults)
            db.expunge(subnet)
            return subnet, service.hosts()

    def _subnet_config(self, subnet: Subnet, address: IPv4Interface) -> SubnetConfig:
        dns = [IPv4Address(d) for d in subnet.dns_servers]
        if not dns and self.settings.dns.enabled:
            dns = [address.ip]
        http_base = self.settings.boot.http_base or f"http://{address.ip}:{self.settings.api.http_port}"
        return SubnetConfig(
            server_ip=address.ip, network=IPv4Network(subnet.network), lease_time=subnet.lease_time,
            router=IPv4Address(subnet.router) if subnet.router else None, dns=tuple(dns),
            domain=subnet.domain, mode=subnet.mode,  # type: ignore[arg-type]
            http_base=http_base, unknown_mac=subnet.unknown_mac,  # type: ignore[arg-type]
        )

    def _on_dhcp_event(self, event: DhcpEvent) -> None:
        action = event.message_type + (f"/{event.reply_type}" if event.reply_type else "")
        detail = " ".join(p for p in (event.ip, event.boot_method, event.boot_file, event.note) if p)
        self.events.add(service="dhcp", action=action, mac=event.mac, detail=detail or None,
                        ok=event.reply_type not in ("NAK",))

    def _mac_of(self, client_ip: str) -> str | None:
        """The MAC holding ``client_ip``'s lease (a TFTP client is known only by its address)."""
        if self.dhcp is None:
            return None
        try:
            lease = self.dhcp.backend.leases.get(IPv4Address(client_ip))
        except ValueError:
            return None
        return lease.mac if lease is not None else None

    # -- DNS --

    async def _start_dns(self) -> None:
        dns = self.settings.dns
        if not dns.enabled:
            return
        from pxe.dns.server import DnsServer
        from pxe.dns.zone import Zone

        networks = [self.dhcp.address.network] if self.dhcp else []
        zone = Zone(dns.domain, await asyncio.to_thread(self._zone_records), reverse_networks=networks)
        self.dns = DnsServer(zone, host=self.settings.api.bind_address, port=dns.port,
                             upstreams=[_host_port(u) for u in dns.upstreams])
        port = await self.dns.start()
        log.info("DNS for %s on %s:%d (upstreams: %s)", dns.domain, self.settings.api.bind_address, port,
                 ", ".join(dns.upstreams) or "none")

    def _zone_records(self) -> list[Any]:
        from pxe.dns.zone import Record

        domain = self.settings.dns.domain.lower().rstrip(".")
        with unit_of_work(self.ctx.session_factory) as db:
            rows = NetbootService(db, self.ctx.clock).zone_records(self.ctx.clock())
        if self.dhcp is not None:
            rows.append(("ingot", "A", str(self.dhcp.address.ip), 300))
        records: list[Record] = []
        seen: set[tuple[str, str]] = set()
        for name, rtype, value, ttl in rows:
            fqdn = _qualify(name, domain)
            target = _qualify(value, domain) if rtype in ("CNAME", "PTR") else value
            if (fqdn, rtype) in seen:
                continue  # operator records come first and win over names from leases
            try:
                records.append(Record(fqdn, rtype, target, ttl))  # type: ignore[arg-type]
            except ValueError as exc:
                log.warning("DNS record %s %s %s left out: %s", name, rtype, value, exc)
                continue
            seen.add((fqdn, rtype))
        return records

    # -- keeping up with the database --

    async def _reload_loop(self, changed: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), RELOAD_EVERY_S)
            changed.clear()
            try:
                await self.reload()
            except Exception:
                log.exception("reloading the network boot configuration failed")

    async def reload(self) -> None:
        if self.dhcp is not None:
            subnet, hosts = await asyncio.to_thread(self._read_dhcp_config, self.dhcp.address)
            if subnet is not None:
                self.dhcp.backend.set_pools(_pools(subnet))
                self.dhcp.backend.set_hosts(hosts)
                self.dhcp.server.reconfigure(self._subnet_config(subnet, self.dhcp.address))
        if self.dns is not None:
            self.dns.zone.replace(await asyncio.to_thread(self._zone_records))

    def _read_dhcp_config(self, address: IPv4Interface) -> tuple[Subnet | None, list[Any]]:
        with unit_of_work(self.ctx.session_factory) as db:
            service = NetbootService(db, self.ctx.clock)
            subnet = service.subnet_for(address.ip)
            if subnet is not None:
                db.expunge(subnet)
            return subnet, service.hosts()

    async def _event_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(EVENT_FLUSH_S)
            rounds += 1
            try:
                await asyncio.to_thread(self._flush_events, prune=rounds % EVENT_PRUNE_EVERY == 0)
            except Exception:
                log.exception("writing boot events failed")

    def _flush_events(self, prune: bool = False) -> None:
        events = self.events.take()
        if not events and not prune:
            return
        with unit_of_work(self.ctx.session_factory) as db:
            service = NetbootService(db, self.ctx.clock)
            service.record_events(events)
            if prune:
                service.prune_events(self.settings.boot.events_kept)


def _pools(subnet: Subnet) -> list[tuple[IPv4Address, IPv4Address]]:
    if subnet.mode != "server" or not subnet.range_first or not subnet.range_last:
        return []
    return [(IPv4Address(subnet.range_first), IPv4Address(subnet.range_last))]


def _qualify(name: str, domain: str) -> str:
    """Names in the database are relative to the zone unless they already end in it (or are reverse names)."""
    name = name.lower().rstrip(".")
    if name == domain or name.endswith("." + domain) or name.endswith(".in-addr.arpa"):
        return name
    return f"{name}.{domain}"


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host and port.isdigit():
        return host, int(port)
    return text, 53
