"""Server lines to Events, as a pure function: ``translate(message, view)``.

How this works
--------------
``translate`` takes one parsed line (``message.Message``) and a read-only
``View`` of the connection (our nick, the configured nick, the server's
CASEMAPPING and capabilities, which channels a nick shares with us, the
channel modes that take a parameter, whether a ``raw`` binding wants the
command) and returns ``(events, actions)``: the Event chains for the
dispatcher, in order, and the ``Action`` values the client must carry out
(note the server's ERROR text, learn our own nick and host, try to regain
the configured nick, rejoin after a kick, confirm an echoed line, remember
what a message told us about its sender).  No I/O, no clock other than the
server-time tag, no pydle: ``irc/client.py`` builds the view from pydle's
state and applies the actions; ``tests/irc/test_translate.py`` drives it
with tables of raw lines.

The table ``_HANDLERS`` maps a command to its handler; every line also
becomes a ``raw`` Event when the view says a binding wants it.  Chains
(Eggdrop's rules): channel text is ``(pubm, pub)``, private text
``(msgm, msg)``; ``\\x01`` text is ``ctcp`` (a PRIVMSG) or ``ctcr`` (a
NOTICE); other notices are ``notc``; ``join``/``part``/``topc`` name the
channel, ``sign``/``nick``/``account`` fire once per channel the nick
shares with us, ``kick`` once, ``mode`` once per change (``+ov a b`` is
``+o a`` and ``+v b``).

Identity: the ``account`` of an Event is the IRCv3 ``account`` tag when the
server offers account-tag (then no tag means "not logged in"), else what
the client learnt (``View.known_account``: extended-join, account-notify,
WHOX); a JOIN with extended-join and an ACCOUNT line carry it themselves.
Our own PRIVMSGs come back with echo-message: they fire nothing and become
an ``Echo`` action (the durable outbox confirms its lines with it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ..bindings.event import Event, Reply
from ..bindings.masks import irc_lower
from .message import Message, split_source

__all__ = [
    "Action",
    "Chain",
    "Echo",
    "LineError",
    "ModeRules",
    "NickChanged",
    "Regain",
    "Rejoin",
    "SeenUser",
    "SelfJoined",
    "StaticView",
    "View",
    "Welcome",
    "mode_changes",
    "translate",
]

Chain = tuple[Event, ...]


# -- what the client must do ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineError:
    """The server closes the link (``ERROR``): keep why, for ``status()``."""

    text: str


@dataclass(frozen=True, slots=True)
class Welcome:
    """001: our nick is ``nick`` (now, before any later line is translated);
    ``user``/``host`` when the welcome text names our ``nick!user@host``."""

    nick: str
    user: str | None = None
    host: str | None = None


@dataclass(frozen=True, slots=True)
class SelfJoined:
    """We joined a channel: the server shows us as ``nick!user@host``."""

    nick: str
    user: str
    host: str


@dataclass(frozen=True, slots=True)
class NickChanged:
    """Our own nick is now ``nick`` (user/host when the line showed them)."""

    nick: str
    user: str | None = None
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Regain:
    """The configured nick may be free: ask for it (if we are not on it)."""


@dataclass(frozen=True, slots=True)
class Rejoin:
    """We were kicked from ``channel`` and rejoin after a delay."""

    channel: str


@dataclass(frozen=True, slots=True)
class Echo:
    """The server echoed our own PRIVMSG ``text`` to ``target``."""

    target: str
    text: str


@dataclass(frozen=True, slots=True)
class SeenUser:
    """A message showed ``nick``'s user@host (and its account tag, if any):
    what the library would have learnt from the line it no longer sees."""

    nick: str
    user: str
    host: str
    account: str | None = None


Action = LineError | Welcome | SelfJoined | NickChanged | Regain | Rejoin | Echo | SeenUser


# -- what translate reads ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModeRules:
    """Which channel mode letters take a parameter: ``always`` (lists, keys,
    prefix modes like ``o``/``v``), ``on_set`` only when set (``l``)."""

    always: frozenset[str] = frozenset("beIkohv")
    on_set: frozenset[str] = frozenset("lfjL")


class View(Protocol):
    """Read-only connection state, as ``translate`` needs it."""

    @property
    def nick(self) -> str:
        """Our nick now."""
        ...

    @property
    def primary_nick(self) -> str:
        """The configured nick (we may be on an alternative)."""
        ...

    @property
    def casemapping(self) -> str: ...

    @property
    def modes(self) -> ModeRules: ...

    @property
    def rejoin_on_kick(self) -> bool: ...

    @property
    def reply(self) -> Reply | None:
        """What the Events answer through."""
        ...

    def has_cap(self, cap: str) -> bool: ...

    def is_me(self, nick: str) -> bool:
        """Whether ``nick`` is ours under the server's case mapping."""
        ...

    def is_channel(self, name: str) -> bool: ...

    def channels_of(self, nick: str) -> list[str]:
        """The channels ``nick`` shares with us."""
        ...

    def known_account(self, nick: str) -> str | None:
        """The account learnt for ``nick`` (extended-join, account-notify, WHOX)."""
        ...

    def wants_raw(self, command: str) -> bool:
        """Whether a ``raw`` binding matches ``command``."""
        ...


