"""Password hashing and bearer secrets.

Passwords are hashed with argon2id (argon2-cffi's defaults). Session IDs and API tokens are random
256-bit secrets; only their SHA-256 digests are stored, which is enough for secrets of that
entropy and lets a lookup be a single indexed read.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.errors import WeakPassword

_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong user name costs as much as a wrong
# password and response time does not reveal which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
TOKEN_PREFIX = "ingot_"  # noqa: S105 - a marker, not a secret


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(reason=f"at least {MIN_PASSWORD_LENGTH} characters are required")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(reason=f"at most {MAX_PASSWORD_LENGTH} characters are allowed")


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
