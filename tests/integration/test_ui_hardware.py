"""The server hardware pages through the ASGI app: roles decide which buttons and forms appear,
BMC-provided strings are escaped, the pages follow the CSP, and tasks show their progress bars.
The "Capture golden image" form is posted as a browser would (no task runner: the capture stays
queued, its server ``capturing``); one browser test runs a capture on a live appliance to watch
hardware.js follow its phases and the provision state."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from appliance.context import AppContext
from appliance.db.session import make_session_factory, unit_of_work
from appliance.models import GoldenImage, ServerHardware, Task
from appliance.query import CollectionQuery, Condition, Op
from appliance.roles import Role
from appliance.services.provisioning import ProvisionService
from appliance.services.server_capture import TASK_SERVER_CAPTURE
from appliance.services.tasks import ResourceRef, TaskService
from appliance.states import Event
from appliance.tasks.states import TaskState
from tests.integration.test_ui_routes import _meta_csrf, _signed_in, _user_name, ui_login
from tests.support.live import LiveAppliance
from web.deps import UI_COOKIE

HOSTILE = '<script>alert("bmc")</script>'
INVENTORY = {"cpu": {"model": "Fake CPU", "count": 4, "architecture": "x86_64"}, "memory_bytes": 2000 << 20,
             "physical_memory_bytes": 2048 << 20,
             "disks": [{"name": "sda", "size_bytes": 480 << 30, "rotational": False, "removable": False,
                        "model": "<script>alert(1)</script>", "vendor": "ATA", "serial": "S3Z1NB0K",
                        "wwn": "0x5002538e40a1b2c3"}],
             "nics": [{"name": "eth0", "mac": "52:54:00:12:34:01", "link": True, "speed_mbps": 1000,
                       "driver": "virtio_net", "lldp": {"chassis_id": "0c:42:a1:00:10:07", "port_id": "Ethernet1/7",
                                                        "system_name": HOSTILE, "port_description": "Ethernet1/7",
                                                        "vlan_id": 110, "management_address": "10.0.3.1"}}],
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
                 "<td>up</td>", "1000 Mb/s", "virtio_net", 'datetime="2026-01-02T03:04:05',
                 "&lt;script&gt;alert(&#34;bmc&#34;)&lt;/script&gt; Ethernet1/7 (VLAN 110)", "10.0.3.1"):
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
    assert "data-capture-task" in js.text and "childTasks" in js.text  # the capture's phase timeline
    assert "window.Ingot" in api.get("/ui/static/ui.js").text


# --- capture into a golden image ------------------------------------------------------------------
TO_DEPLOYED = (Event.MANAGE, Event.INSPECT, Event.WAIT, Event.RESUME, Event.DONE,  # enroll → available
               Event.DEPLOY, Event.WAIT, Event.RESUME, Event.DONE)  # → deployed


def _fire(ctx: AppContext, server_id: str, *events: Event, error: str | None = None) -> None:
    with unit_of_work(ctx.session_factory) as db:
        provision = ProvisionService(db, ctx.clock)
        for event in events:
            provision.fire(server_id, event, error=error if event == Event.FAIL else None)


def _deployed(ctx: AppContext, name: str = "rack1-u01") -> str:
    server_id = _server(ctx, name=name, power_state="On")
    _fire(ctx, server_id, *TO_DEPLOYED)
    return server_id


def _build_plan(api: TestClient, headers: dict[str, str], name: str, plan_type: str) -> str:
    r = api.post("/rest/build-plans", headers=headers, json={
        "name": name, "oeBuildPlanType": plan_type, "buildStep": [], "customAttributes": []})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _capture_form(html: str) -> str | None:
    form = re.search(r"<form[^>]*data-capture-form.*?</form>", html, re.S)
    return form.group(0) if form else None


def _capture_block(html: str) -> str:
    """The Provisioning panel's capture: the latest capture task, then the form (when shown)."""
    assert 'id="capture"' in html
    return html.split('id="capture"', 1)[1].split("</section>", 1)[0].split("<form", 1)[0]


def _provision_state(ctx: AppContext, server_id: str) -> str:
    with unit_of_work(ctx.session_factory) as db:
        server = db.get(ServerHardware, server_id)
        assert server is not None
        return server.provision_state


