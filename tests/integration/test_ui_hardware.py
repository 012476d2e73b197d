"""The server hardware pages through the ASGI app: roles decide which buttons and forms appear,
BMC-provided strings are escaped, the pages follow the CSP, and tasks show their progress bars."""

from __future__ import annotations

import re
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


def test_read_only_sees_no_action(api: TestClient, ctx: AppContext, make_user: Any) -> None:
    server_id = _server(ctx)
    _login_as(api, make_user, Role.READ_ONLY)
    page = api.get("/ui/servers")
    assert page.status_code == 200
    assert "rack1-u01" in page.text
    detail = api.get(f"/ui/servers/{server_id}")
    assert detail.status_code == 200
    for marker in ("data-power=", "data-power-sync", "data-add-server", "data-discover", "data-refresh",
                   "data-remove", "data-boot-device", "data-console-connect"):
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
    assert "innerHTML" not in js.text  # BMC strings must never become markup
    assert "window.Ingot" in api.get("/ui/static/ui.js").text
