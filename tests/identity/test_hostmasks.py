"""Weak hostmasks: the one definition the table, the CLI and !adduser share (issue 8, item 2)."""

from __future__ import annotations

import pytest

from masterchief.errors import UserError
from masterchief.identity.hostmasks import WeakHostmask, check_hostmask_strength, is_weak_hostmask

WEAK = ["*!carol@*", "carol!*@*", "*!*@*", "*!~carol@*", "*!carol@*.*", "*!carol@*.com",
        "*!carol@10.*", "*!*@user/*", "*!carol@*home*", "*!carol@?*", "*!carol@*:*"]  # fmt: skip
STRONG = ["*!carol@host.example", "*!*@*.corp.example", "*!carol@192.168.*", "*!*@2001:db8:*",
          "*!*@user/carol", "*!carol@localhost", "*!carol@127.0.0.1", "*!x@gw\\*.example.org"]  # fmt: skip


@pytest.mark.parametrize("mask", WEAK)
def test_weak_hostmasks(mask: str) -> None:
    assert is_weak_hostmask(mask)
    with pytest.raises(WeakHostmask, match=r"is weak: its host part pins nobody"):
        check_hostmask_strength(mask)


@pytest.mark.parametrize("mask", STRONG)
def test_strong_hostmasks(mask: str) -> None:
    assert not is_weak_hostmask(mask)
    assert check_hostmask_strength(mask) == mask


def test_check_hostmask_strength_still_validates() -> None:
    with pytest.raises(UserError, match="invalid hostmask") as err:
        check_hostmask_strength("a b")
    assert not isinstance(err.value, WeakHostmask)
