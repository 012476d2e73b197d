"""Encryption at rest for secrets the appliance must give back to a device (BMC passwords).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key kept in
``INGOT_HOME/secret.key`` (mode 0600, created on first use). Hashing is not an option here: the
appliance has to present the plaintext to the BMC. A database dump or backup alone therefore
reveals no BMC password; the key file is what to protect (and to carry to a restored appliance).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from appliance.errors import ApplianceError

KEY_FILE = "secret.key"
PREFIX = "fernet:"  # lets a later key rotation tell formats apart


class SecretUnreadable(ApplianceError):
    msg_fmt = "A stored secret could not be decrypted: the key in {path} is not the one it was written with."
    error_code = "SECRET_UNREADABLE"
    default_actions = ("Restore the appliance's secret.key, or re-enter the credentials.",)


class SecretBox:
    def __init__(self, key: bytes, path: Path | None = None) -> None:
        self._fernet = Fernet(key)
        self._path = path

    @classmethod
    def for_home(cls, home: Path) -> SecretBox:
        """The appliance's box: load the key from ``home``, creating it (0600) the first time."""
        path = home / KEY_FILE
        home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_bytes().strip(), path)
        key = Fernet.generate_key()
        try:
            os.write(fd, key + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key, path)

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.removeprefix(PREFIX).encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise SecretUnreadable(path=str(self._path or "memory")) from exc

    def __repr__(self) -> str:
        return f"SecretBox({self._path})"
