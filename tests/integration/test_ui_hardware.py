"""The server hardware pages through the ASGI app: roles decide which buttons and forms appear,
BMC-provided strings are escaped, the pages follow the CSP, and tasks show their progress bars."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import ServerHardware
from appliance.roles import Role
from appliance.services.tasks import ResourceRef, TaskService
from tests.integration.test_ui_routes import _meta_csrf, _signed_in, _user_name, ui_login
from web.deps import UI_COOKIE

HOSTILE = '<script>alert("bmc")</script>'
INVENTORY = {"cpu": {"model": "Fake CPU", "count": 4, "architecture": "x86_64"}, "memory_bytes": 2000 << 20,
             "physical_memory_bytes": 2048 << 20,
             "disks": [{"name": "sda", "size_bytes": 480 << 30, "rotational": False, "removable": False,
                        "model": "<script>alert(1)</script>", "vendor": "ATA", "serial": "S3Z1NB0K",
                        "wwn": "0x5002538e40a1b2c3"}],
             "nics": [{"name": "eth0", "mac": "52:54:00:12:34:01", "link": True, "speed_mbps": 1000,
                       "driver": "virtio_net"}],
             "system": {"sys_vendor": "Ingot", "product_name": "Fake Server 1000", "product_serial": "SYS-1",
                        "product_uuid": None, "bios_version": "1.2.3"}}


def _server(ctx: AppContext, name: str = "rack1-u01", **fields: Any) -> str:
    values: dict[str, Any] = {
        "driver": "fake", "address": f"{name}.example", "port": 623, "username": "admin",
        "password_sealed": "not-a-real-ciphertext", "state": "NoProfileApplied", "status": "OK",
        "power_state": "Off", "manufacturer": "Fake Systems", "model": "FS-1000", "serial_number": "SN0001",
        "uuid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "rom_version": "U30 v2.90", "bmc_firmware": "2.81",
        "mac_addresses": ["52:54:00:00:00:01", "52:54:00:00:00:02"],
        "sensors": [{"name": "Inlet Temp", "kind": "Temperature", "value": 21.5, "units": "C", "health": "OK"},
                    {"name": "Fan 1", "kind": "Fan", "value": None, "units": "RPM", "health": "Warning"}],
        "boot_device": {"device": "pxe", "persistent": False, "mode": "uefi"},
    }
    values.update(fields)
    with unit_of_work(ctx.session_factory) as db:
        server = ServerHardware(name=name, **values)
        db.add(server)
        db.flush()
        return server.id


def _task(ctx: AppContext, server_id: str, name: str = "Update power state") -> str:
    with unit_of_work(ctx.session_factory) as db:
        ref = ResourceRef(uri=f"/rest/server-hardware/{server_id}", name="rack1-u01", category="server-hardware")
        return TaskService(db, ctx.clock).create(kind="test-slow", name=name, owner="Administrator",
                                                 resource=ref).id


def _login_as(api: TestClient, make_user: Any, role: Role) -> None:
    name = _user_name(api, make_user(role))
    assert ui_login(api, name, "Passw0rd-" + name).status_code == 303


def _provision_buttons(html: str) -> list[str]:
    """The provision events whose buttons are shown (the others are rendered hidden)."""
    return [re.search(r'data-provision-event="([a-z]+)"', tag).group(1)  # type: ignore[union-attr]
            for tag in re.findall(r"<button[^>]*data-provision-event[^>]*>", html)
            if not tag.endswith(" hidden>")]


def _row(html: str, server_id: str) -> str:
    row = re.search(rf'<tr data-server="{server_id}".*?</tr>', html, re.S)
    assert row is not None
    return row.group(0)


def _no_inline_code(html: str) -> None:
    assert not re.search(r"<script(?![^>]*\ssrc=)", html)
    assert " style=" not in html and "<style" not in html


# --- access --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ui/servers", "/ui/servers/some-id"])
def test_pages_redirect_to_login_when_signed_out(api: TestClient, path: str) -> None:
    r = api.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/ui/login?next=")


def test_nav_has_servers_and_empty_list(api: TestClient, admin: str) -> None:
    _signed_in(api)
    r = api.get("/ui/servers")
    assert r.status_code == 200
    assert '<a href="/ui/servers" class="current" aria-current="page">Servers</a>' in r.text
    assert "No servers yet." in r.text
    assert "/ui/static/hardware.js" in r.text
    _no_inline_code(r.text)
    assert ">Servers</a>" in api.get("/ui/").text  # in the navigation of every page


def test_admin_sees_add_discover_sync_and_power_buttons(api: TestClient, ctx: AppContext, admin: str) -> None:
    server_id = _server(ctx)
    _signed_in(api)
    page = api.get("/ui/servers").text
    assert "data-add-server" in page and 'name="hostname"' in page and 'value="fake"' in page
    assert "data-discover" in page and 'name="cidr"' in page
    assert "data-power-sync" in page
    assert f'data-power="{server_id}" data-power-state="On" data-power-control="MomentaryPress"' in page
    row = re.search(rf'<tr data-server="{server_id}".*?</tr>', page, re.S)
    assert row is not None
    assert 'data-sh-field="powerState" data-state="Off">Off<' in row.group(0)
    assert "No profile applied" in row.group(0) and "FS-1000" in row.group(0) and "SN0001" in row.group(0)
    assert "rack1-u01.example:623" in row.group(0)
    _no_inline_code(page)


def test_operator_may_power_but_not_add(api: TestClient, ctx: AppContext, make_user: Any) -> None:
    server_id = _server(ctx)
    _login_as(api, make_user, Role.OPERATOR)
    page = api.get("/ui/servers").text
    assert f'data-power="{server_id}"' in page and "data-power-sync" in page
    assert "data-add-server" not in page and "data-discover" not in page
    detail = api.get(f"/ui/servers/{server_id}").text
    assert "data-boot-device" in detail and "data-refresh" in detail and "data-console-connect" in detail
    assert "data-remove" not in detail
    assert _provision_buttons(detail) == ["manage", "maintain", "retire"]  # what enroll allows


def test_read_only_sees_no_action(api: TestClient, ctx: AppContext, make_user: Any) -> None:
    server_id = _server(ctx)
    _login_as(api, make_user, Role.READ_ONLY)
    page = api.get("/ui/servers")
    assert page.status_code == 200
    assert "rack1-u01" in page.text
    detail = api.get(f"/ui/servers/{server_id}")
    assert detail.status_code == 200
    for marker in ("data-power=", "data-power-sync", "data-add-server", "data-discover", "data-refresh",
                   "data-remove", "data-boot-device", "data-console-connect", "data-provision="):
        assert marker not in page.text, marker
        assert marker not in detail.text, marker
    assert "Inlet Temp" in detail.text  # reading is allowed


# --- the detail page ----------------------------------------------------------------------------
def test_detail_page_shows_inventory_macs_sensors_and_boot(api: TestClient, ctx: AppContext, admin: str) -> None:
    server_id = _server(ctx)
    task_id = _task(ctx, server_id)
    _signed_in(api)
    r = api.get(f"/ui/servers/{server_id}")
    assert r.status_code == 200
    page = r.text
    for text in ("Fake Systems", "FS-1000", "SN0001", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "U30 v2.90", "2.81",
                 "52:54:00:00:00:01", "52:54:00:00:00:02", "Inlet Temp", "21.5 C", "Fan 1",
                 "pxe (next boot only, uefi)"):
        assert text in page, text
    assert 'class="badge sev-warning">Warning<' in page
    assert f'data-server="{server_id}"' in page and "data-server-page" in page
    assert f'data-console-connect="{server_id}"' in page and "data-console-output" in page
    for label in ("Power on", "Shut down", "Force off", "Power cycle", "Reset"):
        assert f">{label}</button>" in page, label
    assert 'data-power-control="PressAndHold"' in page and 'data-power-control="ColdBoot"' in page
    assert f'role="progressbar" data-task-id="{task_id}"' in page  # the server's task, with its bar
    assert f'data-task-state="{task_id}" data-state="New"' in page
    _no_inline_code(page)

    listing = api.get("/ui/servers").text  # the row shows the same task as its latest
    row = re.search(rf'<tr data-server="{server_id}".*?</tr>', listing, re.S)
    assert row is not None and f'data-task-id="{task_id}"' in row.group(0)
    assert "Recent server tasks" in listing and "Update power state" in listing


def test_provision_column_buttons_last_error_and_inventory(api: TestClient, ctx: AppContext, admin: str) -> None:
    failed_id = _server(ctx, provision_state="inspect-failed", last_error="Aborted in inspect-wait.",
                        hardware_inventory=INVENTORY, inspected=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    fresh_id = _server(ctx, name="rack1-u02", provision_state="manageable")
    _signed_in(api)
    listing = api.get("/ui/servers").text
    assert "<th>Provision</th>" in listing
    assert ('class="badge state-error" data-sh-field="provisionState" data-state="inspect-failed" '
            'title="Aborted in inspect-wait.">inspect-failed<') in _row(listing, failed_id)
    assert 'class="badge sev-ok" data-sh-field="provisionState" data-state="manageable">manageable<' in _row(
        listing, fresh_id)

    page = api.get(f"/ui/servers/{failed_id}").text
    assert _provision_buttons(page) == ["inspect", "manage", "maintain", "retire"]  # not abort nor unmaintain
    assert 'data-provision-event="abort" hidden' in page  # there for hardware.js to show when allowed
    retire = re.search(r'<button[^>]*data-provision-event="retire"[^>]*>', page)
    assert retire is not None and 'data-question="Retire rack1-u01?' in retire.group(0)
    assert "Last error: Aborted in inspect-wait." in page
    inventory = page.split("<h2>Inventory</h2>")[1].split("</section>")[0]
    for text in ("4 \u00d7 Fake CPU", "(x86_64)", "2048 MiB", "Ingot Fake Server 1000", "SYS-1", "1.2.3", "sda",
                 "480.0 GiB", "SSD", "ATA", "S3Z1NB0K", "0x5002538e40a1b2c3", "eth0", "52:54:00:12:34:01",
                 "<td>up</td>", "1000 Mb/s", "virtio_net", 'datetime="2026-01-02T03:04:05'):
        assert text in inventory, text
    assert "<script>alert(1)</script>" not in page  # the machine's strings are text, never markup
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in inventory
    _no_inline_code(page)

    fresh = api.get(f"/ui/servers/{fresh_id}").text
    assert _provision_buttons(fresh) == ["inspect", "maintain", "retire"]
    assert "Not inspected yet." in fresh and "Last error:" not in fresh
    assert 'data-sh-field="lastError" role="status" hidden' in fresh


def test_provision_events_from_the_page(api: TestClient, ctx: AppContext, admin: str) -> None:
    """What hardware.js does with the buttons: PUT the event with the cookie and the CSRF token."""
    server_id = _server(ctx)
    csrf = _signed_in(api)
    headers = {"X-CSRF-Token": csrf, "X-API-Version": "4600"}
    path = f"/rest/server-hardware/{server_id}/provisionState"
    assert api.put(path, json={"event": "maintain"}).status_code == 401  # no CSRF token: refused
    for event, state, shown in (("manage", "manageable", ["inspect", "maintain", "retire"]),
                                ("maintain", "maintenance", ["unmaintain"]),
                                ("unmaintain", "manageable", ["inspect", "maintain", "retire"])):
        r = api.put(path, json={"event": event}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["provisionState"] == state
        page = api.get(f"/ui/servers/{server_id}").text
        assert f'data-state="{state}"' in page and _provision_buttons(page) == shown, event
        if state == "maintenance":
            assert "back to manageable on Unmaintain" in page
            assert 'class="badge state-warning" data-sh-field="provisionState"' in page

    refused = api.put(path, json={"event": "unmaintain"}, headers=headers)  # a stale page's button
    assert refused.status_code == 409
    body = refused.json()  # hardware.js shows the message and the details
    assert body["errorCode"] == "INVALID_PROVISION_STATE"
    assert body["message"] == "The event unmaintain is not allowed in provision state manageable."
    assert body["details"] == "Allowed in manageable: inspect, retire, maintain."


def test_unknown_server_is_a_404_page(api: TestClient, admin: str) -> None:
    _signed_in(api)
    r = api.get("/ui/servers/no-such-server")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "was not found" in r.text
    assert r.headers["x-frame-options"] == "DENY"


def test_bmc_strings_are_escaped(api: TestClient, ctx: AppContext, admin: str) -> None:
    server_id = _server(ctx, name="evil<b>", model=HOSTILE, serial_number='"><img src=x onerror=alert(1)>',
                        manufacturer=HOSTILE, state="Error", state_reason=HOSTILE, mac_addresses=[HOSTILE],
                        provision_state="inspect-failed", last_error=HOSTILE,
                        hardware_inventory={**INVENTORY, "cpu": {"model": HOSTILE, "count": 2},
                                            "nics": [{"name": HOSTILE, "mac": None, "link": False}]},
                        sensors=[{"name": HOSTILE, "kind": HOSTILE, "value": 1, "units": HOSTILE,
                                  "health": HOSTILE}])
    _signed_in(api)
    for path in ("/ui/servers", f"/ui/servers/{server_id}"):
        text = api.get(path).text
        assert HOSTILE not in text, path
        assert "&lt;script&gt;alert(&#34;bmc&#34;)&lt;/script&gt;" in text, path
        assert "<img src=x" not in text and "evil<b>" not in text, path
        assert "evil&lt;b&gt;" in text, path


def test_server_pages_use_the_session_csrf_token(api: TestClient, ctx: AppContext, admin: str) -> None:
    server_id = _server(ctx)
    csrf = _signed_in(api)
    page = api.get(f"/ui/servers/{server_id}").text
    assert _meta_csrf(page) == csrf  # hardware.js sends it as X-CSRF-Token and in the console's URL
    assert api.cookies.get(UI_COOKIE)


def test_hardware_script_is_served(api: TestClient) -> None:
    js = api.get("/ui/static/hardware.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert js.headers["x-frame-options"] == "DENY"
    assert "/console?csrf=" in js.text and "textContent" in js.text
    assert "/provisionState" in js.text and "provisionEvents" in js.text
    assert "innerHTML" not in js.text  # BMC strings must never become markup
    assert "window.Ingot" in api.get("/ui/static/ui.js").text
