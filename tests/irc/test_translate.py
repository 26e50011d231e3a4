"""The pure IRC translator: raw server lines in, Event chains and actions out.

Tables in the style of h11's ``test_io.py``: each row is a raw line, the
view it is read over, and the chains (type, key, a few fields) and actions
it must give.  No server, no pydle: ``StaticView`` stands for the connection.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from masterchief.irc.message import Message, parse, split_source
from masterchief.irc.translate import (
    Action,
    Echo,
    LineError,
    ModeRules,
    NickChanged,
    Regain,
    Rejoin,
    SeenUser,
    SelfJoined,
    StaticView,
    Welcome,
    mode_changes,
    translate,
)

ALICE = ":alice!al@host.example"
VIEW = StaticView(
    nick="Bot",
    primary_nick="Bot",
    members={"#ops": frozenset({"Bot", "alice", "bob"}), "#dev": frozenset({"Bot", "alice"})},
    accounts={"alice": "AliceAcct"},
)
ACCOUNTS = StaticView(
    nick="Bot",
    primary_nick="Bot",
    caps=frozenset({"account-tag", "extended-join", "account-notify"}),
    members={"#ops": frozenset({"Bot", "alice"})},
    accounts={"alice": "stale"},
)
ALT = StaticView(nick="Bot_", primary_nick="Bot", members={"#ops": frozenset({"Bot_", "Bot"})})

# -- parsing -------------------------------------------------------------------------

PARSE_CASES: list[tuple[str, Message]] = [
    ("PING :irc.test", Message("PING", ("irc.test",), None, {}, "PING :irc.test")),
    (
        ":irc.test 001 Bot :Welcome Bot!u@h",
        Message("001", ("Bot", "Welcome Bot!u@h"), "irc.test", {}, ":irc.test 001 Bot :Welcome Bot!u@h"),
    ),
    (
        f"{ALICE} privmsg #ops :!ping  a :b",
        Message("PRIVMSG", ("#ops", "!ping  a :b"), "alice!al@host.example", {}, f"{ALICE} privmsg #ops :!ping  a :b"),
    ),
    (
        f"@account=al;time=2026-01-02T03:04:05.000Z;+draft/x {ALICE} JOIN #ops",
        Message(
            "JOIN", ("#ops",), "alice!al@host.example",
            {"account": "al", "time": "2026-01-02T03:04:05.000Z"},
            f"@account=al;time=2026-01-02T03:04:05.000Z;+draft/x {ALICE} JOIN #ops",
        ),
    ),
    (
        r"@k=a\:b\sc\\d\re\nf\x\ MODE #ops +o bob",
        Message("MODE", ("#ops", "+o", "bob"), None, {"k": "a;b c\\d\re\nfx"}, r"@k=a\:b\sc\\d\re\nf\x\ MODE #ops +o bob"),
    ),
    ("TOPIC #ops :", Message("TOPIC", ("#ops", ""), None, {}, "TOPIC #ops :")),
    ("CMD   a   b", Message("CMD", ("a", "b"), None, {}, "CMD   a   b")),
]  # fmt: skip


@pytest.mark.parametrize(("line", "want"), PARSE_CASES)
def test_parse(line: str, want: Message) -> None:
    got = parse(line)
    assert (got.command, got.params, got.source, dict(got.tags), got.raw) == (
        want.command,
        want.params,
        want.source,
        dict(want.tags),
        want.raw,
    )


@pytest.mark.parametrize("line", ["", "   ", ":server.only", "@a=b", "@a=b :src"])
def test_parse_refuses_a_line_without_command(line: str) -> None:
    with pytest.raises(ValueError, match="without a command"):
        parse(line)


@pytest.mark.parametrize(
    ("source", "want"),
    [
        ("alice!al@host", ("alice", "al@host")),
        ("irc.test", (None, None)),
        (None, (None, None)),
        ("", (None, None)),
    ],
)
def test_split_source(source: str | None, want: tuple[str | None, str | None]) -> None:
    assert split_source(source) == want


# -- translation ---------------------------------------------------------------------

Row = tuple[str, str, str, dict[str, Any]]  # type, key, text, other fields


def run(line: str, view: StaticView = VIEW) -> tuple[list[list[Row]], list[Action]]:
    chains, actions = translate(parse(line), view)
    shown: list[list[Row]] = []
    for chain in chains:
        rows: list[Row] = []
        for ev in chain:
            extra = {
                k: getattr(ev, k)
                for k in ("nick", "uhost", "account", "channel")
                if getattr(ev, k) is not None
            }
            if ev.payload is not None and ev.type != "raw":
                extra["payload"] = ev.payload
            rows.append((ev.type, ev.key, ev.text, extra))
        shown.append(rows)
    return shown, actions


A = {"nick": "alice", "uhost": "al@host.example", "account": "AliceAcct"}
A_OPS = {**A, "channel": "#ops"}
A_DEV = {**A, "channel": "#dev"}
SEEN = SeenUser("alice", "al", "host.example")

CASES: list[tuple[str, str, StaticView, list[list[Row]], list[Action]]] = [
    # channel text: (pubm, pub); private text: (msgm, msg)
    ("pub", f"{ALICE} PRIVMSG #ops :!ping  hello there ", VIEW,
     [[("pubm", "#ops !ping  hello there ", "!ping  hello there ", A_OPS),
       ("pub", "!ping", "hello there", A_OPS)]], [SEEN]),
    ("msg", f"{ALICE} PRIVMSG Bot :ping 1", VIEW,
     [[("msgm", "ping 1", "ping 1", A), ("msg", "ping", "1", A)]], [SEEN]),
    ("ctcp", f"{ALICE} PRIVMSG Bot :\x01version\x01", VIEW,
     [[("ctcp", "VERSION", "", A)]], [SEEN]),
    ("ctcp in a channel", f"{ALICE} PRIVMSG #ops :\x01PING 123 4\x01", VIEW,
     [[("ctcp", "PING", "123 4", A_OPS)]], [SEEN]),
    ("ctcr", f"{ALICE} NOTICE Bot :\x01VERSION irssi\x01", VIEW,
     [[("ctcr", "VERSION", "irssi", A)]], [SEEN]),
    ("notc", f"{ALICE} NOTICE #ops :heads up", VIEW,
     [[("notc", "heads up", "heads up", A_OPS)]], [SEEN]),
    ("a server notice fires nothing", ":irc.test NOTICE * :*** Looking up your hostname", VIEW,
     [], []),
    # our own lines back through echo-message: no Event, an Echo for the outbox
    ("echo", ":bot!mc@h PRIVMSG #ops :pong 1", VIEW, [], [Echo("#ops", "pong 1")]),
    ("echoed notice", ":BOT!mc@h NOTICE alice :hi", VIEW, [], []),
    # join/part/quit/nick/kick/topic/mode/account
    ("join", f"{ALICE} JOIN #ops", VIEW,
     [[("join", "#ops alice!al@host.example", "", A_OPS)]], []),
    ("our join", ":Bot!mc@bot.host JOIN #ops", VIEW,
     [[("join", "#ops Bot!mc@bot.host", "", {"nick": "Bot", "uhost": "mc@bot.host", "channel": "#ops"})]],
     [SelfJoined("Bot", "mc", "bot.host")]),
    ("part", f"{ALICE} PART #ops :gone home", VIEW,
     [[("part", "#ops alice!al@host.example", "gone home", A_OPS)]], []),
    ("quit: one sign per shared channel", f"{ALICE} QUIT :bye", VIEW,
     [[("sign", "#ops alice!al@host.example", "bye", A_OPS)],
      [("sign", "#dev alice!al@host.example", "bye", A_DEV)]], []),
    ("nick", f"{ALICE} NICK :alicia", VIEW,
     [[("nick", "#ops alicia", "alicia", A_OPS)], [("nick", "#dev alicia", "alicia", A_DEV)]], []),
    ("our nick", ":Bot!mc@bot.host NICK Bot2", VIEW,
     [[("nick", "#ops Bot2", "Bot2", {"nick": "Bot", "uhost": "mc@bot.host", "channel": "#ops"})],
         [("nick", "#dev Bot2", "Bot2", {"nick": "Bot", "uhost": "mc@bot.host", "channel": "#dev"})]],
     [NickChanged("Bot2", "mc", "bot.host")]),
    ("kick", f"{ALICE} KICK #ops bob :behave", VIEW,
     [[("kick", "#ops bob behave", "bob behave", {**A_OPS, "payload": {"target": "bob", "reason": "behave"}})]],
     []),
    ("kicked: rejoin", f"{ALICE} KICK #ops bot", VIEW,
     [[("kick", "#ops bot", "bot", {**A_OPS, "payload": {"target": "bot", "reason": ""}})]],
     [Rejoin("#ops")]),
    ("kicked, no rejoin configured", f"{ALICE} KICK #ops Bot :x",
     StaticView(nick="Bot", rejoin_on_kick=False, members={"#ops": frozenset({"Bot", "alice"})}),
     [[("kick", "#ops Bot x", "Bot x", {"nick": "alice", "uhost": "al@host.example", "channel": "#ops",
                                        "payload": {"target": "Bot", "reason": "x"}})]], []),
    ("topic", f"{ALICE} TOPIC #ops :deploy freeze", VIEW,
     [[("topc", "#ops deploy freeze", "deploy freeze", A_OPS)]], []),
    ("mode: one Event per change", f"{ALICE} MODE #ops +ov-k bob bob key", VIEW,
     [[("mode", "#ops +o", "bob", A_OPS)], [("mode", "#ops +v", "bob", A_OPS)],
      [("mode", "#ops -k", "key", A_OPS)]], []),
    ("user mode: nothing", ":Bot MODE Bot :+i", VIEW, [], []),
    # accounts: the tag when account-tag is on (no tag = logged out), else what was learnt
    ("account tag wins", f"@account=AL {ALICE} PRIVMSG #ops :hi", ACCOUNTS,
     [[("pubm", "#ops hi", "hi", {**A_OPS, "account": "AL"}), ("pub", "hi", "", {**A_OPS, "account": "AL"})]],
     [SeenUser("alice", "al", "host.example", "AL")]),
    ("no tag with account-tag: logged out", f"{ALICE} PRIVMSG #ops :hi", ACCOUNTS,
     [[("pubm", "#ops hi", "hi", {"nick": "alice", "uhost": "al@host.example", "channel": "#ops"}),
       ("pub", "hi", "", {"nick": "alice", "uhost": "al@host.example", "channel": "#ops"})]], [SEEN]),
    ("extended-join", f"{ALICE} JOIN #ops AcctX :Alice A.", ACCOUNTS,
     [[("join", "#ops alice!al@host.example", "", {**A_OPS, "account": "AcctX"})]], []),
    ("extended-join, logged out", f"{ALICE} JOIN #ops * :Alice A.", ACCOUNTS,
     [[("join", "#ops alice!al@host.example", "", {"nick": "alice", "uhost": "al@host.example", "channel": "#ops"})]], []),
    ("account-notify", f"{ALICE} ACCOUNT NewAcct", ACCOUNTS,
     [[("account", "#ops alice!al@host.example NewAcct", "NewAcct", {**A_OPS, "account": "NewAcct"})]], []),
    ("account-notify, logout", f"{ALICE} ACCOUNT *", ACCOUNTS,
     [[("account", "#ops alice!al@host.example *", "*", {"nick": "alice", "uhost": "al@host.example", "channel": "#ops"})]], []),
    # server lines
    ("ERROR", "ERROR :Closing link: (mc@h) [K-Lined]", VIEW, [], [LineError("Closing link: (mc@h) [K-Lined]")]),
    ("welcome with our host", ":irc.test 001 Bot2 :Welcome to IRC Bot2!mc@bot.host", VIEW,
     [], [Welcome("Bot2", "mc", "bot.host")]),
    ("welcome without", ":irc.test 001 Bot2 :Welcome", VIEW, [], [Welcome("Bot2")]),
    ("monitor: our nick is free", ":irc.test 731 Bot_ :bot!x@y,other", ALT, [], [Regain()]),
    ("monitor: someone else", ":irc.test 731 Bot_ :other", ALT, [], []),
    ("the holder of our nick quits", ":BOT!x@y QUIT :bye", ALT,
     [[("sign", "#ops BOT!x@y", "bye", {"nick": "BOT", "uhost": "x@y", "channel": "#ops"})]], [Regain()]),
    ("the holder changes nick", ":Bot!x@y NICK other", ALT,
     [[("nick", "#ops other", "other", {"nick": "Bot", "uhost": "x@y", "channel": "#ops"})]], [Regain()]),
    ("unknown commands fire nothing", ":irc.test 372 Bot :- motd", VIEW, [], []),
    ("a line without params", f"{ALICE} QUIT", VIEW, [], []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "view", "chains", "actions"),
    [
        pytest.param(line, view, chains, actions, id=name)
        for name, line, view, chains, actions in CASES
    ],
)
def test_translate(
    line: str, view: StaticView, chains: list[list[Row]], actions: list[Action]
) -> None:
    assert run(line, view) == (chains, actions)


def test_casemapping_decides_what_is_ours_and_who_shares_a_channel() -> None:
    # rfc1459: [ ] \\ ~ are the lower case of { } | ^
    view = StaticView(nick="Bot{1}", members={"#ops": frozenset({"Bot{1}", "Zed[x]"})})
    assert run(":bot[1]!mc@h PRIVMSG #ops :pong", view) == ([], [Echo("#ops", "pong")])
    chains, _ = run(":ZED{X}!z@h QUIT :bye", view)
    assert [row[0][:2] for row in chains] == [("sign", "#ops ZED{X}!z@h")]
    ascii_view = StaticView(nick="Bot{1}", casemapping="ascii")
    chains, actions = run(":bot[1]!mc@h PRIVMSG #ops :pong", ascii_view)
    assert actions == [SeenUser("bot[1]", "mc", "h")] and chains[0][0][0] == "pubm"


def test_raw_events_only_for_commands_a_binding_wants() -> None:
    wants = StaticView(nick="Bot", raw=frozenset({"PRIVMSG", "372"}))
    chains, _ = translate(parse(f"{ALICE} PRIVMSG #ops :hi"), wants)
    raw = chains[0][0]
    assert (raw.type, raw.key, raw.text, raw.nick, raw.payload) == (
        "raw", "PRIVMSG", "#ops hi", "alice", f"{ALICE} PRIVMSG #ops :hi",
    )  # fmt: skip
    assert [ev.type for ev in chains[1]] == ["pubm", "pub"]
    chains, _ = translate(parse(":irc.test 372 Bot :- motd"), wants)
    assert [(c[0].type, c[0].key, c[0].nick) for c in chains] == [("raw", "372", None)]
    assert translate(parse(":irc.test 375 Bot :- start"), wants) == ([], [])
    # our own echo is still a raw line for a raw binding, and still an Echo
    chains, actions = translate(parse(":Bot!mc@h PRIVMSG #ops :pong"), wants)
    assert [c[0].type for c in chains] == ["raw"] and actions == [Echo("#ops", "pong")]


def test_event_time_is_the_server_time_tag_and_tags_are_kept() -> None:
    chains, _ = translate(
        parse(f"@time=2026-01-02T03:04:05.250Z;msgid=abc;flag {ALICE} PRIVMSG #ops :hi"), VIEW
    )
    ev = chains[0][0]
    assert ev.time == datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    assert dict(ev.tags) == {"time": "2026-01-02T03:04:05.250Z", "msgid": "abc"}
    # a bad tag is "now", not an error
    chains, _ = translate(parse(f"@time=yesterday {ALICE} PRIVMSG #ops :hi"), VIEW)
    assert abs((chains[0][0].time - datetime.now(UTC)).total_seconds()) < 60


def test_events_answer_through_the_views_reply() -> None:
    class Sink:
        def reply(self, event: object, text: str) -> None: ...

        def private(self, event: object, text: str) -> None: ...

    sink = Sink()
    view = StaticView(nick="Bot", reply=sink)
    chains, _ = translate(parse(f"{ALICE} PRIVMSG #ops :!x"), view)
    assert all(ev.sink is sink and ev.source == "irc" for ev in chains[0])


@pytest.mark.parametrize(
    ("args", "rules", "want"),
    [
        (["+o", "bob"], ModeRules(), [("+o", "bob")]),
        (["+ntl", "10"], ModeRules(), [("+n", ""), ("+t", ""), ("+l", "10")]),
        (["-l+k", "key"], ModeRules(), [("-l", ""), ("+k", "key")]),
        (["+b-b", "*!*@a", "*!*@b"], ModeRules(), [("+b", "*!*@a"), ("-b", "*!*@b")]),
        (["+qo", "x"], ModeRules(always=frozenset("qo")), [("+q", "x"), ("+o", "")]),
        ([], ModeRules(), []),
    ],
)
def test_mode_changes(args: list[str], rules: ModeRules, want: list[tuple[str, str]]) -> None:
    assert mode_changes(args, rules) == want
