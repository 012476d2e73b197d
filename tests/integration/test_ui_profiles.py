"""The server profile pages through the ASGI app: the list, the "New profile" wizard (available
servers only, the plan's editable attributes handed to the shared attribute form, passwords never
in the page), a finished deploy's page with its phase timeline (deployed in-process, the test
playing the agent, as test_server_profiles.py does), roles, and hostile strings escaped."""

from __future__ import annotations

import html as htmllib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import ServerProfile
from appliance.roles import Role
from appliance.services.golden_images import record_golden_image
from tests.integration import test_server_profiles as deploys
from tests.integration.test_server_profiles import _fresh_fake_machines, boot, settings  # noqa: F401 - fixtures
from tests.integration.test_ui_hardware import _server
from tests.integration.test_ui_netboot import _login_as, _no_inline_code
from tests.support.agent_play import PlayedAgent
from tests.support.runner import BackgroundRunner, wait_task

HOSTILE = '<img src=x onerror="alert(1)"> & \'q\''
ESCAPED = "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; &amp; &#39;q&#39;"
SECRET = "Plan-Secret-0042"
PHASES = ["Create the OS volume", "Personalize", "Export the image", "Boot the deploy agent", "Write the image",
          "Boot the operating system"]


def _escaped(html: str) -> None:
    assert HOSTILE not in html and "<img src=x" not in html
    assert ESCAPED in html


