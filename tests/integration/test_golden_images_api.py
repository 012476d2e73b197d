"""/rest/golden-images against a real ``ingot serve``: HPE's SDK (image_streamer client) uploads,
lists, renames, downloads and deletes; hostile uploads fail their task with the reason; killing
the appliance mid-upload leaves nothing behind after the restart."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from hpeOneView.exceptions import HPEOneViewException, HPEOneViewTaskError
from hpeOneView.oneview_client import OneViewClient

from golden_images import qemu_img
from tests.support.live import ADMIN_PASSWORD, LiveAppliance
from tests.support.runner import wait_task

pytestmark = pytest.mark.slow


def image_streamer(live: LiveAppliance):  # type: ignore[no-untyped-def]
    ov = OneViewClient({"ip": live.host, "image_streamer_ip": live.host,
                        "credentials": {"userName": "Administrator", "password": ADMIN_PASSWORD}})
    return ov.create_image_streamer_client()


def raw_disk(path: Path, mib: int = 4) -> Path:
    path.write_bytes(os.urandom(mib << 20))
    return path


def store_files(live: LiveAppliance, folder: str) -> list[str]:
    directory = live.home / "images" / folder
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_sdk_upload_list_rename_download_delete(live: LiveAppliance, tmp_path: Path) -> None:
    disk = raw_disk(tmp_path / "disk.raw")
    bundle = tmp_path / "rhel-golden.zip"  # HPE's shape: a zip of one raw disk
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(disk, "rhel.raw")
    qcow2 = tmp_path / "ubuntu.qcow2"
    qemu_img.convert(disk, qcow2, src_format="raw")
    i3s = image_streamer(live)

    from_zip = i3s.golden_images.upload(str(bundle), {"name": "rhel", "description": "from a bundle"})
    from_qcow2 = i3s.golden_images.upload(str(qcow2), {"name": "ubuntu", "description": "qcow2"})
    assert (from_zip["name"], from_zip["importedFromBundle"], from_zip["sourceFormat"]) == ("rhel", True, "zip+raw")
    assert (from_qcow2["name"], from_qcow2["sourceFormat"]) == ("ubuntu", "qcow2")
    assert from_zip["checkSum"] == from_qcow2["checkSum"]  # same disk: one file in the store
    assert len(store_files(live, "golden")) == 1
    assert from_zip["virtualSize"] == 4 << 20 and from_zip["uri"].startswith("/rest/golden-images/")

    assert sorted(g["name"] for g in i3s.golden_images.get_all()) == ["rhel", "ubuntu"]
    assert i3s.golden_images.get_by("name", "ubuntu")[0]["id"] == from_qcow2["id"]
    renamed = i3s.golden_images.update({**from_qcow2, "name": "ubuntu-24.04", "description": "renamed"})
    assert (renamed["name"], renamed["description"]) == ("ubuntu-24.04", "renamed")

    target = tmp_path / "downloaded.qcow2"
    assert i3s.golden_images.download(from_zip["id"], str(target)) is True
    assert qemu_img.identical(target, disk, b_format="raw")

    i3s.golden_images.delete(from_zip)
    assert len(store_files(live, "golden")) == 1  # still used by "ubuntu-24.04"
    i3s.golden_images.delete(renamed)
    assert store_files(live, "golden") == [] and store_files(live, "incoming") == []
    with pytest.raises(HPEOneViewException) as gone:
        i3s.golden_images.get(from_zip["id"])
    assert gone.value.oneview_response["errorCode"] == "RESOURCE_NOT_FOUND"


def test_hostile_uploads_fail_with_their_reason(live: LiveAppliance, tmp_path: Path) -> None:
    i3s = image_streamer(live)
    backed = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", str(backed), "1M"],
                   check=True, timeout=30)
    qcow2_named_raw = tmp_path / "disguised.img"
    qemu_img.convert(raw_disk(tmp_path / "plain.raw", 1), qcow2_named_raw, src_format="raw")
    not_an_image = tmp_path / "notes.qcow2"
    not_an_image.write_bytes(b"QFI\xfb" + os.urandom(4000))
    cases = [(backed, "backing file"), (qcow2_named_raw, "given as raw"), (not_an_image, "not a readable disk image")]
    for path, reason in cases:
        with pytest.raises(HPEOneViewTaskError) as refused:
            i3s.golden_images.upload(str(path), {"name": path.stem})
        assert reason in refused.value.msg, refused.value.msg
    assert i3s.golden_images.get_all() == []
    assert store_files(live, "golden") == [] and store_files(live, "incoming") == []

    ok = i3s.golden_images.upload(str(raw_disk(tmp_path / "ok.raw", 1)), {"name": "taken"})
    with pytest.raises(HPEOneViewException) as duplicate:
        i3s.golden_images.upload(str(raw_disk(tmp_path / "other.raw", 1)), {"name": "taken"})
    assert duplicate.value.oneview_response["errorCode"] == "DUPLICATE_NAME"
    assert [g["id"] for g in i3s.golden_images.get_all()] == [ok["id"]]


def test_killed_mid_upload_leaves_nothing_after_restart(live: LiveAppliance) -> None:
    session = live.login()
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.raw\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    total = len(head) + (64 << 20) + len(f"\r\n--{boundary}--\r\n")
    request = (f"POST /rest/golden-images?name=half HTTP/1.1\r\nHost: {live.host}\r\nauth: {session}\r\n"
               f"X-API-Version: 4600\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
               f"Content-Length: {total}\r\n\r\n").encode()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", live.https_port), timeout=30) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(request + head + os.urandom(8 << 20))  # an eighth of the file, then the appliance dies
        deadline = time.monotonic() + 30
        while not any(n.startswith("upload-") for n in store_files(live, "incoming")):
            assert time.monotonic() < deadline, "the upload never reached incoming/"
            time.sleep(0.05)
        live.kill()
    assert store_files(live, "incoming")  # the partial upload is there, as a crash leaves it
    live.start()
    assert store_files(live, "incoming") == [] and store_files(live, "golden") == []
    assert image_streamer(live).golden_images.get_all() == []


def test_volume_capture_archive_and_in_use(live: LiveAppliance, tmp_path: Path) -> None:
    """An OS volume cloned from an image, changed, captured through the SDK into a new image that
    differs only where it was changed; the image cannot go while the volume uses it."""
    disk = raw_disk(tmp_path / "base.raw", 4)
    i3s = image_streamer(live)
    base = i3s.golden_images.upload(str(disk), {"name": "base"})
    api = live.client(live.login())
    created = api.post("/rest/os-volumes", json={"name": "node-7-os", "goldenImageUri": base["uri"],
                                                 "size": 8 << 20})
    assert created.status_code == 202, created.text
    task = wait_task(api, {}, created.headers["location"])
    assert task["taskState"] == "Completed", task
    volume = live.api("GET", task["associatedResource"]["resourceUri"])
    assert (volume["name"], volume["size"], volume["fullClone"]) == ("node-7-os", 8 << 20, False)
    assert [v["name"] for v in i3s.os_volumes.get_all()] == ["node-7-os"]

    path = live.home / "images" / "volumes" / f"{volume['id']}.qcow2"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", str(path)], check=True, timeout=30,
                   capture_output=True)
    captured = i3s.golden_images.create({"name": "node-7-captured", "description": "after changes",
                                         "imageCapture": "true", "osVolumeURI": volume["uri"], "buildPlanUri": ""})
    assert (captured["imageCapture"], captured["osVolumeURI"]) == (True, volume["uri"])
    assert captured["virtualSize"] == 8 << 20

    archive = tmp_path / "capture.log"
    assert i3s.golden_images.download_archive(captured["id"], str(archive)) is True
    assert "capture of OS volume node-7-os" in archive.read_text()

    image = tmp_path / "captured.qcow2"
    assert i3s.golden_images.download(captured["id"], str(image)) is True
    flat = tmp_path / "captured.raw"
    qemu_img.convert(image, flat, src_format="qcow2", dst_format="raw")
    before, after = disk.read_bytes(), flat.read_bytes()
    changed = slice(1 << 20, (1 << 20) + (64 << 10))
    assert after[:changed.start] == before[:changed.start]
    assert after[changed.stop:4 << 20] == before[changed.stop:]
    assert after[changed] == b"\xab" * (64 << 10)
    assert after[4 << 20:] == bytes(4 << 20)  # the volume's growth reads as zeros

    refused = api.delete(base["uri"])
    assert refused.status_code == 409 and "node-7-os" in refused.json()["message"]
    assert api.delete(volume["uri"]).status_code == 204
    assert api.delete(base["uri"]).status_code == 204
    api.close()
    assert not path.exists()


def test_killed_mid_capture_leaves_nothing_after_restart(live: LiveAppliance, tmp_path: Path) -> None:
    """Capture with compression of 128 MiB of random data takes seconds: the appliance is killed
    while qemu-img writes the new image. The restart removes every trace of that attempt, and the
    capture (resumable: starting over is always correct) runs again to a complete image."""
    i3s = image_streamer(live)
    base = i3s.golden_images.upload(str(raw_disk(tmp_path / "big.raw", 128)), {"name": "big"})
    api = live.client(live.login())
    created = api.post("/rest/os-volumes", json={"name": "big-os", "goldenImageUri": base["uri"]})
    volume_uri = wait_task(api, {}, created.headers["location"])["associatedResource"]["resourceUri"]
    started = api.post("/rest/golden-images", json={"name": "big-captured", "imageCapture": True,
                                                    "osVolumeURI": volume_uri, "compress": True})
    assert started.status_code == 202, started.text
    api.close()
    incoming = live.home / "images" / "incoming"
    deadline = time.monotonic() + 60
    while not (killed_work := [p.parent.name for p in incoming.glob("work-*/image.qcow2")]):
        assert time.monotonic() < deadline, "the capture never started writing"
        time.sleep(0.05)
    live.kill()
    assert store_files(live, "golden") == [f"{base['checkSum']}.qcow2"]  # nothing published yet

    live.start()
    assert not (incoming / killed_work[0]).exists()  # swept before the runner started again
    with live.client(live.login()) as api:
        task = wait_task(api, {}, started.headers["location"], timeout=120)
    assert task["taskState"] == "Completed", task
    assert "Resumed" in " ".join(p["statusUpdate"] for p in task["progressUpdates"])
    assert store_files(live, "incoming") == []
    images = {g["name"]: g for g in image_streamer(live).golden_images.get_all()}
    assert sorted(images) == ["big", "big-captured"]
    # Random data does not compress, so qemu-img stores it as it was: the capture may be the very
    # same file as its source (one file, two names).
    assert set(store_files(live, "golden")) == {f"{g['checkSum']}.qcow2" for g in images.values()}
    captured = live.home / "images" / "golden" / f"{images['big-captured']['checkSum']}.qcow2"
    assert qemu_img.check(captured)["check-errors"] == 0
    assert qemu_img.identical(captured, live.home / "images" / "golden" / f"{base['checkSum']}.qcow2")
