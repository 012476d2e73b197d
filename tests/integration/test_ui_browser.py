"""The web UI in a real browser (Debian's Chromium through Playwright) against a live appliance:
sign in, watch a task's progress bar move to completion, clear an alert, read the activity log.

Screenshots go to the ``artifacts_dir`` (test-artifacts/ under ``make test``), one set per backend.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from appliance.db.session import make_engine, make_session_factory, unit_of_work
from appliance.services.tasks import TaskService
from tests.support.browser import WAIT_MS, sign_in
from tests.support.live import LiveAppliance

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.one_backend]

def _create_slow_task(live: LiveAppliance) -> str:
    """Queue a task straight into the appliance's database; its runner picks it up by polling."""
    engine = make_engine(live.database_url or f"sqlite:///{live.home / 'ingot.db'}")
    try:
        with unit_of_work(make_session_factory(engine)) as db:
            task = TaskService(db).create(kind="test-slow", name="Slow test task", owner="Administrator",
                                          args={"steps": 8, "delay": 0.5})
            return task.id
    finally:
        engine.dispose()


def _progress(page: Page, task_id: str) -> tuple[int, str, str]:
    """(aria-valuenow, the visible label, the state badge), read in one go."""
    value, label, state = page.evaluate(
        """id => {
            const bar = document.querySelector(`[role="progressbar"][data-task-id="${id}"]`);
            const badge = document.querySelector(`[data-task-state="${id}"]`);
            return [Number(bar.getAttribute("aria-valuenow")), bar.querySelector(".progress-label").textContent,
                    badge.textContent];
        }""",
        task_id,
    )
    return int(value), str(label), str(state)


def test_task_progress_bar_moves_to_completion(page: Page, live: LiveAppliance, backend: str,
                                               artifacts_dir: Path) -> None:
    sign_in(page, "/ui/tasks")
    expect(page.get_by_text("No tasks yet.")).to_be_visible()

    task_id = _create_slow_task(live)
    page.goto("/ui/tasks")
    bar = page.locator(f'[role="progressbar"][data-task-id="{task_id}"]')
    expect(bar).to_be_visible()
    page.wait_for_function(
        """id => {
            const bar = document.querySelector(`[role="progressbar"][data-task-id="${id}"]`);
            const value = Number(bar && bar.getAttribute("aria-valuenow"));
            return value > 0 && value < 100;
        }""",
        arg=task_id, timeout=WAIT_MS,
    )
    value, label, state = _progress(page, task_id)
    assert 0 < value < 100
    assert label == f"{value} %"
    assert state in {"Running", "Starting", "Stopping", "Completed"}
    page.screenshot(path=str(artifacts_dir / f"ui-progress-mid-{backend}.png"), full_page=True)

    # The same page, never reloaded: only polling can move the bar and the badge.
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=WAIT_MS)
    expect(bar.locator(".progress-label")).to_have_text("100 %")
    expect(page.locator(f'[data-task-state="{task_id}"]')).to_have_text("Completed", timeout=WAIT_MS)
    expect(page.locator(f'[data-task-status="{task_id}"]')).to_contain_text("All 8 steps done")
    page.screenshot(path=str(artifacts_dir / f"ui-progress-done-{backend}.png"), full_page=True)

    page.get_by_role("link", name="Slow test task").click()
    expect(page).to_have_url(re.compile(rf"/ui/tasks/{task_id}$"))
    expect(page.locator(f'[data-progress-updates="{task_id}"]')).to_contain_text("Step 8 of 8 done.")
    expect(page.locator(f'[role="progressbar"][data-task-id="{task_id}"]')).to_have_attribute("aria-valuenow", "100")
    page.screenshot(path=str(artifacts_dir / f"ui-task-detail-{backend}.png"), full_page=True)

    page.get_by_role("link", name="Dashboard", exact=True).click()
    expect(page.locator('[data-count="tasks:Completed"]')).to_have_text("1")
    page.screenshot(path=str(artifacts_dir / f"ui-dashboard-{backend}.png"), full_page=True)


def test_alert_is_cleared_and_activity_is_listed(page: Page, live: LiveAppliance, backend: str,
                                                 artifacts_dir: Path) -> None:
    sign_in(page, "/ui/tasks")
    page.get_by_role("link", name="Alerts", exact=True).click()
    expect(page).to_have_url(re.compile(r"/ui/alerts$"))
    row = page.locator("tr", has_text="self-signed certificate")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Ingot.Security.SelfSignedCertificate")
    expect(row).to_contain_text("Warning")
    state = row.locator("[data-alert-state]")
    expect(state).to_have_text("Active")
    page.screenshot(path=str(artifacts_dir / f"ui-alerts-{backend}.png"), full_page=True)

    row.get_by_role("button", name="Clear").click()
    expect(state).to_have_text("Cleared")
    expect(row).to_contain_text("by Administrator")
    expect(row.get_by_role("button", name="Clear")).to_have_count(0)
    page.screenshot(path=str(artifacts_dir / f"ui-alerts-cleared-{backend}.png"), full_page=True)

    with live.client(live.login()) as api:  # the change really reached the appliance
        alerts = api.get("/rest/alerts", params={"filter": "alertTypeID='Ingot.Security.SelfSignedCertificate'"})
        [alert] = alerts.json()["members"]
        assert alert["alertState"] == "Cleared"
        assert alert["clearedByUser"] == "Administrator"

    page.reload()
    expect(row.locator("[data-alert-state]")).to_have_text("Cleared")

    page.get_by_role("link", name="Activity", exact=True).click()
    login_row = page.locator("tr", has_text="POST /ui/login").first
    expect(login_row).to_be_visible()
    expect(login_row).to_contain_text("Administrator")
    expect(login_row).to_contain_text("Success")
    expect(page.locator("tr", has_text="PUT /rest/alerts/").first).to_contain_text("Administrator")
    page.screenshot(path=str(artifacts_dir / f"ui-activity-{backend}.png"), full_page=True)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
