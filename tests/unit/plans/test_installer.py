"""The installer a deployment plan names (plans/installer.py) and the attributes an installer's answer
file is rendered with (appliance/services/installer.render_attributes)."""

from __future__ import annotations

import pytest

from appliance.services.installer import render_attributes
from plans.attributes import AttributeType
from plans.installer import InstallerSpecError, answer_args, installer_summary, parse_installer
from plans.render import render


def test_a_valid_installer_is_normalised() -> None:
    spec = parse_installer({"kind": "kickstart", "os": "RHEL", "version": "9", "media": "rhel-9.4",
                            "kernelArgs": "  inst.repo=http://mirror.example/9/  ip=dhcp "})
    assert spec.public() == {"kind": "kickstart", "os": "rhel", "version": "9", "arch": "x86_64", "media": "rhel-9.4",
                             "kernelArgs": "inst.repo=http://mirror.example/9/ ip=dhcp"}
    assert parse_installer(spec.public()) == spec  # what is stored parses back to the same
    assert installer_summary(spec.public()) == "kickstart (rhel 9 x86_64) from media rhel-9.4"
    assert installer_summary(None) is None


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({"kind": "autoyast", "media": "m"}, "installer.kind", "unknown kind"),
    ({"kind": "unattend", "media": "m"}, "installer.kind", "wimboot"),
    ({"media": "m"}, "installer.kind", "is required"),
    ({"kind": 3, "media": "m"}, "installer.kind", "must be a string"),
    ({"kind": "preseed", "os": "rhel", "media": "m"}, "installer.os", "no templates for os"),
    ({"kind": "preseed", "version": "12", "media": "m"}, "installer.version", "needs an os"),
    ({"kind": "kickstart", "arch": "ppc64le", "media": "m"}, "installer.arch", "does not support arch"),
    ({"kind": "kickstart", "os": "rhel", "version": "9 4", "media": "m"}, "installer.version", "short token"),
    ({"kind": "kickstart"}, "installer.media", "is required"),
    ({"kind": "kickstart", "media": "../etc"}, "installer.media", "directory name"),
    ({"kind": "kickstart", "media": "a/b"}, "installer.media", "directory name"),
    ({"kind": "kickstart", "media": "m", "kernelArgs": "x=${net0/ip}"}, "installer.kernelArgs", "iPXE"),
    ({"kind": "kickstart", "media": "m", "kernelArgs": "x=\"quoted\""}, "installer.kernelArgs", "iPXE"),
    ({"kind": "kickstart", "media": "m", "kernelArgs": "x=\u00e9"}, "installer.kernelArgs", "iPXE"),
    ({"kind": "kickstart", "media": "m", "kernelArgs": "a" * 3000}, "installer.kernelArgs", "at most"),
    ({"kind": "kickstart", "media": "m", "kernelArgs": ["a"]}, "installer.kernelArgs", "must be a string"),
    ("kickstart", "installer.kind", "must be an object"),
])
def test_a_bad_installer_names_its_field(raw: object, field: str, words: str) -> None:
    with pytest.raises(InstallerSpecError) as caught:
        parse_installer(raw)
    assert caught.value.field == field and words in caught.value.message, str(caught.value)


def test_each_installer_is_pointed_at_its_answer_files() -> None:
    url = "http://10.0.0.1:8080/installer/tok/"
    assert answer_args("kickstart", url) == [f"inst.ks={url}ks.cfg"]
    assert answer_args("preseed", url.rstrip("/")) == ["auto=true", "priority=critical", f"url={url}preseed.cfg"]
    assert answer_args("autoinstall", url) == ["autoinstall", f"ds=nocloud-net;s={url}"]


NIC = AttributeType.NIC
TYPES = [("Hostname", AttributeType.HOSTNAME), ("ManagementNIC", NIC), ("NIC1", NIC), ("DataNIC", NIC),
         ("Unused", AttributeType.STRING)]


def test_nics_become_numbered_with_dns_and_the_servers_macs() -> None:
    values = {"Hostname": "web01", "Unused": "",
              "ManagementNIC": {"dhcp": False, "ipaddress": "10.0.0.5", "netmask": "255.255.255.0", "dns1": "10.0.0.2",
                                "dns2": "10.0.0.3"},
              "NIC1": {"dhcp": True, "mac": "52:54:00:00:00:09"},
              "DataNIC": {"dhcp": True}}
    attributes = render_attributes(TYPES, values, ["52:54:00:00:00:01", "52:54:00:00:00:02"])
    # NIC1 keeps its number; the others follow in declaration order, with the server's MAC of their position.
    assert attributes == {
        "Hostname": "web01",
        "NIC1": {"dhcp": True, "mac": "52:54:00:00:00:09"},
        "NIC2": {"dhcp": False, "ipaddress": "10.0.0.5", "netmask": "255.255.255.0", "dns": ["10.0.0.2", "10.0.0.3"],
                 "mac": "52:54:00:00:00:01"},
    }  # DataNIC (third) has no MAC of its own and the server has two: it is left out
    rendered = render("kickstart", attributes={**attributes, "RootPassword": "s3cret"},
                      callback_url="http://10.0.0.1:8080/installer/events", deploy_token="tok")
    assert "--device=52:54:00:00:00:01 --bootproto=static --ip=10.0.0.5" in rendered.files["ks.cfg"]
