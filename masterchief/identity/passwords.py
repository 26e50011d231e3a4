"""Passwords: scrypt hashes, checked in constant time.

How this works.  ``hash_password`` stores ``scrypt$n$r$p$salt$hash``;
``verify_password`` recomputes with the stored parameters (bounded, so a
forged record cannot make the bot spend unbounded memory) and compares in
constant time.  A user without a password costs the same work as a real
check, so timing does not tell which handles exist.  Both are CPU-heavy:
async code calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from masterchief.errors import UserError

if TYPE_CHECKING:
    from .index import User

__all__ = ["PASSWORD_MAX", "PASSWORD_MIN", "check_password", "hash_password", "verify_password"]

PASSWORD_MIN = 6


PASSWORD_MAX = 1024


_SCRYPT_N = 2**14


_SCRYPT_R = 8


_SCRYPT_P = 1


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=dklen,
        maxmem=256 * n * r * p + 2**20,
    )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt_b64$hash_b64``.  CPU-heavy: use ``asyncio.to_thread``."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P, 32)
    b64 = base64.b64encode
    return (
        f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}$"
        f"{b64(salt).decode('ascii')}${b64(digest).decode('ascii')}"
    )


_DUMMY_HASH: list[str] = []  # computed once, for users without a password


def verify_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s, compared in constant time.

    An unknown user or one without a password costs the same work as a real
    check, so timing does not tell which handles exist.  CPU-heavy: from
    async code call it through ``asyncio.to_thread``.
    """
    stored = user.password_hash if user is not None else None
    if not stored:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password("not-a-password"))
        _check(_DUMMY_HASH[0], password)
        return False
    return _check(stored, password)


def _check(stored: str, password: str) -> bool:
    try:
        scheme, n_s, r_s, p_s, salt_s, hash_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_s, validate=True)
        expected = base64.b64decode(hash_s, validate=True)
    except ValueError:
        return False
    if scheme != "scrypt" or not (1 < n <= 2**20 and n & (n - 1) == 0):
        return False
    if not (1 <= r <= 32 and 1 <= p <= 16 and 16 <= len(expected) <= 64):
        return False
    actual = _scrypt(password, salt, n, r, p, len(expected))
    return hmac.compare_digest(actual, expected)


def check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise UserError(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password
