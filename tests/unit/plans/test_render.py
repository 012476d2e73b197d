"""Answer-file renderers (plans.render): golden files, installer-side validators, hostile values.

Golden files live in tests/unit/plans/golden/. After a deliberate template change, regenerate
them and review the diff:

    .venv/bin/python -m tests.unit.plans.test_render
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2.exceptions import SecurityError
from pykickstart.constants import KS_SCRIPT_ONERROR, KS_SCRIPT_POST, KS_SCRIPT_PRE
from pykickstart.errors import KickstartError
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion

from plans.render import Rendered, RenderError, environment, render, sha512_crypt, windows_password
from plans.render.kickstart_check import check_kickstart, syntax_for

GOLDEN = Path(__file__).parent / "golden"
URL = "https://ingot.example/rest/deploy-callbacks/42"
TOKEN = "tok-7f3a9c"
ROOT_HASH = sha512_crypt("s3cret", "ingotgoldensalt")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGkXb8Yq9dM4cJzq1 ops@ingot"
UNATTEND_NS = "urn:schemas-microsoft-com:unattend"
WCM_NS = "http://schemas.microsoft.com/WMIConfig/2002/State"

STATIC = {
    "Hostname": "web01", "Domain": "example.com", "RootPassword": ROOT_HASH, "AdminPassword": "Adm1n!pass",
    "Timezone": "Europe/Berlin", "Locale": "de_DE", "SSHKeys": [KEY],
    "NIC1": {"mac": "52:54:00:12:34:56", "dhcp": False, "ipaddress": "10.0.0.5", "netmask": "255.255.255.0",
             "gateway": "10.0.0.1", "dns": "10.0.0.2, 10.0.0.3"},
    "NIC2": {"mac": "52-54-00-AB-CD-EF", "dhcp": "false", "ipaddress": "192.168.10.7/24", "vlanid": "110",
             "dns": ["192.168.10.2"]},
}
DHCP = {
    "Hostname": "db02.lab.example", "RootPassword": ROOT_HASH, "AdminPassword": "Adm1n!pass",
    "SSHKeys": f"{KEY}\n{KEY.replace('ops@', 'dev@')}\n",
    "NIC1": {"mac": "52:54:00:00:00:01", "dhcp": True},
}
WINDOWS_JOIN = {**STATIC, "Hostname": "WIN01", "Timezone": "W. Europe Standard Time", "JoinDomain": "corp.example",
                "DomainJoinUser": "joiner", "DomainJoinPassword": "J0in!", "DomainJoinOU": "OU=Servers,DC=corp"}

# (golden name, kind, os, version, attributes)
CASES: list[tuple[str, str, str | None, str | None, dict[str, Any]]] = [
    ("kickstart-static", "kickstart", "rhel", "9", STATIC),
    ("kickstart-dhcp", "kickstart", None, None, DHCP),
    ("kickstart-rhel7-static", "kickstart", "rhel", "7", STATIC),
    ("preseed-static", "preseed", "debian", "12", STATIC),
    ("preseed-dhcp", "preseed", "debian", None, DHCP),
    ("autoinstall-static", "autoinstall", "ubuntu", "24.04", STATIC),
    ("autoinstall-dhcp", "autoinstall", "ubuntu", None, DHCP),
    ("unattend-static-join", "unattend", "windows", "2022", WINDOWS_JOIN),
    ("unattend-dhcp", "unattend", "windows", "2025", {**DHCP, "Hostname": "win02"}),
]


def _render(kind: str, os: str | None, version: str | None, attributes: dict[str, Any], *,
            url: str = URL, token: str = TOKEN) -> Rendered:
    return render(kind, os=os, version=version, attributes=attributes, callback_url=url, deploy_token=token)


def _kickstart_version(template: str) -> str:
    return "RHEL7" if "rhel-7" in template else "RHEL9"


def _validate_kickstart(text: str, version: str = "RHEL9") -> KickstartParser:
    parser = KickstartParser(makeVersion(version))
    parser.readKickstartFromString(text)  # raises KickstartError; deprecation warnings are errors here
    return parser


def _xml(data: bytes) -> ET.Element:
    return ET.fromstring(data)  # noqa: S314 - our own rendered output, not untrusted input


def _unattend_components(text: str) -> dict[str, list[ET.Element]]:
    root = _xml(text.encode())
    assert root.tag == f"{{{UNATTEND_NS}}}unattend"
    passes: dict[str, list[ET.Element]] = {}
    for settings in root.findall(f"{{{UNATTEND_NS}}}settings"):
        passes[settings.get("pass", "")] = settings.findall(f"{{{UNATTEND_NS}}}component")
    return passes


# --- golden files ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind", "os", "version", "attributes"), CASES, ids=[c[0] for c in CASES])
def test_golden(name: str, kind: str, os: str | None, version: str | None, attributes: dict[str, Any]) -> None:
    rendered = _render(kind, os, version, attributes)
    for file, text in rendered.files.items():
        assert text == (GOLDEN / name / file).read_text(), f"{name}/{file} differs; see this module's docstring"
    assert sorted(p.name for p in (GOLDEN / name).iterdir()) == sorted(rendered.files)


def _write_golden() -> None:
    for name, kind, os, version, attributes in CASES:
        target = GOLDEN / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for file, text in _render(kind, os, version, attributes).files.items():
            (target / file).write_text(text)


# --- per-format validation ------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind", "os", "version", "attributes"),
                         [c for c in CASES if c[1] == "kickstart"], ids=[c[0] for c in CASES if c[1] == "kickstart"])
def test_kickstart_passes_pykickstart(name: str, kind: str, os: str | None, version: str | None,
                                      attributes: dict[str, Any]) -> None:
    rendered = _render(kind, os, version, attributes)
    parser = _validate_kickstart(rendered.files["ks.cfg"], _kickstart_version(rendered.template))
    handler = parser.handler
    assert handler.rootpw.isCrypted and handler.rootpw.password == ROOT_HASH
    devices = [nd.device for nd in handler.network.network if nd.device]
    assert devices == [nic["mac"].lower().replace("-", ":") for k, nic in sorted(attributes.items())
                       if k.startswith("NIC")]
    # Each callback is the whole of its own section: start in %pre, success in %post --nochroot (after the
    # bootloader is in), failure in %onerror. A section swallowed by the one before it (a missing newline
    # after %end still parses) would report at the wrong time or never.
    callbacks = {(s.type, s.inChroot): s.script for s in handler.scripts if "Authorization: Bearer" in s.script}
    for event, section in (("start", (KS_SCRIPT_PRE, False)), ("success", (KS_SCRIPT_POST, False)),
                           ("failure", (KS_SCRIPT_ONERROR, False))):
        body = callbacks[section]
        assert body.count('"event": ') == 1 and f'{{"event": "{event}"}}' in body, (event, body)
        assert TOKEN in body and URL in body
    assert all(line == "%end" or not line.startswith("%end") for line in rendered.files["ks.cfg"].splitlines())


@pytest.mark.parametrize("version", ["RHEL8", "RHEL9", "RHEL10"])
def test_default_kickstart_valid_for_rhel_8_to_10(version: str) -> None:
    _validate_kickstart(_render("kickstart", "rocky", None, STATIC).files["ks.cfg"], version)


def test_kickstart_static_network_fields() -> None:
    parser = _validate_kickstart(_render("kickstart", "rhel", "9", STATIC).files["ks.cfg"])
    nic1, nic2 = (nd for nd in parser.handler.network.network if nd.device)
    assert (nic1.bootProto, nic1.ip, nic1.netmask, nic1.gateway, nic1.nameserver) == (
        "static", "10.0.0.5", "255.255.255.0", "10.0.0.1", "10.0.0.2,10.0.0.3")
    assert (nic2.ip, nic2.vlanid) == ("192.168.10.7", "110")
    (post,) = [s.script for s in parser.handler.scripts if "authorized_keys" in s.script]
    assert f"printf '%s\\n' '{KEY}' >> /root/.ssh/authorized_keys" in post


def test_kickstart_hashes_a_clear_password_and_never_prints_it() -> None:
    text = _render("kickstart", None, None, {**DHCP, "RootPassword": "pl41n-text"}).files["ks.cfg"]
    assert "pl41n-text" not in text
    parser = _validate_kickstart(text)
    digest = parser.handler.rootpw.password
    salt = digest.split("$")[2]
    assert digest == sha512_crypt("pl41n-text", salt)


@pytest.mark.parametrize(("name", "kind", "os", "version", "attributes"),
                         [c for c in CASES if c[1] == "autoinstall"],
                         ids=[c[0] for c in CASES if c[1] == "autoinstall"])
def test_autoinstall_is_yaml(name: str, kind: str, os: str | None, version: str | None,
                             attributes: dict[str, Any]) -> None:
    files = _render(kind, os, version, attributes).files
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    assert files["user-data"].startswith("#cloud-config\n")
    user_data = yaml.safe_load(files["user-data"])
    auto = user_data["autoinstall"]
    assert list(user_data) == ["autoinstall"] and auto["version"] == 1
    assert auto["identity"]["password"] == ROOT_HASH
    assert auto["ssh"]["authorized-keys"][0] == KEY
    for key, event in (("early-commands", "start"), ("late-commands", "success"), ("error-commands", "failure")):
        (command,) = auto[key]
        argv = shlex.split(command)
        assert argv[0] == "curl" and URL in argv and f"Authorization: Bearer {TOKEN}" in argv
        assert f'{{"event": "{event}"}}' in argv
    network = yaml.safe_load(files["network-config"])
    assert network == auto["network"] and network["version"] == 2
    macs = [eth["match"]["macaddress"] for eth in network["ethernets"].values()]
    assert macs == [nic["mac"].lower().replace("-", ":") for k, nic in sorted(attributes.items())
                    if k.startswith("NIC")]
    meta = yaml.safe_load(files["meta-data"])
    assert set(meta) == {"instance-id", "local-hostname"}
    assert meta["local-hostname"] == attributes["Hostname"].split(".")[0]


def test_autoinstall_static_network_and_vlan() -> None:
    network = yaml.safe_load(_render("autoinstall", "ubuntu", None, STATIC).files["network-config"])
    nic1 = network["ethernets"]["nic1"]
    assert nic1["addresses"] == ["10.0.0.5/24"] and nic1["routes"] == [{"to": "default", "via": "10.0.0.1"}]
    assert nic1["nameservers"] == {"addresses": ["10.0.0.2", "10.0.0.3"], "search": ["example.com"]}
    assert network["ethernets"]["nic2"] == {"match": {"macaddress": "52:54:00:ab:cd:ef"}, "set-name": "nic2",
                                            "dhcp4": False}
    assert network["vlans"]["nic2.110"]["addresses"] == ["192.168.10.7/24"]


@pytest.mark.parametrize(("name", "kind", "os", "version", "attributes"),
                         [c for c in CASES if c[1] == "unattend"], ids=[c[0] for c in CASES if c[1] == "unattend"])
def test_unattend_parses_with_components_and_namespaces(name: str, kind: str, os: str | None, version: str | None,
                                                        attributes: dict[str, Any]) -> None:
    text = _render(kind, os, version, attributes).files["unattend.xml"]
    assert f'xmlns="{UNATTEND_NS}"' in text and f'xmlns:wcm="{WCM_NS}"' in text
    passes = _unattend_components(text)
    names = {p: [c.get("name") for c in comps] for p, comps in passes.items()}
    expected_specialize = ["Microsoft-Windows-Shell-Setup", "Microsoft-Windows-TCPIP", "Microsoft-Windows-DNS-Client"]
    if "JoinDomain" in attributes:
        expected_specialize.append("Microsoft-Windows-UnattendedJoin")
    assert names == {"specialize": expected_specialize,
                     "oobeSystem": ["Microsoft-Windows-International-Core", "Microsoft-Windows-Shell-Setup"]}
    for component in passes["specialize"] + passes["oobeSystem"]:
        assert {k: component.get(k) for k in ("processorArchitecture", "publicKeyToken", "language",
                                              "versionScope")} == {
            "processorArchitecture": "amd64", "publicKeyToken": "31bf3856ad364e35", "language": "neutral",
            "versionScope": "nonSxS"}
    ns = {"u": UNATTEND_NS}
    oobe_shell = passes["oobeSystem"][1]
    admin = oobe_shell.find("u:UserAccounts/u:AdministratorPassword", ns)
    assert admin is not None
    assert admin.findtext("u:Value", namespaces=ns) == windows_password("Adm1n!pass", "AdministratorPassword")
    assert admin.findtext("u:PlainText", namespaces=ns) == "false"
    assert "Adm1n!pass" not in text
    command = oobe_shell.findtext("u:FirstLogonCommands/u:SynchronousCommand/u:CommandLine", namespaces=ns)
    assert command is not None
    script = base64.b64decode(command.rsplit(" ", 1)[1]).decode("utf-16-le")
    assert f"-Uri '{URL}'" in script and f"'Bearer {TOKEN}'" in script and '"success"' in script
    identifiers = [e.text for e in passes["specialize"][1].iter(f"{{{UNATTEND_NS}}}Identifier")
                   if e.text and "-" in e.text]
    assert identifiers == [nic["mac"].upper().replace(":", "-") for k, nic in sorted(attributes.items())
                           if k.startswith("NIC")]


def test_unattend_static_addresses_and_join() -> None:
    text = _render("unattend", "windows", "2016", WINDOWS_JOIN).files["unattend.xml"]
    root = _xml(text.encode())
    ns = {"u": UNATTEND_NS}
    assert [e.text for e in root.iterfind(".//u:UnicastIpAddresses/u:IpAddress", ns)] == [
        "10.0.0.5/24", "192.168.10.7/24"]
    assert root.findtext(".//u:NextHopAddress", namespaces=ns) == "10.0.0.1"
    join = root.find(".//u:Identification", ns)
    assert join is not None
    assert join.findtext("u:JoinDomain", namespaces=ns) == "corp.example"
    assert join.findtext("u:Credentials/u:Password", namespaces=ns) == "J0in!"
    assert root.findtext(".//u:ComputerName", namespaces=ns) == "WIN01"
    assert root.findtext(".//u:UILanguage", namespaces=ns) == "de-DE"


def test_preseed_lines() -> None:
    text = _render("preseed", "debian", "12", STATIC).files["preseed.cfg"]
    lines = {parts[1]: parts[3] if len(parts) > 3 else "" for parts in
             (line.split(" ", 3) for line in text.splitlines() if line.startswith("d-i "))}
    assert lines["netcfg/choose_interface"] == "52:54:00:12:34:56"
    assert lines["netcfg/get_ipaddress"] == "10.0.0.5"
    assert lines["netcfg/get_nameservers"] == "10.0.0.2 10.0.0.3"
    assert lines["passwd/root-password-crypted"] == ROOT_HASH
    assert lines["netcfg/get_hostname"] == "web01" and lines["netcfg/get_domain"] == "example.com"
    assert lines["time/zone"] == "Europe/Berlin" and lines["debian-installer/locale"] == "de_DE.UTF-8"
    # Debian 12's d-i busybox wget takes no --header, --post-data or -T: a plain GET, the token in the path.
    early = shlex.split(lines["preseed/early_command"])
    assert early == ["wget", "-q", "-O", "/dev/null", f"{URL}/{TOKEN}/start", "||", "true"]
    late = shlex.split(lines["preseed/late_command"])
    assert f"{URL}/{TOKEN}/success" in late and f"{URL}/{TOKEN}/failure" in late
    assert not any(arg.startswith("--") for arg in early + late)
    dhcp = _render("preseed", None, None, DHCP).files["preseed.cfg"]
    assert "d-i netcfg/disable_autoconfig boolean false" in dhcp and "get_ipaddress" not in dhcp


# --- passwords ------------------------------------------------------------------------------

@pytest.mark.parametrize(("password", "salt"), [("s3cret", "abcdefgh"), ("a", "x"), ("ünïcödé pass", "./09AZaz"),
                                                ("x" * 200, "saltsaltsaltsalt")])
def test_sha512_crypt_matches_openssl(password: str, salt: str) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl (Debian base system) is needed to check the hash against"
    expected = subprocess.run([openssl, "passwd", "-6", "-salt", salt, "-stdin"], input=password.encode(),
                              capture_output=True, check=True).stdout.decode().strip()
    assert sha512_crypt(password, salt) == expected


def test_sha512_crypt_spec_vectors() -> None:
    # From Drepper's specification (SHA-crypt.txt).
    assert sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")
    assert sha512_crypt("Hello world!", "saltstringsaltstring", rounds=10000) == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/"
        "YTBmSK6H9qs/y3RnOaw5v.")


def test_sha512_crypt_random_salt_and_bad_salt() -> None:
    first, second = sha512_crypt("pw"), sha512_crypt("pw")
    assert first.startswith("$6$") and first != second
    assert sha512_crypt("pw", first.split("$")[2]) == first
    with pytest.raises(ValueError, match="salt"):
        sha512_crypt("pw", "bad salt!")


def test_windows_password_encoding() -> None:
    encoded = windows_password("P@ss", "AdministratorPassword")
    assert base64.b64decode(encoded).decode("utf-16-le") == "P@ssAdministratorPassword"
    assert encoded == "UABAAHMAcwBBAGQAbQBpAG4AaQBzAHQAcgBhAHQAbwByAFAAYQBzAHMAdwBvAHIAZAA="


# --- template choice and errors -------------------------------------------------------------

@pytest.mark.parametrize(("kind", "os", "version", "template"), [
    ("kickstart", "rhel", "7", "kickstart/rhel-7-x86_64"),
    ("kickstart", "rhel", "9", "kickstart/default"),
    ("kickstart", "RHEL", None, "kickstart/default"),
    ("kickstart", None, None, "kickstart/default"),
    ("autoinstall", "ubuntu", "22.04", "autoinstall/default"),
    ("unattend", "windows", "2019", "unattend/default"),
])
def test_most_specific_template_wins(kind: str, os: str | None, version: str | None, template: str) -> None:
    assert _render(kind, os, version, STATIC | {"Hostname": "host1"}).template == template


def test_rhel7_arm_falls_back_to_default() -> None:
    rendered = render("kickstart", os="rhel", version="7", arch="aarch64", attributes=STATIC,
                      callback_url=URL, deploy_token=TOKEN)
    assert rendered.template == "kickstart/default"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "autoyast"}, r"unknown kind 'autoyast'; known kinds: autoinstall, kickstart, preseed, unattend"),
    ({"kind": "kickstart", "os": "solaris"}, r"no templates for os 'solaris'; known: almalinux, centos"),
    ({"kind": "unattend", "os": "windows", "version": "2012"}, r"supported: 2016, 2019, 2022, 2025"),
    ({"kind": "unattend", "arch": "aarch64"}, r"does not support arch 'aarch64'"),
    ({"kind": "kickstart", "os": "../../etc"}, r"os must be a short token"),
])
def test_unknown_kind_os_version_arch(kwargs: dict[str, Any], message: str) -> None:
    kind = kwargs.pop("kind")
    with pytest.raises(RenderError, match=message):
        render(kind, attributes=STATIC, callback_url=URL, deploy_token=TOKEN, **kwargs)


@pytest.mark.parametrize(("change", "message"), [
    ({"Hostname": None}, "missing attribute 'Hostname'"),
    ({"RootPassword": None, "AdminPassword": None}, "missing attribute 'RootPassword'"),
    ({"NIC1": None}, "missing attribute 'NIC1'"),
    ({"NIC1": {"dhcp": True}}, "missing attribute 'NIC1.mac'"),
    ({"NIC1": {"mac": "52:54:00:12:34:56", "dhcp": False}}, "missing attribute 'NIC1.ipaddress'"),
    ({"NIC1": {"mac": "52:54:00:12:34:56", "dhcp": False, "ipaddress": "10.0.0.5"}},
     "missing attribute 'NIC1.netmask'"),
    ({"NIC1": {"mac": "52:54:00:12:34:56", "ipaddress": "10.0.0.5/24", "gateway": "10.9.9.9"}}, "outside"),
    ({"NIC1": {"mac": "52:54:00:12:34:56", "dhcp": True, "vlanid": "5000"}}, "VLAN id"),
    ({"NIC1": {"mac": "52:54:00:12:34:56", "dhcp": True, "dns": "8.8.8.8; reboot"}}, "not an IPv4 address"),
    ({"Hostname": "bad_host!"}, "'Hostname' is not a DNS name"),
    ({"SSHKeys": "not a key"}, "'SSHKeys' is not an OpenSSH public key"),
    ({"Timezone": "UTC\nrootpw x"}, "one line"),
    ({"Locale": "klingon!"}, "'Locale' is not a locale"),
])
def test_bad_attributes_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        _render("kickstart", None, None, {**STATIC, **change})


@pytest.mark.parametrize("mac", ["52:54:00:12:34", "52:54:00:12:34:5g", "52:54-00:12:34:56", "$(reboot)",
                                 "52:54:00:12:34:56 --bootproto=dhcp", "52:54:00:12:34:56\n"])
def test_a_mac_that_is_not_a_mac_is_rejected(mac: str) -> None:
    for kind in ("kickstart", "preseed", "autoinstall", "unattend"):
        with pytest.raises(RenderError, match=r"NIC1\.mac"):
            _render(kind, None, None, {**STATIC, "NIC1": {"mac": mac, "dhcp": True}})


def test_windows_needs_clear_password_and_short_name() -> None:
    with pytest.raises(RenderError, match="AdminPassword"):
        _render("unattend", None, None, {**STATIC, "AdminPassword": None})
    with pytest.raises(RenderError, match="15 at most"):
        _render("unattend", None, None, {**STATIC, "Hostname": "a-very-long-hostname"})


@pytest.mark.parametrize(("url", "token"), [("ftp://x/cb", TOKEN), ("https://x/cb y", TOKEN), (URL, "a b"),
                                            (URL, ""), ("", TOKEN)])
def test_bad_callback(url: str, token: str) -> None:
    with pytest.raises(RenderError, match=r"callback_url|deploy_token"):
        _render("kickstart", None, None, STATIC, url=url, token=token)


# --- hostile values -------------------------------------------------------------------------

TEMPLATE_CODE = ["{{ 7*7 }}", "{% for x in range(3) %}X{% endfor %}", "{{ ''.__class__.__mro__ }}"]


@pytest.mark.parametrize("code", TEMPLATE_CODE)
def test_values_are_data_not_template_code(code: str) -> None:
    attributes = {**WINDOWS_JOIN, "SSHKeys": [f"{KEY} {code}"], "RegisteredOwner": code, "DomainJoinPassword": code}
    for kind in ("kickstart", "preseed", "autoinstall"):
        files = _render(kind, None, None, attributes).files
        text = "".join(files.values())
        assert "49" not in text.replace(TOKEN, "") and "XXX" not in text and "<class" not in text
        if kind == "kickstart":
            scripts = "".join(s.script for s in _validate_kickstart(files["ks.cfg"]).handler.scripts)
            assert shlex.quote(f"{KEY} {code}") in scripts
        if kind == "autoinstall":
            assert yaml.safe_load(files["user-data"])["autoinstall"]["ssh"]["authorized-keys"] == [f"{KEY} {code}"]
    root = _xml(_render("unattend", None, None, attributes).files["unattend.xml"].encode())
    ns = {"u": UNATTEND_NS}
    assert root.findtext(".//u:RegisteredOwner", namespaces=ns) == code
    assert root.findtext(".//u:Credentials/u:Password", namespaces=ns) == code


SHELL_HOSTILE = "x'; touch /tmp/pwned; echo '$(reboot)`id`\"$HOME\"&&|;<>*?"


def _shell_words_containing(text: str, needle: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if needle in line]


def test_shell_metacharacters_are_quoted_in_kickstart_scripts() -> None:
    token = "t0k$(reboot);`id`'\"|&"
    url = "https://ingot.example/cb?a=1&b=$(reboot)';x"
    key = f"{KEY} {SHELL_HOSTILE}"
    text = _render("kickstart", "rhel", "9", {**STATIC, "SSHKeys": [key]}, url=url, token=token).files["ks.cfg"]
    parser = _validate_kickstart(text)
    for script in parser.handler.scripts:
        for line in script.script.splitlines():
            if line.startswith("curl "):
                argv = shlex.split(line)
                assert argv[-3:] == [url, "||", "true"]
                assert f"Authorization: Bearer {token}" in argv
            if line.startswith("printf "):
                assert shlex.split(line) == ["printf", "%s\\n", key, ">>", "/root/.ssh/authorized_keys"]
    assert sum(1 for s in parser.handler.scripts if "curl " in s.script) == 3


def test_shell_metacharacters_are_quoted_in_preseed_and_autoinstall() -> None:
    token = "t0k$(reboot);`id`'\"|&"
    key = f"{KEY} {SHELL_HOSTILE}"
    preseed = _render("preseed", None, None, {**STATIC, "SSHKeys": [key]}, token=token).files["preseed.cfg"]
    late = next(line for line in preseed.splitlines() if line.startswith("d-i preseed/late_command"))
    argv = shlex.split(late.split(" ", 3)[3])
    assert key in argv and f"{URL}/t0k%24%28reboot%29%3B%60id%60%27%22%7C%26/success" in argv
    assert "/tmp/pwned;" not in argv and "touch" not in argv
    user_data = _render("autoinstall", None, None, STATIC, token=token).files["user-data"]
    for key_name in ("early-commands", "late-commands", "error-commands"):
        (command,) = yaml.safe_load(user_data)["autoinstall"][key_name]
        assert f"Authorization: Bearer {token}" in shlex.split(command)


def test_xml_injection_is_escaped() -> None:
    hostile = "</Value><X>injected</X><Value>&amp;\"'"
    attributes = {**WINDOWS_JOIN, "RegisteredOwner": hostile, "DomainJoinPassword": hostile,
                  "DomainJoinUser": hostile, "AdminPassword": hostile}
    token = "a<b>&'\""
    text = _render("unattend", None, None, attributes, token=token).files["unattend.xml"]
    root = _xml(text.encode())
    ns = {"u": UNATTEND_NS}
    assert root.find(".//u:X", ns) is None and "<X>" not in text
    assert root.findtext(".//u:RegisteredOwner", namespaces=ns) == hostile
    assert root.findtext(".//u:Credentials/u:Username", namespaces=ns) == hostile
    command = root.findtext(".//u:CommandLine", namespaces=ns)
    assert command is not None
    script = base64.b64decode(command.rsplit(" ", 1)[1]).decode("utf-16-le")
    assert "'Bearer a<b>&''\"'" in script  # PowerShell single-quoted, quote doubled


@pytest.mark.parametrize("hostile", ["x: y", "x\ninjected: true", "x # comment", "'quoted'", "- item", "{a: b}",
                                     "&anchor *ref !!python/object:os.system"])
def test_yaml_injection_cannot_add_keys(hostile: str) -> None:
    token = hostile.replace(" ", "").replace("\n", "")
    key = f"{KEY} {hostile}"
    attributes = {**STATIC, "SSHKeys": [key] if "\n" not in hostile else [KEY], "Timezone": "UTC"}
    if "\n" in hostile:
        with pytest.raises(RenderError, match="one line"):
            _render("autoinstall", None, None, {**STATIC, "SSHKeys": [key]})
        with pytest.raises(RenderError, match="one line"):
            _render("autoinstall", None, None, STATIC, token=hostile)
        return
    files = _render("autoinstall", None, None, attributes, token=token).files
    user_data = yaml.safe_load(files["user-data"])
    auto = user_data["autoinstall"]
    assert list(user_data) == ["autoinstall"]
    assert set(auto) == {"version", "locale", "keyboard", "timezone", "identity", "ssh", "network", "storage",
                         "early-commands", "late-commands", "error-commands"}
    assert auto["ssh"]["authorized-keys"] == [key]
    assert set(yaml.safe_load(files["meta-data"])) == {"instance-id", "local-hostname"}


def test_sandbox_blocks_internals() -> None:
    env = environment()
    with pytest.raises(SecurityError):
        env.from_string("{{ ''.__class__.__mro__ }}").render()
    with pytest.raises(SecurityError):
        env.from_string("{{ x.append(1) }}").render(x=[])  # immutable sandbox: no mutation


def test_file_names_are_fixed() -> None:
    attributes = {**STATIC, "Hostname": "evil", "user-data": "x", "../../etc/passwd": "y"}
    assert sorted(_render("autoinstall", None, None, attributes).files) == ["meta-data", "network-config",
                                                                            "user-data"]
    assert list(_render("kickstart", None, None, attributes).files) == ["ks.cfg"]
    assert list(_render("preseed", None, None, attributes).files) == ["preseed.cfg"]
    assert list(_render("unattend", None, None, attributes).files) == ["unattend.xml"]


def test_kickstart_newline_in_value_cannot_add_commands() -> None:
    with pytest.raises(RenderError, match="one line"):
        _render("kickstart", None, None, {**STATIC, "SSHKeys": [f"{KEY} x\u2028%post"]})
    with pytest.raises(KickstartError):  # the validator itself is live: garbage fails
        _validate_kickstart("notacommand --x\n")


if __name__ == "__main__":
    _write_golden()
    print(f"wrote {GOLDEN}")


# --- the kickstart check on every render, and HPE's own validator ----------------------------------------

def test_a_kickstart_that_does_not_parse_fails_the_render() -> None:
    check_kickstart("text\nrootpw --iscrypted x\n", "RHEL9")
    with pytest.raises(RenderError, match=r"not valid RHEL9 kickstart syntax: .* line 2 .*Unknown command: bogus"):
        check_kickstart("text\nbogus --really\n", "RHEL9")
    assert syntax_for("8.10", "kickstart/default") == "RHEL8"
    assert syntax_for(None, "kickstart/rhel-7-x86_64") == "RHEL7"
    assert syntax_for("40", "kickstart/default") == "RHEL9"  # Fedora's numbers are not RHEL's


def test_every_golden_kickstart_passes_ksvalidator() -> None:
    """The command-line validator (pykickstart's ``ksvalidator``), as an admin would run it."""
    ksvalidator = Path(sys.executable).with_name("ksvalidator")
    kickstarts = sorted(GOLDEN.glob("kickstart-*/ks.cfg"))
    assert len(kickstarts) == 3
    for path in kickstarts:
        syntax = "RHEL7" if "rhel7" in path.parent.name else "RHEL9"
        result = subprocess.run([str(ksvalidator), "-e", "-v", syntax, str(path)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, f"{path.parent.name}: {result.stdout}{result.stderr}"
