"""pxe.dhcp.server against real DHCP clients, inside throw-away network namespaces.

Every test builds a :class:`tests.support.netns.Lab`: a bridge in its own namespace and one
namespace per machine. The server runs *inside* the server namespace through
``tests/support/dhcp_serve.py`` (MemoryBackend + DhcpServer, events as JSON lines, stats and
leases in a state file). Clients are the real ones (ISC dhclient, busybox udhcpc, dhcpcd, Kea's
perfdhcp, dnsmasq as a site DHCP server) and scapy-crafted frames sent from a raw socket in the
client namespace, so a client without an address can be imitated exactly and every reply frame
(its Ethernet and IP destination included) can be inspected.

Network safety: both ends of every link are created inside lab namespaces, the server binds to
a lab interface with SO_BINDTODEVICE, and raw sockets are opened inside lab namespaces, so
nothing here can send or receive DHCP on a real interface of the machine. Every wait is bounded
and the lab kills what it started and deletes what it created.
"""

from __future__ import annotations

import json
import random
import re
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from tests.support.netns import Host, Lab

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 15.0
REPLY_TIMEOUT = 3.0
SILENCE = 1.0  # how long "no reply" is watched for
CLIENT_TIMEOUT = 20.0
LEASE_TIME = 900
MAGIC = b"\x63\x82\x53\x63"  # RFC 2131 §3
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # linux/if_packet.h: a frame this host sent, seen on a packet socket
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
BOOTREPLY = 2
DISCOVER, OFFER, REQUEST, ACK = 1, 2, 3, 5

# --- the server process -----------------------------------------------------------------------


