from datetime import datetime

import pytest

from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindError, BindingTable


def h1(ev: Event) -> None: ...
def h2(ev: Event) -> None: ...


def test_decorator_returns_same_object() -> None:
    t = BindingTable()

    def f(ev: Event) -> None: ...

    assert t.bind("pub", "-|-", "!x")(f) is f
    assert t.bind("pub", "-|-", "!y", f) is f
    assert [b.mask for b in t.binds("pub")] == ["!y", "!x"]


@pytest.mark.parametrize(
    ("type_", "mask", "key", "hit"),
    [
        ("pub", "!ping", "!ping", True),
        ("pub", "!ping", "!PING", True),
        ("pub", "!ping", "!pingx", False),
        ("pubm", "#ops *deploy*", "#ops we deploy now", True),
        ("pubm", "#ops *deploy*", "#dev we deploy now", False),
        ("join", "#ops *!*@*", "#ops bob!b@host", True),
        ("raw", "PRIVMSG", "PRIVMSG", True),
        ("raw", "4*", "433", True),
        ("evnt", "rehash", "rehash", True),
        ("evnt", "rehash", "rehashed", False),
        ("event", "deploy.*", "deploy.finished", True),
    ],
)
def test_match_kinds(type_: str, mask: str, key: str, hit: bool) -> None:
    t = BindingTable()
    t.bind(type_, "-|-", mask, h1)
    got = t.snapshot.match(Event(type=type_, key=key))
    assert (len(got) == 1) is hit


def test_cron_matching() -> None:
    t = BindingTable()
    t.bind("time", "-|-", "*/5 * * * *", h1)
    t.bind("cron", "-|-", "0 9 * * 1", h2)
    at = datetime(2026, 11, 30, 9, 0)  # a Monday
    assert len(t.snapshot.match(Event(type="time", key="", payload=at))) == 1
    assert len(t.snapshot.match(Event(type="cron", key="", payload=at))) == 1
    later = datetime(2026, 11, 30, 9, 1)
    assert t.snapshot.match(Event(type="time", key="", payload=later)) == ()


def test_bad_cron_and_type() -> None:
    t = BindingTable()
    with pytest.raises(BindError):
        t.bind("time", "-|-", "every minute", h1)
    with pytest.raises(BindError):
        t.bind("cron", "-|-", "* * * *", h1)
    with pytest.raises(BindError):
        t.bind("nosuch", "-|-", "x", h1)
    with pytest.raises(BindError):
        t.bind("pub", "-|-", "!x", "not callable")  # type: ignore[call-overload]
    assert len(t) == 0


def test_non_stackable_user_shadows_builtin_and_stackable_fires_all() -> None:
    t = BindingTable()
    t.bind("pub", "-|-", "!help", h1, owner="builtin:core")
    t.bind("pub", "-|-", "!help", h2, owner="script:mine")
    got = t.snapshot.match(Event(type="pub", key="!help"))
    assert [b.handler for b in got] == [h2]
    t.unbind_owner("script:mine")
    assert [b.handler for b in t.snapshot.match(Event(type="pub", key="!help"))] == [h1]

    t.bind("pubm", "-|-", "*", h1, owner="builtin:core")
    t.bind("pubm", "-|-", "*", h2, owner="script:mine")
    got = t.snapshot.match(Event(type="pubm", key="#c x"))
    assert [b.handler for b in got] == [h2, h1]  # user bindings before built-ins


def test_unbind_exact_arguments() -> None:
    t = BindingTable()
    t.bind("pub", "o|o", "!x", h1)
    assert not t.unbind("pub", "-|-", "!x", h1)
    assert not t.unbind("pub", "o|o", "!x", h2)
    assert t.unbind("pub", "o|o", "!X", h1)
    assert len(t) == 0


