"""The plan pages in a real browser (Debian's Chromium through Playwright) against a live
appliance: write a plan script and watch its attributes appear as it is typed, preview the diff,
save, and meet the 412 and 409 answers; build a plan from three steps, reorder them and check the
serial numbers through REST; fill in a deployment plan whose fields are generated from the build
plan's attributes, see the API's per-attribute error at its field, fix it and save; make a deployment
plan that runs an installer instead of a golden image, and see a bad installer value refused at its field.

One appliance and one signed-in page serve the whole module (per backend), to keep it quick.
The page fails the module if it logs an error other than the failed requests the tests provoke
on purpose (Chromium logs every 4xx answer to fetch as "Failed to load resource").
Screenshots go to the ``artifacts_dir`` (test-artifacts/ under ``make test``), one set per backend.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import WAIT_MS, chromium_page, sign_in
from tests.support.live import LiveAppliance
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.one_backend]

SCRIPT_NAME = 'Set "host" <name> & ünï'
PROVOKED = re.compile(r"Failed to load resource: the server responded with a status of (400|409|412)\b")


@pytest.fixture(scope="module")
def plans_live(backend: str, request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAppliance]:
    database_url = None
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = server.create_database()
    appliance = LiveAppliance(tmp_path_factory.mktemp("plans-live"), database_url)
    appliance.start()
    try:
        yield appliance
    finally:
        appliance.stop()


@pytest.fixture(scope="module")
def tab(plans_live: LiveAppliance) -> Iterator[Page]:
    """One Chromium page for the module, signed in as Administrator; dialogs are accepted."""
    with chromium_page(plans_live, PROVOKED, accept_dialogs=True) as page:
        sign_in(page, "/ui/plans")
        yield page


def _script(live: LiveAppliance, name: str, plan_type: str, content: str) -> dict[str, Any]:
    return dict(live.api("POST", "/rest/plan-scripts", json={"name": name, "planType": plan_type, "content": content}))


def _id(page: Page, kind: str) -> str:
    expect(page).to_have_url(re.compile(rf"/ui/plans/{kind}/[0-9a-f-]+\?saved=1$"))
    match = re.search(rf"/ui/plans/{kind}/([0-9a-f-]+)", page.url)
    assert match
    return match.group(1)


def test_plan_script_editor(tab: Page, plans_live: LiveAppliance, backend: str, artifacts_dir: Path) -> None:
    page = tab
    page.goto("/ui/plans")
    expect(page.get_by_role("link", name="Plans", exact=True)).to_have_attribute("aria-current", "page")
    page.get_by_role("link", name="New plan script").click()
    expect(page).to_have_url(re.compile(r"/ui/plans/scripts/new$"))
    page.get_by_label("Name", exact=True).fill(SCRIPT_NAME)
    page.get_by_label("Type").select_option("deploy")
    content = page.locator("[data-script-content]")
    live = page.locator("[data-live-attributes] li")
    content.press_sequentially("mount /dev/sda1 /\nupload -<<END /etc/hostname\n@Host")
    expect(page.locator("[data-live-empty]")).to_be_visible()  # "@Host" is no token yet
    content.press_sequentially("name@\nEND\n")
    expect(live).to_have_count(1)
    expect(live.first).to_have_text("Hostname")
    content.press("Tab")  # inserts spaces, stays in the box
    content.press_sequentially("echo @SSH:enabled@ @MgmtNIC.ipaddress@ root@host @_Initiator1.ip@\n")
    expect(live).to_have_count(3)
    expect(live.nth(0)).to_have_text("Hostname")
    expect(live.nth(1)).to_have_text("MgmtNIC .ipaddress")
    expect(live.nth(2)).to_have_text("SSH default “enabled”")
    expect(page.locator("[data-appliance-attributes]")).to_have_text("Supplied by the appliance: _Initiator1")
    assert "\n    echo @SSH" in content.input_value()
    page.screenshot(path=str(artifacts_dir / f"ui-plan-script-new-{backend}.png"), full_page=True)
    page.get_by_role("button", name="Save").click()
    script_id = _id(page, "scripts")
    expect(page.locator("[data-plan-notice]")).to_have_text("Saved.")
    expect(page.locator("h1 [data-plan-title]")).to_have_text(SCRIPT_NAME)
    expect(page.locator("[data-saved-attributes] li")).to_have_text(["Hostname", "MgmtNIC", "SSH"])
    stored = plans_live.api("GET", f"/rest/plan-scripts/{script_id}")
    assert stored["name"] == SCRIPT_NAME and stored["customAttributeNames"] == ["Hostname", "MgmtNIC", "SSH"]

    # Preview: SSH out, RootPassword in, shown as a diff before anything is saved.
    changed = content.input_value().replace("@SSH:enabled@", "@RootPassword@")
    content.fill(changed)
    expect(live).to_have_count(3)
    expect(live.nth(2)).to_have_text("RootPassword")
    page.get_by_role("button", name="Preview changes").click()
    diff = page.locator("[data-diff-panel]")
    expect(diff.locator("[data-diff-summary]")).to_have_text(
        "Saving would change the content, add the attributes RootPassword and remove the attributes SSH.")
    expect(diff.locator(".diff-del")).to_contain_text("@SSH:enabled@")
    expect(diff.locator(".diff-add")).to_contain_text("@RootPassword@")
    page.screenshot(path=str(artifacts_dir / f"ui-plan-script-diff-{backend}.png"), full_page=True)

    # Someone else saves meanwhile: this page's eTag is stale, the PUT is refused, nothing is lost.
    plans_live.api("PUT", f"/rest/plan-scripts/{script_id}", json={**stored, "description": "changed elsewhere"})
    page.get_by_role("button", name="Save").click()
    errors = page.locator("[data-plan-errors]")
    expect(errors).to_contain_text("someone changed this plan after this page was loaded")
    assert "@SSH:enabled@" in plans_live.api("GET", f"/rest/plan-scripts/{script_id}")["content"]  # not overwritten
    page.reload()
    content.fill(changed)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("[data-saved-attributes] li")).to_have_text(["Hostname", "MgmtNIC", "RootPassword"])
    assert plans_live.api("GET", f"/rest/plan-scripts/{script_id}")["description"] == "changed elsewhere"

    # In use: the 409 names the build plan.
    plans_live.api("POST", "/rest/build-plans", json={
        "name": "uses it", "oeBuildPlanType": "deploy",
        "buildStep": [{"serialNumber": "1", "planScriptUri": f"/rest/plan-scripts/{script_id}"}]})
    page.get_by_role("button", name="Delete").click()
    expect(errors).to_contain_text(f"the plan script {SCRIPT_NAME} is used by the build plans uses it")
    expect(page).to_have_url(re.compile(rf"/ui/plans/scripts/{script_id}"))


def test_build_plan_steps_and_attributes(tab: Page, plans_live: LiveAppliance, backend: str,
                                         artifacts_dir: Path) -> None:
    page = tab
    first = _script(plans_live, "bp-hostname", "deploy", "echo @Hostname@ @RootPassword@")
    second = _script(plans_live, "bp-partition", "general", "mount /dev/sda1 /")
    third = _script(plans_live, "bp-network <&>", "deploy", "echo @MgmtNIC.ipaddress@ @DiskSize@")
    capture = _script(plans_live, "bp-capture-only", "capture", "umount /")

    page.goto("/ui/plans/build-plans/new")
    page.get_by_label("Name", exact=True).fill("web <servers> & ü")
    page.get_by_label("Type").select_option("deploy")
    select = page.get_by_label("Plan script")
    expect(select.locator(f'option[value="{capture["uri"]}"]')).to_be_disabled()  # a capture script does not fit
    for script in (first, second, third):
        select.select_option(script["uri"])
        page.get_by_role("button", name="Add step").click()
    steps = page.locator("[data-steps] > [data-step]")
    expect(steps.locator("[data-step-name]")).to_have_text(["bp-hostname", "bp-partition", "bp-network <&>"])
    steps.nth(2).get_by_role("button", name="Move up").click()
    steps.nth(1).get_by_role("button", name="Move up").click()
    shown = ["bp-network <&>", "bp-hostname", "bp-partition"]
    expect(steps.locator("[data-step-name]")).to_have_text(shown)
    expect(steps.first.get_by_role("button", name="Move up")).to_be_disabled()

    undeclared = page.locator("[data-undeclared]")
    expect(undeclared.locator("[data-undeclared-name] code")).to_have_text(
        ["DiskSize", "Hostname", "MgmtNIC", "RootPassword"])
    rows = page.locator("[data-attribute-rows] > [data-attribute-row]")
    undeclared.get_by_role("button", name="Declare DiskSize").click()
    disk = rows.last
    disk.get_by_label("Type").select_option("number")
    disk.get_by_label("Default value").fill("40")
    disk.get_by_label("Minimum").fill("10")
    disk.get_by_label("Maximum").fill("100")
    disk.get_by_label("Unit").fill("GiB")
    disk.get_by_label("Help text").fill("size of the OS disk")
    expect(disk.get_by_label("Regex")).to_be_hidden()
    undeclared.get_by_role("button", name="Declare Hostname").click()
    rows.last.get_by_label("Type").select_option("hostname")
    undeclared.get_by_role("button", name="Declare RootPassword").click()
    rows.last.get_by_label("Type").select_option("password")
    expect(rows.last.get_by_label("Default value")).to_have_attribute("type", "password")
    rows.last.get_by_label("Default value").fill("Initial-Pass-1")
    undeclared.get_by_role("button", name="Declare MgmtNIC").click()
    rows.last.get_by_label("Type").select_option("nic")
    rows.last.get_by_label("Allowed fields").fill("ipaddress, netmask, gateway, dns")
    expect(undeclared).to_be_hidden()
    page.get_by_role("button", name="Add attribute").click()
    rows.last.get_by_label("Name", exact=True).fill("Flavor")
    rows.last.get_by_label("Type").select_option("option")
    rows.last.get_by_label("Options").fill("small, large")
    page.get_by_role("button", name="Add attribute").click()
    rows.last.get_by_label("Name", exact=True).fill("bad name")

    page.get_by_role("button", name="Save").click()  # the API refuses the last row, and says where
    expect(rows.last.locator("[data-attribute-error]")).to_contain_text("is not a token name")
    expect(page.locator("[data-plan-errors]")).to_contain_text("customAttributes[5] (bad name)")
    page.screenshot(path=str(artifacts_dir / f"ui-build-plan-error-{backend}.png"), full_page=True)
    rows.last.get_by_role("button", name="Remove attribute").click()
    page.get_by_role("button", name="Save").click()
    plan_id = _id(page, "build-plans")
    expect(page.locator("[data-steps] [data-step-name]")).to_have_text(shown)
    page.screenshot(path=str(artifacts_dir / f"ui-build-plan-{backend}.png"), full_page=True)

    plan = plans_live.api("GET", f"/rest/build-plans/{plan_id}")
    ordered = sorted(plan["buildStep"], key=lambda step: int(step["serialNumber"]))
    assert [s["serialNumber"] for s in ordered] == ["1", "2", "3"]
    assert [s["planScriptUri"] for s in ordered] == [third["uri"], first["uri"], second["uri"]]
    assert [s["planScriptName"] for s in ordered] == shown
    attributes = {a["name"]: a for a in plan["customAttributes"]}
    assert list(attributes) == ["DiskSize", "Hostname", "RootPassword", "MgmtNIC", "Flavor"]
    assert json.loads(attributes["DiskSize"]["constraints"]) == {
        "helpText": "size of the OS disk", "minimum": 10, "maximum": 100, "unit": "GiB"}
    assert attributes["DiskSize"]["value"] == "40" and attributes["RootPassword"]["value"] == "********"
    assert json.loads(attributes["Flavor"]["constraints"]) == {"options": ["small", "large"]}
    assert json.loads(attributes["MgmtNIC"]["constraints"]) == {
        "ipv4static": True, "ipv4dhcp": True, "parameters": ["ipaddress", "netmask", "gateway", "dns"]}

    # Saved again untouched, the password default is kept (blank means keep).
    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    again = plans_live.api("GET", f"/rest/build-plans/{plan_id}")
    assert again["eTag"] != plan["eTag"]
    assert {a["name"]: a["value"] for a in again["customAttributes"]}["RootPassword"] == "********"


def test_deployment_plan_form_is_generated(tab: Page, plans_live: LiveAppliance, backend: str,
                                           artifacts_dir: Path) -> None:
    page = tab
    plain = plans_live.api("POST", "/rest/build-plans", json={
        "name": "dp-plain", "oeBuildPlanType": "deploy",
        "customAttributes": [{"name": "Other", "type": "string", "value": "x", "constraints": "{}"}]})
    build = plans_live.api("POST", "/rest/build-plans", json={
        "name": "dp-web", "oeBuildPlanType": "deploy", "customAttributes": [
            {"name": "Hostname", "type": "hostname", "value": "", "description": "the host's name",
             "constraints": json.dumps({"helpText": "letters, digits and -"})},
            {"name": "DiskSize", "type": "number", "value": "40",
             "constraints": json.dumps({"minimum": 10, "maximum": 100, "unit": "GiB"})},
            {"name": "Flavor", "type": "option", "value": "small",
             "constraints": json.dumps({"options": ["small", "large"]})},
            {"name": "RootPassword", "type": "password", "value": "Initial-Pass-1", "constraints": "{}"},
            {"name": "MgmtNIC", "type": "nic", "value": "",
             "constraints": json.dumps({"ipv4static": True, "ipv4dhcp": True,
                                        "parameters": ["ipaddress", "netmask", "gateway", "dns"]})},
        ]})

    page.goto("/ui/plans/deployment-plans/new")
    page.get_by_label("Name", exact=True).fill("dp <web> & ü")
    expect(page.get_by_text("Choose a build plan to fill in its attributes.")).to_be_visible()
    page.get_by_label("Build plan").select_option(plain["uri"])
    expect(page.locator("[data-attr]")).to_have_count(1)
    page.get_by_label("Build plan").select_option(build["uri"])  # the fields are generated again
    fields = page.locator("[data-attr]")
    expect(fields).to_have_count(5)
    disk = page.get_by_label("DiskSize", exact=True)
    expect(disk).to_have_attribute("type", "number")
    expect(disk).to_have_attribute("min", "10")
    expect(disk).to_have_attribute("max", "100")
    expect(disk).to_have_value("40")
    expect(page.locator('[data-attr="DiskSize"]')).to_contain_text("GiB")
    flavor = page.get_by_label("Flavor", exact=True)
    expect(flavor.locator("option")).to_have_text(["(no value)", "small", "large"])
    expect(flavor).to_have_value("small")
    password = page.get_by_label("RootPassword", exact=True)
    expect(password).to_have_attribute("type", "password")
    expect(password).to_have_value("")
    expect(password).to_have_attribute("placeholder", "set: leave blank to keep")
    nic = page.get_by_role("group", name="MgmtNIC")
    expect(nic.get_by_label("DHCP")).not_to_be_checked()
    expect(nic.locator("[data-nic-field]")).to_have_count(4)  # as its parameters allow
    expect(nic.get_by_label("MAC")).to_have_count(0)
    hostname = page.get_by_label("Hostname", exact=True)
    expect(hostname).to_have_attribute("pattern", re.compile(r"A-Za-z0-9"))
    expect(page.locator('[data-attr="Hostname"]')).to_contain_text("the host's name — letters, digits and -")

    hostname.fill("web-1")
    page.locator('[data-attr="Hostname"]').get_by_label("Editable").uncheck()
    disk.fill("500")
    flavor.select_option("large")
    nic.get_by_label("IP address").fill("10.0.0.5")
    nic.get_by_label("Netmask").fill("24")
    nic.get_by_label("Gateway").fill("10.0.0.1")
    page.get_by_role("button", name="Save").click()
    disk_error = page.locator('[data-attr="DiskSize"] [data-attr-error]')
    expect(disk_error).to_have_text("500 is above the maximum 100 GiB")
    expect(disk).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=str(artifacts_dir / f"ui-deployment-plan-error-{backend}.png"), full_page=True)

    disk.fill("50")
    page.get_by_role("button", name="Save").click()
    plan_id = _id(page, "deployment-plans")
    expect(page.get_by_label("DiskSize", exact=True)).to_have_value("50")
    expect(page.get_by_label("RootPassword", exact=True)).to_have_value("")
    page.screenshot(path=str(artifacts_dir / f"ui-deployment-plan-{backend}.png"), full_page=True)

    plan = plans_live.api("GET", f"/rest/deployment-plans/{plan_id}")
    assert plan["name"] == "dp <web> & ü" and plan["oeBuildPlanURI"] == build["uri"] and plan["goldenImageURI"] == ""
    values = {a["name"]: a for a in plan["customAttributes"]}
    assert values["DiskSize"]["value"] == "50" and values["Flavor"]["value"] == "large"
    assert values["Hostname"]["value"] == "web-1" and values["Hostname"]["editable"] is False
    assert values["Hostname"]["visible"] is True and values["RootPassword"]["value"] == "********"
    assert json.loads(values["MgmtNIC"]["value"]) == {
        "dhcp": False, "ipaddress": "10.0.0.5", "netmask": "24", "gateway": "10.0.0.1"}

    # DHCP instead: the static fields are switched off and not sent.
    nic = page.get_by_role("group", name="MgmtNIC")
    nic.get_by_label("DHCP").check()
    expect(nic.get_by_label("IP address")).to_be_disabled()
    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    values = {a["name"]: a for a in plans_live.api("GET", f"/rest/deployment-plans/{plan_id}")["customAttributes"]}
    assert json.loads(values["MgmtNIC"]["value"]) == {"dhcp": True}


def test_installer_deployment_plan(tab: Page, plans_live: LiveAppliance, backend: str, artifacts_dir: Path) -> None:
    page = tab
    build = plans_live.api("POST", "/rest/build-plans", json={"name": "dp-installer", "oeBuildPlanType": "deploy"})

    page.goto("/ui/plans/deployment-plans/new")
    page.get_by_label("Name", exact=True).fill("rhel <installs> & ü")
    page.get_by_label("Build plan").select_option(build["uri"])
    installer_box = page.locator("[data-installer]")
    expect(page.get_by_role("radio", name="golden image")).to_be_checked()
    expect(installer_box).to_be_hidden()
    page.get_by_role("radio", name="installer").check()
    expect(installer_box).to_be_visible()
    expect(page.get_by_role("combobox", name="Golden image")).to_be_hidden()
    expect(page.get_by_label("Kind").locator("option")).to_have_text(["kickstart", "preseed", "autoinstall"])
    page.get_by_label("Kind").select_option("kickstart")
    page.get_by_label(re.compile(r"^OS\b")).fill("rhel")
    page.get_by_label("Version").fill("9")
    page.get_by_label("Arch").select_option("aarch64")
    page.get_by_label("Media").fill("rhel-9.4")
    page.get_by_label("Kernel arguments").fill("inst.repo=http://mirror.example/rhel/9.4/BaseOS/aarch64/os  quiet")
    page.get_by_role("button", name="Save").click()
    plan_id = _id(page, "deployment-plans")
    expect(page.get_by_role("radio", name="installer")).to_be_checked()
    expect(page.get_by_label("Media")).to_have_value("rhel-9.4")
    expect(page.get_by_label("Arch")).to_have_value("aarch64")
    page.screenshot(path=str(artifacts_dir / f"ui-deployment-plan-installer-{backend}.png"), full_page=True)

    plan = plans_live.api("GET", f"/rest/deployment-plans/{plan_id}")
    assert plan["name"] == "rhel <installs> & ü" and plan["goldenImageURI"] == ""
    assert plan["installer"] == {"kind": "kickstart", "os": "rhel", "version": "9", "arch": "aarch64",
                                 "media": "rhel-9.4",
                                 "kernelArgs": "inst.repo=http://mirror.example/rhel/9.4/BaseOS/aarch64/os quiet"}
    page.goto("/ui/plans")
    expect(page.locator(f'[data-deployment-plan-row="{plan_id}"] [data-installer-summary]')).to_have_text(
        "kickstart (rhel 9 aarch64) from media rhel-9.4")

    # Back to a golden image (none here): the installer goes (installer: null).
    page.goto(f"/ui/plans/deployment-plans/{plan_id}")
    page.get_by_role("radio", name="golden image").check()
    expect(installer_box).to_be_hidden()
    expect(page.get_by_role("combobox", name="Golden image")).to_be_visible()
    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    assert plans_live.api("GET", f"/rest/deployment-plans/{plan_id}")["installer"] is None


def test_installer_error_shows_at_its_field(tab: Page, plans_live: LiveAppliance, backend: str,
                                            artifacts_dir: Path) -> None:
    page = tab
    build = plans_live.api("POST", "/rest/build-plans", json={"name": "dp-installer-bad", "oeBuildPlanType": "deploy"})

    page.goto("/ui/plans/deployment-plans/new")
    page.get_by_label("Name", exact=True).fill("bad media")
    page.get_by_label("Build plan").select_option(build["uri"])
    page.get_by_role("radio", name="installer").check()
    page.get_by_label("Kind").select_option("autoinstall")
    page.get_by_label(re.compile(r"^OS\b")).fill("ubuntu")
    page.get_by_label("Version").fill("24.04")
    media = page.get_by_label("Media")
    media.fill("../x")
    page.get_by_label("Kernel arguments").fill("console=ttyS0")
    page.get_by_role("button", name="Save").click()
    media_error = page.locator('[data-error-for="installer.media"]')
    expect(media_error).to_contain_text("must be a directory name under boot/installers")
    expect(media).to_have_attribute("aria-invalid", "true")
    expect(page.locator("[data-plan-errors]")).to_contain_text("installer.media: must be a directory name")
    expect(page.locator('[data-error-for="installer.os"]')).to_be_hidden()
    page.screenshot(path=str(artifacts_dir / f"ui-deployment-plan-installer-error-{backend}.png"), full_page=True)

    # Nothing stored, nothing lost: the page still holds what was typed.
    expect(page).to_have_url(re.compile(r"/ui/plans/deployment-plans/new$"))
    assert plans_live.api("GET", "/rest/deployment-plans", params={"filter": "name='bad media'"})["members"] == []
    expect(page.get_by_role("radio", name="installer")).to_be_checked()
    expect(page.get_by_label("Name", exact=True)).to_have_value("bad media")
    expect(page.get_by_label("Kind")).to_have_value("autoinstall")
    expect(page.get_by_label(re.compile(r"^OS\b"))).to_have_value("ubuntu")
    expect(page.get_by_label("Version")).to_have_value("24.04")
    expect(media).to_have_value("../x")
    expect(page.get_by_label("Kernel arguments")).to_have_value("console=ttyS0")


def test_artifact_bundles_create_upload_and_extract(tab: Page, plans_live: LiveAppliance, backend: str,
                                                     artifacts_dir: Path, tmp_path: Path) -> None:
    page = tab
    script = _script(plans_live, "bundle-me", "deploy", "echo @Hostname@\n")
    plans_live.api("POST", "/rest/build-plans", json={
        "name": "bundle plan", "oeBuildPlanType": "deploy",
        "buildStep": [{"serialNumber": "1", "planScriptUri": script["uri"], "parameters": ""}],
        "customAttributes": [{"name": "Hostname", "type": "hostname", "value": "", "constraints": "{}"}]})
    page.goto("/ui/plans")
    page.reload()  # the module's tab may be on /ui/plans already, from before these plans existed
    page.get_by_label("New bundle").fill("ui bundle")
    page.get_by_label("of").select_option(label="build plan bundle plan")
    with page.expect_navigation():
        page.get_by_role("button", name="Create bundle").click()
    row = page.locator("[data-bundle-row]").filter(has_text="ui bundle")
    expect(row).to_contain_text("1 plan scripts", timeout=WAIT_MS * 3)  # once its task has written it
    with page.expect_download() as download:
        row.get_by_role("link", name="Download").click()
    zip_path = tmp_path / "ui-bundle.zip"
    download.value.save_as(zip_path)

    plan = plans_live.api("GET", "/rest/build-plans", params={"filter": "name='bundle plan'"})["members"][0]
    plans_live.api("DELETE", plan["uri"])
    plans_live.api("DELETE", script["uri"])
    page.reload()
    page.locator("[data-bundle-file]").set_input_files(str(zip_path))
    with page.expect_navigation():
        page.get_by_role("button", name="Upload").click()
    uploaded = page.locator("[data-bundle-row]").filter(has_text="ui bundle (2)")
    expect(uploaded).to_be_visible(timeout=WAIT_MS * 3)
    with page.expect_navigation():
        uploaded.get_by_role("button", name="Extract", exact=True).click()
    expect(page.locator("[data-build-plan-row]").filter(has_text="bundle plan")).to_be_visible(timeout=WAIT_MS * 3)
    page.screenshot(path=str(artifacts_dir / f"ui-artifact-bundles-{backend}.png"), full_page=True)
    restored = plans_live.api("GET", "/rest/build-plans", params={"filter": "name='bundle plan'"})["members"][0]
    assert [s["planScriptName"] for s in restored["buildStep"]] == ["bundle-me"]
