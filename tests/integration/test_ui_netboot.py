"""The Network boot page through the ASGI app: what each role sees, the data of every section,
escaping of what machines send, the MAC filter of the boot events, and the REST calls its script
makes with the session cookie and CSRF header."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import BootEvent, DhcpLease, DnsRecord, Reservation, ServerHardware, Subnet
from appliance.roles import Role
from tests.integration.test_ui_routes import _signed_in, _user_name, ui_login

HOSTILE = '<script>alert("pxe")</script>'
ACTIONS = ("data-subnet-form", "data-add-reservation", "data-add-dns", "data-delete=")


def _no_inline_code(html: str) -> None:
    assert not re.search(r"<script(?![^>]*\ssrc=)", html)
    assert " style=" not in html and "<style" not in html


def _login_as(api: TestClient, make_user: Any, role: Role) -> None:
    name = _user_name(api, make_user(role))
    assert ui_login(api, name, "Passw0rd-" + name).status_code == 303


def _section(html: str, anchor: str) -> str:
    match = re.search(rf'<section class="panel" id="{anchor}">.*?</section>', html, re.S)
    assert match is not None, anchor
    return match.group(0)


def _fill(ctx: AppContext) -> dict[str, Any]:
    now = datetime.now(UTC)
    with unit_of_work(ctx.session_factory) as db:
        server = ServerHardware(name="rack1-u07", driver="fake", address="rack1-u07.example", port=623,
                                username="admin", password_sealed="x", state="NoProfileApplied", status="OK",
                                power_state="Off", mac_addresses=["52:54:00:00:02:07"])
        db.add(server)
        db.flush()
        subnet = Subnet(name="provisioning", network="10.20.0.0/24", range_first="10.20.0.100",
                        range_last="10.20.0.200", router="10.20.0.1", dns_servers=["10.20.0.2"], domain="lab.example",
                        lease_time=1800, mode="server", unknown_mac="address-only")
        res = Reservation(mac="52:54:00:00:02:01", ip="10.20.0.50", hostname="node-1", boot="disk",
                          server_hardware_id=server.id)
        record = DnsRecord(name="repo", type="A", value="10.20.0.5", ttl=60)
        db.add_all([subnet, res, record,
                    DhcpLease(ip="10.20.0.100", mac="52:54:00:00:02:01", state="bound",
                              expires=now + timedelta(hours=1)),
                    DhcpLease(ip="10.20.0.101", mac="52:54:00:00:02:07", state="bound",
                              expires=now - timedelta(hours=1)),
                    DhcpLease(ip="10.20.0.102", mac="52:54:00:00:02:09", state="declined", expires=now),
                    BootEvent(at=now - timedelta(seconds=30), mac="52:54:00:00:02:01", client_ip="10.20.0.100",
                              service="tftp", action="RRQ", detail="undionly.kpxe"),
                    BootEvent(at=now - timedelta(seconds=20), mac="52:54:00:00:02:07", client_ip="10.20.0.101",
                              service="http", action="GET", detail=HOSTILE, ok=False),
                    BootEvent(at=now - timedelta(seconds=10), mac="52:54:00:00:02:01", client_ip="10.20.0.100",
                              service="http", action="GET", detail="boot.ipxe -> local disk")])
        db.flush()
        return {"server": server.id, "subnet": subnet.id, "reservation": res.id, "record": record.id}


def test_signed_out_goes_to_login(api: TestClient) -> None:
    r = api.get("/ui/netboot", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2Fnetboot"


def test_admin_sees_every_section_and_the_forms(api: TestClient, ctx: AppContext, admin: str) -> None:
    ids = _fill(ctx)
    _signed_in(api)
    r = api.get("/ui/netboot")
    assert r.status_code == 200
    assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
    page = r.text
    assert '<a href="/ui/netboot" class="current" aria-current="page">Network boot</a>' in page
    assert ">Network boot</a>" in api.get("/ui/").text  # in the navigation of every page
    assert "/ui/static/netboot.js" in page and "/ui/static/netboot.css" in page
    _no_inline_code(page)
    for action in ACTIONS:
        assert action in page, action

    subnets = _section(page, "subnets")
    for text in ("provisioning", "10.20.0.0/24", "10.20.0.100", "10.20.0.200", "10.20.0.1", "10.20.0.2",
                 "lab.example", "1800 s", "An address only", f'data-subnet-uri="/rest/dhcp/subnets/{ids["subnet"]}"',
                 'value="10.20.0.100"', '<option value="address-only" selected>', "Add a subnet"):
        assert text in subnets, text

    reservations = _section(page, "reservations")
    row = re.search(rf'<tr data-reservation="{ids["reservation"]}">.*?</tr>', reservations, re.S)
    assert row is not None
    for text in ("52:54:00:00:02:01", "10.20.0.50", "node-1", "boot-disk", f'/ui/servers/{ids["server"]}',
                 "rack1-u07", f'data-delete="/rest/dhcp/reservations/{ids["reservation"]}"'):
        assert text in row.group(0), text
    assert f'<option value="/rest/server-hardware/{ids["server"]}">rack1-u07</option>' in reservations

    leases = _section(page, "leases")
    assert [m for m in re.findall(r"lease-(active|expired|declined)\">", leases)] == ["active", "expired", "declined"]
    assert "node-1" in leases and "rack1-u07" in leases  # reservation host name, server name
    assert 'data-refresh-s="5"' in leases

    events = _section(page, "events")
    details = re.findall(r'<td class="detail">(.*?)</td>', events)
    assert details == ["boot.ipxe -&gt; local disk", "&lt;script&gt;alert(&#34;pxe&#34;)&lt;/script&gt;",
                       "undionly.kpxe"]  # newest first, escaped
    assert HOSTILE not in page
    assert "result-failure" in events

    dns = _section(page, "dns")
    assert "repo" in dns and "10.20.0.5" in dns and "60 s" in dns
    assert f'data-delete="/rest/dns/records/{ids["record"]}"' in dns


def test_empty_page_for_admin_offers_a_subnet(api: TestClient, admin: str) -> None:
    _signed_in(api)
    page = api.get("/ui/netboot").text
    assert "No subnet yet." in page and "INGOT_DHCP_INTERFACE" in page
    assert '<details class="edit" open>' in page
    assert "No reservations." in page and "No DNS records." in page
    assert re.search(r"<p class=\"empty\" data-leases-empty>", page)  # shown, not hidden
    assert re.search(r"<p class=\"empty\" data-events-empty>", page)


@pytest.mark.parametrize("role", [Role.READ_ONLY, Role.OPERATOR])
def test_others_read_but_get_no_forms(api: TestClient, ctx: AppContext, make_user: Any, role: Role) -> None:
    _fill(ctx)
    _login_as(api, make_user, role)
    r = api.get("/ui/netboot")
    assert r.status_code == 200
    for action in ACTIONS:
        assert action not in r.text, action
    for text in ("provisioning", "52:54:00:00:02:01", "10.20.0.100", "undionly.kpxe", "repo"):
        assert text in r.text, text


def test_events_filter_by_mac(api: TestClient, ctx: AppContext, admin: str) -> None:
    _fill(ctx)
    _signed_in(api)
    full = _section(api.get("/ui/netboot", params={"mac": "52-54-00-00-02-01"}).text, "events")
    assert re.findall(r"<td>(tftp|http)</td>", full) == ["http", "tftp"]
    assert 'data-mac="52:54:00:00:02:01"' in full and "undionly.kpxe" in full and "alert" not in full
    part = _section(api.get("/ui/netboot", params={"mac": "02:07"}).text, "events")
    assert re.findall(r'data-event="\d+"', part) and "alert" in part and "undionly" not in part
    none = _section(api.get("/ui/netboot", params={"mac": "ff:ff"}).text, "events")
    assert "No boot events for this MAC." in none
    bad = api.get("/ui/netboot", params={"mac": "<b>x</b>"})
    assert bad.status_code == 200
    events = _section(bad.text, "events")
    assert "Type a MAC address or part of one" in events and 'data-mac=""' in events
    assert "<b>x</b>" not in bad.text and len(re.findall(r'data-event="\d+"', events)) == 3


def test_the_page_script_can_call_the_rest_api(api: TestClient, ctx: AppContext, admin: str) -> None:
    """What netboot.js does: JSON to /rest with the session cookie and the page's CSRF token."""
    csrf = _signed_in(api)
    headers = {"X-CSRF-Token": csrf, "X-API-Version": "4600"}
    body = {"name": "provisioning", "network": "10.20.0.0/24", "rangeFirst": "10.20.0.100",
            "rangeLast": "10.20.0.200", "router": None, "dnsServers": [], "domain": None, "leaseTime": 3600,
            "mode": "server", "unknownMacPolicy": "discovery"}  # the subnet form's fields, blanks as null
    created = api.post("/rest/dhcp/subnets", headers=headers, json=body)
    assert created.status_code == 201, created.text
    assert api.post("/rest/dhcp/reservations", headers={"X-API-Version": "4600"},
                    json={"mac": "aa:bb:cc:00:00:42"}).status_code == 401  # no CSRF token: refused
    reservation = api.post("/rest/dhcp/reservations", headers=headers,
                           json={"mac": "aa:bb:cc:00:00:42", "ip": None, "hostname": None, "boot": "netboot"})
    assert reservation.status_code == 201, reservation.text
    record = api.post("/rest/dns/records", headers=headers,
                      json={"name": "repo", "recordType": "A", "value": "10.20.0.5", "ttl": 300})
    assert record.status_code == 201, record.text
    page = api.get("/ui/netboot").text
    assert "aa:bb:cc:00:00:42" in page and "10.20.0.5" in page and "No subnet yet." not in page
    assert api.delete(reservation.json()["uri"], headers=headers).status_code == 204
    assert "aa:bb:cc:00:00:42" not in api.get("/ui/netboot").text
    leases = api.get("/rest/dhcp/leases?count=50", headers={"X-API-Version": "4600"})
    assert leases.status_code == 200 and leases.json()["members"] == []
    events = api.get("/rest/boot-events", params={"count": 50, "filter": "mac matches '%00:42%'"})
    assert events.status_code == 200 and events.json()["total"] == 0


