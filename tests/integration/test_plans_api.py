"""Plan scripts, build plans, deployment plans (Image Streamer) and OneView's os-deployment-plans.

API-level tests use the in-process app on both backends; the ``live`` tests drive HPE's SDK
(hpeoneview 8.0.0), unchanged, against a real ``ingot serve``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hpeOneView.exceptions import HPEOneViewException
from hpeOneView.oneview_client import OneViewClient

from appliance.roles import Role
from tests.support.live import ADMIN_PASSWORD, LiveAppliance

ERROR_KEYS = {"errorCode", "message", "details", "recommendedActions", "nestedErrors"}
HOSTNAME_SCRIPT = """mount /dev/sda2 /
upload -<<END /etc/hostname
@Hostname@
END
echo "@ManagementNIC.ipaddress@ on @_Initiator1.ip@ ssh=@SSH:enabled@"
umount /
"""


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= ERROR_KEYS
    if code is not None:
        assert body["errorCode"] == code
    return body


def plan_script(api: TestClient, headers: dict[str, str], name: str = "hostname", plan_type: str = "deploy",
                content: str = HOSTNAME_SCRIPT) -> dict[str, Any]:
    r = api.post("/rest/plan-scripts", headers=headers,
                 json={"type": "PlanScript", "name": name, "description": f"{name} script", "planType": plan_type,
                       "content": content, "hpProvided": False})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


# --- plan scripts: API ---------------------------------------------------------------------------
def test_plan_script_crud_and_discovered_attributes(api: TestClient, admin_headers: dict[str, str]) -> None:
    created = plan_script(api, admin_headers)
    assert created["type"] == "PlanScript" and created["category"] == "plan-scripts"
    assert created["uri"] == f"/rest/plan-scripts/{created['id']}"
    assert (created["planType"], created["hpProvided"], created["content"]) == ("deploy", False, HOSTNAME_SCRIPT)
    assert created["customAttributeNames"] == ["Hostname", "ManagementNIC", "SSH"]  # not _Initiator1
    assert created["customAttributes"] == (
        '[{"name": "Hostname", "value": ""}, {"name": "ManagementNIC", "value": ""}, {"name": "SSH", "value": ""}]')
    assert created["eTag"] and created["created"].endswith("Z")

    r = api.get(created["uri"], headers=admin_headers)
    assert r.status_code == 200 and r.headers["ETag"] == f'"{created["eTag"]}"'

    # PUT the whole object back (as the SDK does), with a stale and then the current eTag.
    changed = {**created, "content": "echo @DomainName@\n", "planType": "General"}
    stale = api.put(created["uri"], headers={**admin_headers, "If-Match": '"0-0"'}, json=changed)
    assert_error(stale, 412, "ETAG_MISMATCH")
    r = api.put(created["uri"], headers={**admin_headers, "If-Match": created["eTag"]}, json=changed)
    assert r.status_code == 200, r.text
    updated = r.json()
    assert (updated["planType"], updated["customAttributeNames"]) == ("general", ["DomainName"])
    assert updated["eTag"] != created["eTag"]

    diff = api.post(f"/rest/plan-scripts/differences/{created['id']}", headers=admin_headers,
                    json="echo @DomainName@ @Hostname@\n").json()
    assert diff["changed"] is True and diff["addedCustomAttributes"] == ["Hostname"]
    assert "+echo @DomainName@ @Hostname@" in diff["differences"]
    assert api.get(f"{created['uri']}/usedby/readonly", headers=admin_headers).json() == []

    assert api.delete(created["uri"], headers=admin_headers).status_code == 204
    assert_error(api.get(created["uri"], headers=admin_headers), 404, "RESOURCE_NOT_FOUND")


def test_plan_script_refusals(api: TestClient, admin_headers: dict[str, str], make_user: Any) -> None:
    body = assert_error(api.post("/rest/plan-scripts", headers=admin_headers,
                                 json={"name": "x", "planType": "install", "content": "echo"}), 400, "INVALID_INPUT")
    assert "planType 'install' is not one of deploy, capture, general" in body["message"]
    body = assert_error(api.post("/rest/plan-scripts", headers=admin_headers,
                                 json={"planType": "deploy", "content": "echo"}), 400, "INVALID_INPUT")
    assert "name is required" in body["message"]
    assert_error(api.post("/rest/plan-scripts", headers=admin_headers, json={"name": "x", "planType": "deploy"}),
                 400, "INVALID_INPUT")
    plan_script(api, admin_headers, "dup")
    body = assert_error(api.post("/rest/plan-scripts", headers=admin_headers,
                                 json={"name": "dup", "planType": "deploy", "content": "echo"}), 409, "DUPLICATE_NAME")
    assert "dup" in body["message"]
    assert_error(api.get("/rest/plan-scripts/nope", headers=admin_headers), 404, "RESOURCE_NOT_FOUND")

    viewer = make_user(Role.READ_ONLY)
    assert api.get("/rest/plan-scripts", headers=viewer).status_code == 200
    assert_error(api.post("/rest/plan-scripts", headers=viewer,
                          json={"name": "y", "planType": "deploy", "content": "echo"}), 403, "AUTHORIZATION_DENIED")
    assert api.get("/rest/plan-scripts", headers=admin_headers).json()["total"] == 1


def test_plan_script_paging_filter_sort(api: TestClient, admin_headers: dict[str, str]) -> None:
    for name, kind in (("c-mount", "general"), ("a-host", "deploy"), ("b-gen", "capture"), ("d-nic", "deploy")):
        plan_script(api, admin_headers, name, kind, "echo\n")
    page = api.get("/rest/plan-scripts?start=1&count=2", headers=admin_headers).json()
    assert [m["name"] for m in page["members"]] == ["b-gen", "c-mount"]
    assert page["total"] == 4 and page["nextPageUri"] and page["type"] == "PlanScriptCollection"
    deploy = api.get("/rest/plan-scripts", headers=admin_headers,
                     params={"filter": "planType='deploy'", "sort": "name:descending"}).json()
    assert [m["name"] for m in deploy["members"]] == ["d-nic", "a-host"]
    by_name = api.get("/rest/plan-scripts", headers=admin_headers, params={"filter": "\"name='A-HOST'\""}).json()
    assert [m["name"] for m in by_name["members"]] == ["a-host"]


# --- HPE SDK against a live appliance --------------------------------------------------------------
def image_streamer(live: LiveAppliance) -> Any:
    ov = OneViewClient({"ip": live.host, "image_streamer_ip": live.host,
                        "credentials": {"userName": "Administrator", "password": ADMIN_PASSWORD}})
    return ov.create_image_streamer_client()


@pytest.mark.slow
def test_sdk_plan_scripts(live: LiveAppliance) -> None:
    i3s = image_streamer(live)
    scripts = i3s.plan_scripts
    first = scripts.create({"name": "PS hostname", "description": "set the hostname", "hpProvided": False,
                            "planType": "deploy", "content": HOSTNAME_SCRIPT})
    second = scripts.create({"name": "PS mount", "description": "mount", "hpProvided": "false",
                             "planType": "general", "content": "mount /dev/sda2 /\n"})
    assert first["type"] == "PlanScript" and first["customAttributeNames"] == ["Hostname", "ManagementNIC", "SSH"]

    assert scripts.get(first["id"])["name"] == "PS hostname"
    assert scripts.get(first["uri"])["id"] == first["id"]
    assert [s["id"] for s in scripts.get_by("name", "ps mount")] == [second["id"]]
    assert sorted(s["name"] for s in scripts.get_all()) == ["PS hostname", "PS mount"]
    assert [s["name"] for s in scripts.get_all(start=1, count=1)] == ["PS mount"]
    assert [s["name"] for s in scripts.get_all(filter="planType='general'")] == ["PS mount"]
    assert [s["name"] for s in scripts.get_all(sort="name:descending")] == ["PS mount", "PS hostname"]

    updated = scripts.update({**first, "description": "new description", "content": "echo @Hostname@\n"})
    assert (updated["description"], updated["customAttributeNames"]) == ("new description", ["Hostname"])
    diff = scripts.retrieve_differences(first["id"], "echo @Hostname@ @DomainName@\n")
    assert diff["addedCustomAttributes"] == ["DomainName"]
    assert scripts.get_usedby_and_readonly(first["id"]) == []

    with pytest.raises(HPEOneViewException) as refused:
        scripts.create({"name": "bad", "planType": "sideways", "content": "echo"})
    assert refused.value.oneview_response["errorCode"] == "INVALID_INPUT"
    assert scripts.delete(updated) is True
    assert scripts.delete(second) is True
    assert scripts.get_all() == []


# --- build plans: API ------------------------------------------------------------------------------
ATTRIBUTES = [
    {"name": "Hostname", "type": "hostname", "value": "", "description": "host name",
     "constraints": "{\"helpText\":\"\"}"},
    {"name": "SSH", "type": "option", "value": "enabled", "description": "",
     "constraints": "{\"options\":[\"enabled\",\"disabled\"]}"},
    {"name": "RootPassword", "type": "password", "value": "S3cret-default", "description": "root",
     "constraints": "{\"minlen\":8}"},
    {"name": "ManagementNIC", "type": "nic", "value": "", "description": "",
     "constraints": "{\"ipv4static\":true,\"ipv4dhcp\":true,\"parameters\":[\"ipaddress\",\"netmask\",\"gateway\"]}"},
]


def build_plan(api: TestClient, headers: dict[str, str], steps: list[dict[str, Any]], name: str = "bp",
               plan_type: str = "deploy", attributes: list[dict[str, Any]] | None = None) -> Any:
    return api.post("/rest/build-plans", headers=headers,
                    json={"name": name, "description": "a plan", "oeBuildPlanType": plan_type, "hpProvided": False,
                          "buildStep": steps, "customAttributes": ATTRIBUTES if attributes is None else attributes})


def test_build_plan_crud_steps_and_password(api: TestClient, admin_headers: dict[str, str], ctx: Any) -> None:
    mount = plan_script(api, admin_headers, "mount", "general", "mount /dev/sda2 /\n")
    host = plan_script(api, admin_headers, "host")
    steps = [{"serialNumber": "2", "planScriptUri": host["uri"], "parameters": "x=1"},
             {"serialNumber": 1, "planScriptUri": mount["uri"]}]
    r = build_plan(api, admin_headers, steps)
    assert r.status_code == 201, r.text
    plan = r.json()
    assert plan["type"] == "OeBuildPlanV5" and plan["uri"] == f"/rest/build-plans/{plan['id']}"
    assert plan["category"] == "build-plans" and plan["oeBuildPlanType"] == "deploy"
    assert [(s["serialNumber"], s["planScriptName"], s["parameters"]) for s in plan["buildStep"]] == [
        ("1", "mount", ""), ("2", "host", "x=1")]
    by_name = {a["name"]: a for a in plan["customAttributes"]}
    assert by_name["RootPassword"]["value"] == "********"  # never the password itself
    assert by_name["SSH"] == {**ATTRIBUTES[1]}
    assert "S3cret-default" not in r.text
    for listing in (api.get(plan["uri"], headers=admin_headers), api.get("/rest/build-plans", headers=admin_headers)):
        assert listing.status_code == 200 and "S3cret-default" not in listing.text

    # Stored sealed, apart from the definitions.
    from appliance.db.session import unit_of_work
    from appliance.models import BuildPlan

    with unit_of_work(ctx.session_factory) as db:
        row = db.get(BuildPlan, plan["id"])
        assert row is not None and "S3cret-default" not in str(row.custom_attributes)
        assert ctx.secrets.open(row.sealed_values["RootPassword"]) == "S3cret-default"
        sealed_before = row.sealed_values["RootPassword"]

    # The whole object PUT back (placeholder included) keeps the password; steps can be emptied.
    r = api.put(plan["uri"], headers={**admin_headers, "If-Match": plan["eTag"]},
                json={**plan, "description": "changed", "buildStep": []})
    assert r.status_code == 200, r.text
    assert (r.json()["description"], r.json()["buildStep"]) == ("changed", [])
    with unit_of_work(ctx.session_factory) as db:
        row = db.get(BuildPlan, plan["id"])
        assert row is not None and row.sealed_values["RootPassword"] == sealed_before
    # An empty value clears it, a new one replaces it.
    cleared = [{**a, "value": ""} if a["name"] == "RootPassword" else a for a in r.json()["customAttributes"]]
    r = api.put(plan["uri"], headers=admin_headers, json={**r.json(), "customAttributes": cleared})
    assert {a["name"]: a["value"] for a in r.json()["customAttributes"]}["RootPassword"] == ""
    assert api.delete(plan["uri"], headers=admin_headers).status_code == 204


def test_build_plan_refusals(api: TestClient, admin_headers: dict[str, str]) -> None:
    host = plan_script(api, admin_headers, "host")
    capture = plan_script(api, admin_headers, "generalize", "capture", "rm /etc/machine-id\n")
    step = {"serialNumber": "1", "planScriptUri": host["uri"]}

    body = assert_error(build_plan(api, admin_headers, [step], plan_type="install"), 400, "INVALID_INPUT")
    assert "oeBuildPlanType 'install' is not one of deploy, capture" in body["message"]
    body = assert_error(build_plan(api, admin_headers, [{**step, "planScriptUri": "/rest/plan-scripts/missing"}]),
                        400, "INVALID_INPUT")
    assert "/rest/plan-scripts/missing does not exist" in body["message"]
    body = assert_error(build_plan(api, admin_headers, [step, {**step, "planScriptUri": host["uri"]}]), 400)
    assert "serialNumber 1 is used by more than one step" in body["message"]
    body = assert_error(build_plan(api, admin_headers, [{**step, "serialNumber": "first"}]), 400)
    assert "serialNumber 'first' is not a positive whole number" in body["message"]
    body = assert_error(build_plan(api, admin_headers, [{"serialNumber": "1", "planScriptUri": capture["uri"]}]), 400)
    assert "generalize is a capture script" in body["message"]

    bad_json = [{**ATTRIBUTES[0], "constraints": "{helpText: oops"}]
    body = assert_error(build_plan(api, admin_headers, [step], attributes=bad_json), 400,
                        "INVALID_CUSTOM_ATTRIBUTE_DEFINITION")
    assert "constraints is not valid JSON" in body["message"] and "Hostname" in body["message"]
    body = assert_error(build_plan(api, admin_headers, [step], attributes=[{**ATTRIBUTES[0], "type": "colour"}]),
                        400, "INVALID_CUSTOM_ATTRIBUTE_DEFINITION")
    assert "type 'colour' is not one of" in body["message"]
    short = [{**ATTRIBUTES[2], "value": "abc"}]  # shorter than minlen 8: refused, and not echoed
    body = assert_error(build_plan(api, admin_headers, [step], attributes=short), 400, "INVALID_CUSTOM_ATTRIBUTES")
    assert "RootPassword" in body["message"] and "abc" not in str(body)
    assert_error(build_plan(api, admin_headers, [step], attributes=[{**ATTRIBUTES[1], "value": "maybe"}]), 400,
                 "INVALID_CUSTOM_ATTRIBUTES")
    assert api.get("/rest/build-plans", headers=admin_headers).json()["total"] == 0

    # A capture plan with no steps is valid (HPE's "capture OS volume as is").
    empty = build_plan(api, admin_headers, [], name="as-is", plan_type="capture", attributes=[])
    assert empty.status_code == 201 and empty.json()["buildStep"] == []
    assert_error(build_plan(api, admin_headers, [], name="as-is", attributes=[]), 409, "DUPLICATE_NAME")

    # A plan script in use cannot be deleted, nor become unfit for the plan that runs it.
    plan = build_plan(api, admin_headers, [step], name="uses-host").json()
    body = assert_error(api.delete(host["uri"], headers=admin_headers), 409, "RESOURCE_CONFLICT")
    assert "uses-host" in body["message"]
    assert_error(api.put(host["uri"], headers=admin_headers, json={**host, "planType": "capture"}), 409)
    used = api.get(f"{host['uri']}/usedby/readonly", headers=admin_headers).json()
    assert [u["uri"] for u in used] == [plan["uri"]]
    assert api.delete(plan["uri"], headers=admin_headers).status_code == 204
    assert api.delete(host["uri"], headers=admin_headers).status_code == 204


@pytest.mark.slow
def test_sdk_build_plans(live: LiveAppliance) -> None:
    i3s = image_streamer(live)
    script = i3s.plan_scripts.create({"name": "PS host", "planType": "deploy", "content": HOSTNAME_SCRIPT})
    plans = i3s.build_plans
    deploy = plans.create({"name": "BP deploy", "description": "deploy", "oeBuildPlanType": "deploy",
                           "hpProvided": False, "customAttributes": ATTRIBUTES,
                           "buildStep": [{"serialNumber": "1", "planScriptUri": script["uri"], "parameters": ""}]})
    capture = plans.create({"name": "BP capture", "oeBuildPlanType": "capture", "buildStep": [],
                            "customAttributes": []})
    assert deploy["buildStep"][0]["planScriptName"] == "PS host"
    assert {a["name"]: a["value"] for a in deploy["customAttributes"]}["RootPassword"] == "********"

    assert plans.get(deploy["id"])["name"] == "BP deploy"
    assert [p["id"] for p in plans.get_by("name", "bp capture")] == [capture["id"]]
    assert [p["name"] for p in plans.get_all(start=0, count=1)] == ["BP capture"]
    assert [p["name"] for p in plans.get_all(filter="oeBuildPlanType=capture")] == ["BP capture"]
    assert [p["name"] for p in plans.get_all(sort="name:descending")] == ["BP deploy", "BP capture"]

    updated = plans.update({**deploy, "description": "changed"})
    assert updated["description"] == "changed"
    with pytest.raises(HPEOneViewException) as refused:
        i3s.plan_scripts.delete(script)
    assert "BP deploy" in refused.value.oneview_response["message"]
    with pytest.raises(HPEOneViewException) as missing:
        plans.create({"name": "BP bad", "oeBuildPlanType": "deploy",
                      "buildStep": [{"serialNumber": "1", "planScriptUri": "/rest/plan-scripts/nope"}]})
    assert missing.value.oneview_response["errorCode"] == "INVALID_INPUT"
    assert plans.delete(updated) is True and plans.delete(capture) is True
    assert i3s.plan_scripts.delete(script) is True


# --- deployment plans and OneView's os-deployment-plans: API ------------------------------------------
def golden_image_row(session_factory: Any, name: str = "rhel-9") -> str:
    """A golden image row (the file itself does not matter to plans)."""
    from appliance.db.session import unit_of_work
    from appliance.models import GoldenImage

    with unit_of_work(session_factory) as db:
        image = GoldenImage(name=name, sha256="0" * 64, size=1 << 20, virtual_size=(40 << 30) - 1,
                            source_format="qcow2")
        db.add(image)
        db.flush()
        return image.id


def deploy_build_plan(api: TestClient, headers: dict[str, str], name: str = "bp") -> dict[str, Any]:
    script = plan_script(api, headers, f"{name}-script")
    r = build_plan(api, headers, [{"serialNumber": "1", "planScriptUri": script["uri"]}], name=name)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def deployment_plan(api: TestClient, headers: dict[str, str], **fields: Any) -> Any:
    return api.post("/rest/deployment-plans", headers=headers,
                    json={"type": "OEDeploymentPlan", "name": "dp", "description": "a plan", "hpProvided": "false",
                          **fields})


def test_deployment_plan_crud_defaults_overrides_and_osdp(api: TestClient, admin_headers: dict[str, str],
                                                         ctx: Any) -> None:
    bp = deploy_build_plan(api, admin_headers)
    image_id = golden_image_row(ctx.session_factory)
    r = deployment_plan(api, admin_headers, oeBuildPlanUri=bp["uri"], goldenImageUri=f"/rest/golden-images/{image_id}",
                        customAttributes=[
                            {"name": "Hostname", "value": "node01"},
                            {"name": "SSH", "value": "disabled", "visible": False, "editable": "false"},
                            {"name": "RootPassword", "value": "An0ther-secret", "editable": True},
                        ])
    assert r.status_code == 201, r.text
    plan = r.json()
    assert "An0ther-secret" not in r.text and "S3cret-default" not in r.text
    assert (plan["type"], plan["category"]) == ("OEDeploymentPlanV5", "deployment-plans")
    assert plan["goldenImageURI"] == f"/rest/golden-images/{image_id}" and plan["oeBuildPlanURI"] == bp["uri"]
    attributes = {a["name"]: a for a in plan["customAttributes"]}
    assert list(attributes) == ["Hostname", "SSH", "RootPassword", "ManagementNIC"]  # every build plan attribute
    assert (attributes["Hostname"]["value"], attributes["Hostname"]["visible"], attributes["Hostname"]["editable"]) \
        == ("node01", True, True)
    assert (attributes["SSH"]["value"], attributes["SSH"]["visible"], attributes["SSH"]["editable"]) \
        == ("disabled", False, False)
    assert attributes["RootPassword"]["value"] == "********"
    assert attributes["ManagementNIC"]["value"] == "" and attributes["ManagementNIC"]["type"] == "nic"
    assert attributes["SSH"]["constraints"] == ATTRIBUTES[1]["constraints"] and attributes["SSH"]["id"]

    from appliance.db.session import unit_of_work
    from appliance.models import DeploymentPlan

    with unit_of_work(ctx.session_factory) as db:
        row = db.get(DeploymentPlan, plan["id"])
        assert row is not None and ctx.secrets.open(row.sealed_values["RootPassword"]) == "An0ther-secret"
        assert "An0ther-secret" not in str(row.custom_attributes)

    # OneView's view of it.
    osdp = api.get(f"/rest/os-deployment-plans/{plan['id']}", headers=admin_headers).json()
    assert (osdp["type"], osdp["category"], osdp["nativePlanUri"]) == ("Osdp", "os-deployment-plans", plan["uri"])
    assert osdp["uri"] == f"/rest/os-deployment-plans/{plan['id']}" and osdp["osdpSize"] == "40GB"
    assert [p["name"] for p in osdp["additionalParameters"]] == ["Hostname", "RootPassword", "ManagementNIC"]
    assert {p["name"]: p["value"] for p in osdp["additionalParameters"]}["RootPassword"] == "********"
    listing = api.get("/rest/os-deployment-plans/", headers=admin_headers, params={"filter": "name='DP'"}).json()
    assert [m["id"] for m in listing["members"]] == [plan["id"]] and listing["nextPageUri"] is None
    assert api.get(f"{plan['uri']}/osdp", headers=admin_headers).json()["nativePlanUri"] == plan["uri"]
    assert api.get(f"{plan['uri']}/usedby", headers=admin_headers).json()["serverProfiles"] == []

    # A golden image a deployment plan names cannot go.
    body = assert_error(api.delete(f"/rest/golden-images/{image_id}", headers=admin_headers), 409)
    assert "deployment plans dp" in body["message"]

    # The whole object PUT back keeps the sealed password; a build plan in use cannot go.
    r = api.put(plan["uri"], headers={**admin_headers, "If-Match": plan["eTag"]},
                json={**plan, "description": "changed", "goldenImageURI": ""})
    assert r.status_code == 200, r.text
    assert (r.json()["description"], r.json()["goldenImageURI"]) == ("changed", "")
    with unit_of_work(ctx.session_factory) as db:
        row = db.get(DeploymentPlan, plan["id"])
        assert row is not None and ctx.secrets.open(row.sealed_values["RootPassword"]) == "An0ther-secret"
    body = assert_error(api.delete(bp["uri"], headers=admin_headers), 409, "RESOURCE_CONFLICT")
    assert "dp" in body["message"]
    assert_error(api.put(bp["uri"], headers=admin_headers, json={**bp, "oeBuildPlanType": "capture"}), 409)
    assert api.delete(plan["uri"], headers=admin_headers).status_code == 204
    assert api.delete(bp["uri"], headers=admin_headers).status_code == 204
    assert api.get("/rest/os-deployment-plans", headers=admin_headers).json()["total"] == 0


def test_deployment_plan_refusals(api: TestClient, admin_headers: dict[str, str]) -> None:
    bp = deploy_build_plan(api, admin_headers)
    capture = build_plan(api, admin_headers, [], name="cap", plan_type="capture", attributes=[]).json()

    body = assert_error(deployment_plan(api, admin_headers), 400, "INVALID_INPUT")
    assert "oeBuildPlanURI is required" in body["message"]
    body = assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI="/rest/build-plans/nope"), 400)
    assert "the build plan /rest/build-plans/nope does not exist" in body["message"]
    body = assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI=capture["uri"]), 400)
    assert "needs a deploy build plan" in body["message"]
    body = assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI=bp["uri"],
                                        goldenImageURI="/rest/golden-images/nope"), 400)
    assert "golden image /rest/golden-images/nope does not exist" in body["message"]
    body = assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI=bp["uri"],
                                        customAttributes=[{"name": "Colour", "value": "red"}]), 400)
    assert "Colour" in body["message"]
    body = assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI=bp["uri"],
                                        customAttributes=[{"name": "Hostname", "value": "bad_host!"}]),
                        400, "INVALID_CUSTOM_ATTRIBUTES")
    assert "Hostname" in body["message"]
    body = assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI=bp["uri"],
                                        customAttributes=[{"name": "RootPassword", "value": "Xq7z"}]),
                        400, "INVALID_CUSTOM_ATTRIBUTES")
    assert "RootPassword" in body["message"] and "Xq7z" not in str(body)
    assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI=bp["uri"],
                                 customAttributes=[{"name": "SSH", "visible": "maybe"}]), 400)
    nic = {"name": "ManagementNIC", "value": {"ipaddress": "192.0.2.10", "netmask": "255.255.255.0",
                                              "gateway": "198.51.100.1"}}
    body = assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI=bp["uri"], customAttributes=[nic]), 400)
    assert "gateway 198.51.100.1 is not in the subnet" in body["message"]
    assert api.get("/rest/deployment-plans", headers=admin_headers).json()["total"] == 0

    # No golden image (installer-based or empty volume), lower-case spelling, NIC as an object.
    nic["value"]["gateway"] = "192.0.2.1"  # type: ignore[index]
    r = deployment_plan(api, admin_headers, oeBuildPlanUri=bp["uri"], customAttributes=[nic])
    assert r.status_code == 201, r.text
    assert r.json()["goldenImageURI"] == "" and r.json()["oeBuildPlanURI"] == bp["uri"]
    assert_error(deployment_plan(api, admin_headers, oeBuildPlanURI=bp["uri"]), 409, "DUPLICATE_NAME")


@pytest.mark.slow
def test_sdk_deployment_plans_and_os_deployment_plans(live: LiveAppliance) -> None:
    from appliance.db.session import make_engine, make_session_factory

    ov = OneViewClient({"ip": live.host, "image_streamer_ip": live.host,
                        "credentials": {"userName": "Administrator", "password": ADMIN_PASSWORD}})
    i3s = ov.create_image_streamer_client()
    engine = make_engine(live.database_url or f"sqlite:///{live.home / 'ingot.db'}")
    try:
        image_id = golden_image_row(make_session_factory(engine))
    finally:
        engine.dispose()
    script = i3s.plan_scripts.create({"name": "PS host", "planType": "deploy", "content": HOSTNAME_SCRIPT})
    bp = i3s.build_plans.create({"name": "BP", "oeBuildPlanType": "deploy", "customAttributes": ATTRIBUTES,
                                 "buildStep": [{"serialNumber": "1", "planScriptUri": script["uri"]}]})

    plans = i3s.deployment_plans
    dp = plans.create({"name": "DP rhel", "description": "rhel", "hpProvided": False, "oeBuildPlanURI": bp["uri"],
                       "goldenImageURI": f"/rest/golden-images/{image_id}",
                       "customAttributes": [{"name": "Hostname", "value": "node01"}]})
    empty = plans.create({"name": "DP empty", "oeBuildPlanUri": bp["uri"]})
    assert dp.data["type"] == "OEDeploymentPlanV5" and empty.data["goldenImageURI"] == ""
    assert {a["name"]: a["value"] for a in dp.data["customAttributes"]}["Hostname"] == "node01"

    assert plans.get_by_name("dp rhel").data["id"] == dp.data["id"]
    assert plans.get_by_uri(dp.data["uri"]).data["name"] == "DP rhel"
    assert [p["name"] for p in plans.get_all(start=1, count=1)] == ["DP rhel"]
    assert [p["name"] for p in plans.get_all(filter="name='DP empty'")] == ["DP empty"]
    dp.update({"description": "changed"})
    assert dp.data["description"] == "changed"
    assert dp.get_osdp()["nativePlanUri"] == dp.data["uri"]
    assert dp.get_usedby()["serverProfiles"] == []

    osdps = ov.os_deployment_plans
    assert sorted(o["name"] for o in osdps.get_all()) == ["DP empty", "DP rhel"]
    assert len(osdps.get_all(start=0, count=1)) == 1
    osdp = osdps.get_by_name("DP rhel")
    assert osdp is not None and osdp.data["type"] == "Osdp" and osdp.data["nativePlanUri"] == dp.data["uri"]
    assert osdp.data["deploymentApplianceIpv4"] == live.host
    assert [o["id"] for o in osdps.get_by("name", "DP empty")] == [empty.data["id"]]
    assert osdps.get_by_uri(osdp.data["uri"]).data["name"] == "DP rhel"
    # What third-party scripts do: jump from OneView's view to the Image Streamer object.
    assert i3s.deployment_plans.get_by_uri(osdp.data["nativePlanUri"]).data["id"] == dp.data["id"]

    with pytest.raises(HPEOneViewException) as refused:
        i3s.build_plans.delete(bp)
    assert refused.value.oneview_response["errorCode"] == "RESOURCE_CONFLICT"
    assert dp.delete() is True and empty.delete() is True
    assert osdps.get_all() == []
    assert i3s.build_plans.delete(bp) is True and i3s.plan_scripts.delete(script) is True
