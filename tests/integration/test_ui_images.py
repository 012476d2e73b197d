"""The "Images" page: the library table, the import tasks and the upload form, through the test
client (roles, escaping, no inline code) and in Chromium (upload with progress, import, delete)."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import GoldenImage
from appliance.roles import Role
from tests.integration.test_ui_netboot import _login_as, _no_inline_code

HOSTILE = '<img src=x onerror="alert(1)">'


def _add_image(ctx: AppContext, name: str = HOSTILE) -> None:
    with unit_of_work(ctx.session_factory) as db:
        db.add(GoldenImage(name=name, description="base", sha256="ab" * 32, size=5 << 20, virtual_size=8 << 30,
                           source_format="vmdk", original_filename="rhel.vmdk", created_by="Administrator"))


def test_signed_out_goes_to_login(api: TestClient) -> None:
    response = api.get("/ui/images", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")


def test_operator_sees_the_library_and_the_forms(api: TestClient, ctx: AppContext, make_user: Any) -> None:
    _add_image(ctx)
    _login_as(api, make_user, Role.OPERATOR)
    html = api.get("/ui/images").text
    _no_inline_code(html)
    assert 'aria-current="page"' in html and ">Images<" in html
    assert HOSTILE not in html and "&lt;img src=x" in html  # escaped
    assert "data-image-upload" in html and "data-delete-image=" in html
    assert "8.0 GiB" in html and "vmdk" in html and "abababababab" in html
    assert re.search(r'href="/rest/golden-images/download/[0-9a-f-]+"', html)
    assert "/ui/static/images.js" in html


def test_read_only_gets_no_forms(api: TestClient, ctx: AppContext, make_user: Any) -> None:
    _add_image(ctx, "rhel-9")
    _login_as(api, make_user, Role.READ_ONLY)
    html = api.get("/ui/images").text
    assert "rhel-9" in html
    assert "data-image-upload" not in html and "data-delete-image=" not in html


def test_empty_library(api: TestClient, make_user: Any) -> None:
    _login_as(api, make_user, Role.OPERATOR)
    html = api.get("/ui/images").text
    assert "The library is empty." in html and "No image has been uploaded yet." in html


def test_page_script_is_served(api: TestClient) -> None:
    script = api.get("/ui/static/images.js")
    assert script.status_code == 200 and "/rest/golden-images" in script.text


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.one_backend
def test_in_a_browser(page: Any, live: Any, backend: str, artifacts_dir: Path, tmp_path: Path) -> None:
    """Upload an image through the form (bytes-sent bar, then the import task), see it in the
    library, clone it into an OS volume and capture that into a new image, upload a hostile one
    (its import fails with the reason), then delete volume and images."""
    from playwright.sync_api import expect

    from tests.support.browser import WAIT_MS, sign_in

    answers = ["node-1-os", "node-1-golden"]  # the Clone and Capture prompts, in order
    page.on("dialog", lambda dialog: dialog.accept(answers.pop(0)) if dialog.type == "prompt" else dialog.accept())
    sign_in(page, "/ui/images")
    expect(page.get_by_role("link", name="Images", exact=True)).to_have_attribute("aria-current", "page")
    expect(page.get_by_text("The library is empty.")).to_be_visible()

    disk = tmp_path / "alpine-3.20.raw"
    disk.write_bytes(os.urandom(6 << 20))
    form = page.locator("form[data-image-upload]")
    form.get_by_label("Image file").set_input_files(str(disk))
    form.get_by_label("Description").fill("from the browser")
    form.get_by_role("button", name="Upload").click()
    row = page.locator("tr[data-image-row]")
    expect(row).to_have_count(1, timeout=WAIT_MS)  # the import task ended and the page reloaded
    expect(row).to_contain_text("alpine-3.20")
    expect(row).to_contain_text("from the browser")
    expect(page.locator("tr[data-row-task]").first).to_contain_text("Completed")

    row.get_by_role("button", name="Verify").click()
    expect(page.locator("tr[data-row-task]").first).to_contain_text("matches its checksum", timeout=WAIT_MS)
    page.reload()  # settles the page (ui.js reloads it by itself once it has seen the task end)
    row.get_by_role("button", name="Clone").click()
    volume = page.locator("tr[data-volume-row]")
    expect(volume).to_contain_text("node-1-os", timeout=WAIT_MS)
    expect(row).to_contain_text("node-1-os")  # "used by"
    volume.get_by_role("button", name="Capture").click()
    expect(page.locator("tr[data-image-row]")).to_have_count(2, timeout=WAIT_MS)
    expect(page.locator("tr[data-image-row]", has_text="node-1-golden")).to_contain_text("captured")

    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", str(evil), "1M"],
                   check=True, timeout=30)
    form = page.locator("form[data-image-upload]")
    form.get_by_label("Image file").set_input_files(str(evil))
    form.get_by_role("button", name="Upload").click()
    failed = page.locator("tr[data-row-task]").first
    expect(failed).to_contain_text("backing file", timeout=WAIT_MS)
    page.reload()  # settles the page: ui.js reloads it by itself once it has seen a task end
    expect(page.locator("tr[data-image-row]")).to_have_count(2)

    # Export for deploy: a raw file (a task, then a link with the file) and the live volume over NBD.
    volume = page.locator("tr[data-volume-row]")
    volume.get_by_role("button", name="Export raw").click()
    expect(page.locator("tr[data-row-task]").first).to_contain_text("exported as raw", timeout=WAIT_MS)
    page.reload()
    link = volume.locator("[data-volume-exports] a", has_text="raw")
    expect(link).to_have_count(1)
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).stat().st_size == 6 << 20
    volume.get_by_role("button", name="NBD").click()
    expect(volume.locator("[data-nbd-uri]")).to_contain_text("nbd://127.0.0.1:", timeout=WAIT_MS)
    page.screenshot(path=str(artifacts_dir / f"ui-images-{backend}.png"), full_page=True)
    volume.get_by_role("button", name="End NBD").click()
    expect(volume.locator("[data-nbd-uri]")).to_have_count(0, timeout=WAIT_MS)

    # Import from a URL (refusals, e.g. a path while path imports are off, are in test_image_import).
    importer = page.locator("form[data-image-import]")
    served = tmp_path / "served"
    served.mkdir()
    (served / "debian.raw").write_bytes(os.urandom(1 << 20))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        importer.get_by_role("textbox", name="Source (").fill(f"http://127.0.0.1:{server.server_address[1]}/debian.raw")
        importer.get_by_label("Name", exact=True).fill("debian-from-url")
        importer.get_by_role("button", name="Import").click()
        expect(page.locator("tr[data-image-row]", has_text="debian-from-url")).to_have_count(1, timeout=WAIT_MS)
    finally:
        server.shutdown()
        server.server_close()

    page.locator("tr[data-volume-row]").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No OS volumes.")).to_be_visible(timeout=WAIT_MS)
    images = page.locator("tr[data-image-row]")
    for left in (2, 1, 0):
        images.first.get_by_role("button", name="Delete").click()
        expect(images).to_have_count(left, timeout=WAIT_MS)
    expect(page.get_by_text("The library is empty.")).to_be_visible()
