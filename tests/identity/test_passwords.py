"""Passwords: the scrypt format, salted hashes, constant-time checks that refuse malformed hashes."""

from __future__ import annotations

import re

import pytest

from masterchief.identity.index import User
from masterchief.identity.passwords import hash_password, verify_password

HASH_FORMAT = re.compile(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}")


def test_hash_and_verify() -> None:
    h = hash_password("correct horse")
    assert HASH_FORMAT.fullmatch(h)
    assert hash_password("correct horse") != h  # salted
    user = User(handle="u", password_hash=h)
    assert verify_password(user, "correct horse")
    assert not verify_password(user, "correct horsE")
    assert not verify_password(user, "")
    assert not verify_password(User(handle="u"), "correct horse")
    assert not verify_password(None, "correct horse")


@pytest.mark.parametrize(
    "stored",
    [
        "garbage",
        "md5$1$2$3$abc$def",
        "scrypt$16384$8$1$!!!$abc",
        "scrypt$3$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,  # n not a power of two
        "scrypt$1099511627776$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,  # absurd cost
    ],
)
def test_malformed_hashes_never_verify(stored: str) -> None:
    assert not verify_password(User(handle="u", password_hash=stored), "anything")