def _plans(api: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    """A build plan with attributes of several kinds and a deployment plan that fixes or hides some."""
    build = api.post("/rest/build-plans", headers=headers, json={
        "name": "bp", "oeBuildPlanType": "deploy", "buildStep": [], "customAttributes": [
            {"name": "Hostname", "type": "hostname", "value": "", "constraints": "{}"},
            {"name": "RootPassword", "type": "password", "value": SECRET, "constraints": "{}"},
            {"name": "Motd", "type": "string", "value": HOSTILE, "constraints": "{}"},
            {"name": "Locked", "type": "string", "value": "fixed", "constraints": "{}"},
            {"name": "Hidden", "type": "string", "value": "quiet", "constraints": "{}"}]})
    assert build.status_code == 201, build.text
    deployment = api.post("/rest/deployment-plans", headers=headers, json={
        "name": "dp " + HOSTILE, "oeBuildPlanURI": build.json()["uri"],
        "customAttributes": [{"name": "Locked", "value": "fixed", "editable": False},
                             {"name": "Hidden", "value": "quiet", "visible": False}]})
    assert deployment.status_code == 201, deployment.text
    return dict(deployment.json())


@pytest.fixture
def deployed(request: pytest.FixtureRequest, api: TestClient, admin_headers: dict[str, str], ctx: AppContext,
             runner: BackgroundRunner, tmp_path: Path) -> dict[str, Any]:
    """test_server_profiles' lab with one server, and its profile deployed (the test is the agent)."""
    listener: TestClient = request.getfixturevalue("boot")
    raw = tmp_path / "golden.raw"
    raw.write_bytes(deploys.DISK)
    image_id = record_golden_image(ctx, ctx.images.ingest(raw), "golden-1", "", "test", None, [])
    build = api.post("/rest/build-plans", headers=admin_headers, json={
        "name": "as-is", "oeBuildPlanType": "deploy", "buildStep": [],
        "customAttributes": [{"name": "Hostname", "type": "hostname", "value": "", "constraints": "{}"}]}).json()
    plan = api.post("/rest/deployment-plans", headers=admin_headers, json={
        "name": "golden as is", "oeBuildPlanURI": build["uri"], "goldenImageURI": f"/rest/golden-images/{image_id}"})
    added = api.post("/rest/server-hardware", headers=admin_headers, json={
        "hostname": "rack3-u1.example", "username": "admin", "password": deploys.PASSWORD, "driver": "fake"})
    server_uri = wait_task(api, admin_headers, added.json()["uri"])["associatedResource"]["resourceUri"]
    inspect = api.put(f"{server_uri}/provisionState", headers=admin_headers, json={"event": "inspect"}).json()
    waiting = deploys.wait_state(api, admin_headers, server_uri, "inspect-wait")
    PlayedAgent(listener, waiting["macAddresses"][0].lower())
    assert wait_task(api, admin_headers, inspect["uri"])["taskState"] == "Completed"
    server = api.get(server_uri, headers=admin_headers).json()
    lab = {"servers": [server], "osdp": f"/rest/os-deployment-plans/{plan.json()['id']}"}
    created = api.post("/rest/server-profiles", headers=admin_headers, json=deploys.profile_body(lab, server, "node01"))
    assert created.status_code == 202, created.text
    deploys.wait_state(api, admin_headers, server_uri, "deploy-wait")
    deploys.deploy_as_agent(listener, server)
    task = wait_task(api, admin_headers, created.json()["uri"])
    assert task["taskState"] == "Completed", task["taskErrors"]
    profile = api.get(task["associatedResource"]["resourceUri"], headers=admin_headers).json()
    return {"server": server, "task": task, "profile": profile}


def test_roles_and_sign_in(api: TestClient, make_user: Any) -> None:
    for path in ("/ui/profiles", "/ui/profiles/new", "/ui/profiles/x"):
        response = api.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/login"), path
    _login_as(api, make_user, Role.READ_ONLY)
    page = api.get("/ui/profiles")
    assert page.status_code == 200 and "No server profiles yet." in page.text
    assert re.search(r'<a href="/ui/profiles" class="current" aria-current="page">Profiles</a>', page.text)
    assert "data-new-profile" not in page.text
    assert api.get("/ui/profiles/new").status_code == 403
    assert api.get("/ui/profiles/no-such-id").status_code == 404


def test_wizard_offers_available_servers_then_plans_then_the_attribute_form(
        api: TestClient, admin_headers: dict[str, str], ctx: AppContext, make_user: Any) -> None:
    ready = _server(ctx, "rack1-u01", provision_state="available")
    idle = _server(ctx, "rack1-u02", provision_state="manageable", address="u02.example")
    _server(ctx, "rack1-u03", provision_state="deploying", address="u03.example")
    plan = _plans(api, admin_headers)
    _login_as(api, make_user, Role.OPERATOR)

    first = api.get("/ui/profiles/new").text
    _no_inline_code(first)
    assert re.findall(r'data-available-server="([^"]+)"', first) == [ready]
    assert "Step 1 of 3" in first and 'name="server"' in first

    second = api.get(f"/ui/profiles/new?server={ready}").text
    assert "Step 2 of 3" in second and f'<input type="hidden" name="server" value="{ready}">' in second
    choice = re.search(rf'<tr data-plan-choice="{plan["id"]}">.*?</tr>', second, re.S)
    assert choice and " disabled>" in choice.group(0)  # no golden image: nothing to deploy
    _escaped(second)

    third = api.get(f"/ui/profiles/new?server={ready}&plan={plan['id']}").text
    _no_inline_code(third)
    _escaped(third)
    assert "Step 3 of 3" in third and "data-profile-form" in third and 'value="rack1-u01"' in third
    assert "/ui/static/plans.js" in third and "/ui/static/profiles.js" in third  # the shared attribute form
    assert SECRET not in third
    data = re.search(r'data-plan="([^"]*)"', third)
    assert data
    handed = json.loads(htmllib.unescape(data.group(1)))
    assert handed["uri"] == f"/rest/os-deployment-plans/{plan['id']}"
    by_name = {a["name"]: a for a in handed["customAttributes"]}
    assert list(by_name) == ["Hostname", "RootPassword", "Motd"]  # editable and visible ones only
    assert by_name["RootPassword"]["value"] == "********" and by_name["Motd"]["value"] == HOSTILE
    assert "Set by the deployment plan: Locked, Hidden." in third
    assert f'data-server-uri="/rest/server-hardware/{ready}"' in third

    refused = api.get(f"/ui/profiles/new?server={idle}").text
    assert "rack1-u02 is manageable, not available" in refused and "Step 1 of 3" in refused


def test_a_finished_deploy_shows_its_phases(api: TestClient, deployed: dict[str, Any], make_user: Any) -> None:
    server, task, profile = deployed["server"], deployed["task"], deployed["profile"]
    _login_as(api, make_user, Role.OPERATOR)

    listing = api.get("/ui/profiles").text
    _no_inline_code(listing)
    row = re.search(rf'<tr data-profile-row="{profile["id"]}">.*?</tr>', listing, re.S)
    assert row, listing
    volume_id = profile["osDeploymentSettings"]["osVolumeUri"].rsplit("/", 1)[-1]
    for text in (f'href="/ui/profiles/{profile["id"]}">sp1<', f'href="/ui/servers/{server["id"]}">{server["name"]}<',
                 'data-state="deployed"', 'data-profile-state="Normal"', ">golden as is<",
                 f"<td>sp1-{volume_id[:8]}</td>", f'href="/ui/tasks/{task["id"]}">Create<', 'data-state="Completed"'):
        assert text in row.group(0), text
    assert "data-new-profile" in listing

    page = api.get(f"/ui/profiles/{profile['id']}")
    assert page.status_code == 200
    _no_inline_code(page.text)
    timeline = re.search(r"<ol class=\"steps\" data-phases>(.*?)</ol>", page.text, re.S)
    assert timeline
    steps = re.findall(r'<span class="step-name">([^<]+)</span> <span class="badge state-completed" '
                       r'data-task-state="[^"]+" data-state="Completed">Completed</span>', timeline.group(1))
    assert steps == PHASES
    assert timeline.group(1).count('aria-valuenow="100"') == len(PHASES)
    assert re.search(r"<td>Hostname</td><td>node01</td>", page.text)
    assert f'data-task="{task["id"]}"' in page.text
    assert "data-profile-apply" in page.text and "data-profile-delete" in page.text
    assert 'data-profile-state="Normal"' in page.text and 'data-state="deployed"' in page.text


def test_hostile_strings_are_escaped(api: TestClient, admin_headers: dict[str, str], ctx: AppContext,
                                     make_user: Any) -> None:
    plan = _plans(api, admin_headers)
    server_id = _server(ctx, "rack1-u09", provision_state="deploy-failed", last_error="agent said " + HOSTILE)
    with unit_of_work(ctx.session_factory) as db:
        profile = ServerProfile(name="sp " + HOSTILE, description=HOSTILE, server_hardware_id=server_id,
                                deployment_plan_id=plan["id"], state="Error", status="Critical",
                                state_reason="failed: " + HOSTILE,
                                os_custom_attributes=[{"name": "Motd", "value": HOSTILE},
                                                      {"name": "RootPassword", "value": "********"}])
        db.add(profile)
        db.flush()
        profile_id = profile.id
    _login_as(api, make_user, Role.READ_ONLY)
    for path in ("/ui/profiles", f"/ui/profiles/{profile_id}"):
        page = api.get(path)
        assert page.status_code == 200, path
        _no_inline_code(page.text)
        _escaped(page.text)
    shown = api.get(f"/ui/profiles/{profile_id}").text
    assert re.search(rf"<td>Motd</td><td>{re.escape(ESCAPED)}</td>", shown)
    assert "<td>RootPassword</td><td><span class=\"muted\">set (hidden)</span></td>" in shown
    assert "failed: " + ESCAPED in shown and "agent said " + ESCAPED in shown
    assert "data-profile-apply" not in shown and "data-profile-delete" not in shown  # read only
