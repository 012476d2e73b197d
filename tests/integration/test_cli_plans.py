"""``ingot plans`` and ``ingot render`` as a user runs them: plan scripts from files, a build plan
with its steps in order and attributes from a JSON file, a deployment plan, the refusals, and an
answer file rendered locally (validated by pykickstart)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion

from tests.support.cli import Cli

pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

HOSTNAME_SCRIPT = """mount /dev/sda1 /
upload -<<END /etc/hostname
@Hostname@
END
echo ssh @SSH:enabled@
umount /
"""
ATTRIBUTES = [
    {"name": "Hostname", "type": "hostname", "value": "", "description": "host name", "constraints": "{}"},
    {"name": "SSH", "type": "option", "value": "enabled", "description": "",
     "constraints": json.dumps({"options": ["enabled", "disabled"]})},
]


def test_scripts_build_plans_deployment_plans(admin_cli: Cli, tmp_path: Path) -> None:
    script_file = tmp_path / "hostname.gfs"
    script_file.write_text(HOSTNAME_SCRIPT)
    script = admin_cli.json("plans", "scripts", "create", "set hostname", "--file", str(script_file),
                            "--type", "deploy", "--description", "writes /etc/hostname")
    assert (script["planType"], script["content"]) == ("deploy", HOSTNAME_SCRIPT)
    assert script["customAttributeNames"] == ["Hostname", "SSH"]
    listed = admin_cli("plans", "scripts", "list")
    assert listed.returncode == 0 and "set hostname" in listed.stdout and "Hostname, SSH" in listed.stdout
    (tmp_path / "v2.gfs").write_text(HOSTNAME_SCRIPT.replace("echo ssh", "echo SSH is"))
    updated = admin_cli.json("plans", "scripts", "update", script["id"], "--file", str(tmp_path / "v2.gfs"))
    assert "echo SSH is" in updated["content"] and updated["name"] == "set hostname"

    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps(ATTRIBUTES))
    build = admin_cli.json("plans", "build-plans", "create", "linux deploy", "--step", script["id"],
                           "--step", script["id"], "--attributes", str(attributes))
    assert [s["serialNumber"] for s in build["buildStep"]] == ["1", "2"]
    assert [a["name"] for a in build["customAttributes"]] == ["Hostname", "SSH"]
    shown = admin_cli("plans", "build-plans", "show", build["id"])
    assert shown.returncode == 0 and "1. set hostname; 2. set hostname" in shown.stdout

    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps([{"name": "SSH", "value": "disabled", "editable": False}]))
    deployment = admin_cli.json("plans", "deployment-plans", "create", "web servers", "--build-plan", build["id"],
                                "--attributes", str(overrides))
    values = {a["name"]: (a["value"], a["editable"]) for a in deployment["customAttributes"]}
    assert values["SSH"] == ("disabled", False) and deployment["goldenImageURI"] in ("", None)
    assert "web servers" in admin_cli("plans", "deployment-plans", "list").stdout

    in_use = admin_cli("plans", "build-plans", "delete", build["id"])
    assert in_use.returncode == 1 and "web servers" in in_use.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    unreadable = admin_cli("plans", "build-plans", "create", "x", "--attributes", str(bad))
    assert unreadable.returncode == 2 and "not JSON" in unreadable.stderr
    absent = admin_cli("plans", "build-plans", "create", "x", "--attributes", str(tmp_path / "absent.json"))
    assert absent.returncode == 2 and "Cannot read" in absent.stderr
    for path, ident in (("deployment-plans", deployment["id"]), ("build-plans", build["id"]),
                        ("scripts", script["id"])):
        assert admin_cli("plans", path, "delete", ident).returncode == 0
    assert "No plan scripts." in admin_cli("plans", "scripts", "list").stderr


def test_render_locally(admin_cli: Cli, tmp_path: Path) -> None:
    values = {"Hostname": "web01", "Domain": "example.com", "RootPassword": "S3cret!pw", "Timezone": "Europe/Berlin",
              "NIC1": {"mac": "52:54:00:12:34:56", "dhcp": False, "ipaddress": "10.0.0.5",
                       "netmask": "255.255.255.0", "gateway": "10.0.0.1", "dns": "10.0.0.2"}}
    attributes = tmp_path / "web01.json"
    attributes.write_text(json.dumps(values))
    out = tmp_path / "out"
    done = admin_cli("render", "kickstart", "--attributes", str(attributes), "--os", "rhel", "--version", "9",
                     "--callback-url", "http://10.0.0.1:8080/cb", "--token", "t0k3n", "-o", str(out))
    assert done.returncode == 0, done.stderr
    kickstart = (out / "ks.cfg").read_text()
    assert "S3cret!pw" not in kickstart and "--iscrypted" in kickstart and "web01" in kickstart
    KickstartParser(makeVersion("RHEL9")).readKickstartFromString(kickstart)
    printed = admin_cli("render", "autoinstall", "--attributes", str(attributes))
    assert printed.returncode == 0 and "# --- user-data" in printed.stdout and "# --- meta-data" in printed.stdout
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({**values, "Hostname": None}))
    refused = admin_cli("render", "kickstart", "--attributes", str(missing))
    assert refused.returncode == 2 and "Hostname" in refused.stderr
    unknown = admin_cli("render", "sysprep-xyz", "--attributes", str(attributes))
    assert unknown.returncode == 2 and "kickstart" in unknown.stderr


def test_bundles_create_download_upload_extract(admin_cli: Cli, tmp_path: Path) -> None:
    script_file = tmp_path / "hostname.gfs"
    script_file.write_text(HOSTNAME_SCRIPT)
    script = admin_cli.json("plans", "scripts", "create", "bundled hostname", "--file", str(script_file))
    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps(ATTRIBUTES))
    build = admin_cli.json("plans", "build-plans", "create", "bundled plan", "--step", script["id"],
                           "--attributes", str(attributes))
    deployment = admin_cli.json("plans", "deployment-plans", "create", "bundled deployment", "--build-plan",
                                build["id"])

    created = admin_cli("plans", "bundles", "create", "web bundle", "--deployment-plan", deployment["id"])
    assert created.returncode == 0, created.stderr
    assert "1 plan scripts, 1 build plans, 1 deployment plans" in created.stdout
    bundle = admin_cli.json("plans", "bundles", "list")["members"][0]
    out = tmp_path / "out"
    out.mkdir()
    saved = admin_cli("plans", "bundles", "download", bundle["id"], "-o", str(out))
    assert saved.returncode == 0 and (out / "web bundle.zip").is_file(), saved.stderr
    again = admin_cli("plans", "bundles", "download", bundle["id"], "-o", str(out))
    assert again.returncode != 0 and "exists" in again.stderr

    for kind, ident in (("deployment-plans", deployment["id"]), ("build-plans", build["id"]),
                        ("scripts", script["id"])):
        assert admin_cli("plans", kind, "delete", ident).returncode == 0
    uploaded = admin_cli("plans", "bundles", "upload", str(out / "web bundle.zip"))
    assert uploaded.returncode == 0, uploaded.stderr
    assert "1 created" not in uploaded.stdout and "3 created" in uploaded.stdout + uploaded.stderr
    restored = admin_cli.json("plans", "build-plans", "list")["members"]
    assert [(p["name"], [s["planScriptName"] for s in p["buildStep"]]) for p in restored] == [
        ("bundled plan", ["bundled hostname"])]

    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip at all")
    refused = admin_cli("plans", "bundles", "upload", str(broken))
    assert refused.returncode != 0 and "not a zip" in refused.stderr.lower()
    assert admin_cli("plans", "bundles", "delete", bundle["id"]).returncode == 0