@dataclass(frozen=True, slots=True)
class StaticView:
    """A ``View`` from plain values (tests, tools): ``members`` maps a
    channel to the nicks in it."""

    nick: str = "bot"
    primary_nick: str = "bot"
    casemapping: str = "rfc1459"
    caps: frozenset[str] = frozenset()
    members: dict[str, frozenset[str]] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)
    modes: ModeRules = ModeRules()
    raw: frozenset[str] = frozenset()  # commands a raw binding wants ("*": all)
    rejoin_on_kick: bool = True
    reply: Reply | None = None
    chantypes: str = "#&"

    def has_cap(self, cap: str) -> bool:
        return cap in self.caps

    def is_me(self, nick: str) -> bool:
        return irc_lower(nick, self.casemapping) == irc_lower(self.nick, self.casemapping)

    def is_channel(self, name: str) -> bool:
        return bool(name) and name[0] in self.chantypes

    def channels_of(self, nick: str) -> list[str]:
        low = irc_lower(nick, self.casemapping)
        return [
            chan
            for chan, nicks in self.members.items()
            if any(irc_lower(n, self.casemapping) == low for n in nicks)
        ]

    def known_account(self, nick: str) -> str | None:
        return self.accounts.get(nick)

    def wants_raw(self, command: str) -> bool:
        return command in self.raw or "*" in self.raw


# -- the translation -------------------------------------------------------------------

Result = tuple[list[Chain], list[Action]]
_NOTHING: Result = ([], [])


def translate(message: Message, view: View) -> tuple[list[Chain], list[Action]]:
    """The Event chains and actions for one server line (see the module doc)."""
    cmd = message.command
    nick, uhost = split_source(message.source)
    raw: list[Chain] = []
    if view.wants_raw(cmd):  # only lines some raw binding wants
        raw.append(
            (
                Event(
                    type="raw",
                    key=cmd,
                    text=" ".join(message.params),
                    nick=nick,
                    uhost=uhost,
                    tags=message.tags,
                    payload=message.raw,
                    source="irc",
                ),
            )
        )
    server = _SERVER.get(cmd)
    if server is not None:
        chains, actions = server(message, view)
        return raw + chains, actions
    handler = _HANDLERS.get(cmd)
    if handler is None or nick is None or not message.params:
        return raw, []
    if handler is _message and view.is_me(nick):  # our own line, back through echo-message
        if cmd == "PRIVMSG":
            return raw, [Echo(message.params[0], message.params[-1])]
        return raw, []
    tags = message.tags
    account = tags.get("account") or None
    if account is None and not view.has_cap("account-tag"):
        account = view.known_account(nick)
    common: dict[str, Any] = {
        "time": server_time(tags.get("time")),
        "nick": nick,
        "uhost": uhost,
        "account": account,
        "tags": tags,
        "source": "irc",
        "sink": view.reply,
    }
    chains, actions = handler(message, view, common)
    return (raw + chains if raw else chains), actions