class DhcpProcess:
    """``tests.support.dhcp_serve`` running in ``host``'s namespace."""

    def __init__(self, lab: Lab, host: Host, tmp_path: Path, *args: str, pool: tuple[int, int] = (100, 199)) -> None:
        assert host.ip is not None
        self.lab = lab
        self.host = host
        self.ip = str(host.ip)
        self.router = str(lab.address(254))
        self.dns = (str(lab.address(253)), str(lab.address(252)))
        self.http_base = f"http://{host.ip}:8080"
        self.pool = (lab.address(pool[0]), lab.address(pool[1]))
        self.events_path = tmp_path / f"events-{host.role}.jsonl"
        self.state_path = tmp_path / f"state-{host.role}.json"
        self.log_path = tmp_path / f"server-{host.role}.log"
        argv = [
            sys.executable, "-m", "tests.support.dhcp_serve",
            "--interface", host.ifname,
            "--server-ip", self.ip,
            "--prefix", str(lab.network.prefixlen),
            "--range", f"{self.pool[0]}-{self.pool[1]}",
            "--router", self.router,
            "--dns", ",".join(self.dns),
            "--domain", "lab.test",
            "--lease-time", str(LEASE_TIME),
            "--http-base", self.http_base,
            "--events", str(self.events_path),
            "--state", str(self.state_path),
            "--max-seconds", "120",
            "--verbose",
            *args,
        ]  # fmt: skip
        with self.log_path.open("w") as log:
            self.process = lab.spawn_in(host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                        cwd=str(REPO))
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], READY_TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            raise AssertionError(f"dhcp server did not start ({line!r}):\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line.strip()]

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.state_path.read_text())
        return result

    def wait_state(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """Poll the state file (rewritten every 0.1 s while it changes) until ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"server state never matched: {state['stats']}\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def wait_events(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if predicate(e)]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event; events: {self.events()[-10:]}")
            time.sleep(0.05)

    def lease_of(self, mac: str) -> str | None:
        return next((lease["ip"] for lease in self.state()["leases"] if lease["mac"] == mac), None)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as built:
        yield built


# --- a client without an address: raw frames in the client namespace -----------------------------


class RawClient:
    """Sends and sniffs Ethernet frames on ``host``'s interface (AF_PACKET, inside its namespace)."""

    def __init__(self, lab: Lab, host: Host) -> None:
        self.host = host
        self.sock = lab.socket_in(host, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((host.ifname, 0))

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            for _ in range(10_000):
                self.sock.recv(65535)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def send(self, frame: Packet) -> None:
        self.sock.send(bytes(frame))

    def capture(self, done: Callable[[list[Ether]], bool], timeout: float) -> list[Ether]:
        """Frames received (not sent) until ``done(frames)`` or ``timeout`` seconds."""
        frames: list[Ether] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, address = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            if address[2] == PACKET_OUTGOING:
                continue
            frames.append(Ether(data))
            if done(frames):
                break
        return frames

    def exchange(self, frame: Packet, xid: int, *, count: int = 1, timeout: float = REPLY_TIMEOUT) -> list[Ether]:
        """Send ``frame`` and return every frame seen until ``count`` DHCP replies with ``xid`` arrived."""
        self.drain()
        self.send(frame)
        return self.capture(lambda frames: len(replies(frames, xid)) >= count, timeout)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def dhcp_frame(mac: str, xid: int, options: list[Any], *, broadcast: bool, ciaddr: str = "0.0.0.0",
               dst_mac: str = BROADCAST_MAC, src_ip: str = "0.0.0.0", dst_ip: str = "255.255.255.255") -> Packet:
    """A client's DHCP message from a machine with no address yet (source 0.0.0.0)."""
    return (
        Ether(src=mac, dst=dst_mac)
        / IP(src=src_ip, dst=dst_ip)
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, chaddr=mac_bytes(mac), xid=xid, flags=0x8000 if broadcast else 0, ciaddr=ciaddr)
        / DHCP(options=[*options, "end"])
    )


def replies(frames: list[Ether], xid: int) -> list[Ether]:
    return [f for f in frames if f.haslayer(BOOTP) and f[BOOTP].op == BOOTREPLY and f[BOOTP].xid == xid]


def options_of(frame: Packet) -> dict[int, Any]:
    """The reply's DHCP options by code; single values unwrapped."""
    result: dict[int, Any] = {}
    for item in frame[DHCP].options:
        if not isinstance(item, tuple):
            continue
        name, values = item[0], item[1:]
        code = name if isinstance(name, int) else DHCPRevOptions[name][0]
        result[code] = values[0] if len(values) == 1 else values
    return result


def text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.rstrip(b"\x00").decode()
    return value or ""


def only_reply(frames: list[Ether], xid: int, message: int) -> Ether:
    found = replies(frames, xid)
    assert len(found) == 1, f"expected one reply to xid {xid:#x}, got {[f.summary() for f in found]}"
    reply = found[0]
    assert options_of(reply)[53] == message
    return reply


_macs = iter(range(1, 100_000))


def new_mac(prefix: str = "02:b0") -> str:
    n = next(_macs)
    return f"{prefix}:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}:42"


# --- real clients -----------------------------------------------------------------------------

def recorder(tmp_path: Path, name: str, reason: str, fields: dict[str, str]) -> tuple[Path, Path]:
    """A client hook script that configures nothing and writes ``fields`` to ``<out>/<reason>``.

    :param reason: the shell expression holding the hook's reason (``$reason``, ``$1``).
    :param fields: record key -> the client's shell variable holding it.
    """
    out = tmp_path / f"{name}-out"
    out.mkdir()
    lines = "".join(f'echo "{key}=${{{variable}}}"\n' for key, variable in fields.items())
    script = tmp_path / f"{name}.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'r="{reason}"\n'
        f'{{\n{lines}}} > "{out}/${{r:-unknown}}.tmp" && mv "{out}/${{r:-unknown}}.tmp" "{out}/${{r:-unknown}}"\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return script, out


#: ISC dhclient and dhcpcd hook variables (dhclient-script(8), dhcpcd-run-hooks(8)).
ISC_FIELDS = {"ip": "new_ip_address", "router": "new_routers", "dns": "new_domain_name_servers",
              "lease": "new_dhcp_lease_time"}
#: busybox udhcpc script variables.
UDHCPC_FIELDS = {"ip": "ip", "router": "router", "dns": "dns", "lease": "lease"}


def spawn_logged(lab: Lab, where: Host, argv: list[str], log: Path) -> subprocess.Popen[Any]:
    """Start ``argv`` in ``where``'s namespace with its output in ``log`` (killed at lab teardown)."""
    with log.open("w") as stream:
        return lab.spawn_in(where, argv, stdout=stream, stderr=stream)


def wait_file(path: Path, timeout: float, process: subprocess.Popen[Any] | None = None) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or (process is not None and process.poll() is not None and not path.exists()):
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.05)
    return path.read_text()


def parse_record(record: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in record.splitlines() if "=" in line)


def assert_configured(got: dict[str, str], server: DhcpProcess) -> None:
    assert IPv4Address(server.pool[0]) <= IPv4Address(got["ip"]) <= IPv4Address(server.pool[1])
    assert got["router"].split() == [server.router]
    assert got["dns"].split() == list(server.dns)
    assert int(got["lease"]) == LEASE_TIME


def assert_leased(server: DhcpProcess, mac: str, ip: str) -> None:
    server.wait_events(lambda e: e["mac"] == mac and e["reply_type"] == "ACK" and e["ip"] == ip)
    server.wait_state(lambda s: any(lease["mac"] == mac and lease["ip"] == ip for lease in s["leases"]))


