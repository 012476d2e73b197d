"""``ingot users``: list, add, remove, passwd, set-role.

Roles are OneView's names ("Infrastructure administrator", "Operator", "Read only"), or the
aliases ``admin``, ``operator`` and ``read-only``, in any case.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from appliance.cli.auth import start_session
from appliance.cli.client import ApiClient, decode, segment
from appliance.cli.errors import UsageError
from appliance.cli.output import Column, JsonOption, note, print_collection, print_json, when
from appliance.cli.passwords import read_password
from appliance.roles import Role

app = typer.Typer(help="Users and their roles (administrators only, except passwd).", no_args_is_help=True)

_ROLE_NAMES = {
    "admin": Role.INFRASTRUCTURE_ADMINISTRATOR,
    "administrator": Role.INFRASTRUCTURE_ADMINISTRATOR,
    "infrastructure administrator": Role.INFRASTRUCTURE_ADMINISTRATOR,
    "operator": Role.OPERATOR,
    "read only": Role.READ_ONLY,
    "readonly": Role.READ_ONLY,
}
USER_COLUMNS = (
    Column("Name", "userName", no_wrap=True),
    Column("Role", "role", no_wrap=True),
    Column("Enabled", "enabled"),
    Column("Full name", "fullName", drop=2),
    Column("Email", "emailAddress", drop=3),
    Column("Password changed", lambda u: when(u.get("passwordChanged")), no_wrap=True, drop=1),
)
PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password(s) from standard input, one per line.")]


def parse_role(text: str) -> Role:
    """``admin`` / ``operator`` / ``read-only`` or a full role name, case and ``-``/``_`` insensitive.

    :raises UsageError: for anything else.
    """
    key = " ".join(text.lower().replace("-", " ").replace("_", " ").split())
    role = _ROLE_NAMES.get(key)
    if role is None:
        choices = ", ".join(f'"{r.value}"' for r in Role)
        raise UsageError(f"Unknown role {text!r}.", hints=[f"Use admin, operator or read-only (or {choices})."])
    return role


@app.command("list")
def list_users(as_json: JsonOption = False) -> None:
    """List users."""
    with ApiClient.connect() as client:
        body = client.get("/rest/users", {"sort": "name:ascending"})
    print_collection(body, USER_COLUMNS, as_json=as_json, empty="No users.")


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option("--role", "-r", help="admin, operator or read-only.")],
    password_stdin: PasswordStdin = False,
    full_name: Annotated[str, typer.Option("--full-name")] = "",
    email: Annotated[str, typer.Option("--email")] = "",
    as_json: JsonOption = False,
) -> None:
    """Add a user with a role."""
    chosen = parse_role(role)
    password = read_password("Password", from_stdin=password_stdin, confirm=True)
    body: dict[str, Any] = {"userName": name, "password": password, "role": chosen.value,
                            "fullName": full_name, "emailAddress": email}
    with ApiClient.connect() as client:
        user = decode(client.post("/rest/users", body))
    if as_json:
        print_json(user)
    else:
        note(f"User {user.get('userName')} added with role {user.get('role')}.")


@app.command()
def remove(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Remove a user (the last administrator cannot be removed)."""
    with ApiClient.connect() as client:
        client.delete(f"/rest/users/{segment(name)}")
    note(f"User {name} removed.")


@app.command("set-role")
def set_role(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="admin, operator or read-only.")],
) -> None:
    """Change a user's role."""
    chosen = parse_role(role)
    with ApiClient.connect() as client:
        user = client.put(f"/rest/users/{segment(name)}", {"role": chosen.value})
    note(f"User {user.get('userName')} now has role {user.get('role')}.")


@app.command()
def passwd(
    name: Annotated[str | None, typer.Argument(help="User name [default: yourself].", show_default=False)] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Change your password (current one, then the new one) or, as an administrator, someone else's.

    With --password-stdin, changing your own password reads two lines: the current password, then
    the new one. A new password ends all of that user's sessions; when it is yours, the CLI logs
    in again with it.
    """
    with ApiClient.connect() as client:
        me = client.target.user_name
        if name is None and not me:
            raise UsageError("Name the user: the current credential is an API token.")
        target_name = name or me
        own = bool(me) and target_name.lower() == me.lower()
        body: dict[str, Any] = {}
        if own:
            body["currentPassword"] = read_password("Current password", from_stdin=password_stdin)
        body["password"] = read_password("New password", from_stdin=password_stdin, confirm=True)
        client.put(f"/rest/users/{segment(target_name)}", body)
    note(f"Password of {target_name} changed.")
    if own and client.target.via == "session":
        start_session(client.target.url, client.target.tls, me, body["password"])
        note("Your other sessions were ended; this one was renewed.")
