"""Custom attributes: parsing HPE's definitions and validating values per type and constraint."""

from __future__ import annotations

import json
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.errors import InvalidInput
from plans.attributes import (
    AttributeDefinitionInvalid,
    AttributeInvalid,
    AttributesInvalid,
    AttributeType,
    CustomAttribute,
    is_secret,
    normalize_mac,
    normalize_netmask,
    parse_attributes,
    validate,
    validate_all,
)

BUNDLES = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "bundles"

NIC_CONSTRAINTS = (
    '{"ipv4static":true,"ipv4dhcp":true,"ipv4disable":false,'
    '"parameters":["dns1","dns2","gateway","ipaddress","mac","netmask","vlanid"]}'
)


def attr(name: str, type_: str, constraints: dict[str, Any] | str | None = None, value: Any = "") -> CustomAttribute:
    raw = json.dumps(constraints) if isinstance(constraints, dict) else constraints
    [parsed] = parse_attributes([{"name": name, "type": type_, "value": value, "constraints": raw}])
    return parsed


def reason(attribute: CustomAttribute, value: object, **kw: Any) -> str:
    with pytest.raises(AttributeInvalid) as info:
        validate(attribute, value, **kw)
    assert info.value.name == attribute.name
    assert info.value.message.startswith(f"Custom attribute {attribute.name}: ")
    return info.value.reason


NIC = attr("ManagementNIC", "nic", NIC_CONSTRAINTS, value=None)


# --- parsing -----------------------------------------------------------------------------------
def test_parse_hpe_attribute() -> None:
    raw = {
        "name": "Hostname",
        "type": "hostname",
        "value": "",
        "description": "Host name",
        "constraints": '{"helpText":"short name"}',
    }
    [a] = parse_attributes([raw])
    assert a == CustomAttribute("Hostname", AttributeType.HOSTNAME, "", "Host name", a.constraints, raw["constraints"])
    assert a.constraints.help_text == "short name"
    assert a.to_hpe() == raw


def test_parse_number_constraints_given_as_strings() -> None:
    a = attr("VolumeSize", "number", '{"minimum":"1","maximum":"51200","unit":"MiB"}')
    assert (a.constraints.minimum, a.constraints.maximum, a.constraints.unit) == (Decimal(1), Decimal(51200), "MiB")


def test_parse_accepts_constraints_object_null_and_empty() -> None:
    [a] = parse_attributes([{"name": "A", "type": "string", "constraints": {"maxlen": 3}}])
    assert a.raw_constraints == '{"maxlen":3}' and a.constraints.maxlen == 3
    assert attr("B", "string", None).raw_constraints == "{}"
    assert attr("C", "string", "").constraints.maxlen is None


def test_parse_nic_constraints() -> None:
    c = attr(
        "N", "nic", '{"ipv4static":true,"ipv4dhcp":false,"ipv4disable":false,"parameters":["mac","dns"]}'
    ).constraints
    assert (c.ipv4static, c.ipv4dhcp, c.ipv4disable, c.parameters) == (True, False, False, ("mac", "dns1"))


def test_parse_type_is_case_insensitive_and_value_scalars_become_text() -> None:
    a = attr("Size", "Number", None, value=512)
    assert a.type is AttributeType.NUMBER and a.value == "512"