def test_dhclient_gets_a_lease(lab: Lab, tmp_path: Path) -> None:
    srv, cli = lab.add_host("srv", address=1), lab.add_host("cli")
    server = DhcpProcess(lab, srv, tmp_path)
    script, out = recorder(tmp_path, "dhclient", "$reason", ISC_FIELDS)
    conf = tmp_path / "dhclient.conf"
    conf.write_text("timeout 15;\nrequest subnet-mask, broadcast-address, routers, domain-name, "
                    "domain-name-servers, host-name;\n")
    # -d: stay in the foreground (the lab kills it by PID); -1: one attempt.
    client = spawn_logged(lab, cli, ["dhclient", "-4", "-d", "-1", "-v", "-cf", str(conf), "-sf", str(script),
                                     "-lf", str(tmp_path / "dhclient.leases"), "-pf", str(tmp_path / "dhclient.pid"),
                                     cli.ifname], tmp_path / "dhclient.log")
    got = parse_record(wait_file(out / "BOUND", CLIENT_TIMEOUT, client))
    assert_configured(got, server)
    assert_leased(server, cli.mac, got["ip"])


def test_udhcpc_gets_a_lease(lab: Lab, tmp_path: Path) -> None:
    srv, cli = lab.add_host("srv", address=1), lab.add_host("cli")
    server = DhcpProcess(lab, srv, tmp_path)
    script, out = recorder(tmp_path, "udhcpc", "$1", UDHCPC_FIELDS)
    result = lab.run_in(cli, ["busybox", "udhcpc", "-i", cli.ifname, "-n", "-q", "-f", "-t", "5", "-T", "1",
                              "-s", str(script)], timeout=CLIENT_TIMEOUT)
    assert result.returncode == 0, result.stderr
    got = parse_record((out / "bound").read_text())
    assert_configured(got, server)
    assert_leased(server, cli.mac, got["ip"])


def test_dhcpcd_gets_a_lease(lab: Lab, tmp_path: Path) -> None:
    srv, cli = lab.add_host("srv", address=1), lab.add_host("cli")
    server = DhcpProcess(lab, srv, tmp_path)
    script, out = recorder(tmp_path, "dhcpcd", "$reason", ISC_FIELDS)
    conf = tmp_path / "dhcpcd.conf"
    conf.write_text("noarp\nnoipv6\nnoipv4ll\nnodelay\noption domain_name_servers, routers\n")
    # NOTE: dhcpcd -T (test mode) only goes as far as the OFFER and dhcpcd 9.4.1 crashed in it, so
    # run it for real, one-shot and in the foreground. It configures the address in the client
    # namespace only; its lease database and control socket (/var/lib/dhcpcd, /run) are tmpfs
    # mounts private to the mount namespace `ip netns exec` creates, so the machine's stay untouched.
    command = (
        "mount -t tmpfs -o mode=0755 tmpfs /var/lib/dhcpcd && mount -t tmpfs -o mode=0755 tmpfs /run && "
        f"exec dhcpcd -B -1 -4 -d -f {conf} -c {script} -t 15 {cli.ifname}"
    )
    client = spawn_logged(lab, cli, ["sh", "-c", command], tmp_path / "dhcpcd.log")
    got = parse_record(wait_file(out / "BOUND", CLIENT_TIMEOUT, client))
    assert_configured(got, server)
    assert_leased(server, cli.mac, got["ip"])


_PERFDHCP_BLOCK = re.compile(r"\*\*\*Statistics for: (?P<name>[A-Z-]+)\*\*\*\n(?P<body>.*?)\n\n", re.S)


def perfdhcp_stats(output: str) -> dict[str, dict[str, str]]:
    stats = {}
    for block in _PERFDHCP_BLOCK.finditer(output):
        fields = dict(line.split(": ", 1) for line in block["body"].splitlines() if ": " in line)
        stats[block["name"]] = fields
    return stats


