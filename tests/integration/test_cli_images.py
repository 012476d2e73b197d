"""``ingot images`` as a user runs it, against a live appliance: upload (progress, task), list,
show, download (verified), rename, delete, and the refusals."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from golden_images import qemu_img
from tests.support.cli import Cli

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]


def test_upload_list_show_download_rename_delete(admin_cli: Cli, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(3 << 20))
    image = tmp_path / "debian-12.vmdk"
    qemu_img.convert(disk, image, src_format="raw", dst_format="vmdk")

    uploaded = admin_cli.json("images", "upload", str(image), "--description", "base")
    assert (uploaded["name"], uploaded["sourceFormat"], uploaded["originalFileName"]) == (
        "debian-12", "vmdk", "debian-12.vmdk")
    assert uploaded["virtualSize"] == 3 << 20

    listed = admin_cli("images", "list")
    assert listed.returncode == 0 and "debian-12" in listed.stdout, listed.stderr
    assert admin_cli.json("images", "show", uploaded["id"])["checkSum"] == uploaded["checkSum"]

    target = tmp_path / "out"
    target.mkdir()
    got = admin_cli("images", "download", uploaded["id"], "-o", str(target))
    assert got.returncode == 0, got.stderr
    assert [p.name for p in target.iterdir()] == ["debian-12.qcow2"]  # no temp file left
    assert qemu_img.identical(target / "debian-12.qcow2", disk, b_format="raw")
    again = admin_cli("images", "download", uploaded["id"], "-o", str(target))
    assert again.returncode == 2 and "exists" in again.stderr

    renamed = admin_cli.json("images", "rename", uploaded["id"], "--name", "debian-12.8")
    assert (renamed["name"], renamed["description"]) == ("debian-12.8", "base")
    assert admin_cli("images", "delete", uploaded["id"]).returncode == 0
    assert admin_cli.json("images", "list")["members"] == []


def test_refusals_are_reported_and_exit_nonzero(admin_cli: Cli, tmp_path: Path) -> None:
    backed = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", str(backed), "1M"],
                   check=True, timeout=30)
    refused = admin_cli("images", "upload", str(backed))
    assert refused.returncode == 1 and "backing file" in refused.stderr + refused.stdout
    missing = admin_cli("images", "upload", str(tmp_path / "nowhere.raw"))
    assert missing.returncode == 2 and "not a file" in missing.stderr
    unknown = admin_cli("images", "show", "no-such-id")
    assert unknown.returncode != 0 and "not found" in unknown.stderr.lower()
    assert admin_cli.json("images", "list")["members"] == []


def test_volume_create_capture_log_and_in_use(admin_cli: Cli, tmp_path: Path) -> None:
    disk = tmp_path / "base.raw"
    disk.write_bytes(os.urandom(2 << 20))
    image = admin_cli.json("images", "upload", str(disk))
    volume = admin_cli.json("volumes", "create", "node-1-os", "--image", image["id"], "--size", str(4 << 20))
    assert (volume["name"], volume["size"], volume["fullClone"]) == ("node-1-os", 4 << 20, False)
    full = admin_cli.json("volumes", "create", "node-2-os", "--image", image["id"], "--full")
    assert full["fullClone"] is True
    listed = admin_cli("volumes", "list")
    assert listed.returncode == 0 and "node-1-os" in listed.stdout and "node-2-os" in listed.stdout

    captured = admin_cli.json("images", "capture", volume["id"], "--name", "node-1-golden", "--compress")
    assert (captured["imageCapture"], captured["virtualSize"]) == (True, 4 << 20)
    log = admin_cli("images", "log", captured["id"])
    assert log.returncode == 0 and "capture of OS volume node-1-os" in log.stdout

    in_use = admin_cli("images", "delete", image["id"])
    assert in_use.returncode == 1 and "node-1-os" in in_use.stderr
    for vid in (volume["id"], full["id"]):
        assert admin_cli("volumes", "delete", vid).returncode == 0
    assert admin_cli("images", "delete", image["id"]).returncode == 0
    small = admin_cli("volumes", "create", "tiny", "--image", captured["id"], "--size", "1024")
    assert small.returncode != 0 and "smaller" in small.stderr


def test_verify_passes_then_catches_a_changed_file(admin_cli: Cli, tmp_path: Path) -> None:
    disk = tmp_path / "base.raw"
    disk.write_bytes(os.urandom(2 << 20))
    image = admin_cli.json("images", "upload", str(disk))
    ok = admin_cli("images", "verify", image["id"])
    assert ok.returncode == 0 and "matches its checksum" in ok.stdout + ok.stderr, ok.stderr

    stored = admin_cli.live.home / "images" / "golden" / f"{image['checkSum']}.qcow2"
    with stored.open("r+b") as f:  # a bit flipped on disk, after the image was stored
        f.seek(1 << 20)
        byte = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([byte[0] ^ 0x01]))
    bad = admin_cli("images", "verify", image["id"])
    assert bad.returncode == 1 and "no longer matches its SHA-256" in bad.stderr + bad.stdout
    alerts = admin_cli.json("alerts", "list")["members"]
    assert any(a["alertTypeID"] == "Ingot.Images.ChecksumMismatch"
               and a["associatedResource"]["resourceUri"] == image["uri"] for a in alerts), alerts


def test_volume_export_download_and_nbd(admin_cli: Cli, tmp_path: Path) -> None:
    disk = tmp_path / "base.raw"
    disk.write_bytes(os.urandom(2 << 20))
    image = admin_cli.json("images", "upload", str(disk))
    volume = admin_cli.json("volumes", "create", "node-9-os", "--image", image["id"], "--size", str(3 << 20))

    exported = admin_cli("volumes", "export", volume["id"], "--format", "raw", "-o", str(tmp_path))
    assert exported.returncode == 0, exported.stderr
    saved = tmp_path / "node-9-os.raw"
    assert saved.read_bytes() == disk.read_bytes() + bytes(1 << 20)
    again = admin_cli("volumes", "export", volume["id"], "-o", str(saved))
    assert again.returncode != 0 and "exists" in again.stderr
    as_qcow2 = admin_cli("volumes", "export", volume["id"], "-f", "qcow2", "-o", str(tmp_path / "n9.qcow2"))
    assert as_qcow2.returncode == 0, as_qcow2.stderr
    assert qemu_img.identical(tmp_path / "n9.qcow2", saved, b_format="raw")

    export = admin_cli.json("volumes", "nbd", volume["id"])
    assert export["uri"].startswith("nbd://127.0.0.1:") and export["uri"].endswith(f"/{volume['id']}")
    shown = admin_cli.json("volumes", "show", volume["id"])
    assert shown["nbdUri"] == export["uri"]
    busy = admin_cli("volumes", "delete", volume["id"])
    assert busy.returncode == 1 and "NBD" in busy.stderr
    assert admin_cli("volumes", "nbd", volume["id"], "--stop").returncode == 0
    assert admin_cli("volumes", "delete", volume["id"]).returncode == 0


def test_import_from_a_url(admin_cli: Cli, tmp_path: Path) -> None:
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    disk = served / "debian-12.raw"
    disk.write_bytes(os.urandom(1 << 20))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/debian-12.raw"
        image = admin_cli.json("images", "import", url, "--name", "debian-12",
                               "--sha256", hashlib.sha256(disk.read_bytes()).hexdigest())
        assert (image["name"], image["sourceFormat"], image["virtualSize"]) == ("debian-12", "raw", 1 << 20)
        wrong = admin_cli("images", "import", url, "--name", "debian-wrong", "--sha256", "1" * 64)
        assert wrong.returncode == 1 and "SHA-256" in wrong.stderr
        off = admin_cli("images", "import", str(disk), "--name", "local")
        assert off.returncode == 2 and "IMPORT_DIRS" in off.stderr  # 400: the request, not the appliance
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