def test_parse_reports_every_bad_entry() -> None:
    raw: list[Any] = [
        {"name": "Good", "type": "string"},
        {"name": "", "type": "string"},
        {"name": "Bad-Name", "type": "string"},
        {"name": "_Initiator1", "type": "string"},
        {"name": "T", "type": "colour"},
        {"name": "J", "type": "string", "constraints": "{nope"},
        {"name": "L", "type": "string", "constraints": "[1]"},
        {"name": "R", "type": "string", "constraints": '{"pattern":"("}'},
        {"name": "M", "type": "number", "constraints": '{"minimum":5,"maximum":1}'},
        {"name": "P", "type": "nic", "constraints": '{"parameters":["ip"]}'},
        {"name": "Good", "type": "string"},
        "not an object",
        {"name": "V", "type": "string", "value": ["x"]},
        {"name": "Q", "type": "nic", "constraints": '{"ipv4static":false,"ipv4dhcp":false}'},
        {"name": "W", "type": "string", "constraints": '{"minlen":-1}'},
    ]
    with pytest.raises(AttributeDefinitionInvalid) as info:
        parse_attributes(raw)
    errors = dict(info.value.errors)
    assert sorted(errors) == sorted(
        f"customAttributes[{i}]" + (f" ({e['name']})" if isinstance(e, dict) and e.get("name") else "")
        for i, e in enumerate(raw)
        if i != 0
    )
    assert "name is missing" in errors["customAttributes[1]"]
    assert "not a token name" in errors["customAttributes[2] (Bad-Name)"]
    assert "reserved" in errors["customAttributes[3] (_Initiator1)"]
    assert "'colour' is not one of" in errors["customAttributes[4] (T)"]
    assert "not valid JSON" in errors["customAttributes[5] (J)"]
    assert "JSON object" in errors["customAttributes[6] (L)"]
    assert "regular expression" in errors["customAttributes[7] (R)"]
    assert "above maximum" in errors["customAttributes[8] (M)"]
    assert "unknown NIC fields: ip" in errors["customAttributes[9] (P)"]
    assert "used twice" in errors["customAttributes[10] (Good)"]
    assert "expected an object" in errors["customAttributes[11]"]
    assert "value must be a string" in errors["customAttributes[12] (V)"]
    assert "neither static" in errors["customAttributes[13] (Q)"]
    assert "non-negative integer" in errors["customAttributes[14] (W)"]
    assert isinstance(info.value, InvalidInput) and info.value.http_status == 400


def test_parse_empty() -> None:
    assert parse_attributes(None) == parse_attributes([]) == []


# --- HPE's bundles -----------------------------------------------------------------------------
@pytest.mark.parametrize("zip_name", ["HPE-ESXi-6.7-2021-01-21-v5.2.zip", "HPE_Foundation_Artifacts-5_00.zip"])
def test_every_attribute_in_hpe_bundles_parses(zip_name: str, tmp_path: Path) -> None:
    path = BUNDLES / zip_name
    if not path.exists():
        pytest.skip(f"HPE's sample bundle {path} is absent (see /work/shared/reference/bundles/README.md)")
    with zipfile.ZipFile(path) as archive:
        archive.extractall(tmp_path)
    seen = 0
    for plan_file in [*tmp_path.glob("*_buildplan.json"), *tmp_path.glob("*_deploymentplan.json")]:
        raw = json.loads(plan_file.read_text())["customAttributes"] or []
        for parsed, original in zip(parse_attributes(raw), raw, strict=True):
            seen += 1
            assert parsed.to_hpe()["constraints"] == original["constraints"]
            # the shipped defaults are valid values, unset or not
            validate(parsed, parsed.value)
    assert seen


# --- string and password -----------------------------------------------------------------------
def test_string_lengths_and_pattern() -> None:
    a = attr("User", "string", {"minlen": 2, "maxlen": 4, "regex": "[a-z]+"})
    assert validate(a, "abc") == "abc"
    assert "shorter than 2" in reason(a, "a")
    assert "longer than 4" in reason(a, "abcde")
    assert "does not match the pattern '[a-z]+'" in reason(a, "AB")
    assert "does not match" in reason(a, "ab\n")  # full match: no trailing newline sneaks through


def test_string_pattern_key() -> None:
    assert "does not match" in reason(attr("S", "string", {"pattern": r"\d+"}), "12a")


def test_string_options_restrict_when_non_empty() -> None:
    a = attr("Mode", "string", {"options": ["a", "b"]})
    assert validate(a, "a") == "a"
    assert "not one of the options" in reason(a, "c")
    assert validate(attr("Free", "string", {"options": [""]}), "anything") == "anything"


