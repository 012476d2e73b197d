"""The session file: where it lives, its permissions, round-trips, and which credential wins."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.cli.errors import EXIT_AUTH, EXIT_USAGE, CliError, NotLoggedIn, UsageError
from appliance.cli.session import (
    DEFAULT_URL,
    StoredSession,
    TlsSettings,
    load_session,
    normalize_url,
    remove_session,
    resolve_target,
    save_session,
    session_path,
)

SECRET = "s3ss10n-1d-that-must-not-leak"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def stored(url: str = "https://appliance:8443", *, insecure: bool = False, ca_cert: str | None = None) -> StoredSession:
    return StoredSession(url=url, session_id=SECRET, user_name="Administrator",
                         tls=TlsSettings(insecure=insecure, ca_cert=ca_cert))


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    for session in (stored(), stored(insecure=True), stored(ca_cert="/etc/ingot/ca.pem")):
        save_session(path, session)
        assert load_session(path) == session
    assert json.loads(path.read_text()) == {
        "url": "https://appliance:8443", "sessionID": SECRET, "userName": "Administrator",
        "verify": True, "caCert": "/etc/ingot/ca.pem",
    }


def test_file_is_0600_and_new_directories_0700_whatever_the_umask(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "a" / "b" / "session.json"
    save_session(path, stored())
    assert mode(path) == 0o600
    assert mode(tmp_path / "a") == 0o700
    assert mode(tmp_path / "a" / "b") == 0o700


def test_existing_directory_and_file_modes(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)  # noqa: S103 - a directory shared with others is the point
    path = shared / "session.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    save_session(path, stored())
    assert mode(shared) == 0o755  # not ours to change
    assert mode(path) == 0o600  # replaced, not rewritten in place
    assert sorted(p.name for p in shared.iterdir()) == ["session.json"]  # no temp file left


def test_load_missing_remove_and_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    assert load_session(path) is None
    assert remove_session(path) is False
    path.write_text("{not json")
    with pytest.raises(CliError) as caught:
        load_session(path)
    assert caught.value.exit_code == EXIT_AUTH
    assert "ingot login" in caught.value.hints[0]
    path.write_text(json.dumps({"url": "https://x"}))
    with pytest.raises(CliError):
        load_session(path)
    assert remove_session(path) is True
    assert not path.exists()


def test_the_session_id_is_not_in_reprs() -> None:
    session = stored()
    assert SECRET not in repr(session)
    assert SECRET not in str(session)


def test_session_path(tmp_path: Path) -> None:
    assert session_path({"INGOT_CLI_CONFIG": str(tmp_path / "s.json")}) == tmp_path / "s.json"
    assert session_path({}) == Path.home() / ".config" / "ingot" / "session.json"


@pytest.mark.parametrize(("given", "expected"), [
    ("https://10.0.0.5:8443", "https://10.0.0.5:8443"),
    ("https://10.0.0.5:8443/", "https://10.0.0.5:8443"),
    ("appliance.example:8443", "https://appliance.example:8443"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("  https://[::1]:8443 ", "https://[::1]:8443"),
])
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["ftp://x", "https://", "https://x:8443/rest", "https://x?a=b"])
def test_normalize_url_rejects(bad: str) -> None:
    with pytest.raises(UsageError) as caught:
        normalize_url(bad)
    assert caught.value.exit_code == EXIT_USAGE


def test_resolve_target_uses_the_stored_session(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    env = {"INGOT_CLI_CONFIG": str(path)}
    with pytest.raises(NotLoggedIn) as caught:
        resolve_target(env)
    assert caught.value.exit_code == EXIT_AUTH
    save_session(path, stored(ca_cert="/ca.pem"))
    target = resolve_target(env)
    assert (target.url, target.credential, target.via, target.user_name) == (
        "https://appliance:8443", SECRET, "session", "Administrator")
    assert target.tls == TlsSettings(ca_cert="/ca.pem")
    assert SECRET not in repr(target)


def test_resolve_target_prefers_a_token(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    env = {"INGOT_CLI_CONFIG": str(path), "INGOT_TOKEN": "ingot_tok"}
    target = resolve_target(env)  # no session, no URL: the default appliance
    assert (target.url, target.credential, target.via, target.tls) == (DEFAULT_URL, "ingot_tok", "token", TlsSettings())

    save_session(path, stored(insecure=True))
    target = resolve_target(env)  # the stored session's appliance and TLS settings, the token's identity
    assert (target.url, target.credential, target.tls) == ("https://appliance:8443", "ingot_tok", TlsSettings(True))

    env |= {"INGOT_URL": "other:9443", "INGOT_CA_CERT": "/ca.pem"}
    target = resolve_target(env)
    assert (target.url, target.tls) == ("https://other:9443", TlsSettings(ca_cert="/ca.pem"))
    assert resolve_target(env | {"INGOT_CA_CERT": "", "INGOT_INSECURE": "1"}).tls == TlsSettings(insecure=True)
