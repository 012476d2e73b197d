"""``ingot alerts``: list (the default) and clear."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appliance.cli.client import ApiClient, segment
from appliance.cli.errors import UsageError
from appliance.cli.output import Column, JsonOption, note, print_collection, print_json, when

app = typer.Typer(help="Alerts raised by the appliance.")

ALERT_STATES = ("Active", "Locked", "Cleared")
ALERT_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Severity", "severity", no_wrap=True),
    Column("State", "alertState", no_wrap=True),
    Column("Description", "description"),
    Column("Resource", lambda a: (a.get("associatedResource") or {}).get("resourceName"), drop=2),
    Column("Count", "count", justify="right", drop=3),
    Column("Modified", lambda a: when(a.get("modified")), no_wrap=True, drop=1),
)
StateOption = Annotated[str | None, typer.Option("--state", help="Only alerts in this state: Active, Locked, Cleared.")]


def parse_alert_state(text: str) -> str:
    for state in ALERT_STATES:
        if state.lower() == text.strip().lower():
            return state
    raise UsageError(f"Unknown alert state {text!r}.", hints=["Use one of: " + ", ".join(ALERT_STATES)])


def _list(state: str | None, as_json: bool) -> None:
    params: dict[str, Any] = {"sort": "modified:descending"}
    if state:
        params["filter"] = f"alertState='{parse_alert_state(state)}'"
    with ApiClient.connect() as client:
        body = client.get("/rest/alerts", params)
    print_collection(body, ALERT_COLUMNS, as_json=as_json, empty="No alerts.")


@app.callback(invoke_without_command=True)
def alerts(ctx: typer.Context, state: StateOption = None, as_json: JsonOption = False) -> None:
    """Alerts raised by the appliance; without a subcommand, list them."""
    if ctx.invoked_subcommand is None:
        _list(state, as_json)


@app.command("list")
def list_alerts(state: StateOption = None, as_json: JsonOption = False) -> None:
    """List alerts, most recently changed first."""
    _list(state, as_json)


@app.command()
def clear(alert_id: Annotated[str, typer.Argument(help="Alert ID.")], as_json: JsonOption = False) -> None:
    """Mark an alert Cleared."""
    with ApiClient.connect() as client:
        alert = client.put(f"/rest/alerts/{segment(alert_id)}", {"alertState": "Cleared"})
    if as_json:
        print_json(alert)
    else:
        note(f"Alert {alert.get('id')} cleared.")