def test_string_hostile_values_are_kept_verbatim() -> None:
    a = attr("S", "string")
    for value in ["{{ 7*7 }}", "@Other@", "héllo ✓", "a\nb"]:
        assert validate(a, value) == value


def test_password_never_echoes_its_value_and_ignores_hpe_empty_options() -> None:
    a = attr("Password", "password", {"options": [""], "minlen": 8, "maxlen": 12})
    assert is_secret(a)
    assert validate(a, "s3cret-long") == "s3cret-long"
    for bad in ("Zq1", "Zq1-far-too-long"):
        with pytest.raises(AttributeInvalid) as info:
            validate(a, bad)
        assert bad not in info.value.message and "the value" in info.value.reason


def test_only_passwords_are_secret() -> None:
    assert [t for t in AttributeType if is_secret(attr("A", t.value))] == [AttributeType.PASSWORD]


# --- number ------------------------------------------------------------------------------------
def test_number_range_and_normalization() -> None:
    a = attr("VolumeSize", "number", '{"minimum":"1","maximum":"51200","unit":"MiB"}')
    assert validate(a, "512") == 512
    assert validate(a, 1) == 1
    assert validate(a, " 2.50 ") == 2.5
    assert reason(a, "0") == "0 is below the minimum 1 MiB"
    assert reason(a, 51201) == "51201 is above the maximum 51200 MiB"
    assert "is not a number" in reason(a, "12MB")
    assert "is not a number" in reason(a, True)
    assert "not a number" in reason(a, "nan")
    assert "not a number" in reason(a, "inf")


def test_number_min_max_aliases_and_increment() -> None:
    a = attr("N", "number", {"min": 10, "max": 100, "increment": 10})
    assert validate(a, 30) == 30
    assert "not 10 plus a multiple of 10" in reason(a, 35)
    assert "below the minimum 10" in reason(a, 0)
    b = attr("F", "number", {"increment": "0.5"})
    assert validate(b, "1.5") == 1.5
    assert "multiple of 0.5" in reason(b, "1.2")


# --- option ------------------------------------------------------------------------------------
def test_option() -> None:
    a = attr("SSH", "option", '{"options":["enabled","disabled"]}', value="enabled")
    assert validate(a, "disabled") == "disabled"
    assert reason(a, "Enabled") == "'Enabled' is not one of the options 'enabled', 'disabled'"
    with pytest.raises(AttributeInvalid):
        validate(a, True)


# --- hostname, fqdn, ipv4 ----------------------------------------------------------------------
@pytest.mark.parametrize("good", ["esx01", "ESX-01", "a", "a" * 63, "web1.lab.local", "1host", "h.1a"])
def test_hostname_valid(good: str) -> None:
    assert validate(attr("H", "hostname"), good) == good


@pytest.mark.parametrize(
    "bad",
    ["-esx", "esx-", "a" * 64, "esx_01", "esx 01", "héte", "a..b", ".a", "a.", "10.0.0.1", "x" * 250 + ".com", "a\nb"],
)
def test_hostname_invalid(bad: str) -> None:
    assert "not a valid host name" in reason(attr("H", "hostname"), bad)


def test_fqdn() -> None:
    a = attr("DomainName", "fqdn")
    assert validate(a, "lab.example.com") == "lab.example.com"
    assert validate(a, "lab.example.com.") == "lab.example.com"
    assert "at least two labels" in reason(a, "localdomain")
    assert "not a valid fully qualified domain name" in reason(a, "bad_label.com")
    assert "ASCII" in reason(a, "exämple.com")
    assert validate(a, "xn--exmple-cua.com") == "xn--exmple-cua.com"


def test_ipv4() -> None:
    a = attr("IP", "ipv4")
    assert validate(a, "192.168.0.1") == "192.168.0.1"
    assert validate(a, " 10.0.0.1 ") == "10.0.0.1"
    for bad in ("192.168.0", "256.0.0.1", "010.0.0.1", "::1", "10.0.0.1/24", "host"):
        assert "is not an IPv4 address" in reason(a, bad)


