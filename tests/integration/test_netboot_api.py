"""/rest/dhcp/*, /rest/dns/records and /rest/boot-events through the real app and database: CRUD,
the service's validation as 400/409 answers, paging and filters, roles, audit, and the nudge that
makes the boot services reload only after the change is committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import BootEvent, DhcpLease, DnsRecord, Reservation, ServerHardware, Subnet
from appliance.roles import Role

SUBNETS = "/rest/dhcp/subnets"
RESERVATIONS = "/rest/dhcp/reservations"
LEASES = "/rest/dhcp/leases"
EVENTS = "/rest/boot-events"
DNS = "/rest/dns/records"

SUBNET = {"name": "provisioning", "network": "10.20.0.0/24", "rangeFirst": "10.20.0.100",
          "rangeLast": "10.20.0.200", "router": "10.20.0.1", "dnsServers": ["10.20.0.2"],
          "domain": "lab.example", "leaseTime": 1800, "mode": "server", "unknownMacPolicy": "discovery"}


class Nudges:
    """Stands in for ``ctx.netboot_changed``: counts nudges and records what the database held
    when each came (read in a separate session, so only committed rows are seen)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.seen: list[dict[str, int]] = []

    def notify(self) -> None:
        with unit_of_work(self.ctx.session_factory) as db:
            self.seen.append({model.__name__: len(list(db.scalars(select(model))))
                              for model in (Subnet, Reservation, DnsRecord)})


@pytest.fixture
def nudges(ctx: AppContext) -> Nudges:
    spy = Nudges(ctx)
    ctx.netboot_changed = spy  # type: ignore[assignment]
    return spy


