"""``ingot login`` and ``ingot logout``: a OneView login session kept in the session file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.client import ApiClient, decode
from appliance.cli.errors import CliError, UsageError
from appliance.cli.output import note, warn
from appliance.cli.passwords import read_password
from appliance.cli.session import (
    DEFAULT_URL,
    StoredSession,
    Target,
    TlsSettings,
    load_session,
    normalize_url,
    remove_session,
    save_session,
    session_path,
)


def login(
    host: Annotated[str | None, typer.Option(
        "--host", help=f"Appliance URL [default: INGOT_URL or {DEFAULT_URL}].")] = None,
    user: Annotated[str, typer.Option("--user", "-u", help="User name.")] = "Administrator",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input.")] = False,
    ca_cert: Annotated[Path | None, typer.Option(
        "--ca-cert", help="PEM file of the CA that signed the appliance's certificate.")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Do not verify the appliance's TLS certificate.")] = False,
) -> None:
    """Log in and keep the session for the following commands."""
    if ca_cert is not None and insecure:
        raise UsageError("--ca-cert and --insecure exclude each other.")
    if ca_cert is not None and not ca_cert.is_file():
        raise UsageError(f"The CA certificate file {ca_cert} does not exist.")
    url = normalize_url(host or os.environ.get("INGOT_URL") or DEFAULT_URL)
    tls = TlsSettings(insecure=insecure, ca_cert=str(ca_cert.resolve()) if ca_cert else None)
    password = read_password("Password", from_stdin=password_stdin)
    start_session(url, tls, user, password)
    note(f"Logged in to {url} as {user}.")
    if insecure:
        warn("TLS verification is off for this session (--insecure).")


def start_session(url: str, tls: TlsSettings, user: str, password: str) -> StoredSession:
    """``POST /rest/login-sessions`` and store the session; a wrong password is an ApiError (exit 3)."""
    with ApiClient(Target(url=url, credential=None, tls=tls, via="none")) as client:
        body = decode(client.post("/rest/login-sessions", {"userName": user, "password": password}))
    session_id = body.get("sessionID") if isinstance(body, dict) else None
    if not isinstance(session_id, str) or not session_id:
        raise CliError("The appliance accepted the login but sent no sessionID.")
    stored = StoredSession(url=url, session_id=session_id, user_name=user, tls=tls)
    path = session_path()
    try:
        save_session(path, stored)
    except OSError as exc:
        raise CliError(f"Cannot write the session file {path}: {exc.strerror or exc}.",
                       hints=["Set INGOT_CLI_CONFIG to a writable location."]) from None
    return stored


def logout() -> None:
    """End the stored session on the appliance and forget it here."""
    path = session_path()
    stored = load_session(path)
    if stored is None:
        note("Not logged in; nothing to do.")
        return
    target = Target(url=stored.url, credential=stored.session_id, tls=stored.tls, via="session")
    try:
        with ApiClient(target) as client:
            client.delete("/rest/login-sessions")
    except CliError as exc:
        # The local copy goes regardless: an expired session is already gone, and an unreachable
        # appliance ends it by idle timeout.
        warn(f"The appliance did not end the session: {exc.message}")
    finally:
        remove_session(path)
    note(f"Logged out of {stored.url}.")