def test_empty_values_are_unset_unless_required() -> None:
    for a in (attr("S", "string", {"minlen": 3}), attr("H", "hostname"), attr("N", "number", {"minimum": 1}), NIC):
        assert validate(a, None) in ("", {})
        assert validate(a, "") in ("", {})
        assert reason(a, None, required=True) == "a value is required"


def test_structured_value_for_a_scalar_type_is_refused() -> None:
    assert "expects a single string value" in reason(attr("S", "string"), {"a": 1})


# --- netmask and MAC helpers -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "expected"),
    [("255.255.255.0", "255.255.255.0"), ("24", "255.255.255.0"), ("/16", "255.255.0.0"), ("0", "0.0.0.0")],
)
def test_netmask_forms(given: str, expected: str) -> None:
    assert normalize_netmask(given) == expected


@pytest.mark.parametrize("bad", ["255.0.255.0", "33", "255.255.255", "mask", "/-1", "٢٤"])
def test_netmask_invalid(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_netmask(bad)


@given(
    st.binary(min_size=6, max_size=6),
    st.sampled_from(["{}:{}:{}:{}:{}:{}", "{}-{}-{}-{}-{}-{}", "{}{}.{}{}.{}{}", "{}" * 6]),
)
def test_mac_forms_normalize_to_lower_colon(raw: bytes, fmt: str) -> None:
    octets = [f"{b:02X}" for b in raw]
    assert normalize_mac(fmt.format(*octets)) == ":".join(o.lower() for o in octets)


@pytest.mark.parametrize("bad", ["aa:bb:cc:dd:ee", "aa:bb-cc:dd:ee:ff", "gg:bb:cc:dd:ee:ff", "aabbccddeeff00", ""])
def test_mac_invalid(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_mac(bad)


# --- nic ---------------------------------------------------------------------------------------
def test_nic_static_is_normalized() -> None:
    value = {
        "ipaddress": "10.0.0.5",
        "netmask": "24",
        "gateway": "10.0.0.1",
        "dns": "10.0.0.2",
        "dns2": "",
        "mac": "AA-BB-CC-DD-EE-FF",
        "vlanid": "12",
        "dhcp": "false",
    }
    assert validate(NIC, value) == {
        "ipaddress": "10.0.0.5",
        "netmask": "255.255.255.0",
        "gateway": "10.0.0.1",
        "dns1": "10.0.0.2",
        "mac": "aa:bb:cc:dd:ee:ff",
        "vlanid": 12,
        "dhcp": False,
    }


def test_nic_flattened_as_oneview_sends_it() -> None:
    flattened = {
        "ManagementNIC.gateway": "15.212.168.1",
        "ManagementNIC.ipaddress": "15.212.168.96",
        "ManagementNIC.netmask": "255.255.252.0",
        "ManagementNIC.connectionid": "3",
        "ManagementNIC.dhcp": "false",
        "ManagementNIC.ipv4disable": "false",
        "ManagementNIC.vlanid": "0",
        "ManagementNIC.networkuri": "mgmt_nw",
        "ManagementNIC.constraint": "userspecified",
    }
    result = validate(NIC, flattened)
    assert result == {
        "gateway": "15.212.168.1",
        "ipaddress": "15.212.168.96",
        "netmask": "255.255.252.0",
        "connectionid": "3",
        "dhcp": False,
        "ipv4disable": False,
        "vlanid": 0,
        "networkuri": "mgmt_nw",
        "constraint": "userspecified",
    }


def test_nic_dhcp() -> None:
    assert validate(NIC, {"dhcp": True, "mac": "aa:bb:cc:dd:ee:ff"}) == {"dhcp": True, "mac": "aa:bb:cc:dd:ee:ff"}
    assert validate(NIC, {"constraint": "dhcp"}) == {"constraint": "dhcp", "dhcp": True}
    assert "dhcp excludes ipaddress" in reason(NIC, {"dhcp": "true", "ipaddress": "10.0.0.5", "netmask": "24"})
    assert "contradicts dhcp=false" in reason(NIC, {"constraint": "dhcp", "dhcp": False})
    assert "contradicts dhcp=true" in reason(NIC, {"constraint": "userspecified", "dhcp": True})


def test_nic_static_needs_address_and_netmask() -> None:
    assert "needs ipaddress and netmask (netmask missing)" in reason(NIC, {"ipaddress": "10.0.0.5"})
    assert "(ipaddress, netmask missing)" in reason(NIC, {"mac": "aa:bb:cc:dd:ee:ff"})


def test_nic_gateway_must_be_in_the_subnet() -> None:
    bad = {"ipaddress": "10.0.0.5", "netmask": "24", "gateway": "10.0.1.1"}
    assert "gateway 10.0.1.1 is not in the subnet 10.0.0.0/24" in reason(NIC, bad)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("vlanid", "4095", "not a VLAN id from 0 to 4094"),
        ("vlanid", "-1", "not a VLAN id"),
        ("vlanid", "x", "not a VLAN id"),
        ("mac", "aa:bb", "not a MAC address"),
        ("dns1", "dns.local", "not an IPv4 address"),
        ("netmask", "255.0.255.0", "not a contiguous netmask"),
        ("dhcp", "maybe", "not true or false"),
        ("constraint", "sometimes", "not one of auto, dhcp, userspecified"),
    ],
)
def test_nic_bad_subfields(field: str, value: str, message: str) -> None:
    nic = {"ipaddress": "10.0.0.5", "netmask": "24", field: value}
    assert message in reason(NIC, nic)