def server_time(value: str | None) -> datetime:
    """The IRCv3 server-time tag, else now."""
    if value:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.now(UTC)


# -- lines from the server itself --------------------------------------------------------


def _error(m: Message, view: View) -> Result:
    return [], [LineError(m.params[-1] if m.params else "ERROR")]


def _welcome(m: Message, view: View) -> Result:
    if not m.params:
        return _NOTHING
    # The welcome text usually ends in our nick!user@host.
    words = m.params[-1].split()
    last = words[-1] if words else ""
    if "!" in last and "@" in last:
        _, _, uh = last.partition("!")
        user, _, host = uh.partition("@")
        return [], [Welcome(m.params[0], user, host)]
    return [], [Welcome(m.params[0])]


def _monitor_offline(m: Message, view: View) -> Result:
    # 731: these nicks went offline (MONITOR)
    if len(m.params) < 2:
        return _NOTHING
    cm = view.casemapping
    want = irc_lower(view.primary_nick, cm)
    gone = (split_source(t)[0] or t for t in m.params[1].split(","))
    if any(irc_lower(n, cm) == want for n in gone):
        return [], [Regain()]
    return _NOTHING


_SERVER: dict[str, Callable[[Message, View], Result]] = {
    "ERROR": _error,
    "001": _welcome,
    "731": _monitor_offline,
}


# -- lines from users ---------------------------------------------------------------------

Common = dict[str, Any]


def _message(m: Message, view: View, common: Common) -> Result:
    nick: str = common["nick"]  # not ours: translate() took our echoes
    target = m.params[0]
    text = m.params[-1] if len(m.params) > 1 else ""
    uhost = common["uhost"]
    actions: list[Action] = []
    if uhost and "@" in uhost:
        user, _, host = uhost.partition("@")
        actions.append(SeenUser(nick, user, host, m.tags.get("account") or None))
    chan = target if view.is_channel(target) else None
    if len(text) >= 2 and text.startswith("\x01"):
        keyword, _, rest = text.strip("\x01").partition(" ")
        etype = "ctcp" if m.command == "PRIVMSG" else "ctcr"
        ev = Event(type=etype, key=keyword.upper(), channel=chan, text=rest, **common)
        return [(ev,)], actions
    if m.command == "NOTICE":
        return [(Event(type="notc", key=text, channel=chan, text=text, **common),)], actions
    word, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    if chan is not None:
        line = Event(type="pubm", key=f"{chan} {text}", channel=chan, text=text, **common)
        command = Event(type="pub", key=word, channel=chan, text=rest, **common)
    else:
        line = Event(type="msgm", key=text, text=text, **common)
        command = Event(type="msg", key=word, text=rest, **common)
    return [(line, command)], actions


def _join(m: Message, view: View, common: Common) -> Result:
    chan, nick, uhost = m.params[0], common["nick"], common["uhost"]
    if len(m.params) >= 2 and view.has_cap("extended-join"):
        common["account"] = None if m.params[1] == "*" else m.params[1]
    actions: list[Action] = []
    if view.is_me(nick) and uhost and "@" in uhost:
        user, _, host = uhost.partition("@")
        actions.append(SelfJoined(nick, user, host))
    ev = Event(type="join", key=f"{chan} {nick}!{uhost}", channel=chan, **common)
    return [(ev,)], actions


def _part(m: Message, view: View, common: Common) -> Result:
    chan = m.params[0]
    reason = m.params[1] if len(m.params) > 1 else ""
    key = f"{chan} {common['nick']}!{common['uhost']}"
    return [(Event(type="part", key=key, channel=chan, text=reason, **common),)], []


