"""The plan pages through the test client: the overview's three tables, the plan script editor,
the build plan and deployment plan pages, for read-only users and operators (edit controls for
operators only), 404 and 403 pages, and names with quotes, ``<``, ``&`` and unicode escaped."""

from __future__ import annotations

import html as htmllib
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.roles import Role
from tests.integration.test_ui_netboot import _login_as, _no_inline_code

HOSTILE = '<img src=x onerror="alert(1)"> & \'q\' ünï'
SECRET = "S3cret-never-shown"
EDIT_CONTROLS = ("data-save", "data-delete", "data-preview", "data-step-up", "data-add-step", "data-attribute-add",
                 "data-new-plan-script", "data-new-build-plan", "data-new-deployment-plan")
CONTENT = ("mount /dev/sda1 /\nupload -<<END /etc/hostname\n@Hostname@\nEND\n"
           "echo \"@SSH:enabled@ @MgmtNIC.ipaddress@ @_Initiator1.ip@\" </dev/null && true\n")
ATTRIBUTES = [
    {"name": "Hostname", "type": "hostname", "value": "", "description": HOSTILE,
     "constraints": json.dumps({"helpText": "short name"})},
    {"name": "SSH", "type": "option", "value": "enabled", "description": "",
     "constraints": json.dumps({"options": ["enabled", "disabled"]})},
    {"name": "DiskSize", "type": "number", "value": "40", "description": "",
     "constraints": json.dumps({"minimum": 10, "maximum": 500, "unit": "GiB", "custom": "kept"})},
    {"name": "RootPassword", "type": "password", "value": SECRET, "description": "", "constraints": "{}"},
    {"name": "MgmtNIC", "type": "nic", "value": "", "description": "",
     "constraints": json.dumps({"ipv4static": True, "ipv4dhcp": True, "parameters": ["ipaddress", "netmask"]})},
]


