"""The boot services inside a real ``ingot serve``, in a network namespace with real clients:
busybox ``udhcpc`` gets a lease from the provisioning range, ``curl`` fetches the iPXE boot loader
over TFTP and the iPXE script over HTTP, ``dig`` resolves the appliance and a reserved machine,
the API lists leases and boot events, and a SIGKILL right after an ACK loses no lease.

The appliance runs inside the lab's server namespace (DHCP bound to its veth only); the test
talks to its API from a thread that joined that namespace. Nothing touches a real interface.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import LiveAppliance, boot_services_env
from tests.support.netns import Host, Lab

IPXE_DIR = Path("/usr/lib/ipxe")
DOMAIN = "lab.test"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


@pytest.fixture
def netns_database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """A fresh database the appliance can reach from inside a lab namespace (PostgreSQL by its
    Unix socket; SQLite needs nothing)."""
    if backend != "postgresql":
        return None
    server = request.getfixturevalue("postgres_server")
    return str(server.over_unix_socket(server.create_database()))


def udhcpc(lab: Lab, host: Host, tmp_path: Path, *, extra: list[str] | None = None) -> dict[str, str]:
    """One busybox udhcpc run that configures the address it gets; returns the lease's variables."""
    out = tmp_path / f"udhcpc-{host.role}.env"
    out.unlink(missing_ok=True)
    script = tmp_path / "udhcpc.sh"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in bound|renew)\n'
        '  ip addr flush dev "$interface"\n'
        '  ip addr add "$ip/$mask" dev "$interface"\n'
        f'  printf "ip=%s\\nrouter=%s\\ndns=%s\\ndomain=%s\\nlease=%s\\nserverid=%s\\n" '
        f'"$ip" "$router" "$dns" "$domain" "$lease" "$serverid" > {out}\n'
        ";; esac\n")
    script.chmod(0o755)
    result = lab.run_in(host, ["busybox", "udhcpc", "-i", host.ifname, "-n", "-q", "-f", "-t", "6", "-T", "2",
                               "-s", str(script), *(extra or [])], timeout=30)
    assert result.returncode == 0 and out.is_file(), f"udhcpc failed:\n{result.stdout}\n{result.stderr}"
    return dict(line.split("=", 1) for line in out.read_text().splitlines())


def start_appliance(lab: Lab, srv: Host, home: Path, database_url: str | None) -> LiveAppliance:
    env = boot_services_env(srv.ifname, str(srv.ip), str(lab.address(100)), str(lab.address(150)))
    env |= {"INGOT_DNS__DOMAIN": DOMAIN, "INGOT_DHCP__LEASE_TIME_S": "600"}
    return LiveAppliance(home, database_url, extra_env=env, netns=srv.ns).start(timeout=60)


def members(appliance: LiveAppliance, path: str) -> list[dict[str, Any]]:
    return list(appliance.api("GET", path)["members"])


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def dig(lab: Lab, host: Host, server: Host, *query: str) -> str:
    result = lab.run_in(host, ["dig", f"@{server.ip}", "+short", "+tries=2", "+time=2", *query], timeout=15)
    return result.stdout.strip()