def test_collecting_swaps_atomically() -> None:
    t = BindingTable()
    t.bind("pub", "-|-", "!old", h1, owner="script:a")
    snap_before = t.snapshot
    with t.collecting("script:a") as bucket:
        t.bind("pub", "-|-", "!new", h2)
        assert [b.mask for b in t.binds()] == ["!old"]  # not visible yet
    assert t.snapshot is snap_before
    t.replace_owner("script:a", bucket)
    assert [b.mask for b in t.binds()] == ["!new"]
    # the old snapshot is untouched for dispatches still using it
    assert [b.mask for b in snap_before] == ["!old"]


def test_partial_match_for_dcc() -> None:
    t = BindingTable()
    t.bind("dcc", "-|-", "rehash", h1)
    t.bind("dcc", "-|-", "restart", h2)
    t.bind("dcc", "-|-", "who", h1)
    assert [b.mask for b in t.snapshot.match(Event(type="dcc", key="reh"))] == ["rehash"]
    assert t.snapshot.match(Event(type="dcc", key="re")) == ()
    assert t.snapshot.ambiguous("dcc", "re") == ["rehash", "restart"]
    assert [b.mask for b in t.snapshot.match(Event(type="dcc", key="who"))] == ["who"]


def test_mask_index_agrees_with_plain_matching() -> None:
    """The snapshot's mask index (first-word buckets, literal needles) must give
    exactly what trying every mask with mask_match gives, in the same order."""
    import random

    from masterchief.bindings.masks import mask_match

    rng = random.Random(7)
    words = [
        "#ops",
        "#OPS",
        "#dev",
        "deploy",
        "Deploy",
        "kw",
        "a.b",
        "\u0130x",
        "\u017f",
        "\u212a",
        "x y",
        "",
    ]
    wild = ["*", "?", "%", "~", "\\*"]

    def rand_mask() -> str:
        parts = [rng.choice(words + wild) for _ in range(rng.randint(1, 4))]
        return rng.choice(["", " "]).join(parts) or "*"

    def rand_key() -> str:
        return " ".join(rng.choice([*words, "*", "zz", "kw1"]) for _ in range(rng.randint(1, 4)))

    t = BindingTable()
    masks = [rand_mask() for _ in range(300)]
    handlers = []
    for m in masks:

        def h(ev: Event) -> None: ...

        handlers.append(h)
        t.bind("pubm", "-|-", m, h)
    for _ in range(2000):
        key = rand_key()
        got = [b.handler for b in t.snapshot.match(Event(type="pubm", key=key))]
        want = [b.handler for b in t.binds("pubm") if mask_match(b.mask, key)]
        assert got == want, key


@pytest.mark.parametrize(
    ("mask", "key", "fires"),
    [
        ("/var/log/app.log", "/var/log/app.log any line at all", True),
        ("/var/log/app.log", "/var/log/app.log ", True),  # an empty line
        ("/var/log/app.log", "/var/log/other.log any line", False),
        ("/var/log/*.log", "/var/log/other.log x", True),
        ("/var/log/app.log *ERROR*", "/var/log/app.log 12:00 ERROR boom", True),
        ("/var/log/app.log *ERROR*", "/var/log/app.log 12:00 INFO fine", False),
        ("/var/log/app.log *ERROR*", "/var/log/b.log ERROR", False),
    ],
)
def test_log_mask_without_space_matches_every_line(mask: str, key: str, fires: bool) -> None:
    t = BindingTable()
    t.bind("log", "-|-", mask, h1)
    assert bool(t.snapshot.match(Event(type="log", key=key))) is fires


def test_word_means_all_is_only_for_log() -> None:
    t = BindingTable()
    t.bind("pubm", "-|-", "#ops", h1)
    assert not t.snapshot.match(Event(type="pubm", key="#ops hello"))


