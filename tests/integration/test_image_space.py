"""Disk space of the image store: the low-space alert follows the free space, and an upload the
store cannot hold (with its conversion) is refused before a byte of it is written."""

from __future__ import annotations

import shutil

from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.query import CollectionQuery
from appliance.services.alerts import AlertService
from appliance.services.golden_images import ALERT_LOW_SPACE, check_store_space
from tests.conftest import login


def active_alerts(ctx: AppContext) -> list[str]:
    with unit_of_work(ctx.session_factory) as db:
        page = AlertService(db, ctx.clock).list(CollectionQuery(count=50))
        return [a.alert_type for a in page.members if a.state == "Active"]


def test_low_space_alert_is_raised_and_cleared(ctx: AppContext) -> None:
    with unit_of_work(ctx.session_factory) as db:  # any real file system has less than 100 % free
        percent = check_store_space(ctx.images, 100.0, db, ctx.clock)
    usage = shutil.disk_usage(ctx.images.root)
    assert abs(percent - 100.0 * usage.free / usage.total) < 1.0
    assert active_alerts(ctx) == [ALERT_LOW_SPACE]
    with unit_of_work(ctx.session_factory) as db:  # again: still one alert, not two
        check_store_space(ctx.images, 100.0, db, ctx.clock)
    assert active_alerts(ctx) == [ALERT_LOW_SPACE]

    with unit_of_work(ctx.session_factory) as db:
        check_store_space(ctx.images, 0.0, db, ctx.clock)
    assert active_alerts(ctx) == []


def test_upload_larger_than_the_free_space_is_refused_at_once(api: TestClient, ctx: AppContext, admin: str) -> None:
    headers = login(api)
    store = ctx.images
    claimed = store.free_bytes()  # the upload alone would fit; with its conversion it does not
    ctx.settings.images.max_upload_bytes = 2 * claimed
    response = api.post("/rest/golden-images?name=huge", headers={
        **headers, "Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(claimed)}, content=b"")
    assert response.status_code == 507, response.text
    assert response.json()["errorCode"] == "INSUFFICIENT_STORAGE"
    assert list(store.incoming_dir.iterdir()) == []
