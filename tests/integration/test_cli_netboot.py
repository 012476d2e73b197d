"""``ingot netboot`` as a user runs it: a subprocess against a live appliance. Leases and boot events
are written by the boot services, so the tests put them straight into the appliance's database."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from appliance.cli import netboot
from appliance.cli.errors import UsageError
from appliance.db.session import make_engine, make_session_factory, unit_of_work
from appliance.models import BootEvent, DhcpLease
from tests.support.cli import INGOT, Cli
from tests.support.live import LiveAppliance

# The CLI is the same on either database; the API tests cover both backends.
pytestmark = pytest.mark.one_backend

READER_PASSWORD = "Reader-pass-1"




@contextmanager
def appliance_db(live: LiveAppliance) -> Iterator[Session]:
    engine = make_engine(live.database_url or f"sqlite:///{live.home / 'ingot.db'}")
    try:
        with unit_of_work(make_session_factory(engine)) as db:
            yield db
    finally:
        engine.dispose()


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def row_of(text: str, needle: str) -> str:
    return next(line for line in text.splitlines() if needle in line)


# --- pure parts ----------------------------------------------------------------------------------
def test_option_parsing() -> None:
    assert netboot.parse_range("10.0.0.100-10.0.0.200") == ("10.0.0.100", "10.0.0.200")
    assert netboot.parse_range("none") == (None, None)
    with pytest.raises(UsageError, match="Not an address range"):
        netboot.parse_range("10.0.0.100")
    assert netboot.parse_mac("AA-BB-CC-DD-EE-0F") == "aa:bb:cc:dd:ee:0f"
    with pytest.raises(UsageError, match="Not a MAC address"):
        netboot.parse_mac("aa:bb:cc")
    assert netboot.subnet_body(router="none", dns="10.0.0.2, 10.0.0.3", mode="PROXY", domain="none") == {
        "router": None, "dnsServers": ["10.0.0.2", "10.0.0.3"], "mode": "proxy", "domain": None}
    assert netboot.subnet_body(dns="none", range_="none") == {"dnsServers": [], "rangeFirst": None,
                                                              "rangeLast": None}
    with pytest.raises(UsageError, match="Unknown mode 'relay'"):
        netboot.subnet_body(mode="relay")
    with pytest.raises(UsageError, match="unknown-MAC policy"):
        netboot.subnet_body(unknown_mac="all")
    assert netboot.event_filters("AA:BB:CC:DD:EE:FF", "TFTP", True) == [
        "mac='aa:bb:cc:dd:ee:ff'", "service='tftp'", "ok=false"]
    with pytest.raises(UsageError, match="Unknown service"):
        netboot.event_filters(None, "nfs", False)


def test_event_line() -> None:
    line = netboot.event_line({"at": "2026-01-01T12:00:00.000Z", "service": "tftp", "action": "RRQ",
                               "mac": "aa:bb:cc:dd:ee:ff", "clientIp": "10.0.0.5", "ok": False,
                               "detail": "snponly.efi not found"})
    assert "tftp" in line and "RRQ" in line and "aa:bb:cc:dd:ee:ff" in line and "10.0.0.5" in line
    assert "FAILED" in line and line.endswith("snponly.efi not found")
    assert "-" in netboot.event_line({"service": "http", "action": "GET", "ok": True})


class FakeClient:
    """Answers the follow loop's polls from a list of batches; records what it was asked."""

    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        self.batches = batches
        self.asked: list[dict[str, Any]] = []

    def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        assert path == netboot.EVENTS
        self.asked.append(params)
        return {"members": self.batches.pop(0) if self.batches else []}


def test_follow_asks_only_for_newer_events_until_the_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def event(n: int) -> dict[str, Any]:
        return {"id": n, "service": "dhcp", "action": f"A{n}", "ok": True, "at": None}

    client = FakeClient([[event(6), event(7)], [], [event(9)]])
    recent = {"members": [event(5), event(3)]}  # newest first, as the API sends them
    netboot._follow(client, ["mac='aa:bb:cc:dd:ee:ff'"], recent, as_json=True,  # type: ignore[arg-type]
                    seconds=3.5, sleep=sleep, clock=lambda: now[0])
    printed = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert printed == [3, 5, 6, 7, 9]  # oldest first, each once
    assert [p["filter"][-1] for p in client.asked] == ["id>5", "id>7", "id>7", "id>9"]
    assert all(p["filter"][0] == "mac='aa:bb:cc:dd:ee:ff'" and p["sort"] == "id:ascending" for p in client.asked)
    assert now[0] == pytest.approx(3.5)


