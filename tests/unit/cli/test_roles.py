"""Role aliases, and the state names the list commands accept."""

from __future__ import annotations

import pytest

from appliance.cli.alerts import parse_alert_state
from appliance.cli.errors import EXIT_USAGE, UsageError
from appliance.cli.tasks import parse_state
from appliance.cli.users import parse_role
from appliance.roles import Role


@pytest.mark.parametrize(("text", "role"), [
    ("admin", Role.INFRASTRUCTURE_ADMINISTRATOR),
    ("Admin", Role.INFRASTRUCTURE_ADMINISTRATOR),
    ("administrator", Role.INFRASTRUCTURE_ADMINISTRATOR),
    ("Infrastructure administrator", Role.INFRASTRUCTURE_ADMINISTRATOR),
    ("infrastructure-administrator", Role.INFRASTRUCTURE_ADMINISTRATOR),
    ("operator", Role.OPERATOR),
    ("Operator", Role.OPERATOR),
    ("read-only", Role.READ_ONLY),
    ("read_only", Role.READ_ONLY),
    ("readonly", Role.READ_ONLY),
    ("Read only", Role.READ_ONLY),
    ("  READ   ONLY ", Role.READ_ONLY),
])
def test_parse_role(text: str, role: Role) -> None:
    assert parse_role(text) is role


@pytest.mark.parametrize("text", ["", "root", "ro", "read", "operators", "infrastructure"])
def test_unknown_roles_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_role(text)
    assert caught.value.exit_code == EXIT_USAGE
    assert "read-only" in caught.value.hints[0]


def test_every_role_is_reachable_by_its_own_name() -> None:
    assert {parse_role(r.value) for r in Role} == set(Role)


def test_state_names_are_case_insensitive() -> None:
    assert parse_state("running") == "Running"
    assert parse_state("COMPLETED") == "Completed"
    assert parse_alert_state("cleared") == "Cleared"
    with pytest.raises(UsageError):
        parse_state("Done")
    with pytest.raises(UsageError):
        parse_alert_state("Gone")
