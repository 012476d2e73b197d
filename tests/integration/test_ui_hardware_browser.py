"""The server hardware pages in a real browser (Debian's Chromium through Playwright) against a
live appliance whose BMCs are the in-process ``fake`` driver, or OpenIPMI's ``ipmi_sim`` for
discovery: add a server, power it on and watch the task's progress bar and the power badge change
in place, set its boot device, type into its serial console, sync power, remove it; scan a
network and enrol what answered.

Screenshots go to the ``artifacts_dir`` (test-artifacts/ under ``make test``), one set per backend.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.support.browser import WAIT_MS, sign_in
from tests.support.ipmi_sim import PASSWORD as IPMI_PASSWORD
from tests.support.ipmi_sim import USER as IPMI_USER
from tests.support.ipmi_sim import IpmiSim, ipmi_sim_fixture  # noqa: F401 - fixture "ipmi_sim"
from tests.support.live import LiveAppliance

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.one_backend]

def _row(page: Page, name: str) -> Locator:
    return page.locator("tr[data-server]", has=page.get_by_role("link", name=name, exact=True))


def _finished_bar(slot: Locator) -> None:
    """The task shown in ``slot`` reaches 100 % and Completed without a reload."""
    bar = slot.locator('[role="progressbar"]')
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=WAIT_MS)
    expect(bar.locator(".progress-label")).to_have_text("100 %")
    expect(slot.locator("[data-task-state]")).to_have_text("Completed", timeout=WAIT_MS)


def test_add_power_on_boot_console_remove(page: Page, live: LiveAppliance, backend: str,
                                          artifacts_dir: Path) -> None:
    sign_in(page, "/ui/servers")
    expect(page.get_by_role("link", name="Servers", exact=True)).to_have_attribute("aria-current", "page")
    expect(page.get_by_text("No servers yet.")).to_be_visible()

    form = page.locator("form[data-add-server]")
    form.get_by_label("BMC address").fill("fake-1.example")
    form.get_by_label("BMC user name").fill("admin")
    form.get_by_label("BMC password").fill("fake-bmc-Secret-1")
    form.get_by_label("Driver").select_option("fake")
    form.get_by_label("Name", exact=True).fill("web-1")
    form.get_by_role("button", name="Add server").click()

    row = _row(page, "web-1")
    expect(row).to_be_visible()
    expect(row.locator('[data-sh-field="state"]')).to_have_text("No profile applied", timeout=WAIT_MS)
    expect(row.locator('[data-sh-field="model"]')).to_have_text("Fake Server 1000")
    expect(row.locator('[data-sh-field="provisionState"]')).to_have_text("manageable")
    power = row.locator('[data-sh-field="powerState"]')
    expect(power).to_have_text("Off")
    page.screenshot(path=str(artifacts_dir / f"ui-servers-added-{backend}.png"), full_page=True)

    # Power on: the row's task slot gets the new task's bar, ui.js polls it, hardware.js re-reads the row.
    row.get_by_role("button", name="Power on").click()
    slot = row.locator("[data-server-task]")
    expect(slot).to_contain_text("Update power state")
    _finished_bar(slot)
    expect(power).to_have_text("On", timeout=WAIT_MS)
    expect(power).to_have_class(re.compile(r"\bpower-on\b"))
    page.screenshot(path=str(artifacts_dir / f"ui-servers-powered-on-{backend}.png"), full_page=True)

    with live.client(live.login()) as api:  # the change really reached the appliance
        [server] = api.get("/rest/server-hardware", params={"filter": "name='web-1'"}).json()["members"]
        assert server["powerState"] == "On"

    page.get_by_role("button", name="Sync power").click()
    _finished_bar(page.locator('[data-server-task="fleet"]'))
    expect(power).to_have_text("On")

    # The server's page: inventory, sensors, boot device, console.
    row.get_by_role("link", name="web-1", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/ui/servers/{server['id']}$"))
    expect(page.locator('[data-sh-field="model"]')).to_have_text("Fake Server 1000")
    expect(page.locator('[data-sh-field="serialNumber"]')).to_have_text(server["serialNumber"])
    expect(page.locator('[data-sh-field="macAddresses"]')).to_contain_text(server["macAddresses"][0])
    sensors = page.locator("section", has=page.get_by_role("heading", name="Sensors"))
    expect(sensors.locator("tr", has_text="Inlet Temp")).to_contain_text("22.0 C")

    boot = page.locator("form[data-boot-device]")
    boot.get_by_label("Boot from").select_option("pxe")
    boot.get_by_label("Mode").select_option("uefi")
    boot.get_by_role("button", name="Set boot device").click()
    latest = page.locator(f'[data-server-task="{server["id"]}"]')
    expect(latest).to_contain_text("Set boot device")
    _finished_bar(latest)
    expect(page.locator('[data-sh-field="bootDevice"]')).to_have_text("pxe (next boot only, uefi)", timeout=WAIT_MS)

    # Provision events other than inspect answer at once: the badge and the buttons change in place.
    provision = page.locator("[data-provisioning] [data-sh-field=provisionState]")
    expect(provision).to_have_text("manageable")
    page.get_by_role("button", name="Maintain", exact=True).click()
    expect(provision).to_have_text("maintenance")
    expect(page.get_by_role("button", name="Inspect")).to_have_count(0)  # hidden: not allowed in maintenance
    page.get_by_role("button", name="Unmaintain").click()
    expect(provision).to_have_text("manageable")
    expect(page.get_by_role("button", name="Inspect")).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Force off").click()
    _finished_bar(latest)
    expect(page.locator("h1 [data-sh-field=powerState]")).to_have_text("Off", timeout=WAIT_MS)

    page.get_by_role("button", name="Connect").click()
    output = page.locator("[data-console-output]")
    expect(page.locator("[data-console-status]")).to_contain_text("Connected")
    expect(output).to_contain_text("Fake serial console on fake-1.example")
    output.click()
    page.keyboard.type("root")
    page.keyboard.press("Enter")
    expect(output).to_contain_text("login: root")
    page.screenshot(path=str(artifacts_dir / f"ui-server-detail-{backend}.png"), full_page=True)
    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("[data-console-status]")).to_have_text("Disconnected.")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove").click()
    expect(page).to_have_url(re.compile(r"/ui/servers$"), timeout=WAIT_MS)
    expect(page.get_by_text("No servers yet.")).to_be_visible()


def test_discover_and_enrol(page: Page, backend: str, artifacts_dir: Path,
                            ipmi_sim: IpmiSim) -> None:
    sign_in(page, "/ui/servers")
    form = page.locator("form[data-discover]")
    form.get_by_label("Network").fill("127.0.0.1/32")
    form.get_by_label("IPMI ports").fill(str(ipmi_sim.port))
    form.get_by_label("BMC user name").fill(IPMI_USER)
    form.get_by_label("BMC password").fill(IPMI_PASSWORD)
    form.get_by_role("button", name="Scan").click()

    _finished_bar(page.locator('[data-server-task="discovery"]'))
    found = page.locator("[data-discovery-results] tr[data-found]")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("127.0.0.1")
    expect(found).to_contain_text("ipmi")
    page.screenshot(path=str(artifacts_dir / f"ui-discovery-{backend}.png"), full_page=True)

    found.get_by_role("button", name="Enrol").click()
    expect(found.get_by_role("link", name="Enrolled")).to_be_visible(timeout=WAIT_MS)
    found.get_by_role("link", name="Enrolled").click()
    expect(page.locator("h1 [data-sh-field=name]")).to_have_text(f"127.0.0.1:{ipmi_sim.port}")
    expect(page.locator("h1 [data-sh-field=state]")).to_have_text("No profile applied")
    page.screenshot(path=str(artifacts_dir / f"ui-discovery-enrolled-{backend}.png"), full_page=True)