def _holder_left(nick: str, view: View) -> list[Action]:
    """Someone else left the configured nick: it may be ours to take."""
    cm = view.casemapping
    if irc_lower(nick, cm) == irc_lower(view.primary_nick, cm) and not view.is_me(nick):
        return [Regain()]
    return []


def _quit(m: Message, view: View, common: Common) -> Result:
    nick, uhost = common["nick"], common["uhost"]
    reason = m.params[0]
    chains: list[Chain] = [
        (Event(type="sign", key=f"{chan} {nick}!{uhost}", channel=chan, text=reason, **common),)
        for chan in view.channels_of(nick)
    ]
    return chains, _holder_left(nick, view)


def _nick(m: Message, view: View, common: Common) -> Result:
    nick, uhost = common["nick"], common["uhost"]
    new = m.params[0]
    actions: list[Action] = []
    if view.is_me(nick):
        user = host = None
        if uhost and "@" in uhost:
            user, _, host = uhost.partition("@")
        actions.append(NickChanged(new, user, host))
    chains: list[Chain] = [
        (Event(type="nick", key=f"{chan} {new}", channel=chan, text=new, **common),)
        for chan in view.channels_of(nick)
    ]
    return chains, actions + _holder_left(nick, view)


def _kick(m: Message, view: View, common: Common) -> Result:
    if len(m.params) < 2:
        return _NOTHING
    chan, target = m.params[0], m.params[1]
    reason = m.params[2] if len(m.params) > 2 else ""
    ev = Event(
        type="kick",
        key=f"{chan} {target} {reason}".rstrip(),
        channel=chan,
        text=f"{target} {reason}".rstrip(),
        payload={"target": target, "reason": reason},
        **common,
    )
    rejoin: list[Action] = [Rejoin(chan)] if view.is_me(target) and view.rejoin_on_kick else []
    return [(ev,)], rejoin


def _mode(m: Message, view: View, common: Common) -> Result:
    chan = m.params[0]
    if not view.is_channel(chan):
        return _NOTHING  # a user mode
    chains: list[Chain] = [
        (Event(type="mode", key=f"{chan} {change}", channel=chan, text=arg, **common),)
        for change, arg in mode_changes(m.params[1:], view.modes)
    ]
    return chains, []


def _topic(m: Message, view: View, common: Common) -> Result:
    chan = m.params[0]
    topic = m.params[1] if len(m.params) > 1 else ""
    return [(Event(type="topc", key=f"{chan} {topic}", channel=chan, text=topic, **common),)], []


def _account(m: Message, view: View, common: Common) -> Result:
    nick, uhost = common["nick"], common["uhost"]
    acct = m.params[0]
    common["account"] = None if acct == "*" else acct
    chains: list[Chain] = [
        (
            Event(
                type="account",
                key=f"{chan} {nick}!{uhost} {acct}",
                channel=chan,
                text=acct,
                **common,
            ),
        )
        for chan in view.channels_of(nick)
    ]
    return chains, []


_HANDLERS: dict[str, Callable[[Message, View, Common], Result]] = {
    "PRIVMSG": _message,
    "NOTICE": _message,
    "JOIN": _join,
    "PART": _part,
    "QUIT": _quit,
    "NICK": _nick,
    "KICK": _kick,
    "MODE": _mode,
    "TOPIC": _topic,
    "ACCOUNT": _account,
}


def mode_changes(args: list[str] | tuple[str, ...], rules: ModeRules) -> list[tuple[str, str]]:
    """Split ``+ov-k a b c`` into ``[("+o", "a"), ("+v", "b"), ("-k", "c")]``."""
    if not args:
        return []
    params = list(args[1:])
    out: list[tuple[str, str]] = []
    sign = "+"
    for mode in args[0]:
        if mode in "+-":
            sign = mode
            continue
        takes = mode in rules.always or (sign == "+" and mode in rules.on_set)
        arg = params.pop(0) if takes and params else ""
        out.append((sign + mode, arg))
    return out