def test_lease_boot_files_dns_and_events_through_ingot_serve(
        lab: Lab, tmp_path: Path, netns_database_url: str | None) -> None:
    srv = lab.add_host("srv", address=1)
    cli = lab.add_host("cli")
    home = tmp_path / "home"
    ramdisk = home / "boot" / "ramdisk"
    ramdisk.mkdir(parents=True)
    (ramdisk / "vmlinuz").write_bytes(b"kernel" * 1000)
    (ramdisk / "initrd.img").write_bytes(b"initrd" * 1000)
    appliance = start_appliance(lab, srv, home, netns_database_url)
    try:
        lease = udhcpc(lab, cli, tmp_path)
        assert lab.address(100) <= IPv4Address(lease["ip"]) <= lab.address(150)
        assert lease["router"] == str(srv.ip) and lease["serverid"] == str(srv.ip)
        assert lease["dns"] == str(srv.ip) and lease["domain"] == DOMAIN and lease["lease"] == "600"

        # The lease is in the API (and so in the database) with the client's MAC.
        leases = members(appliance, f"/rest/dhcp/leases?filter=\"mac='{cli.mac}'\"")
        assert [(item["ip"], item["state"]) for item in leases] == [(lease["ip"], "bound")]

        # TFTP: the BIOS iPXE loader, byte for byte, at the block size PXE ROMs use.
        fetched = tmp_path / "undionly.kpxe"
        got = lab.run_in(cli, ["curl", "-sS", "--max-time", "20", "--tftp-blksize", "1468", "-o", str(fetched),
                               f"tftp://{srv.ip}/undionly.kpxe"], timeout=30)
        assert got.returncode == 0, got.stderr
        assert fetched.read_bytes() == (IPXE_DIR / "undionly.kpxe").read_bytes()

        # HTTP: the iPXE script for this MAC boots the ramdisk with a one-time token.
        mac_path = cli.mac.replace(":", "-")
        script = lab.run_in(cli, ["curl", "-sS", "--max-time", "10",
                                  f"http://{srv.ip}:8080/ipxe/{mac_path}/boot.ipxe"], timeout=15).stdout
        assert script.startswith("#!ipxe") and "ingot.token=" in script
        assert f"kernel http://{srv.ip}:8080/boot/ramdisk/vmlinuz" in script

        # DNS: the appliance's own name; a reservation's host name follows the live lease.
        assert dig(lab, cli, srv, f"ingot.{DOMAIN}", "A") == str(srv.ip)
        appliance.api("POST", "/rest/dhcp/reservations", json={"mac": cli.mac, "hostname": "node7"})
        assert wait_for(lambda: dig(lab, cli, srv, f"node7.{DOMAIN}", "A") == lease["ip"])
        assert dig(lab, cli, srv, "-x", lease["ip"]) == f"node7.{DOMAIN}."
        assert "NXDOMAIN" in lab.run_in(cli, ["dig", f"@{srv.ip}", "+tries=1", "+time=2", f"nobody.{DOMAIN}"],
                                        timeout=10).stdout

        # Boot events: what this machine asked each service for.
        def events() -> set[tuple[str, str]]:
            found = members(appliance, f"/rest/boot-events?filter=\"mac='{cli.mac}'\"&count=100")
            return {(e["service"], e["action"]) for e in found}

        assert wait_for(lambda: {("dhcp", "DISCOVER/OFFER"), ("dhcp", "REQUEST/ACK"), ("tftp", "RRQ"),
                                 ("http", "GET")} <= events()), events()
    finally:
        appliance.stop()


def test_killed_appliance_keeps_every_acknowledged_lease(
        lab: Lab, tmp_path: Path, netns_database_url: str | None) -> None:
    srv = lab.add_host("srv", address=1)
    first, second = lab.add_host("one"), lab.add_host("two")
    home = tmp_path / "home"
    appliance = start_appliance(lab, srv, home, netns_database_url)
    try:
        lease = udhcpc(lab, first, tmp_path)
        appliance.kill()  # SIGKILL straight after the ACK: no shutdown hook writes anything
        appliance = start_appliance(lab, srv, home, netns_database_url)
        leases = {item["mac"]: item["ip"] for item in members(appliance, "/rest/dhcp/leases")}
        assert leases == {first.mac: lease["ip"]}
        # The restarted server knows the binding: another machine gets another address, and the
        # first one, asking again from scratch, gets its own address back.
        other = udhcpc(lab, second, tmp_path)
        assert other["ip"] != lease["ip"]
        lab.run_in(first, ["ip", "addr", "flush", "dev", first.ifname], timeout=5, check=True)
        assert udhcpc(lab, first, tmp_path)["ip"] == lease["ip"]
    finally:
        appliance.stop()
