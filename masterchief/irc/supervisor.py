"""The IRC side of the bot: one connection at a time, lines in, Events out.

How this works
--------------
``IrcBot.run()`` is a supervisor: it builds a fresh ``client.Client`` (pydle)
per connection attempt and waits an exponentially growing, jittered delay
after each one ends.  Nothing a connection does ends the supervisor except a
fatal login error (``SaslFailed``): an unexpected exception (a pydle bug) is
logged and treated like a dropped connection.

Every line the client reads comes to ``on_message`` synchronously, in
arrival order: ``translate.translate`` turns it into Event chains and
actions over the connection's ``View``; this module carries the actions out
(the server's ERROR text for ``status()``, our own nick and host for the
pacer's line splitting, regaining the configured nick, rejoining after a
kick, the outbox's echo confirmation through ``on_echo``) and submits the
chains to the dispatcher.

Command floods: everything from a user who is being ignored is dropped
before it becomes an Event.  Whether a pub/msg line is a command (some
binding answers it) and who sent it is learnt once, by the dispatcher:
its ``gate`` (``_gate``) counts the command against the sender's
``FloodGate`` (keyed by account, else user@host); one too many and the
sender is told once by NOTICE and ignored for ``ignore_s``.  Global +f, +m
(and +n) and +b are exempt.

Reconnects: see ``run()``.  ``status()`` says whether the bot is registered
and, if not, why (the server's ERROR text, the connect error, the SASL
failure) and when it tries again.  Replies go through the paced
``OutputQueue``; its ``run()`` task lives for one connection and is
restarted after a reconnect, so what was queued while the server was away
goes out afterwards, in order (after the JOINs, which have the higher
"mode" priority).  While disconnected the queue splits text for the
worst-case prefix: the nick, user and host we come back with are not known
yet.

Nicks: when the configured nick is taken the bot registers with an alt nick
and takes the nick back as soon as it is free: the server's MONITOR tells it
(731) when the holder quits or changes nick, a QUIT or NICK seen in a shared
channel does too, and a slow periodic retry covers servers without MONITOR.
Nick and channel names are compared with the server's CASEMAPPING.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..bindings.access import Principal
from ..bindings.dispatcher import Dispatcher
from ..bindings.event import Event
from ..bindings.flags import implied
from ..bindings.masks import irc_lower
from ..config.schema import FloodConfig
from .client import Client, View
from .flood import FloodGate, FloodPolicy, Verdict, Window
from .message import Message
from .pacer import WORST_NICK, OutputQueue, Priority
from .translate import (
    Echo,
    LineError,
    NickChanged,
    Regain,
    Rejoin,
    SeenUser,
    SelfJoined,
    Welcome,
    translate,
)
from .transport import IrcTransport

__all__ = ["IrcBot", "IrcSettings", "IrcStatus", "SaslFailed"]

log = logging.getLogger("masterchief.irc")

ACCOUNT_CAPS = ("account-tag", "extended-join", "account-notify")


class SaslFailed(RuntimeError):
    """SASL was configured but the bot could not log in."""


@dataclass(slots=True)
class IrcSettings:
    host: str = "127.0.0.1"
    port: int = 6667
    nick: str = "masterchief"
    alt_nicks: list[str] = field(default_factory=list)
    username: str = "masterchief"
    realname: str = "MasterChief"
    channels: list[tuple[str, str | None]] = field(default_factory=list)
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    rejoin_on_kick: bool = True
    rejoin_delay_s: float = 1.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    regain_interval_s: float = 30.0
    flood: FloodPolicy = field(default_factory=FloodPolicy)
    ctcp_replies: int = 3  # CTCP requests answered per ctcp_per_s, for the whole bot
    ctcp_per_s: float = 60.0


@dataclass(frozen=True, slots=True)
class IrcStatus:
    """Whether the bot is registered on IRC and, when it is not, why."""

    connected: bool
    reason: str  # "" when connected


# A connection that registered and then lasted less than this is "short";
# several short ones in a row bring the backoff back (see IrcBot.run).
SHORT_CONNECTION_S = 30.0
QUICK_RECONNECTS = 2  # short connections in a row that still reconnect at once

# Global flags whose holders no command flood limit applies to (Eggdrop
# exempts friends and bots; masters and owners run the bot).
FLOOD_EXEMPT = frozenset("fmb")

# Chains made of what a user says (dropped while the user is ignored).
_SAID = frozenset({"pubm", "msgm", "ctcp", "ctcr", "notc"})


class IrcBot:
    """Supervises the IRC connection; its ``transport`` answers its Events."""

    def __init__(
        self,
        settings: IrcSettings,
        dispatcher: Dispatcher,
        output: OutputQueue,
        *,
        rng: random.Random | None = None,
        private_notice: bool = False,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.output = output
        self.client: Client | None = None
        self.view: View | None = None
        self.fatal: str | None = None
        self.connected = asyncio.Event()
        # The Events' Reply and the irc: targets' Transport.
        self.transport = IrcTransport(output, self.connected, private_notice=private_notice)
        # Our own PRIVMSG echoed by the server (target, text): the outbox confirms with it.
        self.on_echo: Callable[[str, str], object] | None = None
        self.connects = 0
        self.stopping = False
        self.sasl_succeeded = False  # a SASL login worked at least once in this run
        self.account: str | None = None  # our services account (900), if logged in
        self._rng = rng or random.Random()
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._channel_keys: dict[str, str | None] = dict(settings.channels)
        self._regaining = False
        self.hooks_connected: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.flood = FloodGate(settings.flood)
        self._ctcp_budget = Window(settings.ctcp_replies, settings.ctcp_per_s)
        self._down = "not connected yet"  # why we are not registered, for status()
        self.stats: dict[str, int] = dict.fromkeys(
            ("ctcp_answered", "ctcp_unanswered", "flood_dropped", "flood_warned"), 0
        )
        dispatcher.gate = self._gate

    # -- state the rest of the bot reads ----------------------------------------

    @property
    def nickname(self) -> str | None:
        c = self.client
        return str(c.nickname) if c is not None and c.registered else None

    @property
    def casemapping(self) -> str:
        c = self.client
        return c.case_mapping if c is not None else "rfc1459"

    def has_cap(self, cap: str) -> bool:
        c = self.client
        return c is not None and c.has_cap(cap)

    @property
    def accounts_available(self) -> bool:
        return any(self.has_cap(cap) for cap in ACCOUNT_CAPS)

    @property
    def channels(self) -> list[str]:
        c = self.client
        return sorted(c.channels) if c is not None and c.connected else []

    def same_nick(self, a: str, b: str) -> bool:
        """Whether two nicks are the same under the server's case mapping."""
        return self.lower(a) == self.lower(b)

    def lower(self, text: str) -> str:
        return irc_lower(text, self.casemapping)

    def shares_channel(self, nick: str) -> bool:
        """Whether ``nick`` is on a channel the bot is on (so its QUIT reaches us)."""
        c = self.client
        return c is not None and c.connected and bool(c.common_channels(nick))

    def lookup_nick(self, nick: str) -> tuple[str | None, str, str] | None:
        """(account, user, host) of a nick the bot can see, else None."""
        c = self.client
        if c is None:
            return None
        account, user, host = c.user_info(nick)
        return (account, user or "*", host) if host else None

    def configure_flood(self, flood: FloodConfig) -> None:
        """New flood limits (``!rehash`` of ``bot.flood``).  A changed policy
        starts fresh counts (an ignore in progress ends); an unchanged one
        keeps them."""
        policy = FloodPolicy(flood.commands, flood.per_s, flood.ignore_s)
        if policy != self.flood.policy:
            self.flood = FloodGate(policy)
        if (flood.ctcp_replies, flood.ctcp_per_s) != self._ctcp_budget.limits:
            self._ctcp_budget = Window(flood.ctcp_replies, flood.ctcp_per_s)

    def status(self) -> IrcStatus:
        """Registered on IRC now, and if not, why (for ``/healthz``)."""
        if self.connected.is_set():
            return IrcStatus(True, "")
        return IrcStatus(False, self._down)

    # -- output ----------------------------------------------------------------

    def say(self, target: str, text: str, priority: Priority = "server") -> int:
        return self.output.privmsg(target, text, priority)

    def ctcp_reply(self, nick: str, keyword: str, text: str = "") -> bool:
        """Answer a CTCP request by NOTICE, within the bot-wide CTCP budget
        (``ctcp_replies`` per ``ctcp_per_s``); whether it was answered."""
        if not self._ctcp_budget.allow(time.monotonic()):
            self.stats["ctcp_unanswered"] += 1
            return False
        body = f"{keyword} {text}".strip()
        # CTCP framing: no \x01 inside; output.notice drops CR/LF/NUL.
        self.output.notice(nick, "\x01" + body.replace("\x01", "") + "\x01")
        self.stats["ctcp_answered"] += 1
        return True

    # -- supervisor ------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        s = self.settings
        cap = min(s.reconnect_max_s, s.reconnect_min_s * (2**attempt))
        return float(cap * self._rng.uniform(0.5, 1.0))

    async def run(self) -> None:
        """Stay connected until cancelled; raises SaslFailed on a fatal login error.

        Backoff: a server that refuses us (connect error, TLS error, closed
        before registering) is retried after a capped, jittered, doubling
        delay.  A connection that registered restarts that schedule, so a
        blip is followed by a reconnect within ``reconnect_min_s``, however
        soon after the last one it comes; only a server that drops us within
        ``SHORT_CONNECTION_S`` of registering more than ``QUICK_RECONNECTS``
        times in a row is backed off from again.
        """
        attempt = 0
        short = 0  # registered connections in a row that ended quickly
        loop = asyncio.get_running_loop()
        where = f"{self.settings.host}:{self.settings.port}"
        while True:
            client = Client(self, self.settings)
            self.client = client
            self.view = View(
                client,
                self.settings.nick,
                functools.partial(self.dispatcher.wants, "raw"),  # cached per bindings
                self.transport,
                self.settings.rejoin_on_kick,
            )
            # A new connection: the server's flood budget starts full, and
            # registration lines are charged to it (write_now).
            self.output.reset_budget()
            why = "connection closed"
            try:
                await client.start()
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                why = f"connection failed: {exc}"
                log.warning("IRC connection to %s failed: %s", where, exc)
            except Exception:  # a pydle bug must not end the bot: reconnect
                why = "connection ended by an unexpected error"
                log.exception("IRC connection to %s ended by an unexpected error", where)
            finally:
                registered_at = client.registered_at
                await self._on_disconnected(client)
            if client.error:
                why = f"closed by the server: {client.error}"
            self._down = f"{where}: {self.fatal or why}"
            if self.fatal:
                raise SaslFailed(self.fatal)
            if self.stopping:
                return
            if registered_at is not None:
                short = short + 1 if loop.time() - registered_at < SHORT_CONNECTION_S else 0
                attempt = max(0, short - QUICK_RECONNECTS)
            delay = self.backoff(attempt)
            attempt += 1
            self._down = f"{where}: {why}; reconnecting in {delay:.1f}s"
            log.info("reconnecting in %.2fs (attempt %d)", delay, attempt)
            await asyncio.sleep(delay)

    async def shutdown(self, reason: str = "MasterChief shutting down") -> None:
        """Send QUIT and close the connection; ``run()`` then returns.

        Closing the socket (rather than only cancelling the reader) is what
        reliably ends pydle's read loop: on Python 3.11 ``asyncio.wait_for``
        can swallow a cancellation that races with a line arriving.
        """
        self.stopping = True
        c = self.client
        if c is None or not c.connected:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.write_now(f"QUIT :{reason}"), 2)
        with contextlib.suppress(Exception):
            await c.disconnect(expected=True)

    async def fail_login(self, client: Client, reason: str) -> None:
        self.fatal = reason
        log.error("%s: stopping", reason)
        with contextlib.suppress(Exception):
            await client.disconnect(expected=True)

    async def drop(self, client: Client, reason: str) -> None:
        """End this connection (the supervisor reconnects with backoff)."""
        log.warning("%s: dropping the connection", reason)
        with contextlib.suppress(Exception):
            await client.disconnect(expected=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._conn_tasks.add(task)
        task.add_done_callback(self._conn_tasks.discard)

    async def _send(self, line: str) -> None:
        c = self.client
        if c is None or not c.connected:
            raise ConnectionError("not connected")
        try:
            await c.write_now(line, charge=False)  # the pacer took its tokens
        except (AttributeError, RuntimeError) as exc:  # pydle after a reset
            raise ConnectionError(str(exc)) from exc

    async def on_registered(self, client: Client) -> None:
        if client is not self.client:
            return
        self.connects += 1
        client.registered_at = asyncio.get_running_loop().time()
        _, user, host = client.user_info(client.nickname)
        if user and host:  # else keep what 001 told us (or the worst case)
            self.output.set_self(client.nickname, user, host)
        self.spawn(self.output.run(self._send))
        client.paced = True  # from now on pydle's own lines queue too
        self._down = ""
        for chan, key in self._channel_keys.items():
            line = f"JOIN {chan} {key}" if key else f"JOIN {chan}"
            self.output.raw(line, "mode")
        if not self._has_primary(client):
            self._start_regain(client)
        self.connected.set()
        log.info(
            "connected to %s:%s as %s", self.settings.host, self.settings.port, client.nickname
        )
        self._internal("init-server", "irc.connected")
        for hook in self.hooks_connected:
            self.spawn(hook())

    async def _on_disconnected(self, client: Client) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self._down = f"{self.settings.host}:{self.settings.port}: connection lost"
        self.account = None
        self._regaining = False
        # Until the next registration we do not know the nick, user and host
        # recipients will see: split what is queued meanwhile for the worst case.
        self.output.set_self("*" * WORST_NICK)
        # Let line tasks created just before the end run their first step,
        # then stop what is left (e.g. a WHOIS that will never be answered)
        # with the connection's own tasks.
        try:
            await asyncio.sleep(0)
        finally:
            tasks = [*self._conn_tasks, *client.line_tasks]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            if client.connection is not None and client.connection.connected:
                await client.connection.disconnect()
        if was:
            log.warning("disconnected from %s:%s", self.settings.host, self.settings.port)
            self._internal("disconnect-server", "irc.disconnected")

    def _internal(self, evnt: str, event: str) -> None:
        self.dispatcher.submit(Event(type="evnt", key=evnt, source="irc"))
        self.dispatcher.submit(Event(type="event", key=event, source="irc"))

    def _has_primary(self, client: Client) -> bool:
        return bool(client.is_same_nick(client.nickname, self.settings.nick))

    def _start_regain(self, client: Client) -> None:
        """We are not on our configured nick: watch for it to become free."""
        if self._regaining:
            return
        self._regaining = True
        if client.supports("MONITOR"):
            self.output.raw(f"MONITOR + {self.settings.nick}", "mode")
        self.spawn(self._regain_loop(client))

    def _try_regain(self, client: Client) -> None:
        if client.registered and not self._has_primary(client):
            self.output.raw(f"NICK {self.settings.nick}", "mode")

    async def _regain_loop(self, client: Client) -> None:
        # The slow fallback: MONITOR or a QUIT/NICK we see usually come first.
        try:
            while client.connected and not self._has_primary(client):
                await asyncio.sleep(self.settings.regain_interval_s)
                self._try_regain(client)
        finally:
            self._regaining = False

    async def _rejoin(self, chan: str) -> None:
        await asyncio.sleep(self.settings.rejoin_delay_s)
        key = self._key_for(chan)
        self.output.raw(f"JOIN {chan} {key}" if key else f"JOIN {chan}", "mode")

    def _key_for(self, chan: str) -> str | None:
        """The configured key of ``chan``, whatever case the server spells it in."""
        want = self.lower(chan)
        for name, key in self._channel_keys.items():
            if self.lower(name) == want:
                return key
        return None

    # -- lines -> Events -------------------------------------------------------

    def on_message(self, client: Client, message: Message) -> None:
        """One line from the server, in arrival order (see the module doc)."""
        view = self.view
        if client is not self.client or view is None:
            return
        chains, actions = translate(message, view)
        for action in actions:
            self._apply(client, action)
        if not chains:
            return
        submit = self.dispatcher.submit
        for chain in chains:
            first = chain[0]
            if first.type in _SAID and self.flood.ignored(self._flood_key(first), time.monotonic()):
                self.stats["flood_dropped"] += 1
                continue  # an ignored user: nothing they say reaches a binding
            submit(*chain)

    def _apply(self, client: Client, action: object) -> None:
        match action:
            case SeenUser(nick, user, host, account):
                client.seen_user(nick, user, host, account)
            case Echo(target, text):
                if self.on_echo is not None:
                    self.on_echo(target, text)
            case LineError(text):
                client.error = text
            case Welcome(nick, user, host):
                # pydle learns its nick from 001 in a task that may yield before
                # the next lines are handled; set it now for echo filtering.
                client.nickname = nick
                if user is not None and host is not None:
                    self.output.set_self(nick, user, host)
            case SelfJoined(nick, user, host):
                self.output.set_self(nick, user, host)
            case NickChanged(nick, user, host):
                client.nickname = nick  # see Welcome
                self.output.set_self(nick, user, host)
                if not self._has_primary(client):
                    self._start_regain(client)
            case Regain():
                self._try_regain(client)
            case Rejoin(channel):
                self.spawn(self._rejoin(channel))

    def _flood_key(self, ev: Event) -> str:
        """Who a line is from, for flood limits: the account, else user@host
        (never the nick: a nick change must not reset the count)."""
        if ev.account:
            return "account:" + self.lower(ev.account)
        return "host:" + self.lower(ev.uhost or ev.nick or "")

    def _gate(self, ev: Event, who: Principal | None) -> bool:
        """The dispatcher's gate: count a command (a pub/msg line some
        binding answers) from IRC against its sender's flood limit; False
        drops it (and the line it came with)."""
        if ev.source != "irc" or ev.type not in ("pub", "msg") or ev.replay_of is not None:
            return True
        if who is not None and implied(who.global_flags()) & FLOOD_EXEMPT:
            return True
        verdict = self.flood.hit(self._flood_key(ev), time.monotonic())
        if verdict is Verdict.OK:
            return True
        self.stats["flood_dropped"] += 1
        if verdict is Verdict.WARN and ev.nick:
            self.stats["flood_warned"] += 1
            policy = self.flood.policy  # the gate's, which a rehash replaces (not settings')
            log.warning(
                "ignoring %s (%s) for %gs: more than %d commands in %gs",
                ev.nick, self._flood_key(ev), policy.ignore_s, policy.commands, policy.per_s,
            )  # fmt: skip
            self.output.notice(ev.nick, policy.notice_text())
        return False
