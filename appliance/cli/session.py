"""Where the CLI keeps its login, and which credential a command uses.

The session file is ``$INGOT_CLI_CONFIG`` if set, else ``~/.config/ingot/session.json``. It holds
``{url, sessionID, userName, verify, caCert}``: the session ID is a bearer secret, so the file is
written atomically with mode 0600 and any directory created for it gets mode 0700 (directories
that already exist are left as they are).

For automation, ``INGOT_TOKEN`` (an API token) takes precedence over the stored session; the
appliance is ``INGOT_URL`` or else the stored session's URL, and TLS verification follows
``INGOT_CA_CERT`` / ``INGOT_INSECURE=1`` or else the stored session's settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.cli.errors import EXIT_AUTH, CliError, NotLoggedIn, UsageError

DEFAULT_URL = "https://127.0.0.1:8443"
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class TlsSettings:
    """How to verify the appliance's certificate: system CAs (default), a CA file, or not at all."""

    insecure: bool = False
    ca_cert: str | None = None

    def verify(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        return ssl.create_default_context(cafile=self.ca_cert)


@dataclass(frozen=True)
class StoredSession:
    url: str
    session_id: str = field(repr=False)
    user_name: str
    tls: TlsSettings = TlsSettings()

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "sessionID": self.session_id, "userName": self.user_name,
                "verify": not self.tls.insecure, "caCert": self.tls.ca_cert}

    @classmethod
    def from_json(cls, data: Any) -> StoredSession:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        url, session_id = data.get("url"), data.get("sessionID")
        if not isinstance(url, str) or not isinstance(session_id, str) or not url or not session_id:
            raise ValueError("url and sessionID are required")
        ca_cert = data.get("caCert")
        return cls(url=url, session_id=session_id, user_name=str(data.get("userName") or ""),
                   tls=TlsSettings(insecure=data.get("verify") is False,
                                   ca_cert=ca_cert if isinstance(ca_cert, str) else None))


@dataclass(frozen=True)
class Target:
    """Where a command sends its requests, and with which credential (``None``: anonymous)."""

    url: str
    credential: str | None = field(repr=False)
    tls: TlsSettings
    via: str  # "session" | "token" | "none"
    user_name: str = ""


def session_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    configured = env.get("INGOT_CLI_CONFIG")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".config" / "ingot" / "session.json"


def save_session(path: Path, session: StoredSession) -> None:
    """Write atomically (temp file in the same directory, fsync, rename), mode 0600."""
    _make_private_dirs(path.parent)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(session.to_json(), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def load_session(path: Path) -> StoredSession | None:
    """The stored session, or ``None`` if there is none.

    :raises CliError: (exit 3) if the file exists but cannot be read or parsed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"Cannot read the session file {path}: {exc.strerror}.", exit_code=EXIT_AUTH) from None
    try:
        return StoredSession.from_json(json.loads(text))
    except ValueError as exc:
        raise CliError(f"The session file {path} is not valid ({exc}).", exit_code=EXIT_AUTH,
                       hints=["Run `ingot login` again to replace it."]) from None


def remove_session(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def normalize_url(url: str) -> str:
    """``host:port`` → ``https://host:port``; no trailing slash.

    :raises UsageError: for anything that is not an http(s) URL with a host.
    """
    text = url.strip()
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(f"Not an appliance URL: {url!r}.", hints=["Use e.g. https://appliance.example:8443."])
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise UsageError(f"The appliance URL must not have a path: {url!r}.")
    return f"{parts.scheme}://{parts.netloc}"


def tls_from_env(env: Mapping[str, str]) -> TlsSettings | None:
    insecure = env.get("INGOT_INSECURE", "").strip().lower() in _TRUE
    ca_cert = env.get("INGOT_CA_CERT") or None
    if not insecure and ca_cert is None:
        return None
    return TlsSettings(insecure=insecure, ca_cert=str(Path(ca_cert).expanduser()) if ca_cert else None)


def resolve_target(env: Mapping[str, str] | None = None) -> Target:
    """The target for an authenticated command.

    :raises NotLoggedIn: without ``INGOT_TOKEN`` and without a stored session.
    """
    env = os.environ if env is None else env
    stored = load_session(session_path(env))
    token = env.get("INGOT_TOKEN", "").strip()
    if token:
        env_url = env.get("INGOT_URL", "").strip()
        if env_url:
            url, tls = normalize_url(env_url), tls_from_env(env) or TlsSettings()
        elif stored is not None:
            url, tls = stored.url, tls_from_env(env) or stored.tls
        else:
            url, tls = DEFAULT_URL, tls_from_env(env) or TlsSettings()
        return Target(url=url, credential=token, tls=tls, via="token")
    if stored is None:
        raise NotLoggedIn()
    return Target(url=stored.url, credential=stored.session_id, tls=stored.tls, via="session",
                  user_name=stored.user_name)


def _make_private_dirs(directory: Path) -> None:
    """Create missing directories with mode 0700; never change one that exists."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # created meanwhile by someone else: theirs to keep as it is
            continue
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
