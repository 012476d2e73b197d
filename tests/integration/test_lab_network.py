"""The emulated rack's network layer for real: a lab namespace with its bridges (lab/network.py), a
server inside it reached from the host through the port forwarder (lab/forward.py), and teardown
from the lab's record (lab/state.py) leaving nothing behind — no namespace, no process, no file,
no new host interface.

Everything stays inside namespaces these tests create, or on the host's loopback. Needs root and
iproute2; every process started here is bounded (``--duration``, ``sleep 30``) and ended by PID.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.tls import ensure_certificate
from lab.forward import Route, forward_argv, open_listener
from lab.netns import in_namespace, ip, namespace_exists, namespace_inode, namespace_pids
from lab.network import BMC_FIRST, NUMBERS, LabNetwork
from lab.state import LabRecord, process_start_time, start_process, teardown
from tests.support.requirements import require_lab

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _installed() -> None:
    require_lab()

HTTP_PORT = 8000
HTTPS_PORT = 8443
WAIT_S = 15.0  # bounds every wait below; things here take well under a second
TEMPLATE = "ingot-lt{number}"

# A minimal HTTPS file server (run inside the lab) for checking that TLS passes through untouched.
TLS_SERVER = """
import http.server, ssl, sys
address, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
server = http.server.ThreadingHTTPServer((address, port), http.server.SimpleHTTPRequestHandler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


@dataclass
class Lab:
    net: LabNetwork
    record: LabRecord
    work: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, role: str, argv: list[str], *, inside: bool = True, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = start_process(self.record, role, argv, netns=self.net.namespace if inside else None, **kwargs)
        self.procs.append(proc)
        return proc

    def http_server(self, directory: Path) -> subprocess.Popen[bytes]:
        return self.start("http", [sys.executable, "-m", "http.server", "--bind", self.net.address, str(HTTP_PORT),
                                   "--directory", str(directory)])

    def forwarder(self, routes: Sequence[Route], **kwargs: Any) -> list[int]:
        """Start the forwarder (in the host namespace) and return the loopback ports it bound."""
        with (self.work / "forward.log").open("ab") as log:
            proc = self.start("forward", forward_argv(self.net.namespace, routes, duration=120, **kwargs),
                              inside=False, stdout=subprocess.PIPE, stderr=log)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # one JSON line when ready; EOF if it failed
        assert line, f"forwarder did not start: {(self.work / 'forward.log').read_text()}"
        return [int(endpoint.rsplit(":", 1)[1]) for endpoint in json.loads(line)["listen"]]


def host_links() -> list[str]:
    return sorted(line.split(":")[1].strip() for line in ip("-o", "link").splitlines())


def get_until_served(url: str, **kwargs: Any) -> httpx.Response:
    """GET ``url``, retrying while the server behind the forwarder is still starting."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return httpx.get(url, timeout=5, **kwargs)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def hold_connection(port: int) -> Iterator[socket.socket]:
    """A connection through the forwarder that got an answer and stays open. Retried while the
    forwarder has not yet noticed that an earlier connection closed (it still counts until then)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: lab\r\n\r\n")
            if sock.recv(100).startswith(b"HTTP/1.0 200"):
                break
        except ConnectionResetError:
            pass
        sock.close()
        if time.monotonic() > deadline:
            raise TimeoutError("no connection through the forwarder got an answer")
        time.sleep(0.05)
    with sock:
        yield sock


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    net = LabNetwork.allocate(TEMPLATE)
    record = LabRecord.new(tmp_path / "state", net.namespace)
    lab = Lab(net, record, tmp_path)
    try:
        net.create(record)
        yield lab
    finally:
        try:
            teardown(record, grace=5)  # a no-op when the test tore the lab down itself
        finally:
            for proc in lab.procs:  # safety net, by our own Popen's PID
                if proc.poll() is None:
                    proc.kill()
                proc.wait(5)
                if proc.stdout is not None:
                    proc.stdout.close()


# -- the plan ------------------------------------------------------------------------------------

def test_plan_derives_disjoint_names_and_networks() -> None:
    low, high = LabNetwork("ingot-lab", NUMBERS.start), LabNetwork("ingot-lab", NUMBERS.stop - 1)
    nets = [n.provisioning_network for n in (low, high)] + [n.management_network for n in (low, high)]
    assert all(a == b or not a.overlaps(b) for a in nets for b in nets)
    assert str(low.provisioning_network) == "10.100.1.0/24" and str(low.management_network) == "10.150.1.0/24"
    assert low.address == "10.100.1.1" and low.dhcp_range == ("10.100.1.100", "10.100.1.199")
    assert low.bmc_address(0) == f"10.150.1.{BMC_FIRST}" and low.bmc_address(1) == f"10.150.1.{BMC_FIRST + 1}"
    assert low.prefix6.prefixlen == 64 and low.prefix6.is_private
    assert LabNetwork.from_dict(json.loads(json.dumps(high.as_dict()))) == high
    assert low.serve_env()["INGOT_DHCP_INTERFACE"] == low.provisioning_bridge
    for bad in (lambda: LabNetwork("ingot lab", 1), lambda: LabNetwork("ingot-lab", 0),
                lambda: low.bmc_address(-1), lambda: low.bmc_address(244)):
        with pytest.raises(ValueError):
            bad()


def test_allocate_skips_numbers_and_names_in_use(lab: Lab) -> None:
    with pytest.raises(FileExistsError):
        LabNetwork.allocate(lab.net.namespace)
    # Another naming scheme with the same number would get the same networks: allocate sees them
    # configured in the existing namespace and moves on.
    other = LabNetwork.allocate("ingot-other{number}", candidates=[lab.net.number, *random.sample(NUMBERS, 8)])
    assert other.number != lab.net.number
    assert not other.provisioning_network.overlaps(lab.net.provisioning_network)
    assert not other.management_network.overlaps(lab.net.management_network)


def test_namespace_holds_both_bridges_taps_and_bmc_addresses(lab: Lab) -> None:
    net = lab.net
    assert net.add_tap("tap0") == "tap0"
    assert [net.add_bmc_address(i) for i in range(3)] == [net.bmc_address(i) for i in range(3)]
    assert net.add_bmc_address(0) == net.bmc_address(0)  # again: fine
    links = ip("-o", "link", netns=net.namespace)
    assert "tap0: " in links and f"master {net.provisioning_bridge}" in links
    addresses = ip("-o", "-4", "addr", "show", netns=net.namespace)
    assert f"{net.address}/24" in addresses and f"{net.management_address}/24" in addresses
    assert all(f"{net.bmc_address(i)}/24" in addresses for i in range(3))
    assert str(net.prefix6.network_address + 1) in ip("-o", "-6", "addr", "show", "dev", net.provisioning_bridge,
                                                      netns=net.namespace)
    # a BMC can listen on its own address, port 623, inside the lab
    with in_namespace(net.namespace, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as sock:
        sock.bind((net.bmc_address(2), 623))
    with pytest.raises(ValueError):
        net.add_tap("a-name-longer-than-15")


# -- forwarding and teardown ------------------------------------------------------------------------

def test_forwarded_http_and_https_then_teardown_leaves_nothing(lab: Lab) -> None:
    before = host_links()
    www = lab.record.add_path(lab.work / "www")
    www.mkdir()
    (www / "hello.txt").write_text("hello from inside the lab\n")
    cert, key, _ = ensure_certificate(lab.record.add_path(lab.work / "tls-home"), None, None)
    lab.http_server(www)
    lab.start("https", [sys.executable, "-c", TLS_SERVER, lab.net.address, str(HTTPS_PORT), str(cert), str(key)],
              cwd=www)
    http_port, https_port = lab.forwarder([Route(("127.0.0.1", 0), (lab.net.address, HTTP_PORT)),
                                           Route(("127.0.0.1", 0), (lab.net.address, HTTPS_PORT))])

    response = get_until_served(f"http://127.0.0.1:{http_port}/hello.txt")
    assert response.status_code == 200 and response.text == "hello from inside the lab\n"
    # TLS end to end: the certificate verified here is the one the server inside the lab holds
    # (its names include 127.0.0.1), so the forwarder passed the handshake through untouched.
    response = get_until_served(f"https://127.0.0.1:{https_port}/hello.txt",
                                verify=ssl.create_default_context(cafile=str(cert)))
    assert response.status_code == 200 and response.text == "hello from inside the lab\n"
    assert host_links() == before  # forwarding added no interface to the host

    idle = socket.create_connection(("127.0.0.1", http_port), timeout=5)  # open across teardown
    record = LabRecord.load(lab.record.path)  # what `ingot lab down` would read
    assert {p.role for p in record.running_processes()} == {"http", "https", "forward"}
    assert record.namespace_present()
    assert LabNetwork.from_dict(record.details["network"]) == lab.net
    try:
        teardown(record)
    finally:
        idle.close()

    assert lab.net.namespace not in ip("netns", "list").split()
    assert not any(p.running() for p in record.processes)
    exit_codes = {role: proc.wait(5) for role, proc in zip(("http", "https", "forward"), lab.procs, strict=True)}
    assert exit_codes["forward"] == 0, "the forwarder exits cleanly on SIGTERM"
    assert not any(Path(p).exists() for p in record.paths)
    assert not record.path.exists()
    assert host_links() == before


def test_forwarder_bounds_its_connections(lab: Lab) -> None:
    www = lab.record.add_path(lab.work / "www")
    www.mkdir()
    (www / "x").write_text("x")
    lab.http_server(www)
    (port,) = lab.forwarder([Route(("127.0.0.1", 0), (lab.net.address, HTTP_PORT))], max_connections=1)
    assert get_until_served(f"http://127.0.0.1:{port}/x").text == "x"
    # the one allowed connection, kept open; another one is closed at once: the limit is reached
    with hold_connection(port), socket.create_connection(("127.0.0.1", port), timeout=5) as refused:
        assert refused.recv(100) == b""
    # the held connection is closed: a new one gets through again
    assert get_until_served(f"http://127.0.0.1:{port}/x").text == "x"


def test_forwarder_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        open_listener(("0.0.0.0", 0))
    result = subprocess.run(forward_argv("ingot-no-such-lab", [Route(("127.0.0.1", 0), ("10.100.1.1", 80))]),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and "ingot-no-such-lab" in result.stderr


def test_teardown_after_a_process_died_and_a_second_teardown(lab: Lab) -> None:
    sleeper = lab.start("sleeper", ["sleep", "30"])
    other = lab.start("other-sleeper", ["sleep", "30"])
    log = lab.record.add_path(lab.work / "lab.log")
    log.write_text("something the lab wrote\n")
    sleeper.kill()
    sleeper.wait(5)  # dead and reaped before teardown

    teardown(lab.record)
    teardown(lab.record)  # nothing left to do: no error

    assert other.wait(5) == -15  # the live one got SIGTERM
    assert not namespace_exists(lab.net.namespace)
    assert not log.exists() and not lab.record.path.exists()
    assert not any(p.running() for p in lab.record.processes)


def test_an_unrecorded_process_inside_the_namespace_does_not_keep_it(lab: Lab) -> None:
    stray = subprocess.Popen(["ip", "netns", "exec", lab.net.namespace, "sleep", "30"])  # not recorded
    try:
        deadline = time.monotonic() + WAIT_S
        while stray.pid not in namespace_pids(lab.net.namespace) and time.monotonic() < deadline:
            time.sleep(0.05)  # until `ip netns exec` has joined the namespace and exec'd sleep
        teardown(lab.record)
        assert stray.wait(5) == -15
        assert not namespace_exists(lab.net.namespace)
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait(5)


def test_a_pid_whose_start_time_differs_is_not_signalled(tmp_path: Path) -> None:
    record = LabRecord.new(tmp_path / "state", "ingot-pid-check")
    sleeper = start_process(record, "sleeper", ["sleep", "30"])  # a harmless process of our own
    try:
        entry = record.processes[0]
        assert entry.pid == sleeper.pid and entry.start_time == process_start_time(sleeper.pid)
        entry.start_time = (entry.start_time or 0) + 1  # as if the PID now belonged to another process
        record.save()
        teardown(LabRecord.load(record.path))
        assert sleeper.poll() is None, "a PID whose start time does not match was signalled"
        assert not entry.running()
    finally:
        sleeper.terminate()  # by our own Popen's PID
        sleeper.wait(5)


def test_teardown_leaves_a_same_named_namespace_it_did_not_create(lab: Lab) -> None:
    ns = lab.net.namespace
    recorded = lab.record.namespace_inode
    ip("netns", "del", ns)  # someone deletes the lab's namespace by hand ...
    ip("netns", "add", ns)  # ... and another one with the same name appears
    try:
        assert namespace_inode(ns) != recorded
        assert not lab.record.namespace_present()
        teardown(lab.record)
        assert namespace_exists(ns)  # not ours: left alone
    finally:
        with contextlib.suppress(Exception):
            ip("netns", "del", ns)
