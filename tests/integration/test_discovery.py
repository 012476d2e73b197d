"""The scanner against simulated BMCs on loopback (and OpenIPMI's ipmi_sim): exactly the live ones answer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliance.discovery import Discovered, scan
from appliance.discovery.scanner import addresses_to_scan
from appliance.errors import InvalidInput
from lab.bmc import BmcFleet, Fault


@pytest.fixture(scope="module")
def fleets() -> Iterator[tuple[BmcFleet, BmcFleet]]:
    # 127.78.0.1-5 answer ASF and auth caps (.4 drops half its packets, .5 is dead);
    # 127.78.0.9-10 answer only auth caps, as a stock pyghmi server does.
    with (BmcFleet(5, address_base="127.78.0.1", port=0, faults={3: Fault.LOSSY, 4: Fault.DEAD},
                   loss=0.5, seed=11) as asf,
          BmcFleet(2, address_base="127.78.0.9", port=asf[0].port, answer_asf_ping=False) as plain):
        yield asf, plain


def test_scan_finds_exactly_the_live_bmcs(fleets: tuple[BmcFleet, BmcFleet]) -> None:
    asf, _plain = fleets
    port = asf[0].port
    progress: list[tuple[int, int]] = []
    found = asyncio.run(scan("127.78.0.0/28", ipmi_ports=(port,), timeout_s=0.4, retries=4,
                             on_progress=lambda done, total: progress.append((done, total))))
    assert [d.address for d in found] == ["127.78.0.1", "127.78.0.2", "127.78.0.3", "127.78.0.4",
                                          "127.78.0.9", "127.78.0.10"]
    assert all(d.port == port and d.protocol == "ipmi" for d in found)
    by_address = {d.address: d.detail for d in found}
    assert by_address["127.78.0.1"] == {"asf": True, "ipmiSupported": True, "ipmiVersion": "2.0"}
    assert by_address["127.78.0.9"] == {"asf": False, "ipmiVersion": "2.0"}
    assert progress[-1] == (14, 14) and len(progress) == 14  # /28 without network and broadcast


def test_scan_of_silent_range_is_empty_and_bounded(fleets: tuple[BmcFleet, BmcFleet]) -> None:
    import time

    started = time.monotonic()
    assert asyncio.run(scan("127.78.2.0/29", ipmi_ports=(fleets[0][0].port,), timeout_s=0.2, retries=1)) == []
    assert time.monotonic() - started < 3


class _ServiceRoot(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/redfish/v1":
            self.send_error(404)
            return
        body = json.dumps({"@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot", "RedfishVersion": "1.6.0",
                           "Vendor": "Lab", "Product": "Fake BMC",
                           "UUID": "85775665-c110-4b85-8989-e6162170b3ec"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def redfish_root() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.78.3.1", 0), _ServiceRoot)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.78.3.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_scan_finds_redfish_service_root(redfish_root: tuple[str, int]) -> None:
    address, port = redfish_root
    found = asyncio.run(scan("127.78.3.0/30", ipmi_ports=(), redfish_ports=(port,), timeout_s=1.0))
    assert found == [Discovered(address, port, "redfish", {
        "vendor": "Lab", "product": "Fake BMC", "uuid": "85775665-c110-4b85-8989-e6162170b3ec",
        "redfishVersion": "1.6.0", "scheme": "http"})]


@pytest.mark.slow
def test_scan_finds_ipmi_sim() -> None:
    from tests.support.ipmi_sim import IpmiSim  # owned by the power-driver tests; used as is

    sim = IpmiSim()
    try:
        sim.start()
        found = asyncio.run(scan("127.0.0.1/32", ipmi_ports=(sim.port,), timeout_s=1.0))
    finally:
        sim.stop()
    assert [(d.address, d.port) for d in found] == [("127.0.0.1", sim.port)]
    assert found[0].detail["ipmiVersion"] == "2.0"


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-an-address", "10.0.0.5/24", "", "127.0.0.0/19"])
def test_bad_or_too_large_cidrs_are_refused(cidr: str) -> None:
    with pytest.raises(InvalidInput):
        asyncio.run(scan(cidr))


def test_address_selection() -> None:
    assert addresses_to_scan("127.0.0.0/30") == ["127.0.0.1", "127.0.0.2"]
    assert addresses_to_scan("127.0.0.0/31") == ["127.0.0.0", "127.0.0.1"]
    assert addresses_to_scan("127.0.0.9/32") == ["127.0.0.9"]
    assert len(addresses_to_scan("127.0.0.0/20")) == 4094
    with pytest.raises(InvalidInput, match=r"did you mean 10\.0\.0\.0/24"):
        addresses_to_scan("10.0.0.5/24")
    with pytest.raises(InvalidInput, match="limit is 16"):
        addresses_to_scan("127.0.0.0/27", max_addresses=16)


def test_bad_ports_are_refused() -> None:
    with pytest.raises(InvalidInput):
        asyncio.run(scan("127.0.0.1/32", ipmi_ports=(0,)))