def test_perfdhcp_completes_every_dora(lab: Lab, tmp_path: Path) -> None:
    srv = lab.add_host("srv", address=1)
    cli = lab.add_host("cli", address=10)  # perfdhcp plays a relay agent: it needs an address
    # Each persist takes 50 ms while ACKs are due every 10 ms: group commit must batch them.
    server = DhcpProcess(lab, srv, tmp_path, "--persist-delay", "0.05", pool=(20, 250))
    exchanges = 200
    # 100 simulated clients, 100 DORAs a second; an exchange counts as lost after 2 s (-d), and
    # perfdhcp waits 1.5 s for the last replies before it exits (-W, microseconds).
    result = lab.run_in(cli, ["perfdhcp", "-4", "-r", "100", "-R", "100", "-n", str(exchanges), "-d", "2",
                              "-W", "1500000", "-l", cli.ifname], timeout=30)
    stats = perfdhcp_stats(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    for exchange in ("DISCOVER-OFFER", "REQUEST-ACK"):
        assert stats[exchange]["sent packets"] == str(exchanges), stats
        assert stats[exchange]["received packets"] == str(exchanges), stats
        assert stats[exchange]["drops"] == "0", stats
        assert stats[exchange]["rejected leases"] == "0", stats
    state = server.wait_state(lambda s: s["stats"]["replied"] == 2 * exchanges)
    acked = {e["mac"]: e["ip"] for e in server.events() if e["reply_type"] == "ACK"}
    assert {lease["mac"]: lease["ip"] for lease in state["leases"]} == acked
    assert len(set(acked.values())) == len(acked)  # no address handed to two clients
    assert state["stats"]["errors"] == state["stats"]["dropped"] == 0
    assert 0 < state["persists"] < exchanges, "every ACK had its own persist: no group commit"


# --- boot methods, with and without the broadcast flag ----------------------------------------


@dataclass(frozen=True)
class Firmware:
    method: str  # pxe.bootmethods name the server should pick
    options: tuple[tuple[int, bytes], ...]
    boot_file: str  # expected option 67; {base} and {mac} are filled in
    vendor_class: bytes | None  # expected option 60 in the reply
    tftp: bool

    def expected_file(self, http_base: str, mac: str) -> str:
        return self.boot_file.format(base=http_base, mac=mac.replace(":", "-"))


PRL = (55, bytes([1, 3, 6, 15, 43, 60, 66, 67, 93, 97]))  # what PXE ROMs ask for
GUID = (97, b"\x00" + bytes(range(16)))  # option 97: type 0 + a 16-byte GUID
FIRMWARE = {
    "bios": Firmware("bios-pxe", ((93, b"\x00\x00"), (94, b"\x01\x02\x01"), (60, b"PXEClient:Arch:00000:UNDI:002001"),
                                  GUID, PRL), "undionly.kpxe", b"PXEClient", True),
    "uefi-x64": Firmware("uefi-x64-pxe", ((93, b"\x00\x07"), (94, b"\x01\x03\x10"),
                                          (60, b"PXEClient:Arch:00007:UNDI:003016"), GUID, PRL),
                         "snponly.efi", b"PXEClient", True),
    "uefi-x64-http": Firmware("uefi-x64-http", ((93, b"\x00\x10"), (60, b"HTTPClient:Arch:00016:UNDI:003001"), PRL),
                              "{base}/boot/snponly.efi", b"HTTPClient", False),
    "uefi-arm64": Firmware("uefi-arm64-pxe", ((93, b"\x00\x0b"), (60, b"PXEClient:Arch:00011:UNDI:003000"), GUID, PRL),
                           "snponly-arm64.efi", b"PXEClient", True),
    "ipxe": Firmware("ipxe", ((93, b"\x00\x07"), (60, b"PXEClient:Arch:00007:UNDI:003016"), (77, b"iPXE"), PRL),
                     "{base}/ipxe/{mac}/boot.ipxe", None, False),
}


@dataclass
class BootLab:
    lab: Lab
    server: DhcpProcess
    client: RawClient
    srv: Host


@pytest.fixture(scope="module")
def boot_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootLab]:
    with Lab() as built:
        srv, cli = built.add_host("srv", address=1), built.add_host("cli")
        server = DhcpProcess(built, srv, tmp_path_factory.mktemp("boot"))
        yield BootLab(built, server, RawClient(built, cli), srv)


def assert_delivered(frame: Ether, *, broadcast: bool, mac: str, yiaddr: str) -> None:
    """RFC 2131 §4.1: broadcast when asked; otherwise unicast to yiaddr at chaddr, without ARP."""
    if broadcast:
        assert (frame.dst, frame[IP].dst) == (BROADCAST_MAC, "255.255.255.255")
    else:
        assert (frame.dst, frame[IP].dst) == (mac, yiaddr)
    assert (frame[UDP].sport, frame[UDP].dport) == (67, 68)


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast-flag", "no-broadcast-flag"])
@pytest.mark.parametrize("firmware", list(FIRMWARE), ids=list(FIRMWARE))
def test_boot_method_offer_and_ack(boot_lab: BootLab, firmware: str, broadcast: bool) -> None:
    fw = FIRMWARE[firmware]
    server, client = boot_lab.server, boot_lab.client
    mac = new_mac()
    xid = random.getrandbits(32)
    expected = fw.expected_file(server.http_base, mac)

    frames = client.exchange(dhcp_frame(mac, xid, [("message-type", "discover"), *fw.options], broadcast=broadcast),
                             xid)
    offer = only_reply(frames, xid, OFFER)
    yiaddr = offer[BOOTP].yiaddr
    assert server.pool[0] <= IPv4Address(yiaddr) <= server.pool[1]
    _assert_boot_options(offer, fw, expected, server)
    assert_delivered(offer, broadcast=broadcast, mac=mac, yiaddr=yiaddr)

    request = [("message-type", "request"), ("server_id", server.ip), ("requested_addr", yiaddr), *fw.options]
    rxid = (xid + 1) & 0xFFFFFFFF
    frames = client.exchange(dhcp_frame(mac, rxid, request, broadcast=broadcast), rxid)
    ack = only_reply(frames, rxid, ACK)
    assert ack[BOOTP].yiaddr == yiaddr
    _assert_boot_options(ack, fw, expected, server)
    assert_delivered(ack, broadcast=broadcast, mac=mac, yiaddr=yiaddr)
    options = options_of(ack)
    assert options[51] == LEASE_TIME
    assert options[3] == server.router

    if not broadcast:
        # The unicast reached a client that cannot answer ARP (it has no address): the server
        # wrote the neighbour entry itself (SIOCSARP), so no ARP request was ever needed.
        assert not [f for f in frames if f.haslayer(ARP) and f[ARP].pdst == yiaddr]
        neigh = boot_lab.lab.run_in(boot_lab.srv, ["ip", "-4", "neigh", "show", yiaddr, "dev", boot_lab.srv.ifname],
                                    timeout=5, check=True).stdout
        assert f"lladdr {mac}" in neigh, neigh
        assert "broadcasting instead" not in server.log()
    event = server.wait_events(lambda e: e["mac"] == mac and e["reply_type"] == "ACK")[0]
    assert (event["boot_method"], event["boot_file"], event["ip"]) == (fw.method, expected, yiaddr)
    assert_leased(server, mac, yiaddr)