def _create(api: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = api.post(path, json=body, headers=headers)
        assert response.status_code == 201, response.text
        return dict(response.json())

    script = post("/rest/plan-scripts", {"name": HOSTILE, "description": "d & <b>", "planType": "deploy",
                                         "content": CONTENT})
    build = post("/rest/build-plans", {"name": "bp " + HOSTILE, "oeBuildPlanType": "deploy",
                                       "buildStep": [{"serialNumber": "1", "planScriptUri": script["uri"]}],
                                       "customAttributes": ATTRIBUTES})
    deployment = post("/rest/deployment-plans", {
        "name": "dp " + HOSTILE, "oeBuildPlanURI": build["uri"],
        "customAttributes": [{"name": "Hostname", "value": "web-1", "visible": True, "editable": False}]})
    return {"script": script, "build": build, "deployment": deployment}


def _pages(made: dict[str, Any]) -> list[str]:
    return ["/ui/plans", f"/ui/plans/scripts/{made['script']['id']}", f"/ui/plans/build-plans/{made['build']['id']}",
            f"/ui/plans/deployment-plans/{made['deployment']['id']}"]


def _escaped(html: str) -> None:
    assert HOSTILE not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; &amp; &#39;q&#39; ünï" in html


def test_signed_out_goes_to_login(api: TestClient) -> None:
    for path in ("/ui/plans", "/ui/plans/scripts/new", "/ui/plans/build-plans/x", "/ui/plans/deployment-plans/x"):
        response = api.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/login"), path


def test_operator_sees_tables_and_edit_controls(api: TestClient, admin_headers: dict[str, str],
                                                make_user: Any) -> None:
    made = _create(api, admin_headers)
    _login_as(api, make_user, Role.OPERATOR)
    html = api.get("/ui/plans").text
    _no_inline_code(html)
    _escaped(html)
    assert re.search(r'<a href="/ui/plans" class="current" aria-current="page">Plans</a>', html)
    for marker in ("data-new-plan-script", "data-new-build-plan", "data-new-deployment-plan"):
        assert marker in html
    script_row = re.search(r"<tr data-plan-script-row=.*?</tr>", html, re.S)
    assert script_row and "Hostname, MgmtNIC, SSH" in script_row.group(0)  # _Initiator1 is the appliance's
    assert f'href="/ui/plans/build-plans/{made["build"]["id"]}"' in script_row.group(0)  # used by
    build_row = re.search(r"<tr data-build-plan-row=.*?</tr>", html, re.S)
    assert build_row and "<td>1</td>" in build_row.group(0)
    assert "Hostname, SSH, DiskSize, RootPassword, MgmtNIC" in build_row.group(0)
    deployment_row = re.search(r"<tr data-deployment-plan-row=.*?</tr>", html, re.S)
    assert deployment_row and "bp &lt;img" in deployment_row.group(0) and ">none<" in deployment_row.group(0)

    for path in _pages(made)[1:]:
        page = api.get(path)
        assert page.status_code == 200, path
        _no_inline_code(page.text)
        _escaped(page.text)
        assert "data-save" in page.text and "data-delete" in page.text and " disabled>" not in page.text
        assert "/ui/static/plans.js" in page.text


def test_read_only_sees_everything_but_no_edit_controls(api: TestClient, admin_headers: dict[str, str],
                                                        make_user: Any) -> None:
    made = _create(api, admin_headers)
    _login_as(api, make_user, Role.READ_ONLY)
    for path in _pages(made):
        page = api.get(path)
        assert page.status_code == 200, path
        _escaped(page.text)
        for control in EDIT_CONTROLS:
            assert not re.search(control + r"[\s>=]", page.text), (path, control)
        if path != "/ui/plans":
            assert '<fieldset class="plain" disabled>' in page.text
    for path in ("/ui/plans/scripts/new", "/ui/plans/build-plans/new", "/ui/plans/deployment-plans/new"):
        page = api.get(path)
        assert page.status_code == 403 and "Insufficient role" in page.text, path


def test_new_pages_for_operators(api: TestClient, admin_headers: dict[str, str], make_user: Any) -> None:
    made = _create(api, admin_headers)
    _login_as(api, make_user, Role.OPERATOR)
    script = api.get("/ui/plans/scripts/new").text
    assert "New plan script" in script and "data-plan-script-form" in script and 'data-id=""' in script
    assert "data-preview" not in script and "data-delete" not in script  # nothing saved to compare or delete
    build = api.get("/ui/plans/build-plans/new").text
    assert "New build plan" in build and 'data-id=""' in build
    assert f'value="{made["script"]["uri"]}" data-type="deploy"' in build  # offered as a step
    deployment = api.get("/ui/plans/deployment-plans/new").text
    assert "Choose a build plan to fill in its attributes." in deployment
    assert f'<option value="{made["build"]["uri"]}">bp &lt;img' in deployment
    assert '<option value="">none (an empty-volume plan)</option>' in deployment
    assert re.search(r'value="image" data-deploy-mode checked>', deployment)  # a golden image until told otherwise
    assert re.search(r'<fieldset class="attr-row" data-installer hidden>', deployment)
    assert '<option value="kickstart" selected>' in deployment and '<option value="x86_64" selected>' in deployment


def test_unknown_ids_get_the_404_page(api: TestClient, make_user: Any) -> None:
    _login_as(api, make_user, Role.READ_ONLY)
    for kind, what in (("scripts", "plan script"), ("build-plans", "build plan"),
                       ("deployment-plans", "deployment plan")):
        page = api.get(f"/ui/plans/{kind}/no-such-id")
        assert page.status_code == 404, kind
        assert "Not found" in page.text and what in page.text


def test_script_editor_shows_content_and_attributes(api: TestClient, admin_headers: dict[str, str],
                                                    make_user: Any) -> None:
    made = _create(api, admin_headers)
    _login_as(api, make_user, Role.OPERATOR)
    html = api.get(f"/ui/plans/scripts/{made['script']['id']}?saved=1").text
    textarea = re.search(r"<textarea[^>]*data-script-content>\n(.*?)</textarea>", html, re.S)
    assert textarea and htmllib.unescape(textarea.group(1)) == CONTENT  # escaped, and exact
    assert "&lt;/dev/null &amp;&amp; true" in textarea.group(1)
    saved = re.search(r"<ul class=\"attr-list\" data-saved-attributes>(.*?)</ul>", html, re.S)
    assert saved and re.findall(r"<code>(\w+)</code>", saved.group(1)) == ["Hostname", "MgmtNIC", "SSH"]
    assert f'data-etag="{made["script"]["eTag"]}"' in html
    assert re.search(r'data-plan-notice role="status">Saved.', html)  # ?saved=1 after a save
    assert '<option value="deploy" selected>' in html


def test_build_plan_page_prefills_steps_and_attribute_rows(api: TestClient, admin_headers: dict[str, str],
                                                           make_user: Any) -> None:
    made = _create(api, admin_headers)
    _login_as(api, make_user, Role.OPERATOR)
    html = api.get(f"/ui/plans/build-plans/{made['build']['id']}").text
    assert SECRET not in html and "********" not in html  # a set password is never in the page
    steps = re.findall(r"<li class=\"step\" data-step data-script-uri=\"([^\"]+)\"", html)
    assert steps == [made["script"]["uri"]]
    form = html.split("<template", 1)[0]  # the blank row and step for the script come after
    rows = re.findall(r"<div class=\"attr-row\" data-attribute-row data-type=\"(\w+)\"", form)
    assert rows == ["hostname", "option", "number", "password", "nic"]
    assert 'data-ca="options" value="enabled, disabled"' in html
    assert 'data-ca="minimum" value="10"' in html and 'data-ca="unit" maxlength="32" value="GiB"' in html
    assert 'data-ca="parameters" value="ipaddress, netmask"' in html
    assert 'placeholder="set: blank keeps it"' in html  # the password default is set
    assert "&#34;custom&#34;:&#34;kept&#34;" in html  # constraint keys the page does not edit ride along
    assert 'data-ca="helpText" value="short name"' in html
    assert "data-step-template" in html and "data-attribute-template" in html
    assert f'href="/ui/plans/deployment-plans/{made["deployment"]["id"]}"' in html  # used by


def test_deployment_plan_page_hands_the_attributes_to_the_script(api: TestClient, admin_headers: dict[str, str],
                                                                  make_user: Any) -> None:
    made = _create(api, admin_headers)
    _login_as(api, make_user, Role.OPERATOR)
    html = api.get(f"/ui/plans/deployment-plans/{made['deployment']['id']}").text
    assert SECRET not in html
    match = re.search(r'data-plan="([^"]*)"', html)
    assert match
    plan = json.loads(htmllib.unescape(match.group(1)))
    assert plan["name"] == "dp " + HOSTILE and plan["eTag"] == made["deployment"]["eTag"]
    by_name = {a["name"]: a for a in plan["customAttributes"]}
    assert by_name["Hostname"]["value"] == "web-1" and by_name["Hostname"]["editable"] is False
    assert by_name["RootPassword"]["value"] == "********"
    assert json.loads(by_name["DiskSize"]["constraints"])["maximum"] == 500
    assert f'<option value="{made["build"]["uri"]}" selected>' in html
    # Without the script the current values are still readable.
    assert re.search(r"<td>Hostname</td><td>hostname</td><td>web-1</td>", html)


def test_installer_plan_page_and_list(api: TestClient, admin_headers: dict[str, str], make_user: Any) -> None:
    made = _create(api, admin_headers)
    installer = {"kind": "preseed", "os": "debian", "version": "12", "arch": "aarch64", "media": "debian-12.7",
                 "kernelArgs": "mirror/http/hostname=deb.example lang=en"}
    response = api.post("/rest/deployment-plans", headers=admin_headers, json={
        "name": "installs " + HOSTILE, "oeBuildPlanURI": made["build"]["uri"], "installer": installer})
    assert response.status_code == 201, response.text
    plan = response.json()
    _login_as(api, make_user, Role.OPERATOR)

    html = api.get(f"/ui/plans/deployment-plans/{plan['id']}").text
    _no_inline_code(html)
    _escaped(html)
    assert 'value="installer" data-deploy-mode checked>' in html and 'value="image" data-deploy-mode>' in html
    assert "<label data-golden-image hidden>Golden image" in html
    fieldset = re.search(r'<fieldset class="attr-row" data-installer>(.*?)</fieldset>', html, re.S)
    assert fieldset, "the installer fieldset is shown"
    shown = fieldset.group(1)
    assert '<option value="preseed" selected>preseed</option>' in shown
    assert '<option value="kickstart">' in shown and '<option value="autoinstall">' in shown
    assert '<option value="aarch64" selected>aarch64</option>' in shown
    for key in ("os", "version", "media", "kernelArgs"):
        assert re.search(rf'data-field="installer\.{key}"[^>]* value="{re.escape(installer[key])}"', shown), key
        assert f'data-error-for="installer.{key}" hidden' in shown

    listed = api.get("/ui/plans").text
    assert "<th>Golden image or installer</th>" in listed
    row = re.search(rf'<tr data-deployment-plan-row="{plan["id"]}">.*?</tr>', listed, re.S)
    assert row and ("<span data-installer-summary>preseed (debian 12 aarch64) from media debian-12.7</span>"
                    in row.group(0))
    image_row = re.search(rf'<tr data-deployment-plan-row="{made["deployment"]["id"]}">.*?</tr>', listed, re.S)
    assert image_row and ">none<" in image_row.group(0) and "data-installer-summary" not in image_row.group(0)


def test_page_script_is_served(api: TestClient) -> None:
    script = api.get("/ui/static/plans.js")
    assert script.status_code == 200
    for needle in ("/rest/plan-scripts/differences/", "If-Match", "nestedErrors", "textContent"):
        assert needle in script.text
    assert "innerHTML" not in script.text


@pytest.mark.parametrize("kind", ["scripts", "build-plans", "deployment-plans"])
def test_new_pages_need_a_session(api: TestClient, kind: str) -> None:
    response = api.get(f"/ui/plans/{kind}/new", follow_redirects=False)
    assert response.status_code == 303
