"""``ingot tokens``: API tokens for automation (``INGOT_TOKEN``, Prometheus, the ``auth`` header)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appliance.cli.client import ApiClient, decode, segment
from appliance.cli.output import Column, JsonOption, note, print_collection, print_json, stderr, when

app = typer.Typer(help="API tokens: bearer credentials for scripts and monitoring.", no_args_is_help=True)

TOKEN_COLUMNS = (
    Column("ID", "id", no_wrap=True),
    Column("Name", "name"),
    Column("User", "userName", drop=2),
    Column("Prefix", "prefix", no_wrap=True, drop=3),
    Column("Created", lambda t: when(t.get("created")), no_wrap=True, drop=1),
    Column("Expires", lambda t: when(t.get("expires")) or "never", no_wrap=True),
    Column("Last used", lambda t: when(t.get("lastUsed")), no_wrap=True, drop=4),
)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. prometheus.")],
    days: Annotated[int | None, typer.Option("--days", min=1, max=3650, help="Expire after N days.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token for yourself. The token is printed once, on stdout; store it now."""
    body: dict[str, Any] = {"name": name}
    if days is not None:
        body["expiresInDays"] = days
    with ApiClient.connect() as client:
        token = decode(client.post("/rest/api-tokens", body))
    if as_json:
        print_json(token)
        return
    # The secret alone on stdout (so `TOKEN=$(ingot tokens create x)` works); the rest on stderr.
    print(token.get("token", ""))
    stderr().print(f"Token {token.get('name')} ({token.get('id')}) created; it is not shown again.",
                   markup=False)


@app.command("list")
def list_tokens(
    all_users: Annotated[bool, typer.Option("--all", help="Every user's tokens (administrators).")] = False,
    as_json: JsonOption = False,
) -> None:
    """List tokens (never their secrets)."""
    with ApiClient.connect() as client:
        body = client.get("/rest/api-tokens", {"all": "true"} if all_users else None)
    print_collection(body, TOKEN_COLUMNS, as_json=as_json, empty="No tokens.")


@app.command()
def revoke(token_id: Annotated[str, typer.Argument(help="Token ID (from `ingot tokens list`).")]) -> None:
    """Revoke a token; requests with it fail from now on."""
    with ApiClient.connect() as client:
        client.delete(f"/rest/api-tokens/{segment(token_id)}")
    note(f"Token {token_id} revoked.")
