"""Scan a management subnet for BMCs: IPMI over RMCP (UDP) and Redfish (HTTP(S) service root).

IPMI: for each port, ONE UDP socket sends every address an ASF Presence Ping and a session-less Get Channel
Authentication Capabilities request, and replies are matched by source address. Both are sent because BMCs
differ: some answer only one of them (pyghmi's server ignores ASF; some BMCs disable ASF), and the two
together tell more (ASF support, IPMI v2.0). Redfish: ``GET /redfish/v1/`` (unauthenticated by the spec)
over https, then http.

Every loop is bounded: at most ``max_addresses`` addresses, ``retries + 1`` attempts of ``timeout_s`` each,
``concurrency`` probes in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from appliance.discovery import rmcp
from appliance.errors import InvalidInput

log = logging.getLogger(__name__)

BmcProtocol = Literal["ipmi", "redfish"]
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Discovered:
    """One BMC endpoint that answered. ``detail``: IPMI ``{"ipmiVersion", "asf"}``; Redfish ``{"vendor",
    "product", "uuid", "redfishVersion", "scheme"}`` (values may be None when the BMC did not say)."""

    address: str
    port: int
    protocol: BmcProtocol
    detail: dict[str, Any] = field(default_factory=dict, hash=False)


def addresses_to_scan(cidr: str, *, max_addresses: int = 4096) -> list[str]:
    """The host addresses of ``cidr``, or :class:`InvalidInput` if it is malformed or too large.

    IPv4 networks wider than /31 skip the network and broadcast addresses (RFC 3021 /31s and /32s have none).
    """
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f" (did you mean {ipaddress.ip_network(cidr.strip(), strict=False)}?)"
        raise InvalidInput(reason=f"{cidr!r} is not a valid CIDR: {exc}{hint}") from None
    if network.num_addresses > max_addresses:
        raise InvalidInput(reason=f"{cidr} has {network.num_addresses} addresses; the limit is {max_addresses}")
    hosts = list(network)
    if network.version == 4 and network.prefixlen < 31:
        hosts = hosts[1:-1]
    return [str(host) for host in hosts]


class _IpmiReplies(asyncio.DatagramProtocol):
    """Thin transport side: decode each datagram and hand it to the probe waiting on its source address."""

    def __init__(self) -> None:
        self.waiting: dict[str, _IpmiProbe] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        probe = self.waiting.get(_normal(addr[0]))
        if probe is None:
            return
        try:
            message = rmcp.decode(data)
        except rmcp.DecodeError as exc:
            log.debug("dropping malformed RMCP reply from %s: %s", addr[0], exc)
            return
        probe.feed(message)

    def error_received(self, exc: Exception) -> None:
        log.debug("RMCP socket error: %s", exc)  # ICMP unreachable and the like: the probe just times out


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address


class _IpmiProbe:
    def __init__(self) -> None:
        self.pong: rmcp.PresencePong | None = None
        self.caps: rmcp.AuthCapsResponse | None = None
        self.any = asyncio.Event()
        self.both = asyncio.Event()

    def feed(self, message: rmcp.Message) -> None:
        if isinstance(message, rmcp.PresencePong):
            self.pong = message
        elif isinstance(message, rmcp.AuthCapsResponse):
            self.caps = message
        else:
            return  # a request echoed back at us is not an answer
        self.any.set()
        if self.pong is not None and self.caps is not None:
            self.both.set()

    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"asf": self.pong is not None}
        if self.pong is not None:
            detail["ipmiSupported"] = self.pong.ipmi_supported
        if self.caps is not None and self.caps.completion_code == 0:
            detail["ipmiVersion"] = self.caps.ipmi_version
        return detail


_PING = rmcp.encode_presence_ping()
_AUTH_CAPS = rmcp.encode_auth_caps_request()


async def _probe_ipmi(transport: asyncio.DatagramTransport, replies: _IpmiReplies, address: str, port: int,
                      timeout_s: float, retries: int) -> Discovered | None:
    probe = _IpmiProbe()
    replies.waiting[address] = probe
    try:
        for _attempt in range(retries + 1):
            transport.sendto(_PING, (address, port))
            transport.sendto(_AUTH_CAPS, (address, port))
            try:
                await asyncio.wait_for(probe.any.wait(), timeout_s)
                break
            except TimeoutError:
                continue
        else:
            return None
        # The other reply usually follows within a millisecond; give it a short grace to fill in the detail.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(probe.both.wait(), min(timeout_s, 0.25))
        return Discovered(address, port, "ipmi", probe.detail())
    finally:
        replies.waiting.pop(address, None)


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


async def _probe_redfish(client: httpx.AsyncClient, address: str, port: int) -> Discovered | None:
    for scheme in ("https", "http"):
        url = f"{scheme}://{_url_host(address)}:{port}/redfish/v1/"
        try:
            response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            log.debug("redfish probe %s: %s", url, exc)
            continue
        if response.status_code != 200:
            continue
        try:
            body = response.json()
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        if "RedfishVersion" not in body and not str(body.get("@odata.type", "")).startswith("#ServiceRoot."):
            continue
        return Discovered(address, port, "redfish", {
            "vendor": body.get("Vendor"),
            "product": body.get("Product"),
            "uuid": body.get("UUID"),
            "redfishVersion": body.get("RedfishVersion"),
            "scheme": scheme,
        })
    return None


def _check_ports(name: str, ports: Sequence[int]) -> tuple[int, ...]:
    for port in ports:
        if not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidInput(reason=f"{name} contains an invalid port: {port!r}")
    return tuple(dict.fromkeys(ports))


async def scan(cidr: str, *, ipmi_ports: Sequence[int] = (623,), redfish_ports: Sequence[int] = (),
               timeout_s: float = 1.0, concurrency: int = 256, max_addresses: int = 4096, retries: int = 1,
               on_progress: ProgressCallback | None = None) -> list[Discovered]:
    """Probe every host address of ``cidr`` on the given ports; return what answered, sorted by address.

    ``on_progress(done, total)`` is called after each (address, protocol, port) probe finishes.
    """
    if timeout_s <= 0 or concurrency < 1 or retries < 0:
        raise InvalidInput(reason="timeout_s must be > 0, concurrency >= 1 and retries >= 0")
    addresses = addresses_to_scan(cidr, max_addresses=max_addresses)
    ipmi = _check_ports("ipmi_ports", ipmi_ports)
    redfish = _check_ports("redfish_ports", redfish_ports)
    total = len(addresses) * (len(ipmi) + len(redfish))
    done = 0
    limit = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if addresses and ":" in addresses[0] else socket.AF_INET

    def finished() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    async def limited(coro_factory: Callable[[], Any]) -> Discovered | None:
        async with limit:
            try:
                result: Discovered | None = await coro_factory()
                return result
            finally:
                finished()

    endpoints: list[tuple[asyncio.DatagramTransport, _IpmiReplies]] = []
    try:
        jobs: list[Any] = []
        for port in ipmi:
            transport, replies = await loop.create_datagram_endpoint(_IpmiReplies, family=family)
            endpoints.append((transport, replies))
            for address in addresses:
                jobs.append(lambda t=transport, r=replies, a=address, p=port:
                            _probe_ipmi(t, r, a, p, timeout_s, retries))
        async with contextlib.AsyncExitStack() as stack:
            if redfish:
                # verify=False: BMCs ship self-signed certificates, and we only read the public service root.
                # (Given a transport, httpx.AsyncClient ignores its own verify/limits, so they go here.)
                http = httpx.AsyncHTTPTransport(
                    retries=retries, verify=False,
                    limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0))
                client = await stack.enter_async_context(
                    httpx.AsyncClient(transport=http, timeout=timeout_s, follow_redirects=False))
                for port in redfish:
                    for address in addresses:
                        jobs.append(lambda c=client, a=address, p=port: _probe_redfish(c, a, p))
            results = await asyncio.gather(*(limited(job) for job in jobs))
    finally:
        for transport, _ in endpoints:
            transport.close()
    found = [result for result in results if result is not None]
    return sorted(found, key=lambda d: (ipaddress.ip_address(d.address), d.protocol, d.port))
