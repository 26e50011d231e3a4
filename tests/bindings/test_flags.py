import pytest

from masterchief.bindings.flags import FlagError, FlagMask, apply_changes, implied


@pytest.mark.parametrize(
    ("mask", "glob", "chan", "ok"),
    [
        ("-|-", "", "", True),
        ("-|-", "d", "", False),  # Eggdrop: +d/+k refused by -|- commands
        ("-|-", "k", "", False),
        ("-|-", "", "k", False),
        ("-|-", "pd", "", True),  # ... unless +p
        ("o|o", "", "", False),
        ("o|o", "o", "", True),
        ("o|o", "", "o", True),
        ("o|o", "v", "v", False),
        ("o|o", "n", "", True),  # n implies m implies o
        ("o|o", "", "m", True),
        ("m|m", "o", "o", False),
        ("n", "m", "", False),
        ("n", "n", "", True),
        ("n", "", "n", False),  # global only
        ("-|o", "o", "", False),  # channel side only
        ("-|o", "", "o", True),
        ("o&v", "o", "", False),
        ("o&v", "o", "v", True),
        ("o&v", "", "v", False),
        ("o&v", "o", "o", True),  # channel o implies l implies v
        ("mn|m", "m", "", True),
        ("mn|m", "", "m", True),
        ("mn|m", "o", "o", False),
        ("v|v", "", "o", True),
        ("t", "m", "", True),
        ("p", "t", "", True),
    ],
)
def test_flag_mask_allows(mask: str, glob: str, chan: str, ok: bool) -> None:
    assert FlagMask.parse(mask).allows(glob, chan) is ok


def test_implied_chain() -> None:
    assert implied("n") == frozenset("nmotplv")
    assert implied("") == frozenset()


@pytest.mark.parametrize("bad", ["o|o|o", "o&o|v", "1|o", "o!"])
def test_bad_masks(bad: str) -> None:
    with pytest.raises(FlagError):
        FlagMask.parse(bad)


@pytest.mark.parametrize(
    ("cur", "change", "new"),
    [("", "+o", "o"), ("ov", "-v", "o"), ("o", "+mn-o", "mn"), ("", "ov", "ov"), ("o", "-", "o")],
)
def test_apply_changes(cur: str, change: str, new: str) -> None:
    assert apply_changes(cur, change) == new


def test_describe() -> None:
    assert FlagMask.parse("o|o").describe("#ops") == "global +o or +o on #ops"
    assert FlagMask.parse("-|o").describe("#ops") == "+o on #ops"
    assert FlagMask.parse("m").describe(None) == "global +m"
