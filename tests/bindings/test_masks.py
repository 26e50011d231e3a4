import pytest

from masterchief.bindings.masks import irc_lower, mask_match


@pytest.mark.parametrize(
    ("mask", "text", "ok"),
    [
        ("*", "", True),
        ("*", "anything at all", True),
        ("#ops *", "#ops hello world", True),
        ("#ops *", "#dev hello", False),
        ("#OPS *deploy*", "#ops please deploy now", True),
        ("?", "a", True),
        ("?", "ab", False),
        ("a?c", "abc", True),
        ("% *", "word rest of line", True),
        ("%", "two words", False),
        ("%", "", True),
        ("#ops %", "#ops oneword", True),
        ("#ops %", "#ops two words", False),
        ("a~b", "a   b", True),
        ("a~b", "ab", False),
        (r"\*literal", "*literal", True),
        (r"\*literal", "xliteral", False),
        ("[x]", "[x]", True),
        ("a.b", "axb", False),
        ("*!*@10.0.0.*", "nick!user@10.0.0.5", True),
        ("*!*@10.0.0.*", "nick!user@10.0.1.5", False),
        ("line\n*", "line\nmore", True),
    ],
)
def test_mask_match(mask: str, text: str, ok: bool) -> None:
    assert mask_match(mask, text) is ok


@pytest.mark.parametrize(
    ("mapping", "text", "lower"),
    [
        ("rfc1459", "Nick[A]\\~", "nick{a}|^"),
        ("strict-rfc1459", "Nick[A]\\~", "nick{a}|~"),
        ("ascii", "Nick[A]", "nick[a]"),
        ("unknown-mapping", "ÄB", "äb"),
    ],
)
def test_irc_lower(mapping: str, text: str, lower: str) -> None:
    assert irc_lower(text, mapping) == lower
