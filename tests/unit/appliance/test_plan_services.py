"""Pure rules of the plan services: URIs, serial numbers and the sealing of password values."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from appliance.errors import InvalidInput
from appliance.secretbox import SecretBox
from appliance.services.build_plans import _serial, build_plan_id_from_uri, seal_secrets, stored_definitions
from appliance.services.deployment_plans import attribute_id
from appliance.services.plan_scripts import script_id_from_uri
from plans.attributes import parse_attributes
from plans.tokens import MASK

ATTRIBUTES = parse_attributes([
    {"name": "Hostname", "type": "hostname", "value": "h1"},
    {"name": "Pw", "type": "password", "value": "secret-1"},
    {"name": "Other", "type": "password", "value": ""},
])


@pytest.mark.parametrize(("uri", "ident"), [("/rest/plan-scripts/abc", "abc"), ("abc", "abc"),
                                            ("/rest/plan-scripts/abc/", "abc")])
def test_script_uris(uri: str, ident: str) -> None:
    assert script_id_from_uri(uri) == ident


@pytest.mark.parametrize("uri", ["", "/rest/golden-images/abc", "/rest/plan-scripts/a/b"])
def test_bad_script_uris(uri: str) -> None:
    with pytest.raises(InvalidInput):
        script_id_from_uri(uri)
    with pytest.raises(InvalidInput):
        build_plan_id_from_uri(uri.replace("plan-scripts", "build-plans") or "")


@pytest.mark.parametrize(("raw", "serial"), [("1", 1), (2, 2), (" 10 ", 10), ("0", None), ("-1", None),
                                             ("1.5", None), ("one", None), (True, None), ("\u0661", None)])
def test_serial_numbers(raw: object, serial: int | None) -> None:
    assert _serial(raw) == serial


def test_seal_keeps_replaces_and_clears() -> None:
    box = SecretBox(Fernet.generate_key())
    kept = {"Pw": box.seal("old")}
    plain, sealed = seal_secrets(ATTRIBUTES, {"Hostname": "h2", "Pw": MASK, "Other": MASK}, kept, box)
    assert plain == {"Hostname": "h2", "Pw": "old", "Other": ""}  # MASK without a stored value: unset
    assert sealed == kept  # a kept value is not re-encrypted
    plain, sealed = seal_secrets(ATTRIBUTES, {"Pw": "new"}, kept, box)
    assert plain == {"Pw": "new"} and box.open(sealed["Pw"]) == "new"
    assert seal_secrets(ATTRIBUTES, {"Pw": ""}, kept, box)[1] == {}


def test_stored_definitions_never_hold_a_password() -> None:
    stored = stored_definitions(ATTRIBUTES)
    assert [a["value"] for a in stored] == ["h1", None, None]
    assert attribute_id("p1", "Pw") == attribute_id("p1", "Pw") != attribute_id("p2", "Pw")