def test_static_files(api: TestClient) -> None:
    for name, kind in (("netboot.js", "javascript"), ("netboot.css", "text/css")):
        r = api.get(f"/ui/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    script = api.get("/ui/static/netboot.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script  # text only


# --- in a real browser -----------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.one_backend
def test_in_a_browser(page: Any, live: Any, backend: str, artifacts_dir: Any) -> None:
    """Add and edit a subnet, add and remove a reservation and a DNS record through the forms, and
    watch a new lease and boot event appear without a reload."""
    from playwright.sync_api import expect

    from tests.integration.test_cli_netboot import appliance_db
    from tests.support.browser import WAIT_MS, sign_in

    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, "/ui/netboot")
    expect(page.get_by_role("link", name="Network boot", exact=True)).to_have_attribute("aria-current", "page")
    expect(page.get_by_text("No subnet yet.")).to_be_visible()

    add = page.locator("form[data-subnet-form]:not([data-subnet-uri])")
    add.get_by_label("Name", exact=True).fill("provisioning")
    add.get_by_label("Network").fill("10.20.0.0/24")
    add.get_by_label("Pool from").fill("10.20.0.100")
    add.get_by_label("Pool to").fill("10.20.0.200")
    add.get_by_role("button", name="Add subnet").click()
    subnet = page.locator("[data-subnet]")
    expect(subnet.locator("h3")).to_contain_text("provisioning", timeout=WAIT_MS)

    subnet.get_by_text("Edit provisioning").click()
    edit = subnet.locator("form[data-subnet-form]")
    edit.get_by_label("Router").fill("10.20.0.1")
    edit.get_by_label("Mode").select_option("proxy")
    edit.get_by_role("button", name="Save subnet").click()
    expect(page.locator("[data-subnet] .badge")).to_have_text("proxy", timeout=WAIT_MS)
    expect(page.locator("[data-subnet]")).to_contain_text("10.20.0.1")

    reserve = page.locator("form[data-add-reservation]")
    reserve.get_by_label("MAC").fill("52:54:00:00:05:01")
    reserve.get_by_label("Address", exact=True).fill("10.20.0.50")
    reserve.get_by_label("Host name").fill("node-1")
    reserve.get_by_label("Boots").select_option("disk")
    reserve.get_by_role("button", name="Add reservation").click()
    row = page.locator("tr[data-reservation]")
    expect(row).to_contain_text("10.20.0.50", timeout=WAIT_MS)
    expect(row).to_contain_text("node-1")

    record = page.locator("form[data-add-dns]")
    record.get_by_label("Name", exact=True).fill("repo")
    record.get_by_label("Value").fill("10.20.0.5")
    record.get_by_role("button", name="Add record").click()
    expect(page.locator("tr[data-dns-record]")).to_contain_text("10.20.0.5", timeout=WAIT_MS)

    # What the boot services write shows up on the next refresh, without reloading the page.
    now = datetime.now(UTC)
    with appliance_db(live) as db:
        db.add(DhcpLease(ip="10.20.0.50", mac="52:54:00:00:05:01", state="bound", expires=now + timedelta(hours=1)))
        db.add(BootEvent(at=now, mac="52:54:00:00:05:01", client_ip="10.20.0.50", service="tftp", action="RRQ",
                         detail=HOSTILE, ok=False))
    leases = page.locator("[data-leases] tbody tr")
    expect(leases).to_have_count(1, timeout=WAIT_MS)
    expect(leases.first).to_contain_text("node-1")
    expect(leases.first.locator(".badge")).to_have_text("active")
    event = page.locator("[data-events] tbody tr").first
    expect(event.locator(".detail")).to_have_text(HOSTILE, timeout=WAIT_MS)  # as text, not as markup
    expect(event.locator(".badge")).to_have_text("failed")
    page.screenshot(path=str(artifacts_dir / f"ui-netboot-{backend}.png"), full_page=True)

    page.locator("#event-mac").fill("05:02")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No boot events for this MAC.")).to_be_visible()

    row.get_by_role("button", name="Remove").click()
    expect(page.locator("tr[data-reservation]")).to_have_count(0, timeout=WAIT_MS)
    page.locator("tr[data-dns-record]").get_by_role("button", name="Remove").click()
    expect(page.locator("tr[data-dns-record]")).to_have_count(0, timeout=WAIT_MS)
    with live.client(live.login()) as api:
        assert api.get("/rest/dhcp/reservations").json()["total"] == 0
        assert api.get("/rest/dhcp/subnets").json()["members"][0]["mode"] == "proxy"