def test_nic_vlanid_bounds() -> None:
    base = {"dhcp": True}
    assert validate(NIC, {**base, "vlanid": 0})["vlanid"] == 0  # type: ignore[index]
    assert validate(NIC, {**base, "vlanid": "4094"})["vlanid"] == 4094  # type: ignore[index]


def test_nic_unknown_field_and_wrong_shape() -> None:
    assert "unknown NIC field(s) speed" in reason(NIC, {"dhcp": True, "speed": "10G"})
    assert "expects an object of NIC fields" in reason(NIC, "10.0.0.5")
    assert "single value" in reason(NIC, {"ipaddress": ["10.0.0.5"]})
    assert "given twice" in reason(NIC, {"dns": "1.1.1.1", "dns1": "2.2.2.2", "dhcp": True})


def test_nic_parameters_restrict_addressing_fields() -> None:
    # HPE's ManagementNIC2: a teaming uplink with only mac and vlanid, static only.
    nic2 = attr(
        "ManagementNIC2",
        "nic",
        '{"ipv4static":true,"ipv4dhcp":false,"ipv4disable":false,"parameters":["mac","vlanid"]}',
        value=None,
    )
    assert validate(nic2, {"mac": "aa:bb:cc:dd:ee:ff", "vlanid": "5", "dhcp": "false"}) == {
        "mac": "aa:bb:cc:dd:ee:ff",
        "vlanid": 5,
        "dhcp": False,
    }
    assert "ipaddress, netmask not allowed here (allowed: mac, vlanid)" in reason(
        nic2, {"ipaddress": "10.0.0.5", "netmask": "24"}
    )
    assert "DHCP is not allowed" in reason(nic2, {"dhcp": True})


def test_nic_ipv4_modes_follow_constraints() -> None:
    dhcp_only = attr("D", "nic", {"ipv4static": False, "ipv4dhcp": True})
    assert "static addressing is not allowed" in reason(dhcp_only, {"ipaddress": "10.0.0.5", "netmask": "24"})
    assert "disabling IPv4 is not allowed" in reason(NIC, {"ipv4disable": True})
    can_disable = attr("X", "nic", {"ipv4disable": True})
    assert validate(can_disable, {"ipv4disable": "true", "mac": "aabbccddeeff"}) == {
        "ipv4disable": True,
        "mac": "aa:bb:cc:dd:ee:ff",
        "dhcp": False,
    }
    assert "ipv4disable excludes" in reason(can_disable, {"ipv4disable": True, "dhcp": True})


