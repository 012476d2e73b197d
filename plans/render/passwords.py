"""Password encodings that answer files expect: SHA-512 crypt and Windows' unattend encoding.

Python's :mod:`crypt` is deprecated (3.11) and gone in 3.13, so SHA-512 crypt is implemented
here from Ulrich Drepper's published specification ("Unix crypt using SHA-256 and SHA-512",
https://www.akkadia.org/drepper/SHA-crypt.txt). The test suite checks it against
``openssl passwd -6``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = ["SHA512_CRYPT_RE", "sha512_crypt", "windows_password"]

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SALT_RE = re.compile(r"[./0-9A-Za-z]{1,16}")
_ROUNDS_DEFAULT = 5000
_ROUNDS_MIN = 1000
_ROUNDS_MAX = 999_999_999
#: A complete ``$6$`` hash, with or without ``rounds=N$``.
SHA512_CRYPT_RE = re.compile(r"\$6\$(rounds=[0-9]{1,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}")

# The order in which the 64 digest bytes are emitted, three at a time (spec step 22).
_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
)


def _b64_24bit(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_ALPHABET[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat_to(digest: bytes, length: int) -> bytes:
    return digest * (length // len(digest)) + digest[: length % len(digest)]


def sha512_crypt(password: str, salt: str | None = None, *, rounds: int = _ROUNDS_DEFAULT) -> str:
    """Return the ``$6$`` crypt(3) hash of *password*.

    *salt* is up to 16 characters from ``[./0-9A-Za-z]`` (longer salts are cut to 16, as glibc
    does); a random 16-character salt is drawn when it is ``None``. *rounds* other than 5000 is
    written into the hash as ``rounds=N$`` and clamped to the range the specification allows.
    """
    if salt is None:
        salt = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    salt = salt[:16]
    if not _SALT_RE.fullmatch(salt):
        raise ValueError("salt must be 1-16 characters from [./0-9A-Za-z]")
    custom_rounds = rounds != _ROUNDS_DEFAULT
    rounds = min(max(rounds, _ROUNDS_MIN), _ROUNDS_MAX)
    p = password.encode("utf-8")
    s = salt.encode("ascii")

    b = hashlib.sha512(p + s + p).digest()
    a = hashlib.sha512(p + s + _repeat_to(b, len(p)))
    i = len(p)
    while i > 0:
        a.update(b if i & 1 else p)
        i >>= 1
    c = a.digest()

    p_bytes = _repeat_to(hashlib.sha512(p * len(p)).digest(), len(p))
    s_bytes = _repeat_to(hashlib.sha512(s * (16 + c[0])).digest(), len(s))

    for r in range(rounds):
        h = hashlib.sha512(p_bytes if r & 1 else c)
        if r % 3:
            h.update(s_bytes)
        if r % 7:
            h.update(p_bytes)
        h.update(c if r & 1 else p_bytes)
        c = h.digest()

    encoded = "".join(_b64_24bit(c[x], c[y], c[z], 4) for x, y, z in _ORDER) + _b64_24bit(0, 0, c[63], 2)
    prefix = f"$6$rounds={rounds}$" if custom_rounds else "$6$"
    return f"{prefix}{salt}${encoded}"


def windows_password(password: str, field: str) -> str:
    """Encode *password* the way Windows System Image Manager does for unattend.xml.

    The value is base64 of the UTF-16LE bytes of the password followed by the name of the
    element it goes in (``AdministratorPassword`` for ``UserAccounts/AdministratorPassword``,
    ``Password`` for ``AutoLogon/Password`` and local accounts); the element beside it must say
    ``<PlainText>false</PlainText>``. This hides the password from a casual look, it is not
    encryption.
    """
    return base64.b64encode((password + field).encode("utf-16-le")).decode("ascii")
