"""Import of golden images from an HTTP URL and from a file on the appliance, against a real
``ingot serve`` and a real HTTP server on loopback: checksums checked, sizes limited, truncated and
failed downloads reported, and local paths confined to the allowed directories (``..`` and
symbolic links resolved first)."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from golden_images import qemu_img
from tests.support.live import LiveAppliance
from tests.support.runner import wait_task

pytestmark = pytest.mark.slow
MIB = 1 << 20


class _Files(http.server.SimpleHTTPRequestHandler):
    """Serves the test's directory; ``/short/NAME`` promises more bytes than it sends."""

    def do_GET(self) -> None:
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + MIB))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "web"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(root)))  # type: ignore[misc]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def importer(tmp_path: Path, fresh_database_url: str | None) -> Iterator[tuple[LiveAppliance, Path]]:
    """An appliance that may import from ``allowed/`` and accepts at most 8 MiB per image file."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    live = LiveAppliance(tmp_path / "home", fresh_database_url,
                         extra_env={"INGOT_IMAGES__IMPORT_DIRS": f'["{allowed}"]',
                                    "INGOT_IMAGES__MAX_UPLOAD_BYTES": str(8 * MIB)})
    live.start()
    try:
        yield live, allowed
    finally:
        live.stop()


def qcow2_of(raw: bytes, path: Path) -> Path:
    source = path.with_suffix(".src.raw")
    source.write_bytes(raw)
    qemu_img.convert(source, path, src_format="raw")
    source.unlink()
    return path


def start(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/rest/golden-images", json={"name": body.pop("name", "imported"), **body})


def finished(api: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    task: dict[str, Any] = wait_task(api, {}, response.headers["location"])
    return task


def error_text(task: dict[str, Any]) -> str:
    assert task["taskState"] == "Error", task
    return " ".join(e["message"] for e in task["taskErrors"])


def test_from_url_with_checksum(importer: tuple[LiveAppliance, Path], web: tuple[str, Path]) -> None:
    live, _ = importer
    base, root = web
    disk = os.urandom(2 * MIB)
    image = qcow2_of(disk, root / "rhel9.qcow2")
    checksum = hashlib.sha256(image.read_bytes()).hexdigest()
    with live.client(live.login()) as api:
        task = finished(api, start(api, name="rhel9", sourceUrl=f"{base}/rhel9.qcow2?token=x",
                                   sourceChecksum=checksum.upper()))
        assert task["taskState"] == "Completed", task
        assert task["percentComplete"] == 100
        made = api.get(task["associatedResource"]["resourceUri"]).json()
        assert (made["name"], made["sourceFormat"], made["originalFileName"]) == ("rhel9", "qcow2", "rhel9.qcow2")
        log = api.get(f"/rest/golden-images/archive/{made['id']}").text
        assert f"import of {base}/rhel9.qcow2" in log and checksum in log
        stored = live.home / "images" / "golden" / f"{made['checkSum']}.qcow2"
        flat = root / "flat.raw"
        flat.write_bytes(disk)
        assert qemu_img.identical(stored, flat, b_format="raw")

        wrong = error_text(finished(api, start(api, name="wrong", sourceUrl=f"{base}/rhel9.qcow2",
                                               sourceChecksum="0" * 64)))
        assert "SHA-256" in wrong and checksum in wrong
        assert "404" in error_text(finished(api, start(api, name="missing", sourceUrl=f"{base}/nope.qcow2")))
        (root / "cut.raw").write_bytes(os.urandom(MIB))
        cut = finished(api, start(api, name="cut", sourceUrl=f"{base}/short/cut.raw"))
        assert "closed the connection after" in error_text(cut)
        (root / "huge.raw").write_bytes(bytes(9 * MIB))
        assert "limit" in error_text(finished(api, start(api, name="huge", sourceUrl=f"{base}/huge.raw")))
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw",
                        str(root / "evil.qcow2"), "1M"], check=True, timeout=30)
        assert "backing file" in error_text(finished(api, start(api, name="evil", sourceUrl=f"{base}/evil.qcow2")))

        for body, reason in (({"sourceUrl": "ftp://127.0.0.1/x.qcow2"}, "http or https"),
                             ({"sourceUrl": "http://user:secret@127.0.0.1/x.qcow2"}, "credentials"),
                             ({"sourceUrl": "http:///x.qcow2"}, "no host"),
                             ({"sourceUrl": f"{base}/x", "sourceChecksum": "abc"}, "SHA-256"),
                             ({"sourceUrl": f"{base}/x", "sourcePath": "/tmp/x"}, "not both")):
            refused = start(api, **body)
            assert refused.status_code == 400 and reason in refused.json()["message"], (body, refused.text)
        names = [g["name"] for g in api.get("/rest/golden-images").json()["members"]]
    assert names == ["rhel9"]
    assert list((live.home / "images" / "incoming").iterdir()) == []


def test_from_a_path_under_an_allowed_directory(importer: tuple[LiveAppliance, Path], tmp_path: Path) -> None:
    live, allowed = importer
    disk = allowed / "ubuntu.raw"
    disk.write_bytes(os.urandom(MIB))
    secret = tmp_path / "secret.raw"
    secret.write_bytes(os.urandom(MIB))
    (allowed / "escape.raw").symlink_to(secret)
    (allowed / "sub").mkdir()
    with live.client(live.login()) as api:
        task = finished(api, start(api, name="ubuntu", sourcePath=str(disk),
                                   sourceChecksum=hashlib.sha256(disk.read_bytes()).hexdigest()))
        assert task["taskState"] == "Completed", task
        assert disk.is_file()  # read in place, never moved
        for path, reason in ((f"{allowed}/../secret.raw", "not under"), (str(allowed / "escape.raw"), "not under"),
                             ("ubuntu.raw", "absolute"), (str(allowed / "gone.raw"), "cannot be read"),
                             (str(allowed / "sub"), "not a regular file"), ("/etc/shadow", "not under")):
            refused = start(api, name="nope", sourcePath=path)
            assert refused.status_code == 400 and reason in refused.json()["message"], (path, refused.text)


def test_path_imports_are_off_unless_configured(live: LiveAppliance) -> None:
    with live.client(live.login()) as api:
        refused = start(api, sourcePath="/etc/hostname")
    assert refused.status_code == 400 and "INGOT_IMAGES__IMPORT_DIRS" in refused.json()["message"]
