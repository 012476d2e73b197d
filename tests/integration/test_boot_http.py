"""The plain-HTTP boot endpoint in-process: iPXE scripts per MAC, the ramdisk with Range, boot
loaders, token-guarded identity, refusals of traversal, and the boot events all of it leaves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from appliance.context import AppContext
from appliance.db.session import unit_of_work
from appliance.models import ServerHardware
from appliance.services.netboot import NetbootService
from web.boot import create_boot_app

KERNEL = bytes(range(256)) * 64  # 16 KiB, every byte value
INITRD = b"initrd-bytes" * 100
MAC = "52:54:00:aa:bb:01"


@pytest.fixture
def boot(ctx: AppContext, tmp_path: Path) -> Iterator[TestClient]:
    ramdisk = ctx.settings.home / "boot" / "ramdisk"
    ramdisk.mkdir(parents=True)
    (ramdisk / "vmlinuz").write_bytes(KERNEL)
    (ramdisk / "initrd.img").write_bytes(INITRD)
    tftp = ctx.settings.home / "tftp"
    tftp.mkdir()
    (tftp / "snponly.efi").write_bytes(b"MZ-fake-efi")
    (ctx.settings.home / "secret.txt").write_text("not for you")
    with TestClient(create_boot_app(ctx), base_url="http://10.0.0.1:8080") as client:
        yield client


def script(client: TestClient, mac: str = MAC) -> str:
    r = client.get(f"/ipxe/{mac.replace(':', '-')}/boot.ipxe")
    assert r.status_code == 200, r.text
    assert r.text.startswith("#!ipxe\n")
    return r.text


def token_of(text: str) -> str:
    found = re.search(r"ingot\.token=(\S+)", text)
    assert found, text
    return found.group(1)


def test_unknown_mac_boots_the_ramdisk_with_a_token(boot: TestClient, ctx: AppContext) -> None:
    text = script(boot)
    assert "kernel http://10.0.0.1:8080/boot/ramdisk/vmlinuz initrd=initrd.img" in text
    assert "initrd --name initrd.img http://10.0.0.1:8080/boot/ramdisk/initrd.img" in text
    assert "ingot.url=http://10.0.0.1:8080" in text and "BOOTIF=01-52-54-00-aa-bb-01" in text
    token = token_of(text)
    r = boot.get(f"/boot/nodes/{token}/identity")
    assert r.status_code == 200 and r.json()["mac"] == MAC and r.json()["serverHardwareUri"] is None
    # A new script for the same MAC revokes the previous token.
    newer = token_of(script(boot))
    assert boot.get(f"/boot/nodes/{token}/identity").status_code == 404
    assert boot.get(f"/boot/nodes/{newer}/identity").status_code == 200
    events = ctx.boot_events.take()
    assert [e["action"] for e in events if e["service"] == "http"][:2] == ["GET", "GET"]
    assert any(e["mac"] == MAC and "ramdisk" in (e["detail"] or "") for e in events)
    assert "ingot.lldp" not in text  # listening for LLDP is off unless asked for
    ctx.settings.boot.lldp_wait_s = 35
    assert " ingot.lldp=35\n" in script(boot)


def test_enrolled_server_token_names_the_server(boot: TestClient, ctx: AppContext) -> None:
    with unit_of_work(ctx.session_factory) as db:
        server = ServerHardware(name="rack1-u07", driver="ipmi", address="127.0.0.1", port=623, username="u",
                                password_sealed="x", state="NoProfileApplied", mac_addresses=[MAC.upper()])
        db.add(server)
        db.flush()
        server_id = server.id
    r = boot.get(f"/boot/nodes/{token_of(script(boot))}/identity")
    assert r.json()["serverHardwareUri"] == f"/rest/server-hardware/{server_id}"
    assert "rack1-u07" in script(boot)


@pytest.mark.parametrize(("choice", "expected"), [("disk", "sanboot --no-describe --drive 0x80 || exit 0"),
                                                  ("local", "sanboot"), ("none", "exit 1")])
def test_reservation_decides_the_script(boot: TestClient, ctx: AppContext, choice: str, expected: str) -> None:
    with unit_of_work(ctx.session_factory) as db:
        NetbootService(db).create_reservation({"mac": MAC, "boot": choice})
    text = script(boot)
    assert expected in text and "ingot.token" not in text


def test_unknown_mac_policy_ignore_refuses(boot: TestClient, ctx: AppContext) -> None:
    ctx.settings.dhcp.unknown_mac = "ignore"
    text = script(boot)
    assert "exit 1" in text and "kernel" not in text


def test_missing_ramdisk_is_a_refusal_that_says_where(boot: TestClient, ctx: AppContext) -> None:
    (ctx.settings.home / "boot" / "ramdisk" / "initrd.img").unlink()
    text = script(boot)
    assert "initrd.img missing" in text and "exit 1" in text


def test_ramdisk_is_served_with_ranges(boot: TestClient) -> None:
    whole = boot.get("/boot/ramdisk/vmlinuz")
    assert whole.status_code == 200 and whole.content == KERNEL
    assert whole.headers["accept-ranges"] == "bytes"
    part = boot.get("/boot/ramdisk/vmlinuz", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == KERNEL[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(KERNEL)}"
    tail = boot.get("/boot/ramdisk/vmlinuz", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == KERNEL[-10:]
    assert boot.get("/boot/ramdisk/vmlinuz", headers={"Range": f"bytes={len(KERNEL) + 5}-"}).status_code == 416
    assert boot.get("/boot/snponly.efi").content == b"MZ-fake-efi"


@pytest.mark.parametrize("path", [
    "/boot/ramdisk/..%2f..%2fsecret.txt", "/boot/ramdisk/secret.txt", "/boot/..%2fsecret.txt",
    "/boot/%2e%2e%2f%2e%2e%2fsecret.txt", "/boot/ramdisk/vmlinuz%00", "/boot/secret.txt",
    "/boot/ramdisk/%2fetc%2fpasswd", "/boot/nodes/not-a-token/identity", "/boot/nodes/%2e%2e/identity",
])
def test_traversal_and_guessing_are_refused(boot: TestClient, path: str) -> None:
    r = boot.get(path)
    assert r.status_code in (404, 400), (path, r.status_code)
    assert b"not for you" not in r.content and b"root:" not in r.content


@pytest.mark.parametrize("mac", ["zz-zz-zz-zz-zz-zz", "52-54-00", "${net0:mac}", "a" * 300])
def test_bad_mac_in_script_url_is_a_clear_400(boot: TestClient, mac: str) -> None:
    r = boot.get(f"/ipxe/{mac}/boot.ipxe")
    assert r.status_code == 400 and "MAC" in r.json()["message"]