def _assert_boot_options(reply: Ether, fw: Firmware, expected: str, server: DhcpProcess) -> None:
    options = options_of(reply)
    assert text(options[67]) == expected
    assert text(reply[BOOTP].file) == expected  # old PXE ROMs read only the BOOTP file field
    assert options.get(60) == fw.vendor_class
    if fw.tftp:
        assert reply[BOOTP].siaddr == server.ip
        assert text(options[66]) == server.ip
    if (97, GUID[1]) in fw.options:
        assert options[97] == GUID[1]  # PXE 2.1: the UUID is echoed


# --- proxyDHCP beside a site DHCP server ------------------------------------------------------


def test_proxy_dhcp_beside_dnsmasq(lab: Lab, tmp_path: Path) -> None:
    site = lab.add_host("site", address=1)  # the site's DHCP server: dnsmasq hands out addresses
    srv = lab.add_host("srv", address=2)  # Ingot in proxy mode: boot files only
    cli = lab.add_host("cli")
    dnsmasq_log = tmp_path / "dnsmasq.log"
    spawn_logged(lab, site, ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--interface={site.ifname}",
                             "--bind-interfaces", "--port=0", "--no-ping",
                             f"--dhcp-range={lab.address(50)},{lab.address(90)},1h",
                             f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}",
                             f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--log-dhcp"], dnsmasq_log)
    server = DhcpProcess(lab, srv, tmp_path, "--mode", "proxy")
    wait_file_contains(dnsmasq_log, "DHCP, IP range", 10.0)
    client = RawClient(lab, cli)
    fw = FIRMWARE["bios"]
    mac, xid = new_mac(), random.getrandbits(32)

    # DISCOVER: two offers, the address from dnsmasq and the boot file from Ingot.
    frames = client.exchange(dhcp_frame(mac, xid, [("message-type", "discover"), *fw.options], broadcast=True), xid,
                             count=2)
    offers = {options_of(f)[54]: f for f in replies(frames, xid)}
    assert set(offers) == {str(site.ip), str(srv.ip)}, [f.summary() for f in replies(frames, xid)]
    address_offer, boot_offer = offers[str(site.ip)], offers[str(srv.ip)]
    yiaddr = address_offer[BOOTP].yiaddr
    assert lab.address(50) <= IPv4Address(yiaddr) <= lab.address(90)
    assert 67 not in options_of(address_offer)
    assert boot_offer[BOOTP].yiaddr == "0.0.0.0"  # a proxy offer carries no address
    proxy_options = options_of(boot_offer)
    assert text(proxy_options[67]) == text(boot_offer[BOOTP].file) == "undionly.kpxe"
    assert proxy_options[60] == b"PXEClient"
    assert bytes(proxy_options[43]).startswith(b"\x06\x01\x08")  # PXE_DISCOVERY_CONTROL: use this file
    assert 51 not in proxy_options  # and no lease

    # REQUEST the address from dnsmasq; Ingot stays silent on port 67.
    rxid = (xid + 1) & 0xFFFFFFFF
    request = [("message-type", "request"), ("server_id", str(site.ip)), ("requested_addr", yiaddr), *fw.options]
    frames = client.exchange(dhcp_frame(mac, rxid, request, broadcast=True), rxid, count=2, timeout=SILENCE + 1)
    acks = replies(frames, rxid)
    assert [options_of(f)[54] for f in acks] == [str(site.ip)]
    assert options_of(acks[0])[53] == ACK

    # With its address configured, the client asks the boot server on port 4011 (PXE 2.1 §2.2.4).
    lab.run_in(cli, ["ip", "addr", "add", f"{yiaddr}/{lab.network.prefixlen}", "dev", cli.ifname], timeout=5,
               check=True)
    udp = lab.socket_in(cli, socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((yiaddr, 68))
    udp.settimeout(REPLY_TIMEOUT)
    bxid = (xid + 2) & 0xFFFFFFFF
    boot_request = BOOTP(op=1, chaddr=mac_bytes(mac), xid=bxid, ciaddr=yiaddr) / DHCP(
        options=[("message-type", "request"), *fw.options, "end"])
    udp.sendto(bytes(boot_request), (str(srv.ip), 4011))
    data, source = udp.recvfrom(4096)
    assert source == (str(srv.ip), 4011)
    boot_ack = BOOTP(data)
    assert boot_ack.xid == bxid
    ack_options = options_of(boot_ack)
    assert ack_options[53] == ACK
    assert text(ack_options[67]) == "undionly.kpxe"
    assert ack_options[60] == b"PXEClient"
    server.wait_events(lambda e: e["mac"] == mac and e["reply_type"] == "ACK")  # written just after sending
    events = server.events()
    assert [(e["message_type"], e["reply_type"]) for e in events if e["mac"] == mac] == [
        ("DISCOVER", "OFFER"), ("REQUEST", None), ("REQUEST", "ACK")]
    assert server.state()["leases"] == []  # the proxy never owns an address


def wait_file_contains(path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} never appeared in {path.name}:\n{path.read_text(errors='replace')}")
        time.sleep(0.05)


# --- unknown MACs, and the interface boundary ----------------------------------------------------


@pytest.mark.parametrize("policy", ["ignore", "address-only", "discovery"])
def test_unknown_mac_policy(lab: Lab, tmp_path: Path, policy: str) -> None:
    srv, cli = lab.add_host("srv", address=1), lab.add_host("cli")
    known = new_mac("02:c0")
    server = DhcpProcess(lab, srv, tmp_path, "--unknown", policy, "--host", f"{known}=,netboot")
    client = RawClient(lab, cli)
    fw = FIRMWARE["uefi-x64"]
    unknown, xid = new_mac(), random.getrandbits(32)
    discover = [("message-type", "discover"), *fw.options]

    if policy == "ignore":
        frames = client.exchange(dhcp_frame(unknown, xid, discover, broadcast=True), xid, timeout=SILENCE)
        assert replies(frames, xid) == []
        server.wait_events(lambda e: e["mac"] == unknown and e["message_type"] == "DISCOVER"
                           and e["reply_type"] is None)
        # A known machine is still served under "ignore".
        kxid = random.getrandbits(32)
        offer = only_reply(client.exchange(dhcp_frame(known, kxid, discover, broadcast=True), kxid), kxid, OFFER)
        assert text(options_of(offer)[67]) == "snponly.efi"
        return

    offer = only_reply(client.exchange(dhcp_frame(unknown, xid, discover, broadcast=True), xid), xid, OFFER)
    assert server.pool[0] <= IPv4Address(offer[BOOTP].yiaddr) <= server.pool[1]
    options = options_of(offer)
    if policy == "address-only":
        assert 67 not in options and 60 not in options and text(offer[BOOTP].file) == ""
    else:
        assert text(options[67]) == text(offer[BOOTP].file) == "snponly.efi"


def test_serves_only_its_interface(lab: Lab, tmp_path: Path) -> None:
    srv, cli = lab.add_host("srv", address=1), lab.add_host("cli")
    other_side = lab.attach(srv, segment=1, address=1)  # the server's namespace has a second interface...
    stranger = lab.add_host("stranger", segment=1)  # ...with a client on it
    server = DhcpProcess(lab, srv, tmp_path)
    fw = FIRMWARE["bios"]
    discover = [("message-type", "discover"), *fw.options]
    for broadcast in (True, False):
        xid = random.getrandbits(32)
        frames = RawClient(lab, stranger).exchange(
            dhcp_frame(new_mac(), xid, discover, broadcast=broadcast), xid, timeout=SILENCE)
        assert replies(frames, xid) == []
    # Even a unicast to the address on the other interface is not seen.
    probe = lab.socket_in(stranger, socket.AF_INET, socket.SOCK_DGRAM)
    lab.run_in(stranger, ["ip", "addr", "add", f"{lab.address(9, 1)}/24", "dev", stranger.ifname], timeout=5,
               check=True)
    probe.sendto(bytes(BOOTP(op=1, chaddr=mac_bytes(new_mac()), xid=7) / DHCP(options=[*discover, "end"])),
                 (str(other_side.ip), 67))
    xid = random.getrandbits(32)
    only_reply(RawClient(lab, cli).exchange(dhcp_frame(new_mac(), xid, discover, broadcast=True), xid), xid, OFFER)
    state = server.wait_state(lambda s: s["stats"]["replied"] == 1)
    assert state["stats"]["received"] == 1, "the server saw traffic from another interface"


# --- hostile packets ----------------------------------------------------------------------------


def _raw_options(body: bytes, *, xid: int = 1, file: bytes = b"", sname: bytes = b"", hlen: int = 6,
                 magic: bytes = MAGIC) -> bytes:
    return bytes(BOOTP(op=1, hlen=hlen, chaddr=mac_bytes("02:66:66:66:66:66"), xid=xid, file=file, sname=sname,
                       options=magic) / Raw(body))


def malformed_packets() -> list[bytes]:
    """Datagrams :func:`pxe.dhcp.codec.decode` must reject, scapy-crafted."""
    rng = random.Random(2131)
    discover = b"\x35\x01\x01"
    packets = [
        _raw_options(discover + b"\x3d\x07\x01\x02"),  # truncated: option 61 runs past the end
        _raw_options(discover + b"\x0c"),  # truncated: option code without its length byte
        _raw_options(discover),  # no END option
        _raw_options(b"\x35\x02\x01\x01\xff"),  # bad length: message type is one byte
        _raw_options(b"\x35\x00\xff"),  # bad length: empty message type
        _raw_options(discover + b"\x32\x03\x0a\x00\x01\xff"),  # bad length: requested IP of 3 bytes
        _raw_options(discover + b"\x36\x05\x0a\x00\x00\x01\x01\xff"),  # bad length: server id of 5 bytes
        _raw_options(discover + b"\x5d\x01\x00\xff"),  # bad length: odd-length client arch
        _raw_options(discover + b"\x39\x01\x05\xff"),  # bad length: max message size of 1 byte
        _raw_options(discover + b"\x61\x05\x00\x01\x02\x03\x04\xff"),  # bad length: short GUID
        _raw_options(b"\x35\x01\x63\xff"),  # unknown message type 99
        _raw_options(discover + b"\x34\x01\x03\xff", file=b"\x0c\x02ab", sname=b"\x0c\x02cd"),  # overload, no ENDs
        _raw_options(discover + b"\x34\x01\x00\xff"),  # overload value 0
        _raw_options(discover + b"\x34\x01\x07\xff"),  # overload value 7
        _raw_options(discover + b"\x34\x02\x01\x01\xff"),  # overload of 2 bytes
        _raw_options(discover + b"\x34\x01\x01\xff", file=b"\x34\x01\x02\xff"),  # overload nested in file
        _raw_options(discover + b"\x34\x01\x01\xff", file=b"\x0c\xf0abc"),  # overloaded option past the field
        _raw_options(discover + b"\xff", magic=b"\x63\x82\x53\x64"),  # bad magic cookie
        _raw_options(discover + b"\xff", hlen=17),  # hlen larger than chaddr
        b"",  # empty datagram
        b"\x01",
        _raw_options(discover + b"\xff")[:239],  # one byte short of the fixed header
        bytes(_raw_options(discover + b"\x0c\x04host") + bytes(9000)),  # more than MAX_DATAGRAM, no END
    ]
    packets += [rng.randbytes(rng.randrange(1, 1200)) for _ in range(20)]  # random bytes
    return packets


def odd_but_valid_packets() -> list[bytes]:
    """Datagrams that decode but are unusual; the policy answers or ignores them."""
    big = b"".join(bytes((224 + i, 255)) + bytes([i]) * 255 for i in range(6))  # > 1500 bytes in all
    return [
        _raw_options(b"\x35\x01\x01" + big + b"\xff", xid=2),  # a 1500+ byte DISCOVER (IP fragments)
        bytes(BOOTP(op=2, chaddr=mac_bytes("02:66:66:66:66:67"), xid=3) / DHCP(options=[("message-type", "offer"),
                                                                                         "end"])),  # a reply
        _raw_options(b"\xff", xid=4),  # plain BOOTP: no message type
        _raw_options(b"\x35\x01\x01\xff", hlen=0, xid=5),  # no hardware address
        _raw_options(b"\x35\x01\x08\xff", xid=6),  # INFORM without ciaddr
        _raw_options(b"\x35\x01\x07\xff", xid=7),  # RELEASE without ciaddr
    ]


def _option_bytes(options: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes((code, len(value))) + value for code, value in options)


def _u16s(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


@st.composite
def fuzzed_packet(draw: st.DrawFn, network: IPv4Network) -> bytes:
    """A client header with random identity and random options, mostly well-formed enough to reach
    the policy (wrong-sized, unknown and overload options included now and then)."""
    near = st.sampled_from([network.network_address + n for n in (1, 2, 20, 100, 250, 255)]).map(lambda a: a.packed)
    address = st.one_of(near, st.binary(min_size=4, max_size=4))
    vendor = st.sampled_from([b"PXEClient", b"HTTPClient", b"PXEClient:Arch:00000:UNDI:002001",
                              b"HTTPClient:Arch:00016:UNDI:003001", b"PXEClient:Arch:99999", b"MSFT 5.0"])
    shaped = st.one_of(
        st.tuples(st.just(50), address),  # requested IP
        st.tuples(st.just(54), address),  # server id
        st.tuples(st.just(51), st.binary(min_size=4, max_size=4)),  # lease time
        st.tuples(st.just(57), st.binary(min_size=2, max_size=2)),  # max message size, any value
        st.tuples(st.just(93), st.lists(st.integers(0, 20), min_size=1, max_size=3).map(_u16s)),  # arch
        st.tuples(st.just(94), st.binary(min_size=3, max_size=3)),  # NDI
        st.tuples(st.just(97), st.binary(min_size=16, max_size=16).map(lambda g: b"\x00" + g)),  # GUID
        st.tuples(st.just(60), st.tuples(vendor, st.binary(max_size=12)).map(lambda t: t[0] + t[1])),
        st.tuples(st.just(77), st.sampled_from([b"iPXE", b"gPXE", b"", b"\x04iPXE"])),
        st.tuples(st.just(55), st.binary(max_size=60)),  # parameter request list
        st.tuples(st.sampled_from([12, 61, 81, 82, 224]), st.binary(max_size=40)),
    )
    anything = st.tuples(st.integers(1, 254), st.binary(max_size=24))  # 52 and bad sizes included
    # Unique codes: a repeated option is concatenated (RFC 3396), which mostly breaks fixed sizes.
    options = draw(st.lists(st.one_of(shaped, shaped, shaped, anything), max_size=10, unique_by=lambda o: o[0]))
    options = [o for o in options if o[0] != 53]
    message = draw(st.sampled_from([None, 1, 1, 2, 3, 3, 4, 7, 8, 99]))
    if message is not None:
        options.insert(0, (53, bytes([message])))
    body = _option_bytes(options)
    if draw(st.integers(0, 9)):  # usually terminated; what follows END is padding
        body += b"\xff" + draw(st.binary(max_size=16))
    ciaddr = draw(st.one_of(st.just(bytes(4)), near))
    header = struct.pack("!BBBBIHH4s12s", 1, 1, draw(st.sampled_from([6] * 8 + [0, 16, 17])), draw(st.integers(0, 3)),
                         draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 65535)),
                         draw(st.sampled_from([0, 0x8000, 0x7FFF])), ciaddr, bytes(12))  # yiaddr, siaddr, giaddr 0
    chaddr = draw(st.binary(min_size=6, max_size=6)) + bytes(10)
    return header + chaddr + bytes(64 + 128) + MAGIC + body


