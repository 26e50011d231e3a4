"""The IRC side of the bot, on pydle — the only module that imports pydle.

How this works
--------------
``IrcBot.run()`` is a supervisor: it builds a fresh pydle client per
connection attempt, connects (TLS verified by default), registers (CAP
negotiation, SASL PLAIN when configured) and reads until the connection
drops, then waits an exponentially growing, jittered delay and tries again.
Nothing a connection does ends the supervisor except a fatal login error:
an unexpected exception (a pydle bug, a line it cannot parse) is logged and
treated like a dropped connection.

SASL: when credentials are configured the bot never goes on unauthenticated.
Refused credentials (904 and friends), a server without SASL PLAIN, or a
first registration without a login are fatal: ``run()`` raises
``SaslFailed``.  Once the bot has logged in, a server that stops offering
SASL (services split off while the ircd restarted) only drops that
connection and the bot reconnects with backoff until services are back.

pydle keeps the channel/user state and answers PINGs.  It handles each line
in its own task, started in arrival order; ``_Client.on_data`` keeps those
tasks (they end with the connection: no fire-and-forget) and skips a line
pydle cannot parse instead of dying on it.  Every line passes through
``_Client.on_raw``, which — synchronously, before pydle updates its state and
before yielding to the loop, so order is preserved — turns it into Events for
the dispatcher: ``pubm``+``pub`` chains for channel text, ``msgm``+``msg``
for private text, ``join``/``part``/``sign``/``nick``/``kick``/``mode``/
``topc``/``notc``/``ctcp``/``ctcr``/``account``, and ``raw`` for every line
when something is bound to raw.

Identity: the ``account`` of an Event comes from the IRCv3 ``account`` tag
when the server offers account-tag (no tag then means "not logged in"), else
from what pydle learnt through extended-join, account-notify and WHOX.

Every byte the bot writes is paced or counted: once registered, the lines
pydle sends by itself (WHO and MODE after a JOIN, MONITOR, CAP) go into the
``OutputQueue``; PING/PONG/QUIT and registration are written at once and
charged to its bucket (``_Client._send``).  pydle's own CTCP VERSION reply
and its WHOIS on every nick change are switched off: CTCP is answered by
the bot's ``ctcp`` bindings through ``ctcp_reply()``, at most
``ctcp_replies`` per ``ctcp_per_s`` for the whole bot.

Command floods: a pub/msg line that some binding answers counts against its
sender's ``FloodGate`` (keyed by account, else user@host); one too many and
the sender is told once by NOTICE and ignored for ``ignore_s`` -- every
line from them is dropped before it becomes an Event.  Global +f, +m (and
+n) and +b are exempt.

Reconnects: see ``run()``.  ``status()`` says whether the bot is registered
and, if not, why (the server's ERROR text, the connect error, the SASL
failure) and when it tries again.

Replies go through the paced ``OutputQueue``; its ``run()`` task lives for
one connection and is restarted after a reconnect, so what was queued while
the server was away goes out afterwards, in order (after the JOINs, which
have the higher "mode" priority).  While disconnected the queue splits text
for the worst-case prefix: the nick, user and host we come back with are not
known yet.

Nicks: when the configured nick is taken the bot registers with an alt nick
and takes the nick back as soon as it is free: the server's MONITOR tells it
(731) when the holder quits or changes nick, a QUIT or NICK seen in a shared
channel does too, and a slow periodic retry covers servers without MONITOR.
Nick and channel names are compared with the server's CASEMAPPING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydle
import pydle.connection

from ..bindings.dispatcher import Dispatcher
from ..bindings.event import Event
from ..bindings.flags import implied
from ..bindings.masks import irc_lower
from .flood import FloodGate, FloodPolicy, Verdict, Window
from .pacer import WORST_NICK, OutputQueue, Priority
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

# Lines that never wait in the queue, only charged to its bucket: a PONG
# (or our own PING on a read timeout) that waited behind replies would get
# the bot pinged out, and a QUIT ends the connection anyway.
_DIRECT = frozenset({"PING", "PONG", "QUIT"})


def split_source(source: str | None) -> tuple[str | None, str | None]:
    """``nick!user@host`` -> (nick, "user@host"); a server name -> (None, None)."""
    if not source or "!" not in source:
        return None, None
    nick, _, uhost = source.partition("!")
    return nick, uhost


def _server_time(value: str | None) -> datetime:
    """The IRCv3 server-time tag, else now."""
    if value:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return datetime.now(UTC)


class _Connection(pydle.connection.Connection):  # type: ignore[misc]
    """pydle's connection, plus an optional CA file for verification and
    immediate ACKs.

    InspIRCd does not set TCP_NODELAY.  With echo-message every reply we send
    comes back to us and we never answer the echo, so our kernel delays its
    ACK (~40 ms) and the server holds back the next small line to us until it
    comes: a 40 ms floor on every command (bench/rtt.py measured p50 43.6 ms).
    Re-arming TCP_QUICKACK after each read (Linux) removes it.
    """

    ca_file: str | None = None

    def create_tls_context(self) -> ssl.SSLContext:
        ctx: ssl.SSLContext = super().create_tls_context()
        if self.tls_verify and self.ca_file:
            ctx.load_verify_locations(cafile=self.ca_file)
        return ctx

    async def connect(self) -> None:
        await super().connect()
        sock = self.writer.get_extra_info("socket") if self.writer is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    async def recv(self, *, timeout: float | None = None) -> bytes:
        data: bytes = await super().recv(timeout=timeout)
        sock = getattr(self, "_sock", None)
        if sock is not None and _QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return data


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class _Client(pydle.Client):  # type: ignore[misc]
    RECONNECT_ON_ERROR = False
    READ_TIMEOUT = 180
    _sasl_timer: asyncio.TimerHandle | None

    def __init__(self, bot: IrcBot, s: IrcSettings) -> None:
        kwargs: dict[str, Any] = {}
        if s.sasl_username is not None:
            kwargs.update(
                sasl_username=s.sasl_username,
                sasl_password=s.sasl_password,
                sasl_mechanism="PLAIN",
            )
        super().__init__(
            s.nick, fallback_nicknames=list(s.alt_nicks), username=s.username,
            realname=s.realname, **kwargs,
        )  # fmt: skip
        self.bot = bot
        self.sasl_ok = False
        self.was_registered = False
        self.ready = False  # on_connect ran (end of MOTD) for this connection
        self.paced = False  # the OutputQueue sends for this connection: write through it
        self.registered_at: float | None = None  # loop time of end-of-MOTD
        self.error: str | None = None  # the server's ERROR text, when it closes on us
        self.line_tasks: set[asyncio.Task[Any]] = set()

    # -- connection ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, register and read until the connection ends."""
        s = self.bot.settings
        self._autojoin_channels: list[str] = []
        self.password = None
        self.encoding = "utf-8"
        conn = _Connection(s.host, s.port, tls=s.tls, tls_verify=s.tls_verify)
        conn.ca_file = s.tls_ca_file
        self.connection = conn
        await conn.connect()
        await self._register()
        await self.handle_forever()

    async def on_disconnect(self, expected: bool) -> None:
        # The supervisor in IrcBot.run() decides about reconnecting.
        return None

    # -- every byte we write ---------------------------------------------------

    async def _send(self, input: Any) -> None:
        """Every line pydle writes by itself passes here.

        Once the pacer runs for this connection, lines go into its queue
        (pydle's WHO/MODE after a JOIN, MONITOR, CAP ...); PING, PONG and
        QUIT, and everything before registration, are written at once but
        charged to the pacer's bucket, so the server's flood budget counts
        every byte.
        """
        text = input.decode(self.encoding) if isinstance(input, bytes) else str(input)
        line = text.rstrip("\r\n")
        command = line.split(" ", 1)[0].upper()
        if self.paced and command not in _DIRECT:
            if not self.bot.output.raw(line, "mode"):
                log.warning("output queue refused a %s line from the IRC library", command)
            return
        await self.write_now(line)

    async def write_now(self, line: str, *, charge: bool = True) -> None:
        """Write one line (no CRLF) to the socket now, charged to the pacer's
        bucket (``charge=False`` only for a line the pacer itself handed out:
        it has paid already)."""
        data = line + "\r\n"
        if charge:
            self.bot.output.charge(len(data.encode(self.encoding)))
        await super()._send(data)

    # -- pydle features that would write behind the pacer's back ---------------

    async def on_ctcp_version(self, by: str, target: str, contents: str) -> None:
        # pydle answers VERSION itself, unpaced: 30 clients x 10 VERSION got
        # the bot quit with "RecvQ exceeded".  The bot's own ctcp bindings
        # answer, within the bot-wide CTCP budget (IrcBot.ctcp_reply).
        return None

    async def whois(self, nickname: str) -> None:
        # pydle asks WHOIS on every nick change (to refresh the account) and
        # for each new user on servers without WHOX: an attacker changing nick
        # in a loop would make the bot flood itself.  Accounts come from
        # account-tag, extended-join, account-notify and WHOX instead.
        return None

    async def _rename_user(self, user: str, new: str) -> None:
        # A nick change does not change the account; pydle forgets it (and
        # would WHOIS to learn it again).
        info = self.users.get(user) or {}
        keep = {k: info[k] for k in ("account", "identified") if k in info}
        await super()._rename_user(user, new)
        if keep and new in self.users:
            self.users[new].update(keep)

    async def on_connect(self) -> None:
        if self.ready:  # a second end-of-MOTD (someone made us send MOTD)
            return
        self.ready = True
        await self.bot._on_registered(self)

    # -- every line ------------------------------------------------------------

    async def on_data(self, data: bytes) -> None:
        # pydle's own on_data, with the line tasks kept (so they are awaited or
        # cancelled with the connection) and unparsable lines skipped: pydle
        # raises on some malformed lines, which would end the connection.
        self._receive_buffer += data
        loop = asyncio.get_running_loop()
        while self._has_message():
            try:
                message = self._parse_message()
            except Exception:
                log.warning("skipped a line from the server that pydle cannot parse", exc_info=True)
                continue
            task = loop.create_task(self.on_raw(message))
            self.line_tasks.add(task)
            task.add_done_callback(self.line_tasks.discard)

    async def on_raw(self, message: Any) -> None:
        try:
            self.bot._translate(self, message)
        except Exception:
            log.exception("could not turn %r into events", getattr(message, "_raw", message))
        if not self.connected:
            # The connection ended (we dropped it after a login error, or the
            # server closed it) before pydle got to this line: its handlers
            # would only write to a closed socket or announce a registration
            # that is already over.
            return
        await super().on_raw(message)

    async def on_raw_001(self, message: Any) -> None:
        self.was_registered = True
        if self.bot.settings.sasl_username is not None and not self.sasl_ok:
            # Registered without a login: never stay like that.
            reason = "SASL login did not complete (the server offered no SASL)"
            if self.bot.sasl_succeeded:
                await self.bot._drop(self, reason + "; services may be restarting")
            else:
                await self.bot._fatal(self, reason)
            return
        await super().on_raw_001(message)

    async def on_raw_903(self, message: Any) -> None:
        self.sasl_ok = True
        self.bot.sasl_succeeded = True
        await super().on_raw_903(message)

    async def on_raw_900(self, message: Any) -> None:
        if len(message.params) >= 3:
            self.bot.account = str(message.params[2])

    async def on_raw_901(self, message: Any) -> None:
        self.bot.account = None

    async def _sasl_failed(self, message: Any) -> None:
        code = str(message.command).zfill(3)
        await self.bot._fatal(self, f"SASL authentication failed ({code})")

    on_raw_902 = _sasl_failed
    on_raw_904 = _sasl_failed
    on_raw_905 = _sasl_failed
    on_raw_908 = _sasl_failed

    async def on_raw_433(self, message: Any) -> None:
        if self.registered:  # our regain attempt failed: someone still has it
            return
        await super().on_raw_433(message)

    async def on_capability_server_time_available(self, value: Any) -> bool:
        return True

    async def on_capability_message_tags_available(self, value: Any) -> bool:
        return True

    async def on_capability_sasl_available(self, value: Any) -> Any:
        if self.sasl_username and self.sasl_password:
            try:
                import puresasl  # noqa: F401
            except ImportError:
                await self.bot._fatal(self, "SASL configured but pure-sasl is not installed")
                return False
            mechanisms = str(value).upper().split(",") if isinstance(value, str) else []
            if mechanisms and "PLAIN" not in mechanisms:
                await self.bot._fatal(
                    self, f"SASL PLAIN is not offered by the server (it offers {value})"
                )
                return False
        return await super().on_capability_sasl_available(value)

    async def _sasl_start(self, mechanism: str) -> None:
        # pydle's SASL timer schedules a coroutine function with call_later,
        # which never runs it: registration would hang until the server's
        # timeout. Drop the connection instead and try again later.
        await self.rawmsg("AUTHENTICATE", mechanism)
        self._sasl_timer = asyncio.get_running_loop().call_later(
            self.SASL_TIMEOUT, self._sasl_timed_out
        )

    def _sasl_timed_out(self) -> None:
        self._sasl_timer = None
        self.bot._spawn(self.bot._drop(self, "SASL: no answer from the server's services"))


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
        self.client: _Client | None = None
        self.fatal: str | None = None
        self.connected = asyncio.Event()
        # The Events' Reply and the irc: targets' Transport.
        self.transport = IrcTransport(output, self.connected, private_notice=private_notice)
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

    # -- state the rest of the bot reads ----------------------------------------

    @property
    def nickname(self) -> str | None:
        c = self.client
        return c.nickname if c is not None and c.registered else None

    @property
    def casemapping(self) -> str:
        c = self.client
        return str(c._case_mapping) if c is not None else "rfc1459"

    def has_cap(self, cap: str) -> bool:
        c = self.client
        return bool(c is not None and c._capabilities.get(cap))

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
        return c is not None and c.connected and bool(self._common_channels(c, nick))

    def lookup_nick(self, nick: str) -> tuple[str | None, str, str] | None:
        """(account, user, host) of a nick the bot can see, else None."""
        c = self.client
        info = c.users.get(nick) if c is not None else None
        if not info or not info.get("hostname"):
            return None
        acct = info.get("account")
        return (acct if isinstance(acct, str) and acct else None,
                str(info.get("username") or "*"), str(info["hostname"]))  # fmt: skip

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
            client = _Client(self, self.settings)
            self.client = client
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

    async def _fatal(self, client: _Client, reason: str) -> None:
        self.fatal = reason
        log.error("%s: stopping", reason)
        with contextlib.suppress(Exception):
            await client.disconnect(expected=True)

    async def _drop(self, client: _Client, reason: str) -> None:
        """End this connection (the supervisor reconnects with backoff)."""
        log.warning("%s: dropping the connection", reason)
        with contextlib.suppress(Exception):
            await client.disconnect(expected=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
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

    async def _on_registered(self, client: _Client) -> None:
        if client is not self.client:
            return
        self.connects += 1
        client.registered_at = asyncio.get_running_loop().time()
        user, host = self._self_userhost(client)
        if user and host:  # else keep what 001 told us (or the worst case)
            self.output.set_self(client.nickname, user, host)
        self._spawn(self.output.run(self._send))
        client.paced = True  # from now on pydle's own lines queue too
        self._down = ""
        for chan, key in self._channel_keys.items():
            line = f"JOIN {chan} {key}" if key else f"JOIN {chan}"
            self.output.raw(line, "mode")
        if not client.is_same_nick(client.nickname, self.settings.nick):
            self._start_regain(client)
        self.connected.set()
        log.info(
            "connected to %s:%s as %s", self.settings.host, self.settings.port, client.nickname
        )
        self._internal("init-server", "irc.connected")
        for hook in self.hooks_connected:
            self._spawn(hook())

    async def _on_disconnected(self, client: _Client) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self._down = f"{self.settings.host}:{self.settings.port}: connection lost"
        self.account = None
        self._regaining = False
        # Until the next registration we do not know the nick, user and host
        # recipients will see: split what is queued meanwhile for the worst case.
        self.output.set_self("*" * WORST_NICK)
        # Let line tasks created just before the end run their first step (the
        # translation into Events), then stop what is left (e.g. a WHOIS that
        # will never be answered) with the connection's own tasks.
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

    def _self_userhost(self, client: _Client) -> tuple[str | None, str | None]:
        me = client.users.get(client.nickname) or {}
        return me.get("username"), me.get("hostname")

    def _has_primary(self, client: _Client) -> bool:
        return bool(client.is_same_nick(client.nickname, self.settings.nick))

    def _start_regain(self, client: _Client) -> None:
        """We are not on our configured nick: watch for it to become free."""
        if self._regaining:
            return
        self._regaining = True
        if "MONITOR" in client._isupport:
            self.output.raw(f"MONITOR + {self.settings.nick}", "mode")
        self._spawn(self._regain_loop(client))

    def _try_regain(self, client: _Client) -> None:
        if client.registered and not self._has_primary(client):
            self.output.raw(f"NICK {self.settings.nick}", "mode")

    async def _regain_loop(self, client: _Client) -> None:
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

    def _account(self, client: _Client, nick: str | None, tags: dict[str, Any]) -> str | None:
        acct = tags.get("account")
        if isinstance(acct, str) and acct:
            return acct
        if nick is None or client._capabilities.get("account-tag"):
            return None
        info = client.users.get(nick)
        value = info.get("account") if info else None
        return value if isinstance(value, str) and value else None

    def _common_channels(self, client: _Client, nick: str) -> list[str]:
        return [name for name, ch in client.channels.items() if nick in ch.get("users", ())]

    def _translate(self, client: _Client, message: Any) -> None:
        if client is not self.client:
            return
        command = message.command
        cmd = str(command).zfill(3) if isinstance(command, int) else str(command).upper()
        params: list[str] = [str(p) for p in message.params]
        raw_tags = getattr(message, "tags", None) or {}
        tags = {k: v for k, v in raw_tags.items() if isinstance(v, str)}
        nick, uhost = split_source(message.source)
        submit = self.dispatcher.submit
        snap = self.dispatcher.table.snapshot
        if snap.mask_matches("raw", cmd):  # only lines some raw binding wants
            submit(
                Event(
                    type="raw",
                    key=cmd,
                    text=" ".join(params),
                    nick=nick,
                    uhost=uhost,
                    tags=tags,
                    payload=getattr(message, "_raw", None),
                    source="irc",
                )
            )
        if cmd == "ERROR":  # the server closes the link: keep why, for status()
            client.error = params[-1] if params else "ERROR"
            return
        if cmd == "001":
            # pydle learns its nick from 001 in a task that may yield before the
            # next lines are handled; set it now so echo filtering and
            # on_connect see the real nick.
            if params:
                client.nickname = params[0]
            self._note_self_from_welcome(params)
            return
        if cmd == "731" and len(params) >= 2:  # MONITOR: these nicks went offline
            gone = [split_source(t)[0] or t for t in params[1].split(",")]
            if any(self.lower(n) == self.lower(self.settings.nick) for n in gone):
                self._try_regain(client)
            return
        if nick is None or not params:
            return
        account = self._account(client, nick, raw_tags)
        common: dict[str, Any] = {
            "time": _server_time(tags.get("time")),
            "nick": nick,
            "uhost": uhost,
            "account": account,
            "tags": tags,
            "source": "irc",
            "sink": self.transport,
        }
        me = client.is_same_nick(nick, client.nickname)
        if cmd in ("PRIVMSG", "NOTICE"):
            if me:
                return  # our own echo-message
            target, text = params[0], params[-1] if len(params) > 1 else ""
            chan = target if client.is_channel(target) else None
            self._message(cmd, chan, text, common)
        elif cmd == "JOIN":
            chan = params[0]
            if len(params) >= 2 and client._capabilities.get("extended-join"):
                common["account"] = None if params[1] == "*" else params[1]
            if me and uhost and "@" in uhost:
                user, host = uhost.split("@", 1)
                self.output.set_self(nick, user, host)
            submit(Event(type="join", key=f"{chan} {nick}!{uhost}", channel=chan, **common))
        elif cmd == "PART":
            chan = params[0]
            reason = params[1] if len(params) > 1 else ""
            submit(
                Event(
                    type="part", key=f"{chan} {nick}!{uhost}", channel=chan, text=reason, **common
                )
            )
        elif cmd == "QUIT":
            reason = params[0] if params else ""
            for chan in self._common_channels(client, nick):
                submit(
                    Event(
                        type="sign",
                        key=f"{chan} {nick}!{uhost}",
                        channel=chan,
                        text=reason,
                        **common,
                    )
                )
            if self.lower(nick) == self.lower(self.settings.nick) and not me:
                self._try_regain(client)
        elif cmd == "NICK":
            new = params[0]
            if me:
                client.nickname = new  # see 001: before any later line is handled
                me_user: str | None = None
                me_host: str | None = None
                if uhost and "@" in uhost:
                    me_user, me_host = uhost.split("@", 1)
                self.output.set_self(new, me_user, me_host)
                if not self._has_primary(client):
                    self._start_regain(client)
            for chan in self._common_channels(client, nick):
                submit(Event(type="nick", key=f"{chan} {new}", channel=chan, text=new, **common))
            if self.lower(nick) == self.lower(self.settings.nick) and not me:
                self._try_regain(client)
        elif cmd == "KICK" and len(params) >= 2:
            chan, target = params[0], params[1]
            reason = params[2] if len(params) > 2 else ""
            submit(
                Event(
                    type="kick",
                    key=f"{chan} {target} {reason}".rstrip(),
                    channel=chan,
                    text=f"{target} {reason}".rstrip(),
                    payload={"target": target, "reason": reason},
                    **common,
                )
            )
            if client.is_same_nick(target, client.nickname) and self.settings.rejoin_on_kick:
                self._spawn(self._rejoin(chan))
        elif cmd == "MODE" and client.is_channel(params[0]):
            chan = params[0]
            for change, arg in self._mode_changes(client, params[1:]):
                submit(Event(type="mode", key=f"{chan} {change}", channel=chan, text=arg, **common))
        elif cmd == "TOPIC":
            chan = params[0]
            topic = params[1] if len(params) > 1 else ""
            submit(Event(type="topc", key=f"{chan} {topic}", channel=chan, text=topic, **common))
        elif cmd == "ACCOUNT":
            acct = params[0]
            common["account"] = None if acct == "*" else acct
            for chan in self._common_channels(client, nick):
                submit(
                    Event(
                        type="account",
                        key=f"{chan} {nick}!{uhost} {acct}",
                        channel=chan,
                        text=acct,
                        **common,
                    )
                )

    def _message(self, cmd: str, chan: str | None, text: str, common: dict[str, Any]) -> None:
        submit = self.dispatcher.submit
        who = self._flood_key(common)
        if self.flood.ignored(who, time.monotonic()):
            self.stats["flood_dropped"] += 1
            return  # an ignored user: nothing they say reaches a binding
        if len(text) >= 2 and text.startswith("\x01"):
            body = text.strip("\x01")
            keyword, _, rest = body.partition(" ")
            etype = "ctcp" if cmd == "PRIVMSG" else "ctcr"
            submit(Event(type=etype, key=keyword.upper(), channel=chan, text=rest, **common))
            return
        if cmd == "NOTICE":
            submit(Event(type="notc", key=text, channel=chan, text=text, **common))
            return
        word, _, rest = text.strip().partition(" ")
        rest = rest.strip()
        if chan is not None:
            line = Event(type="pubm", key=f"{chan} {text}", channel=chan, text=text, **common)
            command = Event(type="pub", key=word, channel=chan, text=rest, **common)
        else:
            line = Event(type="msgm", key=text, text=text, **common)
            command = Event(type="msg", key=word, text=rest, **common)
        if not self._command_allowed(command, who):
            return
        submit(line, command)

    def _flood_key(self, common: dict[str, Any]) -> str:
        """Who a line is from, for flood limits: the account, else user@host
        (never the nick: a nick change must not reset the count)."""
        account = common.get("account")
        if account:
            return "account:" + self.lower(str(account))
        return "host:" + self.lower(str(common.get("uhost") or common.get("nick") or ""))

    def _command_allowed(self, ev: Event, who: str) -> bool:
        """Count a command (a pub/msg line some binding answers) against its
        sender's flood limit; False drops it (and the line it came with)."""
        if not self.dispatcher.table.snapshot.match(ev):
            return True  # chat, not a command
        principal = self.dispatcher.resolver(ev)
        if principal is not None and implied(principal.global_flags()) & FLOOD_EXEMPT:
            return True
        verdict = self.flood.hit(who, time.monotonic())
        if verdict is Verdict.OK:
            return True
        self.stats["flood_dropped"] += 1
        if verdict is Verdict.WARN and ev.nick:
            self.stats["flood_warned"] += 1
            log.warning(
                "ignoring %s (%s) for %gs: more than %d commands in %gs",
                ev.nick, who, self.settings.flood.ignore_s,
                self.settings.flood.commands, self.settings.flood.per_s,
            )  # fmt: skip
            self.output.notice(ev.nick, self.settings.flood.notice_text())
        return False

    @staticmethod
    def _mode_changes(client: _Client, args: list[str]) -> list[tuple[str, str]]:
        """Split ``+ov-k a b c`` into ``[("+o", "a"), ("+v", "b"), ("-k", "c")]``."""
        if not args:
            return []
        behaviour: dict[str, set[str]] = client._channel_modes_behaviour
        prefixes: dict[str, str] = client._nickname_prefixes
        always = set(behaviour.get("list", set())) | set(behaviour.get("param", set()))
        always |= set(prefixes.values())
        on_set = set(behaviour.get("param_set", set()))
        params = list(args[1:])
        out: list[tuple[str, str]] = []
        sign = "+"
        for m in args[0]:
            if m in "+-":
                sign = m
                continue
            takes = m in always or (sign == "+" and m in on_set)
            arg = params.pop(0) if takes and params else ""
            out.append((sign + m, arg))
        return out

    def _note_self_from_welcome(self, params: list[str]) -> None:
        last = params[-1].split()[-1] if params and params[-1].split() else ""
        if "!" in last and "@" in last:
            nick, _, uh = last.partition("!")
            user, _, host = uh.partition("@")
            self.output.set_self(nick, user, host)