def _captures(ctx: AppContext) -> list[Task]:
    with unit_of_work(ctx.session_factory) as db:
        tasks = TaskService(db, ctx.clock).list(CollectionQuery(
            count=-1, conditions=(Condition("kind", Op.EQ, TASK_SERVER_CAPTURE),))).members
        db.expunge_all()
        return list(tasks)


def _post_capture(api: TestClient, server_id: str, csrf: str, **fields: str) -> Any:
    return api.post(f"/ui/servers/{server_id}/capture", data={"csrf": csrf, **fields}, follow_redirects=False)


def test_capture_form_only_for_deployed_or_capture_failed(api: TestClient, ctx: AppContext, admin: str,
                                                        admin_headers: dict[str, str]) -> None:
    deployed = _deployed(ctx)
    failed = _deployed(ctx, name="rack1-u02")
    _fire(ctx, failed, Event.CAPTURE, Event.FAIL, error="The agent did not answer.")
    available = _server(ctx, name="rack1-u03")
    _fire(ctx, available, *TO_DEPLOYED[:5])
    fresh = _server(ctx, name="rack1-u04")
    golden = _build_plan(api, admin_headers, "generalize <linux>", "capture")
    deploy = _build_plan(api, admin_headers, "deploy as is", "deploy")
    _signed_in(api)

    page = api.get(f"/ui/servers/{deployed}").text
    form = _capture_form(page)
    assert form is not None and f'action="/ui/servers/{deployed}/capture"' in form and 'method="post"' in form
    assert f'name="csrf" value="{_meta_csrf(page)}"' in form
    assert 'name="name" required' in form and 'name="description"' in form
    assert 'name="compress" value="true">' in form  # not checked by default
    assert '<option value="">none: capture as it is</option>' in form  # the default: nothing selected
    assert f'<option value="{golden}">generalize &lt;linux&gt;</option>' in form
    assert deploy not in form and "deploy as is" not in form  # capture build plans only
    assert "data-capture-task" not in page  # no capture yet
    _no_inline_code(page)

    failed_page = api.get(f"/ui/servers/{failed}").text
    assert _capture_form(failed_page) is not None  # a retry
    assert "Last error: The agent did not answer." in failed_page
    for other in (available, fresh):
        text = api.get(f"/ui/servers/{other}").text
        assert _capture_form(text) is None and "data-capture-form" not in text, other


def test_capture_starts_the_task_and_shows_its_progress(api: TestClient, ctx: AppContext, make_user: Any,
                                                        admin_headers: dict[str, str]) -> None:
    server_id = _deployed(ctx)
    plan_id = _build_plan(api, admin_headers, "generalize", "capture")
    _login_as(api, make_user, Role.OPERATOR)  # operators may capture
    csrf = _meta_csrf(api.get(f"/ui/servers/{server_id}").text)

    r = _post_capture(api, server_id, csrf, name="web-golden", description="from rack1-u01",
                      build_plan=plan_id, compress="true")
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/ui/servers/{server_id}#capture"
    assert _provision_state(ctx, server_id) == "capturing"
    [task] = _captures(ctx)
    assert task.name == "Capture golden image" and task.state == TaskState.NEW
    assert task.args["name"] == "web-golden" and task.args["description"] == "from rack1-u01"
    assert task.args["serverId"] == server_id and task.args["compress"] is True
    assert task.args["buildPlanUri"] == f"/rest/build-plans/{plan_id}"
    assert task.resource_name == "web-golden" and task.resource_category == "golden-images"

    page = api.get(r.headers["location"])
    assert page.status_code == 200
    block = _capture_block(page.text)
    assert f'data-capture-task="{task.id}"' in block
    assert f'role="progressbar" data-task-id="{task.id}"' in block  # ui.js polls it
    assert '<span class="progress-label">0 %</span>' in block
    assert f'data-task-state="{task.id}" data-state="New"' in block
    assert f'<a href="/ui/tasks/{task.id}">web-golden</a>' in block
    assert "No phase has started yet." in block
    assert 'data-state="capturing"' in page.text and "capturing \u2192 deployed" in page.text
    assert _capture_form(page.text) is None  # capturing: no second capture
    _no_inline_code(page.text)

    # Its phases, as the task reports them, make the timeline.
    with unit_of_work(ctx.session_factory) as db:
        tasks = TaskService(db, ctx.clock)
        for name, state, pct in (("Boot the deploy agent", TaskState.COMPLETED, 100),
                                 ("Read the disk", TaskState.RUNNING, 40)):
            phase = tasks.create(kind="test-slow", name=name, owner="operator")
            phase.parent_id, phase.state, phase.percent_complete = task.id, state, pct
            db.flush()
        db.get(Task, task.id).state = TaskState.RUNNING  # type: ignore[union-attr]
    timeline = api.get(f"/ui/servers/{server_id}").text.split("data-capture-phases", 1)[1].split("</ol>", 1)[0]
    assert timeline.index("Boot the deploy agent") < timeline.index("Read the disk")
    assert '<span class="progress-label">40 %</span>' in timeline
    assert 'data-state="Completed"' in timeline and 'data-state="Running"' in timeline

    # Done: the server is deployed again, the page says where the image is and offers the form again.
    _fire(ctx, server_id, Event.WAIT, Event.RESUME, Event.DONE)
    with unit_of_work(ctx.session_factory) as db:
        done = db.get(Task, task.id)
        assert done is not None
        done.state, done.percent_complete, done.resource_uri = TaskState.COMPLETED, 100, "/rest/golden-images/g1"
    page = api.get(f"/ui/servers/{server_id}")
    block = _capture_block(page.text)
    assert "The golden image <strong>web-golden</strong> is in the library" in block
    assert '<span class="progress-label">100 %</span>' in block
    assert _capture_form(page.text) is not None