# --- against a live appliance --------------------------------------------------------------------
@pytest.mark.slow
def test_subnets(admin_cli: Cli) -> None:
    created = ok(admin_cli("netboot", "subnets", "create", "provisioning", "--network", "10.40.0.0/24",
                           "--range", "10.40.0.100-10.40.0.200", "--router", "10.40.0.1", "--dns", "10.40.0.2",
                           "--domain", "lab.example", "--lease-time", "1800"))
    assert "Created subnet provisioning (10.40.0.0/24, server mode)" in created.stdout
    listed = ok(admin_cli("netboot", "subnets", "list"))
    row = row_of(listed.stdout, "provisioning")
    for text in ("10.40.0.0/24", "server", "10.40.0.100-10.40.0.200", "10.40.0.1", "discovery", "1800 s"):
        assert text in row, text
    shown = ok(admin_cli("netboot", "subnets", "show", "provisioning"))
    for text in ("lab.example", "10.40.0.2", "/rest/dhcp/subnets/"):
        assert text in shown.stdout, text
    body = admin_cli.json("netboot", "subnets", "show", "provisioning")
    assert body["leaseTime"] == 1800 and body["dnsServers"] == ["10.40.0.2"]
    assert admin_cli.json("netboot", "subnets", "show", body["id"])["name"] == "provisioning"

    updated = admin_cli.json("netboot", "subnets", "update", "provisioning", "--mode", "proxy", "--range", "none",
                             "--router", "none", "--unknown-mac", "address-only", "--name", "site")
    assert updated["mode"] == "proxy" and updated["rangeFirst"] is None and updated["router"] is None
    assert updated["unknownMacPolicy"] == "address-only" and updated["name"] == "site"
    assert updated["domain"] == "lab.example"  # untouched

    bad = admin_cli("netboot", "subnets", "create", "other", "--network", "10.40.0.0/25", "--mode", "proxy")
    assert bad.returncode == 2 and "overlaps subnet site" in bad.stderr and "HTTP 400" in bad.stderr
    outside = admin_cli("netboot", "subnets", "create", "x", "--network", "10.50.0.0/24",
                        "--range", "10.60.0.1-10.60.0.9")
    assert outside.returncode == 2 and "rangeFirst: 10.60.0.1 is not a host address" in outside.stderr
    assert admin_cli("netboot", "subnets", "create", "x").returncode == 2  # no --network
    assert admin_cli("netboot", "subnets", "create", "x", "--network", "10.9.0.0/24", "--mode", "relay").returncode == 2
    nothing = admin_cli("netboot", "subnets", "update", "site")
    assert nothing.returncode == 2 and "Nothing to change" in nothing.stderr
    missing = admin_cli("netboot", "subnets", "show", "nope")
    assert missing.returncode == 1 and "No subnet is named 'nope'" in missing.stderr

    deleted = ok(admin_cli("netboot", "subnets", "delete", "site"))
    assert "Deleted subnet site." in deleted.stdout
    assert "No subnets." in admin_cli("netboot", "subnets", "list").stderr
    assert admin_cli.json("netboot", "subnets", "list")["total"] == 0


