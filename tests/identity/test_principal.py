"""What a match that is not trusted with privileges keeps (issue 8, item 2)."""

from __future__ import annotations

import pytest

from masterchief.identity.principal import Identity, Via, restriction, unprivileged
from masterchief.identity.users import User


@pytest.mark.parametrize(
    ("flags", "kept"),
    [("", ""), ("n", "v"), ("mo", "v"), ("v", "v"), ("l", "v"), ("t", ""), ("p", ""),
     ("od", "dv"), ("kq", "kq"), ("r", "r"), ("fAZ", "")],
)  # fmt: skip
def test_unprivileged_keeps_voice_and_restrictions(flags: str, kept: str) -> None:
    assert unprivileged(flags) == kept


RULES = [
    # (via, weak mask, accounts available, hostmask_flags) -> restricted?
    ("account", False, True, False, False),
    ("account", False, False, False, False),
    ("hostmask", False, False, False, False),  # no accounts: the host is all there is
    ("hostmask", False, True, False, True),  # accounts: a hostmask is only a claim...
    ("hostmask", False, True, True, False),  # ...unless configured
    ("hostmask", True, False, False, True),  # a weak mask: never
    ("hostmask", True, True, True, True),
]


@pytest.mark.parametrize(("via", "weak", "accounts", "hostmask_flags", "restricted"), RULES)
def test_the_restriction_rule(
    via: Via, weak: bool, accounts: bool, hostmask_flags: bool, restricted: bool
) -> None:
    why = restriction(via, "*!c@h", weak, accounts, hostmask_flags)
    assert (why is not None) == restricted
    who = Identity(User("carol", flags="n", chanflags={"#ops": "o"}), via, "rfc1459", None, why)
    assert who.global_flags() == ("v" if restricted else "n")
    assert who.channel_flags("#OPS") == ("v" if restricted else "o")
    assert (who.approval_refusal() is None) == (not restricted)