def create(api: TestClient, headers: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = api.post(path, headers=headers, json=body)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    assert r.headers["Location"] == created["uri"]
    assert r.headers["ETag"] == f'"{created["eTag"]}"'
    return created


def error(r: Any, status: int, code: str | None = None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    if code is not None:
        assert body["errorCode"] == code, body
    return str(body["message"])


def _server(ctx: AppContext, name: str = "rack1-u01", macs: tuple[str, ...] = ("52:54:00:00:00:01",)) -> str:
    with unit_of_work(ctx.session_factory) as db:
        server = ServerHardware(name=name, driver="fake", address=f"{name}.example", port=623, username="admin",
                                password_sealed="x", state="NoProfileApplied", status="OK", power_state="Off",
                                mac_addresses=list(macs))
        db.add(server)
        db.flush()
        return server.id


# --- subnets -------------------------------------------------------------------------------------
def test_subnet_crud_with_etags_and_nudges(api: TestClient, admin_headers: dict[str, str], nudges: Nudges) -> None:
    subnet = create(api, admin_headers, SUBNETS, SUBNET)
    assert subnet["type"] == "dhcp-subnet" and subnet["category"] == "dhcp-subnets"
    assert subnet["uri"] == f"{SUBNETS}/{subnet['id']}"
    for key, value in SUBNET.items():
        assert subnet[key] == value, key
    assert nudges.seen == [{"Subnet": 1, "Reservation": 0, "DnsRecord": 0}]  # after the commit

    listing = api.get(SUBNETS, headers=admin_headers).json()
    assert listing["category"] == "dhcp-subnets" and listing["type"] == "DhcpSubnetCollection"
    assert listing["total"] == 1 and listing["members"][0]["uri"] == subnet["uri"]
    assert listing["nextPageUri"] is None and listing["prevPageUri"] is None
    got = api.get(subnet["uri"], headers=admin_headers)
    assert got.json() == subnet
    assert api.get(subnet["uri"], headers={**admin_headers, "If-None-Match": got.headers["ETag"]}).status_code == 304

    stale = api.put(subnet["uri"], headers={**admin_headers, "If-Match": '"1-1"'}, json={"router": "10.20.0.254"})
    error(stale, 412, "ETAG_MISMATCH")
    changed = api.put(subnet["uri"], headers={**admin_headers, "If-Match": got.headers["ETag"]},
                      json={"router": "10.20.0.254", "rangeLast": "10.20.0.150"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["router"] == "10.20.0.254" and body["rangeLast"] == "10.20.0.150"
    assert body["rangeFirst"] == "10.20.0.100" and body["domain"] == "lab.example"  # untouched fields stay
    assert body["eTag"] != subnet["eTag"]
    # GET, change one field, PUT the whole document back (what the HPE SDK's update() does).
    echoed = {**api.get(subnet["uri"], headers=admin_headers).json(), "mode": "proxy", "leaseTime": 600}
    again = api.put(subnet["uri"], headers=admin_headers, json=echoed)
    assert again.status_code == 200, again.text
    assert again.json()["mode"] == "proxy" and again.json()["leaseTime"] == 600
    cleared = api.put(subnet["uri"], headers=admin_headers, json={"router": None, "dnsServers": []})
    assert cleared.json()["router"] is None and cleared.json()["dnsServers"] == []
    assert len(nudges.seen) == 4

    assert api.delete(subnet["uri"], headers=admin_headers).status_code == 204
    assert nudges.seen[-1] == {"Subnet": 0, "Reservation": 0, "DnsRecord": 0}
    error(api.get(subnet["uri"], headers=admin_headers), 404, "RESOURCE_NOT_FOUND")
    error(api.put(subnet["uri"], headers=admin_headers, json={"router": None}), 404)
    error(api.delete(subnet["uri"], headers=admin_headers), 404)
    assert len(nudges.seen) == 5  # nothing for the failed calls


@pytest.mark.parametrize(("change", "expected"), [
    ({"network": "10.20.0.0/33"}, "network"),
    ({"network": "not-a-network"}, "network"),
    ({"rangeFirst": "10.99.0.10"}, "rangeFirst: 10.99.0.10 is not a host address of 10.20.0.0/24"),
    ({"rangeLast": "10.20.0.255"}, "rangeLast"),  # the broadcast address
    ({"rangeFirst": "10.20.0.201"}, "first is after last"),
    ({"rangeFirst": "banana"}, "rangeFirst: 'banana' is not an IPv4 address"),
    ({"rangeFirst": None}, "give both or neither"),
    ({"rangeFirst": None, "rangeLast": None}, "server mode needs an address range"),
    ({"router": "192.168.1.1"}, "router: 192.168.1.1 is outside 10.20.0.0/24"),
    ({"dnsServers": "10.20.0.2"}, "dnsServers"),
    ({"mode": "relay"}, "mode: 'relay' is not one of server, proxy"),
    ({"unknownMacPolicy": "boot-anything"}, "unknownMacPolicy"),
    ({"leaseTime": 5}, "leaseTime: 5 is outside"),
    ({"leaseTime": "soon"}, "leaseTime"),
    ({"domain": "bad_domain!"}, "domain"),
    ({"name": ""}, "name: required"),
    ({"network": None}, "network: required"),
    ({"gateway": "10.20.0.1"}, "unknown field 'gateway'"),
])
def test_subnet_validation(api: TestClient, admin_headers: dict[str, str], nudges: Nudges,
                           change: dict[str, Any], expected: str) -> None:
    r = api.post(SUBNETS, headers=admin_headers, json={**SUBNET, **change})
    assert expected in error(r, 400, "INVALID_INPUT")
    assert api.get(SUBNETS, headers=admin_headers).json()["total"] == 0
    assert nudges.seen == []


def test_proxy_subnet_needs_no_range_and_subnets_may_not_overlap(api: TestClient,
                                                                 admin_headers: dict[str, str]) -> None:
    proxy = create(api, admin_headers, SUBNETS, {"name": "site", "network": "10.30.0.0/16", "mode": "proxy"})
    assert proxy["rangeFirst"] is None and proxy["mode"] == "proxy" and proxy["unknownMacPolicy"] == "discovery"
    overlap = api.post(SUBNETS, headers=admin_headers, json={**SUBNET, "network": "10.30.5.0/24",
                                                             "rangeFirst": "10.30.5.10", "rangeLast": "10.30.5.20",
                                                             "router": None})
    assert "overlaps subnet site" in error(overlap, 400, "INVALID_INPUT")
    duplicate = api.post(SUBNETS, headers=admin_headers, json={**SUBNET, "name": "site"})
    error(duplicate, 409, "DUPLICATE_NAME")
    other = create(api, admin_headers, SUBNETS, SUBNET)
    moved = api.put(other["uri"], headers=admin_headers, json={"network": "10.30.0.0/24", "router": None,
                                                               "rangeFirst": "10.30.0.10", "rangeLast": "10.30.0.20"})
    assert "overlaps" in error(moved, 400)
    renamed = api.put(other["uri"], headers=admin_headers, json={"name": "site"})
    error(renamed, 409, "DUPLICATE_NAME")
    listing = api.get(SUBNETS, headers=admin_headers, params={"filter": "mode='proxy'"}).json()
    assert [m["name"] for m in listing["members"]] == ["site"]
    by_name = api.get(SUBNETS, headers=admin_headers, params={"sort": "name:descending"}).json()
    assert [m["name"] for m in by_name["members"]] == ["site", "provisioning"]


# --- reservations --------------------------------------------------------------------------------
def test_reservation_crud(api: TestClient, admin_headers: dict[str, str], ctx: AppContext, nudges: Nudges) -> None:
    create(api, admin_headers, SUBNETS, SUBNET)
    server_id = _server(ctx)
    res = create(api, admin_headers, RESERVATIONS, {
        "mac": "AA-BB-CC-00-00-01", "ip": "10.20.0.50", "hostname": "Node-1",
        "serverHardwareUri": f"/rest/server-hardware/{server_id}"})
    assert res["type"] == "dhcp-reservation" and res["category"] == "dhcp-reservations"
    assert res["mac"] == "aa:bb:cc:00:00:01"  # normalised
    assert res["hostname"] == "node-1" and res["name"] == "node-1"
    assert res["boot"] == "netboot"  # the default
    assert res["serverHardwareUri"] == f"/rest/server-hardware/{server_id}"
    bare = create(api, admin_headers, RESERVATIONS, {"mac": "aa:bb:cc:00:00:02", "boot": "local"})
    assert bare["ip"] is None and bare["hostname"] is None and bare["name"] == "aa:bb:cc:00:00:02"

    listing = api.get(RESERVATIONS, headers=admin_headers).json()
    assert listing["total"] == 2 and [m["mac"] for m in listing["members"]] == ["aa:bb:cc:00:00:01",
                                                                                 "aa:bb:cc:00:00:02"]
    found = api.get(RESERVATIONS, headers=admin_headers, params={"filter": "mac='AA:BB:CC:00:00:02'"}).json()
    assert [m["id"] for m in found["members"]] == [bare["id"]]

    changed = api.put(res["uri"], headers={**admin_headers, "If-Match": f'"{res["eTag"]}"'},
                      json={**res, "boot": "disk", "ip": "10.20.0.51", "serverHardwareUri": None})
    assert changed.status_code == 200, changed.text
    assert changed.json()["boot"] == "disk" and changed.json()["ip"] == "10.20.0.51"
    assert changed.json()["serverHardwareUri"] is None and changed.json()["eTag"] != res["eTag"]
    assert api.get(res["uri"], headers=admin_headers).json()["ip"] == "10.20.0.51"

    assert api.delete(bare["uri"], headers=admin_headers).status_code == 204
    error(api.get(bare["uri"], headers=admin_headers), 404)
    assert nudges.seen[-1] == {"Subnet": 1, "Reservation": 1, "DnsRecord": 0}
    assert len(nudges.seen) == 5


@pytest.mark.parametrize(("body", "status", "expected"), [
    ({"mac": "aa:bb:cc:dd:ee"}, 400, "is not a MAC address"),
    ({"mac": "zz:bb:cc:dd:ee:ff"}, 400, "is not a MAC address"),
    ({}, 400, "is not a MAC address"),
    ({"mac": "aa:bb:cc:dd:ee:ff", "ip": "10.99.0.5"}, 400, "ip: 10.99.0.5 is in no subnet Ingot serves"),
    ({"mac": "aa:bb:cc:dd:ee:ff", "ip": "10.20.0.300"}, 400, "is not an IPv4 address"),
    ({"mac": "aa:bb:cc:dd:ee:ff", "boot": "usb"}, 400, "boot: 'usb' is not one of netboot, disk, local, none"),
    ({"mac": "aa:bb:cc:dd:ee:ff", "hostname": "-bad-"}, 400, "is not a valid host name"),
    ({"mac": "aa:bb:cc:dd:ee:ff", "serverHardwareUri": "/rest/server-hardware/nope"}, 400, "does not exist"),
    ({"mac": "aa:bb:cc:dd:ee:ff", "macAddress": "x"}, 400, "unknown field 'macAddress'"),
    ({"mac": "AA:BB:CC:00:00:01"}, 409, "aa:bb:cc:00:00:01 already exists"),
    ({"mac": "aa:bb:cc:dd:ee:ff", "ip": "10.20.0.50"}, 400, "ip: 10.20.0.50 is already reserved for aa:bb:cc:00:00:01"),
])
def test_reservation_validation(api: TestClient, admin_headers: dict[str, str], body: dict[str, Any], status: int,
                                expected: str) -> None:
    create(api, admin_headers, SUBNETS, SUBNET)
    create(api, admin_headers, RESERVATIONS, {"mac": "aa:bb:cc:00:00:01", "ip": "10.20.0.50"})
    assert expected in error(api.post(RESERVATIONS, headers=admin_headers, json=body), status)
    assert api.get(RESERVATIONS, headers=admin_headers).json()["total"] == 1


def test_reservation_update_cannot_take_another_mac_or_address(api: TestClient,
                                                               admin_headers: dict[str, str]) -> None:
    create(api, admin_headers, SUBNETS, SUBNET)
    create(api, admin_headers, RESERVATIONS, {"mac": "aa:bb:cc:00:00:01", "ip": "10.20.0.50"})
    second = create(api, admin_headers, RESERVATIONS, {"mac": "aa:bb:cc:00:00:02", "ip": "10.20.0.60"})
    error(api.put(second["uri"], headers=admin_headers, json={"ip": "10.20.0.50"}), 400)
    error(api.put(second["uri"], headers=admin_headers, json={"mac": "aa:bb:cc:00:00:01"}), 409, "DUPLICATE_NAME")
    error(api.put(second["uri"], headers=admin_headers, json={"ip": "192.168.0.1"}), 400)
    unchanged = api.get(second["uri"], headers=admin_headers).json()
    assert unchanged["mac"] == "aa:bb:cc:00:00:02" and unchanged["ip"] == "10.20.0.60"
    error(api.put(f"{RESERVATIONS}/no-such-id", headers=admin_headers, json={"boot": "none"}), 404)


# --- leases --------------------------------------------------------------------------------------
def _leases(ctx: AppContext, count: int) -> datetime:
    now = datetime.now(UTC)
    with unit_of_work(ctx.session_factory) as db:
        for n in range(count):
            db.add(DhcpLease(ip=f"10.20.0.{100 + n}", mac=f"52:54:00:00:01:{n:02x}",
                             state="released" if n == 1 else "bound",
                             expires=now + timedelta(hours=-1 if n == 2 else 1), updated=now))
    return now


def test_leases_paged_filtered_and_named(api: TestClient, admin_headers: dict[str, str], ctx: AppContext) -> None:
    _leases(ctx, 7)
    _server(ctx, "web-3", ("52:54:00:00:01:03",))
    create(api, admin_headers, RESERVATIONS, {"mac": "52:54:00:00:01:04", "hostname": "db-4"})

    everything = api.get(LEASES, headers=admin_headers).json()
    assert everything["category"] == "dhcp-leases" and everything["total"] == 7
    members = {m["ip"]: m for m in everything["members"]}
    assert members["10.20.0.100"]["active"] is True
    assert members["10.20.0.101"]["active"] is False and members["10.20.0.101"]["state"] == "released"
    assert members["10.20.0.102"]["active"] is False and members["10.20.0.102"]["state"] == "bound"  # expired
    assert members["10.20.0.103"]["hostname"] == "web-3"  # the server's name
    assert members["10.20.0.104"]["hostname"] == "db-4"  # the reservation's host name
    assert members["10.20.0.100"]["hostname"] is None
    lease = members["10.20.0.105"]
    assert lease["uri"] == f"{LEASES}/10.20.0.105" and lease["mac"] == "52:54:00:00:01:05"
    assert lease["expires"].endswith("Z") and lease["updated"].endswith("Z")
    assert api.get(lease["uri"], headers=admin_headers).json() == lease
    error(api.get(f"{LEASES}/10.20.0.99", headers=admin_headers), 404)

    first = api.get(LEASES, headers=admin_headers, params={"start": 0, "count": 3}).json()
    assert [m["ip"] for m in first["members"]] == ["10.20.0.100", "10.20.0.101", "10.20.0.102"]
    assert first["total"] == 7 and first["count"] == 3 and first["prevPageUri"] is None
    second = api.get(first["nextPageUri"], headers=admin_headers).json()
    assert [m["ip"] for m in second["members"]] == ["10.20.0.103", "10.20.0.104", "10.20.0.105"]
    last = api.get(second["nextPageUri"], headers=admin_headers).json()
    assert [m["ip"] for m in last["members"]] == ["10.20.0.106"] and last["nextPageUri"] is None

    by_mac = api.get(LEASES, headers=admin_headers, params={"filter": "mac='52:54:00:00:01:0A'"}).json()
    assert by_mac["total"] == 0
    by_mac = api.get(LEASES, headers=admin_headers, params={"filter": "\"mac='52:54:00:00:01:05'\""}).json()
    assert [m["ip"] for m in by_mac["members"]] == ["10.20.0.105"]
    bound = api.get(LEASES, headers=admin_headers, params={"filter": "state='bound'", "sort": "ip:desc"}).json()
    assert bound["total"] == 6 and bound["members"][0]["ip"] == "10.20.0.106"
    assert "unknown field 'hostname'" in error(
        api.get(LEASES, headers=admin_headers, params={"filter": "hostname='db-4'"}), 400, "INVALID_FILTER")
    error(api.get(LEASES, headers=admin_headers, params={"count": "x"}), 400)
    assert api.post(LEASES, headers=admin_headers, json={}).status_code == 405  # read only


# --- boot events ---------------------------------------------------------------------------------
def _events(ctx: AppContext) -> list[int]:
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    rows = [
        BootEvent(at=base, mac="52:54:00:00:02:01", client_ip=None, service="dhcp", action="DISCOVER/OFFER",
                  detail="10.20.0.100 BIOS"),
        BootEvent(at=base + timedelta(seconds=1), mac="52:54:00:00:02:01", client_ip="10.20.0.100", service="tftp",
                  action="RRQ", detail="undionly.kpxe 69 KiB"),
        BootEvent(at=base + timedelta(seconds=2), mac="52:54:00:00:02:02", client_ip="10.20.0.101", service="tftp",
                  action="RRQ", detail="missing.efi not found", ok=False),
        BootEvent(at=base + timedelta(seconds=3), mac="52:54:00:00:02:01", client_ip="10.20.0.100", service="http",
                  action="GET", detail="boot.ipxe -> ramdisk"),
        BootEvent(at=base + timedelta(seconds=4), mac=None, client_ip="10.20.0.9", service="http", action="GET",
                  detail="/boot/ramdisk/vmlinuz"),
    ]
    with unit_of_work(ctx.session_factory) as db:
        db.add_all(rows)
        db.flush()
        return [row.id for row in rows]


def test_boot_events_newest_first_paged_and_filtered(api: TestClient, admin_headers: dict[str, str],
                                                     ctx: AppContext) -> None:
    ids = _events(ctx)
    page = api.get(EVENTS, headers=admin_headers).json()
    assert page["category"] == "boot-events" and page["type"] == "BootEventCollection" and page["total"] == 5
    assert [m["id"] for m in page["members"]] == list(reversed(ids))
    newest = page["members"][0]
    assert newest == {"type": "boot-event", "category": "boot-events", "uri": f"{EVENTS}/{ids[4]}", "id": ids[4],
                      "at": "2026-01-01T12:00:04.000Z", "mac": None, "clientIp": "10.20.0.9", "service": "http",
                      "action": "GET", "detail": "/boot/ramdisk/vmlinuz", "ok": True}
    assert api.get(newest["uri"], headers=admin_headers).json() == newest
    error(api.get(f"{EVENTS}/999999", headers=admin_headers), 404)
    error(api.get(f"{EVENTS}/abc", headers=admin_headers), 404)

    two = api.get(EVENTS, headers=admin_headers, params={"count": 2, "start": 1}).json()
    assert [m["id"] for m in two["members"]] == [ids[3], ids[2]] and two["prevPageUri"] and two["nextPageUri"]
    mac = api.get(EVENTS, headers=admin_headers, params={"filter": "mac='52:54:00:00:02:01'"}).json()
    assert [m["service"] for m in mac["members"]] == ["http", "tftp", "dhcp"]
    both = api.get(EVENTS, headers=admin_headers,
                   params=[("filter", "mac='52:54:00:00:02:01'"), ("filter", "service='tftp'")]).json()
    assert [m["id"] for m in both["members"]] == [ids[1]]
    failed = api.get(EVENTS, headers=admin_headers, params={"filter": "ok=false"}).json()
    assert [m["detail"] for m in failed["members"]] == ["missing.efi not found"]
    since = api.get(EVENTS, headers=admin_headers, params={"filter": f"id>{ids[2]}"}).json()
    assert [m["id"] for m in since["members"]] == [ids[4], ids[3]]
    error(api.get(EVENTS, headers=admin_headers, params={"filter": "ok=maybe"}), 400, "INVALID_FILTER")


# --- DNS records ---------------------------------------------------------------------------------
def test_dns_record_crud(api: TestClient, admin_headers: dict[str, str], nudges: Nudges) -> None:
    record = create(api, admin_headers, DNS, {"name": "Repo", "type": "a", "value": "10.20.0.5"})
    assert record["type"] == "dns-record" and record["category"] == "dns-records"
    assert record["name"] == "repo" and record["recordType"] == "A" and record["ttl"] == 300
    alias = create(api, admin_headers, DNS, {"name": "mirror", "recordType": "CNAME", "value": "repo.lab.example",
                                             "ttl": 60})
    assert alias["recordType"] == "CNAME" and alias["value"] == "repo.lab.example" and alias["ttl"] == 60

    listing = api.get(DNS, headers=admin_headers).json()
    assert listing["category"] == "dns-records" and [m["name"] for m in listing["members"]] == ["mirror", "repo"]
    only_a = api.get(DNS, headers=admin_headers, params={"filter": "recordType='A'"}).json()
    assert [m["id"] for m in only_a["members"]] == [record["id"]]

    echoed = {**api.get(record["uri"], headers=admin_headers).json(), "value": "10.20.0.6"}  # type: dns-record
    changed = api.put(record["uri"], headers=admin_headers, json=echoed)
    assert changed.status_code == 200, changed.text
    assert changed.json()["value"] == "10.20.0.6" and changed.json()["recordType"] == "A"
    # CNAME -> A without a new value: the old value (a name) is checked against the A rules.
    retyped = api.put(alias["uri"], headers=admin_headers, json={"recordType": "A"})
    assert "value: 'repo.lab.example' is not an IPv4 address" in error(retyped, 400)
    ttl = api.put(alias["uri"], headers={**admin_headers, "If-Match": f'"{alias["eTag"]}"'}, json={"ttl": 120})
    assert ttl.status_code == 200 and ttl.json()["ttl"] == 120 and ttl.json()["recordType"] == "CNAME"

    assert api.delete(alias["uri"], headers=admin_headers).status_code == 204
    error(api.get(alias["uri"], headers=admin_headers), 404)
    error(api.delete(alias["uri"], headers=admin_headers), 404)
    assert nudges.seen[-1] == {"Subnet": 0, "Reservation": 0, "DnsRecord": 1}
    assert len(nudges.seen) == 5


@pytest.mark.parametrize(("body", "expected"), [
    ({"name": "x", "type": "MX", "value": "mail"}, "type: 'MX' is not one of A, CNAME, PTR"),
    ({"name": "x", "value": "10.0.0.1"}, "type"),
    ({"name": "x", "type": "A", "value": "not-an-ip"}, "is not an IPv4 address"),
    ({"name": "bad name", "type": "A", "value": "10.0.0.1"}, "is not a valid host name"),
    ({"name": "x", "type": "CNAME", "value": "-bad"}, "is not a valid host name"),
    ({"name": "x", "type": "A", "value": "10.0.0.1", "ttl": -1}, "ttl"),
    ({"name": "x", "type": "A", "value": "10.0.0.1", "class": "IN"}, "unknown field 'class'"),
])
def test_dns_record_validation(api: TestClient, admin_headers: dict[str, str], body: dict[str, Any],
                               expected: str) -> None:
    assert expected in error(api.post(DNS, headers=admin_headers, json=body), 400)
    assert api.get(DNS, headers=admin_headers).json()["total"] == 0


# --- who may do what ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), [
    ("GET", SUBNETS), ("POST", SUBNETS), ("GET", f"{SUBNETS}/x"), ("PUT", f"{SUBNETS}/x"), ("DELETE", f"{SUBNETS}/x"),
    ("GET", RESERVATIONS), ("POST", RESERVATIONS), ("DELETE", f"{RESERVATIONS}/x"),
    ("GET", LEASES), ("GET", f"{LEASES}/10.0.0.1"), ("GET", EVENTS), ("GET", f"{EVENTS}/1"),
    ("GET", DNS), ("POST", DNS), ("PUT", f"{DNS}/x"), ("DELETE", f"{DNS}/x"),
])
def test_every_route_needs_a_session(api: TestClient, admin: str, method: str, path: str) -> None:
    r = api.request(method, path, json={} if method in ("POST", "PUT") else None)
    error(r, 401, "AUTHN_SESSION_INVALID")
    error(api.request(method, path, headers={"auth": "not-a-session"}), 401)


@pytest.mark.parametrize("role", [Role.READ_ONLY, Role.OPERATOR])
def test_read_for_everyone_changes_for_administrators(api: TestClient, admin_headers: dict[str, str],
                                                      make_user: Any, role: Role, nudges: Nudges) -> None:
    subnet = create(api, admin_headers, SUBNETS, SUBNET)
    res = create(api, admin_headers, RESERVATIONS, {"mac": "aa:bb:cc:00:00:01"})
    record = create(api, admin_headers, DNS, {"name": "repo", "type": "A", "value": "10.20.0.5"})
    headers = make_user(role)
    for path in (SUBNETS, subnet["uri"], RESERVATIONS, res["uri"], LEASES, EVENTS, DNS, record["uri"]):
        assert api.get(path, headers=headers).status_code == 200, path
    attempts = [
        ("POST", SUBNETS, {**SUBNET, "name": "other", "network": "10.21.0.0/24"}),
        ("PUT", subnet["uri"], {"router": None}), ("DELETE", subnet["uri"], None),
        ("POST", RESERVATIONS, {"mac": "aa:bb:cc:00:00:02"}), ("PUT", res["uri"], {"boot": "none"}),
        ("DELETE", res["uri"], None),
        ("POST", DNS, {"name": "x", "type": "A", "value": "10.0.0.1"}), ("PUT", record["uri"], {"ttl": 1}),
        ("DELETE", record["uri"], None),
    ]
    for method, path, body in attempts:
        error(api.request(method, path, headers=headers, json=body), 403, "AUTHORIZATION_DENIED")
    assert len(nudges.seen) == 3  # the administrator's three creations only


def test_changes_are_audited(api: TestClient, admin_headers: dict[str, str]) -> None:
    subnet = create(api, admin_headers, SUBNETS, SUBNET)
    create(api, admin_headers, RESERVATIONS, {"mac": "aa:bb:cc:00:00:01", "ip": "10.20.0.9"})
    error(api.post(DNS, headers=admin_headers, json={"name": "x", "type": "A", "value": "nope"}), 400)
    entries = api.get("/rest/audit-logs", headers=admin_headers, params={"count": 20}).json()["members"]
    by_message = {e["message"]: e for e in entries}
    created = by_message["created DHCP subnet provisioning (10.20.0.0/24)"]
    assert created["userName"] == "Administrator" and created["statusCode"] == 201
    assert created["resourceUri"] == subnet["uri"] and created["method"] == "POST"
    assert "reserved aa:bb:cc:00:00:01 (10.20.0.9)" in by_message
    refused = [e for e in entries if e["path"] == DNS]
    assert refused and refused[0]["statusCode"] == 400