@pytest.mark.slow
def test_reservations_and_dns(admin_cli: Cli) -> None:
    ok(admin_cli("netboot", "subnets", "create", "provisioning", "--network", "10.40.0.0/24",
                 "--range", "10.40.0.100-10.40.0.200"))
    added = ok(admin_cli("netboot", "reservations", "add", "AA-BB-CC-00-00-01", "--ip", "10.40.0.50",
                         "--hostname", "node-1"))
    assert "Added reservation for aa:bb:cc:00:00:01 (10.40.0.50, node-1, boot netboot)." in added.stdout
    ok(admin_cli("netboot", "reservations", "add", "aa:bb:cc:00:00:02", "--boot", "local"))
    listed = ok(admin_cli("netboot", "reservations", "list"))
    assert "10.40.0.50" in row_of(listed.stdout, "aa:bb:cc:00:00:01")
    assert "local" in row_of(listed.stdout, "aa:bb:cc:00:00:02")
    assert admin_cli.json("netboot", "reservations", "list")["total"] == 2

    duplicate = admin_cli("netboot", "reservations", "add", "aa:bb:cc:00:00:01")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr and "HTTP 409" in duplicate.stderr
    taken = admin_cli("netboot", "reservations", "add", "aa:bb:cc:00:00:03", "--ip", "10.40.0.50")
    assert taken.returncode == 2 and "already reserved for aa:bb:cc:00:00:01" in taken.stderr
    outside = admin_cli("netboot", "reservations", "add", "aa:bb:cc:00:00:03", "--ip", "192.168.7.7")
    assert outside.returncode == 2 and "is in no subnet" in outside.stderr
    assert admin_cli("netboot", "reservations", "add", "not-a-mac").returncode == 2
    assert admin_cli("netboot", "reservations", "add", "aa:bb:cc:00:00:03", "--boot", "usb").returncode == 2
    no_server = admin_cli("netboot", "reservations", "add", "aa:bb:cc:00:00:03", "--server", "ghost")
    assert no_server.returncode == 1 and "No server hardware is named 'ghost'" in no_server.stderr

    changed = admin_cli.json("netboot", "reservations", "update", "aa:bb:cc:00:00:01", "--boot", "disk",
                             "--ip", "none")
    assert changed["boot"] == "disk" and changed["ip"] is None and changed["hostname"] == "node-1"
    by_id = admin_cli.json("netboot", "reservations", "update", changed["id"], "--hostname", "node-one")
    assert by_id["hostname"] == "node-one"
    removed = ok(admin_cli("netboot", "reservations", "remove", "AA:BB:CC:00:00:02"))
    assert "Removed the reservation for aa:bb:cc:00:00:02." in removed.stdout
    gone = admin_cli("netboot", "reservations", "remove", "aa:bb:cc:00:00:02")
    assert gone.returncode == 1 and "No reservation for aa:bb:cc:00:00:02" in gone.stderr

    added_dns = ok(admin_cli("netboot", "dns", "add", "repo", "a", "10.40.0.5", "--ttl", "60"))
    assert "Added repo A 10.40.0.5 (TTL 60)" in added_dns.stdout
    ok(admin_cli("netboot", "dns", "add", "repo", "CNAME", "mirror.lab.example"))
    ok(admin_cli("netboot", "dns", "add", "www", "CNAME", "repo.lab.example"))
    records = ok(admin_cli("netboot", "dns", "list")).stdout
    assert "repo.lab.example" in row_of(records, "www") and "60" in row_of(records, "10.40.0.5")
    assert admin_cli.json("netboot", "dns", "list")["total"] == 3
    bad = admin_cli("netboot", "dns", "add", "x", "A", "not-an-address")
    assert bad.returncode == 2 and "is not an IPv4 address" in bad.stderr
    assert admin_cli("netboot", "dns", "add", "x", "MX", "mail").returncode == 2
    ambiguous = admin_cli("netboot", "dns", "remove", "repo")
    assert ambiguous.returncode == 2 and "repo has 2 records" in ambiguous.stderr and "--type" in ambiguous.stderr
    removed_dns = ok(admin_cli("netboot", "dns", "remove", "repo", "--type", "cname"))
    assert "Removed repo CNAME mirror.lab.example." in removed_dns.stdout
    ok(admin_cli("netboot", "dns", "remove", "repo"))  # the only one left by that name
    assert [r["name"] for r in admin_cli.json("netboot", "dns", "list")["members"]] == ["www"]
    missing = admin_cli("netboot", "dns", "remove", "repo")
    assert missing.returncode == 1 and "No DNS record is named 'repo'" in missing.stderr