def test_mask_matches_agrees_with_match() -> None:
    """``Snapshot.mask_matches`` (the tailer's pre-filter, one regex over the
    needles) says yes exactly when ``match`` finds a binding."""
    import random

    rng = random.Random(11)
    words = ["/var/log/a.log", "/VAR/log/a.log", "ERROR", "error", "kw1", "a.b", "\u212a", "x"]
    wild = ["*", "?", "%", "~", "\\*", ""]
    checked = 0
    for _ in range(300):
        t = BindingTable()
        for _ in range(rng.randint(1, 6)):
            parts = [rng.choice(words + wild) for _ in range(rng.randint(1, 4))]
            t.bind("log", "-|-", rng.choice(["", " "]).join(parts) or "*", h1)
        for _ in range(30):
            key = " ".join(rng.choice([*words, "zz", "k"]) for _ in range(rng.randint(1, 4)))
            want = bool(t.snapshot.match(Event(type="log", key=key)))
            assert t.snapshot.mask_matches("log", key) is want, key
            checked += want
    assert checked > 100  # the table produced matches, not only misses
    assert not BindingTable().snapshot.mask_matches("log", "/x y")


@pytest.mark.parametrize(
    ("mask", "stored", "key", "fires"),
    [
        ("statuspage", "rest/statuspage", "rest/statuspage", True),
        ("rest/statuspage", "rest/statuspage", "rest/statuspage", True),
        ("REST/statuspage", "REST/statuspage", "rest/statuspage", True),
        ("statuspage", "rest/statuspage", "rest/other", False),
        ("status*", "rest/status*", "rest/statuspage", True),
        ("*", "rest/*", "rest/statuspage", True),
        ("*", "rest/*", "rest/other", True),
        ("rest/*", "rest/*", "rest/other", True),
        ("statuspage", "rest/statuspage", "rest/rest/statuspage", False),
    ],
)
def test_rest_masks_get_the_rest_prefix(mask: str, stored: str, key: str, fires: bool) -> None:
    # Keys are rest/<poller>; DESIGN's bind("rest", "-|-", "statuspage", h)
    # must keep working, so a mask without the prefix is given it.
    t = BindingTable()
    t.bind("rest", "-|-", mask, h1)
    assert [b.mask for b in t.binds("rest")] == [stored]
    assert bool(t.snapshot.match(Event(type="rest", key=key))) is fires


def test_rest_prefix_is_only_for_rest_and_unbind_takes_either_form() -> None:
    t = BindingTable()
    t.bind("webhook", "-|-", "push", h1)
    t.bind("event", "-|-", "statuspage", h1)
    assert [b.mask for b in t.binds()] == ["statuspage", "push"]
    t.bind("rest", "-|-", "statuspage", h1)
    t.bind("rest", "-|-", "rest/other", h2)
    assert t.unbind("rest", "-|-", "rest/statuspage", h1)
    assert t.unbind("rest", "-|-", "other", h2)
    assert t.binds("rest") == []
    with t.collecting("script:s") as bucket:
        t.bind("rest", "-|-", "svc", h1)
        assert t.unbind("rest", "-|-", "rest/svc", h1)  # from the collector, too
    assert bucket == []


def test_install_swaps_an_owners_bindings_in_one_publish() -> None:
    """While ``install`` collects the new set, readers still see the old one
    whole; afterwards only the new one, and other owners are untouched."""
    table = BindingTable()
    table.bind("pub", "-|-", "!other", lambda ev: None, owner="script:x")
    table.install(
        "builtin:core", lambda: [table.bind("pub", "-|-", f"!{w}", lambda ev: None) for w in "abc"]
    )
    seen_during: list[set[str]] = []

    def bind_new() -> None:
        table.bind("pub", "-|-", "!d", lambda ev: None)
        seen_during.append({b.mask for b in table.snapshot if b.owner == "builtin:core"})
        table.bind("pub", "-|-", "!e", lambda ev: None)

    assert table.install("builtin:core", bind_new) == 2
    assert seen_during == [{"!a", "!b", "!c"}]  # nothing of the new set was published yet
    assert sorted((b.owner, b.mask) for b in table.binds()) == [
        ("builtin:core", "!d"),
        ("builtin:core", "!e"),
        ("script:x", "!other"),
    ]
