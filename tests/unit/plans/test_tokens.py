"""Plan-script tokens: discovery, one-pass substitution, masking and the guestfish guard."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plans.attributes import parse_attributes
from plans.tokens import (
    MASK,
    TokenRef,
    UnresolvedTokens,
    UnsafeValue,
    discover,
    guestfish_safe,
    mask,
    names,
    substitute,
)

BUNDLES = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "bundles"
BUNDLE_NAMES = ("HPE-ESXi-6.7-2021-01-21-v5.2.zip", "HPE_Foundation_Artifacts-5_00.zip")

idents = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
defaults = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="@\n"), max_size=20)


def keys(text: str) -> list[str]:
    return [r.key for r in discover(text)]


# --- discovery ---------------------------------------------------------------------------------
def test_plain_token() -> None:
    assert discover("hostname @Hostname@\n") == [TokenRef("Hostname", None, None, (9, 19))]


def test_token_with_default() -> None:
    [ref] = discover('if [ "@SSH:enabled@" = "enabled" ]')
    assert (ref.name, ref.sub, ref.default) == ("SSH", None, "enabled")


def test_subfield_with_default() -> None:
    [ref] = discover("esxcfg-vswitch vSwitch1 -v @ManagementNIC.vlanid:0@ -p x")
    assert (ref.name, ref.sub, ref.default, ref.key) == ("ManagementNIC", "vlanid", "0", "ManagementNIC.vlanid")


def test_default_may_hold_spaces_colons_and_unicode_but_may_be_empty() -> None:
    assert [r.default for r in discover("@A:a b:c/d é@ @B:@")] == ["a b:c/d é", ""]


def test_appliance_token() -> None:
    [ref] = discover('sed -i "s/$ini_ip/@_Initiator1.ip@/g"')
    assert ref.appliance and ref.key == "_Initiator1.ip"


def test_calm_macro() -> None:
    refs = discover("echo @@{calm_application_name}@@ @@{Service1.address}@@")
    assert [(r.key, r.calm) for r in refs] == [("calm_application_name", True), ("Service1.address", True)]
    assert refs[0].span == (5, 32)


def test_adjacent_tokens() -> None:
    assert keys("@HostName@.@DomainName@") == ["HostName", "DomainName"]
    assert keys("@A@@B@") == ["A", "B"]


@pytest.mark.parametrize(
    "text",
    [
        "admin@example.com",
        "mail root@localhost now",
        "a@b.com and c@d.com",
        "@@",
        "@@ @@",
        "@",
        "@ @",
        "@1abc@",
        "@a-b@",
        "@a.b.c@",
        "@a.@",
        "@.b@",
        "@:x@",
        "@a b@",
        "@a\nb@",
        "@A:x\ny@",
        "@@{}@@",
        "@@{a b}@@",
        "@@{a.b.c}@@",
        "@@{a}@",
        "user@host:/path",
        "{{ hostname }}",
        "@Hostname",
        "Hostname@",
    ],
)
def test_not_tokens(text: str) -> None:
    assert discover(text) == []


def test_email_before_a_token_does_not_swallow_it() -> None:
    assert keys("contact admin@example.com about @Hostname@") == ["Hostname"]


def test_scan_is_left_to_right_without_overlap() -> None:
    assert keys("@A@B@") == ["A"]
    assert keys("x@y@") == ["y"]  # the grammar's limit: `@y@` is a token wherever it stands


def test_names_sorted_unique_without_appliance_names_by_default() -> None:
    text = "@b@ @A.mac@ @A.ipaddress@ @_Initiator1.ip@ @b:1@ @@{calm}@@"
    assert names(text) == ["A", "b", "calm"]
    assert names(text, appliance=True) == ["A", "_Initiator1", "b", "calm"]


@given(name=idents, sub=st.none() | idents, default=st.none() | defaults, before=st.sampled_from(["", " ", "=", '"']))
def test_discover_round_trip(name: str, sub: str | None, default: str | None, before: str) -> None:
    token = "@" + name + (f".{sub}" if sub else "") + (f":{default}" if default is not None else "") + "@"
    text = f"{before}{token}\n"
    [ref] = discover(text)
    assert (ref.name, ref.sub, ref.default) == (name, sub, default)
    assert text[ref.span[0] : ref.span[1]] == token


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="@")))
def test_text_without_at_has_no_tokens_and_is_unchanged(text: str) -> None:
    assert discover(text) == []
    assert substitute(text, {}).text == text


# --- substitution ------------------------------------------------------------------------------
def test_substitute_plain_default_and_nic() -> None:
    nic = {"ipaddress": "10.0.0.5", "netmask": "255.255.255.0", "mac": "aa:bb:cc:dd:ee:ff", "dhcp": False}
    text = (
        "host @Hostname@.@DomainName@\nssh @SSH:enabled@\n"
        "ip @ManagementNIC.ipaddress@/@ManagementNIC.netmask@ vlan @ManagementNIC.vlanid:0@ "
        "dhcp @ManagementNIC.dhcp@ gw '@ManagementNIC.gateway@'"
    )
    result = substitute(text, {"Hostname": "esx01", "DomainName": "lab.local", "ManagementNIC": nic})
    assert result.text == ("host esx01.lab.local\nssh enabled\nip 10.0.0.5/255.255.255.0 vlan 0 dhcp false gw ''")
    assert result.used["SSH"] == "enabled"
    assert result.used["ManagementNIC.gateway"] == ""


def test_flattened_nic_values() -> None:
    values = {"ManagementNIC.ipaddress": "10.0.0.5", "ManagementNIC.vlanid": 12}
    assert substitute("@ManagementNIC.ipaddress@ @ManagementNIC.vlanid:0@", values).text == "10.0.0.5 12"


def test_dns_alias() -> None:
    assert substitute("@N.dns@ @N.dns1@", {"N": {"dns1": "1.1.1.1"}}).text == "1.1.1.1 1.1.1.1"
    assert substitute("@N.dns1@", {"N.dns": "8.8.8.8"}).text == "8.8.8.8"


def test_default_used_for_missing_and_empty_values() -> None:
    assert substitute("@A:x@ @B:y@ @C:z@", {"B": "", "C": None}).text == "x y z"
    assert substitute("[@A:@]", {}).text == "[]"


def test_empty_value_without_default_inserts_nothing() -> None:
    assert substitute("[@Password@]", {"Password": ""}).text == "[]"


def test_value_types_become_text() -> None:
    values = {"T": True, "F": False, "I": 512, "X": 1.5}
    assert substitute("@T@ @F@ @I@ @X@", values).text == "true false 512 1.5"


def test_unresolved_tokens_are_all_listed() -> None:
    with pytest.raises(UnresolvedTokens) as info:
        substitute("@B@ @A@ @B@ @N.mac@ @Ok@ @Nic@ @@{calm}@@", {"Ok": "1", "Nic": {"mac": "aa"}})
    assert info.value.keys == ["A", "B", "N.mac", "Nic", "calm"]
    assert info.value.names == ["A", "B", "N", "Nic", "calm"]
    assert "A, B, N.mac, Nic, calm" in info.value.message
    assert info.value.http_status == 400


def test_scalar_value_for_a_subfield_is_unresolved() -> None:
    with pytest.raises(UnresolvedTokens):
        substitute("@Hostname.mac@", {"Hostname": "esx01"})


def test_appliance_names_come_only_from_appliance_values() -> None:
    with pytest.raises(UnresolvedTokens):
        substitute("@_Initiator1.ip@", {"_Initiator1.ip": "6.6.6.6", "_Initiator1": {"ip": "6.6.6.6"}})
    result = substitute(
        "@_Initiator1.ip@ @_Initiator2.ip@",
        {},
        appliance_values={"_Initiator1": {"ip": "10.1.1.1"}, "_Initiator2.ip": "10.1.1.2"},
    )
    assert result.text == "10.1.1.1 10.1.1.2"


def test_calm_macros_are_substituted() -> None:
    assert substitute("echo @@{name}@@ @@{Nic.ipaddress}@@", {"name": "web", "Nic": {"ipaddress": "1.2.3.4"}}).text == (
        "echo web 1.2.3.4"
    )


def test_inserted_tokens_are_not_substituted_again() -> None:
    values = {"A": "@B@", "B": "secret", "C": "@@{A}@@", "D": "@_Initiator1.ip@"}
    assert substitute("@A@ @C@ @D@", values).text == "@B@ @@{A}@@ @_Initiator1.ip@"


def test_template_syntax_and_unicode_are_inserted_as_is() -> None:
    values = {"A": "{{ 7*7 }} {% raw %}", "B": "héllo ✓ 日本"}
    assert substitute("@A@|@B@", values).text == "{{ 7*7 }} {% raw %}|héllo ✓ 日本"


def test_text_outside_tokens_is_untouched() -> None:
    text = "mail admin@example.com; echo @@ ; x@y.z @Hostname@ end"
    assert substitute(text, {"Hostname": "h"}).text == "mail admin@example.com; echo @@ ; x@y.z h end"


@given(value=st.text(), other=st.text())
def test_any_value_is_inserted_verbatim_once(value: str, other: str) -> None:
    result = substitute("a @A@ b @B@", {"A": value, "B": other})
    assert result.text == f"a {value} b {other}"


def test_insertions_point_at_the_values() -> None:
    result = substitute("x @A@ y @B@ @A@", {"A": "αβ", "B": ""})
    assert [(i.key, result.text[i.span[0] : i.span[1]]) for i in result.insertions] == [
        ("A", "αβ"),
        ("B", ""),
        ("A", "αβ"),
    ]


# --- masking -----------------------------------------------------------------------------------
def test_masked_hides_secret_tokens_by_span() -> None:
    result = substitute("echo '@Password@' | passwd; user @User@ host a", {"Password": "a", "User": "admin"})
    assert result.masked({"Password"}) == f"echo '{MASK}' | passwd; user admin host a"
    assert result.masked(set()) == result.text


def test_masked_hides_secret_nic_subfields_by_base_name() -> None:
    result = substitute("@S.mac@ @T@", {"S": {"mac": "m"}, "T": "t"})
    assert result.masked(["S"]) == f"{MASK} t"


def test_mask_longest_first_and_whole_occurrences() -> None:
    assert mask("pw=hunter2 short=hunter x", ["hunter", "hunter2"]) == f"pw={MASK} short={MASK} x"
    assert mask("nothing secret", []) == "nothing secret"
    assert mask("keep", [""]) == "keep"
    assert mask("a.b a+b", ["a.b"]) == f"{MASK} a+b"  # regex characters are literal


@given(text=st.text(), secret=st.text(min_size=1).filter(lambda s: "*" not in s))
def test_mask_leaves_no_secret(text: str, secret: str) -> None:
    assert secret not in mask(text + secret + text, [secret])


# --- guestfish guard ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["a\nb", "END\n!rm -rf /", "a\rb", "a\x00b", "\n"])
def test_guestfish_safe_refuses_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(UnsafeValue) as info:
        guestfish_safe(bad, "Password")
    assert info.value.name == "Password"
    assert bad not in info.value.message


@pytest.mark.parametrize("ok", ["", "plain", "with spaces and 'quotes' \"double\"", "tab\tok", "é✓", "{{ x }}"])
def test_guestfish_safe_accepts_one_line_values(ok: str) -> None:
    assert guestfish_safe(ok) == ok


def test_substitute_with_guard_refuses_newline_injection() -> None:
    script = "upload -<<END /etc/hostname\n@Hostname@\nEND\n"
    with pytest.raises(UnsafeValue) as info:
        substitute(script, {"Hostname": "x\nEND\n!reboot"}, guard=guestfish_safe)
    assert info.value.name == "Hostname"
    assert substitute(script, {"Hostname": "esx01"}, guard=guestfish_safe).text == (
        "upload -<<END /etc/hostname\nesx01\nEND\n"
    )


def test_guard_also_sees_defaults() -> None:
    assert substitute("@A:x@", {}, guard=lambda v, k: v.upper()).text == "X"


# --- HPE's published bundles -------------------------------------------------------------------
def _bundle(zip_name: str, tmp_path: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    path = BUNDLES / zip_name
    if not path.exists():
        pytest.skip(f"HPE's sample bundle {path} is absent (see /work/shared/reference/bundles/README.md)")
    target = tmp_path / zip_name
    with zipfile.ZipFile(path) as archive:
        archive.extractall(target)
    scripts = {p.name.split("_")[0]: json.loads(p.read_text()) for p in target.glob("*_planscript.json")}
    plans = [json.loads(p.read_text()) for p in target.glob("*_buildplan.json")]
    return scripts, plans


@pytest.mark.parametrize("zip_name", BUNDLE_NAMES)
def test_every_token_in_hpe_scripts_is_discovered_and_nothing_else(zip_name: str, tmp_path: Path) -> None:
    scripts, _ = _bundle(zip_name, tmp_path)
    assert scripts
    for script in scripts.values():
        content = str(script["content"])
        # A loose scan: every `@...@` on one line; in HPE's scripts each one is a token.
        loose = re.findall(r"@[^@\n]+@", content)
        assert [content[r.span[0] : r.span[1]] for r in discover(content)] == loose, script["name"]


@pytest.mark.parametrize("zip_name", BUNDLE_NAMES)
def test_hpe_build_plans_declare_exactly_the_attributes_their_scripts_use(zip_name: str, tmp_path: Path) -> None:
    """Names the scripts use (appliance-supplied ``_`` names apart) == the plan's customAttributes.

    HPE's bundles agree everywhere: the ESXi plans also use ``_Initiator1``/``_Initiator2``,
    which the appliance supplies and no plan declares; the Foundation capture and "as is" plans
    have no steps and no attributes.
    """
    scripts, plans = _bundle(zip_name, tmp_path)
    assert plans
    for plan in plans:
        used: set[str] = set()
        supplied: set[str] = set()
        for step in plan["buildStep"] or []:
            content = str(scripts[str(step["planScriptUri"]).rsplit("/", 1)[-1]]["content"])
            used |= set(names(content))
            supplied |= set(names(content, appliance=True)) - set(names(content))
        declared = {a.name for a in parse_attributes(plan["customAttributes"] or [])}
        assert used == declared, plan["name"]
        assert supplied <= {"_Initiator1", "_Initiator2"}, plan["name"]
        if "ESXi" in str(plan["name"]):
            assert supplied == {"_Initiator1", "_Initiator2"}


def test_hpe_esxi_script_substitutes_with_a_dhcp_nic(tmp_path: Path) -> None:
    scripts, _ = _bundle(BUNDLE_NAMES[0], tmp_path)
    [script] = [s for s in scripts.values() if "configure management 1st NIC" in str(s["name"])]
    values = {
        "Hostname": "esx01",
        "DomainName": "lab.local",
        "ManagementNIC": {"mac": "aa:bb:cc:dd:ee:ff", "dhcp": True},
    }
    text = substitute(str(script["content"]), values, guard=guestfish_safe).text
    assert '"@' not in text and "esx01" in text and "-v 0 -p ManagementNetwork1" in text
    assert '[[ "" =~' in text  # the ipaddress of a DHCP NIC is empty, so the script picks DHCP