@pytest.mark.slow
def test_leases_and_events(admin_cli: Cli) -> None:
    now = datetime.now(UTC)
    base = now - timedelta(minutes=5)
    with appliance_db(admin_cli.live) as db:
        db.add_all([
            DhcpLease(ip="10.40.0.100", mac="52:54:00:00:03:01", state="bound", expires=now + timedelta(hours=1)),
            DhcpLease(ip="10.40.0.101", mac="52:54:00:00:03:02", state="released", expires=now),
            BootEvent(at=base, mac="52:54:00:00:03:01", service="dhcp", action="DISCOVER/OFFER",
                      detail="10.40.0.100 BIOS"),
            BootEvent(at=base + timedelta(seconds=1), mac="52:54:00:00:03:01", client_ip="10.40.0.100",
                      service="tftp", action="RRQ", detail="undionly.kpxe"),
            BootEvent(at=base + timedelta(seconds=2), mac="52:54:00:00:03:02", client_ip="10.40.0.101",
                      service="tftp", action="RRQ", detail="missing.efi not found", ok=False),
        ])
    ok(admin_cli("netboot", "reservations", "add", "52:54:00:00:03:01", "--hostname", "node-a"))

    leases = ok(admin_cli("netboot", "leases")).stdout
    first = row_of(leases, "10.40.0.100")
    assert "52:54:00:00:03:01" in first and "node-a" in first and "bound" in first and "yes" in first
    assert "released" in row_of(leases, "10.40.0.101") and "no" in row_of(leases, "10.40.0.101")
    only = admin_cli.json("netboot", "leases", "--mac", "52-54-00-00-03-02")
    assert [m["ip"] for m in only["members"]] == ["10.40.0.101"] and only["members"][0]["active"] is False
    assert admin_cli("netboot", "leases", "--mac", "bogus").returncode == 2

    events = ok(admin_cli("netboot", "events")).stdout
    lines = [line for line in events.splitlines() if "52:54:00:00:03" in line]
    assert ["missing.efi" in lines[0], "undionly.kpxe" in lines[1], "DISCOVER/OFFER" in lines[2]] == [True] * 3
    assert "no" in row_of(events, "missing.efi")
    mac_only = admin_cli.json("netboot", "events", "--mac", "52:54:00:00:03:01")
    assert [m["service"] for m in mac_only["members"]] == ["tftp", "dhcp"]
    failed = admin_cli.json("netboot", "events", "--failed")
    assert [m["detail"] for m in failed["members"]] == ["missing.efi not found"]
    tftp = admin_cli.json("netboot", "events", "--service", "tftp", "--count", "1")
    assert tftp["count"] == 1 and tftp["total"] == 2
    assert admin_cli("netboot", "events", "--service", "nfs").returncode == 2

    # --follow: the recent ones oldest first, then what arrives while it runs, until --for ends it.
    def later() -> None:
        time.sleep(1.5)
        with appliance_db(admin_cli.live) as db:
            db.add(BootEvent(at=datetime.now(UTC), mac="52:54:00:00:03:01", client_ip="10.40.0.100",
                             service="http", action="GET", detail="boot.ipxe -> ramdisk"))
            db.add(BootEvent(at=datetime.now(UTC), mac="52:54:00:00:03:09", service="http", action="GET",
                             detail="someone else"))

    writer = threading.Thread(target=later)
    writer.start()
    started = time.monotonic()
    followed = admin_cli("netboot", "events", "--mac", "52:54:00:00:03:01", "--follow", "--for", "4")
    writer.join()
    assert followed.returncode == 0, followed.stderr
    assert 3.5 < time.monotonic() - started < 30
    out = followed.stdout.splitlines()
    assert len(out) == 3, out
    assert "DISCOVER/OFFER" in out[0] and "undionly.kpxe" in out[1] and "boot.ipxe -> ramdisk" in out[2]
    as_json = admin_cli("netboot", "events", "--service", "http", "--for", "0.5", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line)["detail"] for line in as_json.stdout.splitlines()] == [
        "boot.ipxe -> ramdisk", "someone else"]


@pytest.mark.slow
def test_roles_and_login(admin_cli: Cli, tmp_path: Path) -> None:
    ok(admin_cli("netboot", "subnets", "create", "provisioning", "--network", "10.40.0.0/24", "--mode", "proxy"))
    ok(admin_cli("users", "add", "reader", "--role", "read-only", "--password-stdin", input=READER_PASSWORD + "\n"))
    reader = tmp_path / "reader" / "session.json"
    assert admin_cli.login("reader", READER_PASSWORD, config=reader).returncode == 0
    for args in (("subnets", "list"), ("subnets", "show", "provisioning"), ("reservations", "list"), ("leases",),
                 ("events",), ("dns", "list")):
        assert admin_cli("netboot", *args, config=reader).returncode == 0, args
    for args in (("subnets", "create", "x", "--network", "10.41.0.0/24", "--mode", "proxy"),
                 ("subnets", "update", "provisioning", "--mode", "server", "--range", "10.40.0.9-10.40.0.10"),
                 ("subnets", "delete", "provisioning"), ("reservations", "add", "aa:bb:cc:00:00:09"),
                 ("dns", "add", "x", "A", "10.0.0.1")):
        denied = admin_cli("netboot", *args, config=reader)
        assert denied.returncode == 3, (args, denied.stderr)
        assert "HTTP 403" in denied.stderr
    assert admin_cli.json("netboot", "subnets", "show", "provisioning")["mode"] == "proxy"
    assert admin_cli("logout").returncode == 0
    signed_out = admin_cli("netboot", "subnets", "list")
    assert signed_out.returncode == 3 and "Not logged in" in signed_out.stderr


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = subprocess.run([str(INGOT), "netboot", "--help"], capture_output=True, text=True, timeout=60,
                            check=False, env={"PATH": "/usr/bin:/bin", "COLUMNS": "120",
                                              "INGOT_CLI_CONFIG": str(tmp_path / "none.json")})
    assert result.returncode == 0, result.stderr
    for command in ("subnets", "reservations", "leases", "events", "dns"):
        assert command in result.stdout
