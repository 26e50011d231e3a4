"""FloodGate and Window: sans-I/O flood limits, as tables of (time, key) -> verdict."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.irc.flood import FloodGate, FloodPolicy, Verdict, Window
from masterchief.irc.pacer import OutputQueue
from masterchief.irc.supervisor import IrcBot, IrcSettings

OK, WARN, IGN = Verdict.OK, Verdict.WARN, Verdict.IGNORED
P = FloodPolicy(commands=5, per_s=10.0, ignore_s=60.0)


@pytest.mark.parametrize(
    ("hits", "expected"),
    [
        # five commands within 10 s are fine; the sixth warns, then ignored
        ([0, 1, 2, 3, 4], [OK] * 5),
        ([0, 1, 2, 3, 4, 5], [OK] * 5 + [WARN]),
        ([0, 1, 2, 3, 4, 5, 6, 30, 64.9], [OK] * 5 + [WARN, IGN, IGN, IGN]),
        # the ignore ends ignore_s after the warning, with a fresh window
        ([0, 1, 2, 3, 4, 5, 65, 66, 67, 68, 69], [OK] * 5 + [WARN] + [OK] * 5),
        ([0, 1, 2, 3, 4, 5, 65, 65, 65, 65, 65, 65], [OK] * 5 + [WARN] + [OK] * 5 + [WARN]),
        # a sliding window: 5 every 10 s forever is never too many
        ([0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20], [OK] * 11),
        # the window is half-open: a hit exactly per_s later has left it
        ([0, 0, 0, 0, 0, 10], [OK] * 6),
        ([0, 0, 0, 0, 0, 9.99], [OK] * 5 + [WARN]),
    ],
)
def test_one_key(hits: list[float], expected: list[Verdict]) -> None:
    gate = FloodGate(P)
    assert [gate.hit("host:u@h", t) for t in hits] == expected


def test_keys_are_counted_apart_and_ignored_is_read_only() -> None:
    gate = FloodGate(P)
    for t in range(5):
        assert gate.hit("host:a@h", t) is OK
        assert gate.hit("host:b@h", t) is OK
    assert gate.hit("host:a@h", 5) is WARN
    assert gate.ignored("host:a@h", 6) and not gate.ignored("host:b@h", 6)
    assert not gate.ignored("host:c@h", 6)
    assert gate.ignored("host:a@h", 64.9) and not gate.ignored("host:a@h", 65)
    assert gate.stats == {"ok": 10, "warned": 1, "ignored": 0}


def test_ignore_zero_only_drops_the_command_that_tipped_over() -> None:
    gate = FloodGate(FloodPolicy(commands=2, per_s=10, ignore_s=0))
    assert [gate.hit("k", t) for t in (0, 0, 0, 0)] == [OK, OK, WARN, OK]


def test_memory_is_bounded_and_idle_keys_go_first() -> None:
    gate = FloodGate(P, max_keys=3)
    for t in range(5):
        gate.hit("flooder", t)
    assert gate.hit("flooder", 5) is WARN
    gate.hit("idle1", 0)
    gate.hit("idle2", 20)  # full now: idle1 (quiet for 20 s) makes room... later
    gate.hit("new1", 21)
    gate.hit("new2", 22)
    assert len(gate) == 3
    # the ignored flooder is never the one forgotten while others are idle
    assert gate.ignored("flooder", 23)
    for i in range(100):
        gate.hit(f"k{i}", 30)
    assert len(gate) == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"commands": 0}, {"per_s": 0}, {"per_s": -1}, {"ignore_s": -1}],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="flood"):
        FloodPolicy(**kwargs)  # type: ignore[arg-type]


def test_notice_text() -> None:
    assert P.notice_text() == "you are being ignored for 60 s: too many commands"
    assert FloodPolicy(ignore_s=2.5).notice_text() == (
        "you are being ignored for 2.5 s: too many commands"
    )


@pytest.mark.parametrize(
    ("limit", "per_s", "times", "expected"),
    [
        (3, 60, [0, 1, 2, 3, 59.9, 60, 61, 62, 63], "YYYNNYYYN"),
        (0, 60, [0, 100], "NN"),
        (1, 1, [0, 0.5, 1, 1.5, 2], "YNYNY"),
    ],
)
def test_window(limit: int, per_s: float, times: list[float], expected: str) -> None:
    w = Window(limit, per_s)
    assert "".join("Y" if w.allow(t) else "N" for t in times) == expected


def test_window_count_and_bad_settings() -> None:
    w = Window(3, 10)
    assert w.record(0) == 1 and w.record(1) == 2 and w.count(5) == 2 and w.count(10.5) == 1
    with pytest.raises(ValueError):
        Window(-1, 10)
    with pytest.raises(ValueError):
        Window(1, 0)


def test_rehash_keeps_the_ctcp_window_unless_its_limits_change() -> None:
    bot = IrcBot(
        IrcSettings(ctcp_replies=1, ctcp_per_s=60), Dispatcher(BindingTable()), OutputQueue()
    )
    assert bot.ctcp_reply("bob", "PING", "1") and not bot.ctcp_reply("bob", "PING", "2")
    flood = SimpleNamespace(commands=5, per_s=10, ignore_s=60, ctcp_replies=1, ctcp_per_s=60)
    bot.configure_flood(flood)  # the same limits: the spent budget stays spent
    assert not bot.ctcp_reply("bob", "PING", "3")
    bot.configure_flood(SimpleNamespace(**{**vars(flood), "ctcp_replies": 2}))
    assert bot.ctcp_reply("bob", "PING", "4")  # new limits: a fresh window
    assert bot.stats["ctcp_answered"] == 2 and bot.stats["ctcp_unanswered"] == 2


def test_after_a_rehash_the_ignored_user_is_told_the_new_ignore_time() -> None:
    out = OutputQueue()
    bot = IrcBot(IrcSettings(flood=FloodPolicy(1, 60, 60)), Dispatcher(BindingTable()), out)
    limits = {"commands": 1, "per_s": 60, "ctcp_replies": 3, "ctcp_per_s": 60}
    bot.configure_flood(SimpleNamespace(ignore_s=120, **limits))
    ev = Event(type="pub", key="!x", nick="bob", uhost="bob@h", channel="#ops", source="irc")
    assert bot._gate(ev, None) and not bot._gate(ev, None)
    assert out.pop() == "NOTICE bob :you are being ignored for 120 s: too many commands"


# -- configuration: bot.flood and bot.private_replies are a contract -------------


def test_config_defaults_and_values(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from masterchief.config.engine import build_config
    from masterchief.runtime.compose import irc_settings

    cfg = build_config({}, project_dir=tmp_path)
    assert cfg.bot.private_replies == "privmsg"
    f = cfg.bot.flood
    assert (f.commands, f.per_s, f.ignore_s, f.ctcp_replies, f.ctcp_per_s) == (5, 10, 60, 3, 60)
    data = {
        "bot": {
            "private_replies": "notice",
            "flood": {"commands": 3, "per_s": 5, "ignore_s": 120, "ctcp_replies": 0},
        }
    }
    cfg = build_config(data, project_dir=tmp_path)
    assert cfg.bot.private_replies == "notice"
    s = irc_settings(cfg)
    assert s.flood == FloodPolicy(commands=3, per_s=5, ignore_s=120)
    assert (s.ctcp_replies, s.ctcp_per_s) == (0, 60)


@pytest.mark.parametrize(
    ("bot", "where"),
    [
        ({"private_replies": "query"}, "private_replies"),
        ({"flood": {"commands": 0}}, "commands"),
        ({"flood": {"per_s": 0}}, "per_s"),
        ({"flood": {"ignore_s": -1}}, "ignore_s"),
        ({"flood": {"ctcp_replies": -1}}, "ctcp_replies"),
        ({"flood": {"command": 5}}, "command"),  # a typo is an error, not ignored
    ],
)
def test_config_refuses_bad_values(tmp_path, bot: dict[str, object], where: str) -> None:  # type: ignore[no-untyped-def]
    from masterchief.config.engine import ConfigError, build_config

    with pytest.raises(ConfigError, match=where):
        build_config({"bot": bot}, project_dir=tmp_path)