def test_capture_errors_are_shown_at_the_form(api: TestClient, ctx: AppContext, admin: str,
                                              admin_headers: dict[str, str]) -> None:
    server_id = _deployed(ctx)
    deploy_plan = _build_plan(api, admin_headers, "deploy as is", "deploy")
    with unit_of_work(ctx.session_factory) as db:
        db.add(GoldenImage(name="taken", sha256="0" * 64, size=1, virtual_size=1, source_format="qcow2"))
    csrf = _signed_in(api)
    typed = {"description": HOSTILE, "compress": "true"}

    taken = _post_capture(api, server_id, csrf, name="taken", **typed)
    assert taken.status_code == 409  # DUPLICATE_NAME
    assert taken.headers["content-type"].startswith("text/html")
    form = _capture_form(taken.text)
    assert form is not None
    assert "A golden image named taken already exists." in form  # at the form, not an error page
    assert '<label class="has-error">Name of the new golden image' in form and 'aria-invalid="true"' in form
    assert 'value="taken"' in form and 'name="compress" value="true" checked>' in form  # as typed
    assert HOSTILE not in taken.text and "&lt;script&gt;alert(&#34;bmc&#34;)&lt;/script&gt;" in form
    assert f'name="csrf" value="{csrf}"' in form  # ready to be sent again
    _no_inline_code(taken.text)

    not_capture = _post_capture(api, server_id, csrf, name="fresh", build_plan=deploy_plan)
    assert not_capture.status_code == 400
    form = _capture_form(not_capture.text)
    assert form is not None and "deploy as is is a deploy build plan" in form
    assert '<span class="field-error" id="capture-build_plan-error">not a capture build plan</span>' in form
    assert f'<option value="{deploy_plan}" selected>deploy as is (a deploy build plan)</option>' in form
    assert 'value="fresh"' in form

    missing = _post_capture(api, server_id, csrf, name="fresh", build_plan="no-such-plan")
    assert missing.status_code == 400
    assert '<option value="no-such-plan" selected>no-such-plan (no such build plan)</option>' in missing.text
    assert _captures(ctx) == [] and _provision_state(ctx, server_id) == "deployed"  # nothing started

    # A stale page: the server is no longer deployed when the form arrives.
    _fire(ctx, server_id, Event.CAPTURE)
    stale = _post_capture(api, server_id, csrf, name="fresh", description="second try")
    assert stale.status_code == 409
    form = _capture_form(stale.text)
    assert form is not None and "The event capture is not allowed in provision state capturing." in form
    assert 'value="fresh"' in form and 'value="second try"' in form
    assert _captures(ctx) == []


def test_read_only_sees_no_capture_form_and_may_not_post_it(api: TestClient, ctx: AppContext,
                                                             make_user: Any) -> None:
    server_id = _deployed(ctx)
    _login_as(api, make_user, Role.READ_ONLY)
    page = api.get(f"/ui/servers/{server_id}").text
    assert _capture_form(page) is None and f"/ui/servers/{server_id}/capture" not in page
    refused = _post_capture(api, server_id, _meta_csrf(page), name="sneaky")
    assert refused.status_code == 403
    assert "Insufficient role" in refused.text and "data-capture-form" not in refused.text
    assert _captures(ctx) == [] and _provision_state(ctx, server_id) == "deployed"