def test_nic_default_as_json_string() -> None:
    a = attr("N", "nic", None, value='{"dhcp": true}')
    assert validate(a, a.value) == {"dhcp": True}
    assert "not a valid JSON object" in reason(a, "{oops")


# --- validate_all ------------------------------------------------------------------------------
ESXI = parse_attributes(
    [
        {"name": "ManagementNIC", "type": "nic", "value": None, "constraints": NIC_CONSTRAINTS},
        {"name": "DomainName", "type": "fqdn", "value": "", "constraints": '{"helpText":""}'},
        {"name": "Hostname", "type": "hostname", "value": "", "constraints": '{"helpText":""}'},
        {"name": "SSH", "type": "option", "value": "enabled", "constraints": '{"options":["enabled","disabled"]}'},
        {"name": "Password", "type": "password", "value": "", "constraints": '{"options":[""]}'},
    ]
)


def test_validate_all_merges_defaults_and_flattened_nic() -> None:
    values = {
        "Hostname": "esx01",
        "DomainName": "lab.local",
        "ManagementNIC": {"mac": "AA:BB:CC:DD:EE:FF"},
        "ManagementNIC.dhcp": "true",
        "Password": "pw",
    }
    assert validate_all(ESXI, values, required=True) == {
        "ManagementNIC": {"mac": "aa:bb:cc:dd:ee:ff", "dhcp": True},
        "DomainName": "lab.local",
        "Hostname": "esx01",
        "SSH": "enabled",
        "Password": "pw",
    }


def test_validate_all_collects_every_error() -> None:
    values = {
        "Hostname": "-bad-",
        "SSH": "maybe",
        "ManagementNIC.ipaddress": "10.0.0.5",
        "Unknown": "x",
        "Hostname.mac": "x",
        "_Initiator1.ip": "1.2.3.4",
    }
    with pytest.raises(AttributesInvalid) as info:
        validate_all(ESXI, values, required=True)
    errors = dict(info.value.errors)
    assert list(errors) == [
        "ManagementNIC",
        "DomainName",
        "Hostname",
        "SSH",
        "Password",
        "Unknown",
        "Hostname.mac",
        "_Initiator1.ip",
    ]
    assert "netmask missing" in errors["ManagementNIC"]
    assert errors["DomainName"] == errors["Password"] == "a value is required"
    assert "no custom attribute" in errors["Unknown"]
    assert "has no sub-fields" in errors["Hostname.mac"]
    assert "reserved" in errors["_Initiator1.ip"]
    assert info.value.nested == info.value.errors
    assert info.value.message.startswith("8 custom attribute value(s) are not valid: ManagementNIC: ")


def test_validate_all_unset_is_fine_when_not_required_and_unknown_can_be_allowed() -> None:
    result = validate_all(ESXI, {"Extra": "1"}, allow_unknown=True)
    assert result == {"ManagementNIC": {}, "DomainName": "", "Hostname": "", "SSH": "enabled", "Password": ""}


def test_validate_all_nic_conflicts_and_scalar() -> None:
    with pytest.raises(AttributesInvalid) as info:
        validate_all(ESXI, {"ManagementNIC": {"dhcp": True}, "ManagementNIC.dhcp": "false"})
    assert info.value.errors == [("ManagementNIC", "dhcp is given twice with different values")]
    with pytest.raises(AttributesInvalid) as info:
        validate_all(ESXI, {"ManagementNIC": "dhcp", "ManagementNIC.mac": "aa:bb:cc:dd:ee:ff"})
    assert "expects an object" in info.value.errors[0][1]


@given(st.text(max_size=30))
def test_string_without_constraints_accepts_any_text(value: str) -> None:
    assert validate(attr("S", "string"), value) == value


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_number_range_property(n: int) -> None:
    a = attr("N", "number", {"minimum": -100, "maximum": 100})
    if -100 <= n <= 100:
        assert validate(a, str(n)) == n
    else:
        with pytest.raises(AttributeInvalid):
            validate(a, n)