def received_at_least(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda state: bool(state["stats"]["received"] >= count)


def test_hostile_packets_do_not_stop_the_server(lab: Lab, tmp_path: Path) -> None:
    srv = lab.add_host("srv", address=1)
    attacker = lab.add_host("evil", address=10)
    cli = lab.add_host("cli")
    server = DhcpProcess(lab, srv, tmp_path, pool=(20, 250))
    sock = lab.socket_in(attacker, socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sent = 0

    def send(datagrams: list[bytes]) -> None:
        # In chunks the server's receive buffer surely holds, waiting for each to be read.
        nonlocal sent
        for start in range(0, len(datagrams), 25):
            for datagram in datagrams[start : start + 25]:
                sock.sendto(datagram, (server.ip, 67))
                sent += 1
            server.wait_state(received_at_least(sent))

    malformed = malformed_packets()
    send(malformed)
    send(odd_but_valid_packets())
    fuzzed: list[bytes] = []

    @settings(max_examples=200, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzzed_packet(lab.network))
    def collect(datagram: bytes) -> None:
        fuzzed.append(datagram)

    collect()
    send(fuzzed)
    assert server.alive(), server.log()[-3000:]
    stats = server.wait_state(lambda s: s["stats"]["received"] == sent)["stats"]
    assert stats["malformed"] >= len(malformed)
    fuzzed_decoded = len(fuzzed) - (stats["malformed"] - len(malformed))
    assert fuzzed_decoded >= len(fuzzed) // 4, f"the fuzzer hardly reached the policy: {stats}"
    assert stats["replied"] > 0 and stats["ignored"] > 0
    assert stats["errors"] == 0, server.log()[-5000:]

    # Still serving: a real client gets a lease.
    script, out = recorder(tmp_path, "udhcpc", "$1", UDHCPC_FIELDS)
    result = lab.run_in(cli, ["busybox", "udhcpc", "-i", cli.ifname, "-n", "-q", "-f", "-t", "5", "-T", "1",
                              "-s", str(script)], timeout=CLIENT_TIMEOUT)
    assert result.returncode == 0, result.stderr + server.log()[-3000:]
    got = parse_record((out / "bound").read_text())
    assert_leased(server, cli.mac, got["ip"])
    assert server.alive()