def test_capture_post_needs_the_csrf_token_and_a_server(api: TestClient, ctx: AppContext, admin: str) -> None:
    server_id = _deployed(ctx)
    csrf = _signed_in(api)
    for token in ("", "not-the-token"):
        r = _post_capture(api, server_id, token, name="forged")
        assert r.status_code == 403 and "Form rejected" in r.text, token
    assert _captures(ctx) == [] and _provision_state(ctx, server_id) == "deployed"
    gone = _post_capture(api, "no-such-server", csrf, name="x")
    assert gone.status_code == 404 and "was not found" in gone.text


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.one_backend
def test_capture_in_a_browser_follows_phases_and_state(live: LiveAppliance, artifacts_dir: Path,
                                                       backend: str) -> None:
    """A live capture of a fake-driver server: the form posts, the page shows the task, hardware.js adds
    the first phase and re-reads the server into capture-wait (no agent comes); Abort fails the capture,
    and the page, loaded again, shows the error and offers the form for a retry."""
    from playwright.sync_api import expect  # here: the other tests of this file need no browser

    from tests.support.browser import WAIT_MS, chromium_page, sign_in

    with live.client(live.login()) as client:
        added = client.post("/rest/server-hardware", json={
            "hostname": "fake-9.example", "username": "admin", "password": "fake-bmc-Secret-1", "driver": "fake"})
        assert added.status_code == 202, added.text
        deadline = time.monotonic() + 30
        while (task := client.get(added.json()["uri"]).json())["taskState"] != "Completed":
            assert time.monotonic() < deadline and task["taskState"] in ("New", "Starting", "Running"), task
            time.sleep(0.1)
        server_id = task["associatedResource"]["resourceUri"].rsplit("/", 1)[1]
        plan = client.post("/rest/build-plans", json={"name": "generalize", "oeBuildPlanType": "capture",
                                                      "buildStep": [], "customAttributes": []})
        assert plan.status_code == 201, plan.text
    engine = create_engine(live.database_url or f"sqlite:///{live.home / 'ingot.db'}")
    try:
        with unit_of_work(make_session_factory(engine)) as db:  # the test is the deploy (it was added: manageable)
            provision = ProvisionService(db)
            for event in TO_DEPLOYED[1:]:
                provision.fire(server_id, event)
    finally:
        engine.dispose()

    with chromium_page(live, accept_dialogs=True) as page:
        sign_in(page, f"/ui/servers/{server_id}")
        form = page.locator("form[data-capture-form]")
        form.get_by_label("Name of the new golden image").fill("browser-golden")
        form.get_by_label("Capture build plan").select_option(label="generalize")
        form.get_by_role("button", name="Capture golden image").click()
        expect(page).to_have_url(re.compile(rf"/ui/servers/{server_id}#capture$"))
        block = page.locator("[data-capture-task]")
        expect(block.get_by_role("link", name="browser-golden")).to_be_visible()
        expect(block.locator("[data-capture-phases] [data-phase]").first).to_contain_text(
            "Boot the deploy agent", timeout=WAIT_MS)
        state = page.locator('[data-sh-field="provisionState"]')
        expect(state).to_have_text("capture-wait \u2192 deployed", timeout=WAIT_MS)
        expect(page.locator("form[data-capture-form]")).to_have_count(0)
        page.screenshot(path=str(artifacts_dir / f"ui-server-capture-running-{backend}.png"), full_page=True)

        page.locator('[data-provision-event="abort"]').click()
        expect(state).to_have_text("capture-failed", timeout=WAIT_MS)
        expect(block.locator("[data-task-state]").first).to_have_text("Error", timeout=WAIT_MS)
        expect(page.locator("form[data-capture-form]")).to_be_visible(timeout=WAIT_MS)  # the page was loaded again
        expect(page.locator('[data-sh-field="lastError"]')).to_contain_text("Aborted in capture-wait.")
        page.screenshot(path=str(artifacts_dir / f"ui-server-capture-failed-{backend}.png"), full_page=True)
