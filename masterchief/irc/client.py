"""The connection to the server, on pydle -- the only module that imports pydle.

How this works
--------------
``Client`` is one connection attempt (the supervisor, ``supervisor.py``,
makes a new one per attempt): it connects (TLS verified by default),
registers (CAP negotiation, SASL PLAIN when configured) and reads until the
connection drops.  pydle keeps the channel and user state, answers PINGs and
runs registration; the translation of lines into Events is ours
(``translate.py``), and so is the read loop:

- ``_Connection.recv`` reads whatever the socket has (up to 64 KiB) under
  ``asyncio.timeout``, not one line per ``wait_for`` (a task per line on
  3.11); ``send`` gathers the lines of one loop turn into one write at its
  end and waits for ``drain`` only when the transport's buffer is over its
  high-water mark.
- ``Client.on_data`` splits lines and parses each one itself
  (``message.parse``); the owner (``Owner.on_message``) translates it
  synchronously, in arrival order.  Only lines pydle needs for its state
  (everything but PRIVMSG and NOTICE: JOIN, PART, MODE, numerics, CAP,
  SASL, ...) go on to pydle, whose handler runs at once up to its first
  wait (``_eager``), so its state is current when the next line is
  translated; the rest of it continues in a task kept in ``line_tasks``
  (awaited or cancelled with the connection).
  What pydle would have learnt from a PRIVMSG or NOTICE (the sender's
  user@host and account tag) the translation hands back as a ``SeenUser``
  action (``seen_user``).  A line neither we nor pydle can parse is logged
  and skipped.

``View`` is the read-only state ``translate`` sees, over pydle's
attributes.  Every byte the client writes is paced or counted: once the
pacer runs for this connection (``paced``), the lines pydle sends by itself
(WHO and MODE after a JOIN, MONITOR, CAP) go into the ``OutputQueue``;
PING/PONG/QUIT and registration are written at once and charged to its
bucket (``write_now``).  pydle's own CTCP VERSION reply and its WHOIS on
every nick change are switched off.

SASL: 903 marks the login, 90x refusals are fatal (``Owner.fail_login``), a
registration without a login when one was configured is fatal the first
time and a dropped connection later (services may be restarting); pydle's
SASL timer, which never fires, is replaced by one that drops the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import pydle
import pydle.connection
from pydle.features.ircv3.tags import TaggedMessage

from ..bindings.eager import first_step
from ..bindings.event import Reply
from ..bindings.masks import irc_lower
from .message import Message, parse
from .pacer import OutputQueue
from .translate import ModeRules

__all__ = ["Client", "ClientSettings", "Owner", "View"]

log = logging.getLogger("masterchief.irc")

# Lines that never wait in the queue, only charged to its bucket: a PONG
# (or our own PING on a read timeout) that waited behind replies would get
# the bot pinged out, and a QUIT ends the connection anyway.
_DIRECT = frozenset({"PING", "PONG", "QUIT"})

# Lines pydle does not see (see the module doc): the hot path.
_OURS_ONLY = frozenset({"PRIVMSG", "NOTICE"})

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_READ_CHUNK = 65536


class ClientSettings(Protocol):
    """What a connection needs of the IRC settings."""

    host: str
    port: int
    nick: str
    alt_nicks: list[str]
    username: str
    realname: str
    tls: bool
    tls_verify: bool
    tls_ca_file: str | None
    sasl_username: str | None
    sasl_password: str | None
    rejoin_on_kick: bool


class Owner(Protocol):
    """What a connection asks of its supervisor."""

    @property
    def settings(self) -> ClientSettings: ...

    @property
    def output(self) -> OutputQueue: ...

    sasl_succeeded: bool
    account: str | None

    def on_message(self, client: Client, message: Message) -> None: ...

    async def on_registered(self, client: Client) -> None: ...

    async def fail_login(self, client: Client, reason: str) -> None: ...

    async def drop(self, client: Client, reason: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...


class _Connection(pydle.connection.Connection):  # type: ignore[misc]
    """pydle's connection, plus an optional CA file for verification,
    immediate ACKs and cheaper reads and writes.

    InspIRCd does not set TCP_NODELAY.  With echo-message every reply we send
    comes back to us and we never answer the echo, so our kernel delays its
    ACK (~40 ms) and the server holds back the next small line to us until it
    comes: a 40 ms floor on every command (bench/rtt.py measured p50 43.6 ms).
    Re-arming TCP_QUICKACK after each read (Linux) removes it.
    """

    ca_file: str | None = None
    _sock: socket.socket | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out: list[bytes] = []

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
        # All the socket has, not one line: Client.on_data splits them.
        async with asyncio.timeout(timeout):
            data: bytes = await self.reader.read(_READ_CHUNK)
        sock = self._sock
        if sock is not None and _QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return data

    async def send(self, data: bytes) -> None:
        # Lines written in one turn of the loop (the replies to a burst of
        # commands) leave in one write at the end of it: a syscall per line
        # was a fifth of the bot's time under load (bench/rtt.py).
        self._out.append(data)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self.flush)
        transport = self.writer.transport
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            self.flush()
            async with asyncio.timeout(self.SEND_TIMEOUT):
                await self.writer.drain()

    def flush(self) -> None:
        """Write what ``send`` gathered (at the end of the loop turn, or now)."""
        if self._out and self.writer is not None:
            self.writer.write(b"".join(self._out))
        self._out.clear()

    async def disconnect(self) -> None:
        self.flush()  # a QUIT written just before goes out first
        await super().disconnect()


class Client(pydle.Client):  # type: ignore[misc]
    RECONNECT_ON_ERROR = False
    READ_TIMEOUT = 180
    _sasl_timer: asyncio.TimerHandle | None

    def __init__(self, owner: Owner, s: ClientSettings) -> None:
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
        self.owner = owner
        self.sasl_ok = False
        self.was_registered = False
        self.ready = False  # on_connect ran (end of MOTD) for this connection
        self.paced = False  # the OutputQueue sends for this connection: write through it
        self.registered_at: float | None = None  # loop time of end-of-MOTD
        self.error: str | None = None  # the server's ERROR text, when it closes on us
        self.line_tasks: set[asyncio.Task[Any]] = set()
        self._receive_buffer: bytes = b""

    # -- connection ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, register and read until the connection ends."""
        s = self.owner.settings
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
        # The supervisor decides about reconnecting.
        return None

    # -- state the supervisor reads (pydle's attributes stay in this module) ---

    @property
    def case_mapping(self) -> str:
        return str(self._case_mapping)

    def has_cap(self, cap: str) -> bool:
        return bool(self._capabilities.get(cap))

    def supports(self, token: str) -> bool:
        """Whether the server's ISUPPORT names ``token`` (``MONITOR``)."""
        return token in self._isupport

    def common_channels(self, nick: str) -> list[str]:
        return [name for name, ch in self.channels.items() if nick in ch.get("users", ())]

    def user_info(self, nick: str) -> tuple[str | None, str | None, str | None]:
        """(account, user, host) pydle knows for ``nick``; Nones when unknown."""
        info = self.users.get(nick) or {}
        acct = info.get("account")
        return (
            acct if isinstance(acct, str) and acct else None,
            info.get("username") or None,
            info.get("hostname") or None,
        )

    def mode_rules(self) -> ModeRules:
        behaviour: dict[str, set[str]] = self._channel_modes_behaviour
        always = set(behaviour.get("list", set())) | set(behaviour.get("param", set()))
        always |= set(self._nickname_prefixes.values())
        return ModeRules(frozenset(always), frozenset(behaviour.get("param_set", set())))

    def seen_user(self, nick: str, user: str, host: str, account: str | None) -> None:
        """What pydle learns from a PRIVMSG/NOTICE it no longer sees (every
        chat line: a known sender is updated in place, no dict per line)."""
        known: dict[str, Any] | None = self.users.get(nick)
        info: dict[str, Any] = {} if known is None else known
        info["username"], info["hostname"] = user, host
        if account is not None:
            info["identified"], info["account"] = True, account
        if known is None:
            self._eager(self._sync_user(nick, info))

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
            if not self.owner.output.raw(line, "mode"):
                log.warning("output queue refused a %s line from the IRC library", command)
            return
        await self.write_now(line)

    async def write_now(self, line: str, *, charge: bool = True) -> None:
        """Write one line (no CRLF) to the socket now, charged to the pacer's
        bucket (``charge=False`` only for a line the pacer itself handed out:
        it has paid already)."""
        data = (line + "\r\n").encode(self.encoding)
        if charge:
            self.owner.output.charge(len(data))
        await self.connection.send(data)

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
        await self.owner.on_registered(self)

    # -- every line ------------------------------------------------------------

    async def on_data(self, data: bytes) -> None:
        buffer: bytes = self._receive_buffer + data
        *lines, self._receive_buffer = buffer.split(b"\n")
        owner = self.owner
        for raw in lines:
            raw = raw.rstrip(b"\r")
            text = raw.decode(self.encoding, "replace")
            if not text:
                continue
            try:
                message = parse(text)
            except ValueError:
                log.warning("skipped a line from the server that cannot be parsed: %r", text[:80])
                continue
            try:
                owner.on_message(self, message)
            except Exception:
                log.exception("could not turn %r into events", text[:200])
            if message.command in _OURS_ONLY:
                continue
            try:
                theirs = TaggedMessage.parse(raw + b"\r\n", encoding=self.encoding)
            except Exception:
                log.warning("skipped a line from the server that pydle cannot parse", exc_info=True)
                continue
            self._eager(self.on_raw(theirs))

    def _eager(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run pydle's handler for a line up to its first real wait, now.

        pydle's state must follow line by line: the next line is translated
        over it (a NICK renames the user the next QUIT is looked up by).
        What is left after the first wait goes on in a kept task; most
        handlers never wait, so most lines cost no task at all."""
        try:
            done, rest = first_step(coro)
        except Exception:
            log.exception("the IRC library failed on a line")
            return
        if not done:
            self._keep(_awaited(rest))

    def _keep(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.line_tasks.add(task)
        task.add_done_callback(self.line_tasks.discard)

    async def on_raw(self, message: Any) -> None:
        if not self.connected:
            # The connection ended (we dropped it after a login error, or the
            # server closed it) before pydle got to this line: its handlers
            # would only write to a closed socket or announce a registration
            # that is already over.
            return
        await super().on_raw(message)

    async def on_raw_001(self, message: Any) -> None:
        self.was_registered = True
        owner = self.owner
        if owner.settings.sasl_username is not None and not self.sasl_ok:
            # Registered without a login: never stay like that.
            reason = "SASL login did not complete (the server offered no SASL)"
            if owner.sasl_succeeded:
                await owner.drop(self, reason + "; services may be restarting")
            else:
                await owner.fail_login(self, reason)
            return
        await super().on_raw_001(message)

    async def on_raw_903(self, message: Any) -> None:
        self.sasl_ok = True
        self.owner.sasl_succeeded = True
        await super().on_raw_903(message)

    async def on_raw_900(self, message: Any) -> None:
        if len(message.params) >= 3:
            self.owner.account = str(message.params[2])

    async def on_raw_901(self, message: Any) -> None:
        self.owner.account = None

    async def _sasl_failed(self, message: Any) -> None:
        code = str(message.command).zfill(3)
        await self.owner.fail_login(self, f"SASL authentication failed ({code})")

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
                await self.owner.fail_login(self, "SASL configured but pure-sasl is not installed")
                return False
            mechanisms = str(value).upper().split(",") if isinstance(value, str) else []
            if mechanisms and "PLAIN" not in mechanisms:
                await self.owner.fail_login(
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
        self.owner.spawn(self.owner.drop(self, "SASL: no answer from the server's services"))


async def _awaited(rest: Awaitable[Any]) -> Any:
    return await rest


class View:
    """The ``translate.View`` of one connection, over pydle's state."""

    __slots__ = ("_client", "_me", "_me_low", "_owner_nick", "_wants", "rejoin_on_kick", "reply")

    def __init__(
        self,
        client: Client,
        primary_nick: str,
        wants_raw: Callable[[str], bool],
        reply: Reply | None,
        rejoin_on_kick: bool,
    ) -> None:
        self._client = client
        self._owner_nick = primary_nick
        self._wants = wants_raw
        self.reply = reply
        self.rejoin_on_kick = rejoin_on_kick
        self._me: tuple[str, str] = ("", "")
        self._me_low = ""

    @property
    def nick(self) -> str:
        return str(self._client.nickname)

    @property
    def primary_nick(self) -> str:
        return self._owner_nick

    @property
    def casemapping(self) -> str:
        return self._client.case_mapping

    @property
    def modes(self) -> ModeRules:
        return self._client.mode_rules()

    def has_cap(self, cap: str) -> bool:
        return self._client.has_cap(cap)

    def is_me(self, nick: str) -> bool:
        me = str(self._client.nickname)
        if nick == me:
            return True
        cm = self.casemapping
        if (me, cm) != self._me:  # our nick or the case mapping changed: lower it once
            self._me, self._me_low = (me, cm), irc_lower(me, cm)
        return irc_lower(nick, cm) == self._me_low

    def is_channel(self, name: str) -> bool:
        return bool(self._client.is_channel(name))

    def channels_of(self, nick: str) -> list[str]:
        return self._client.common_channels(nick)

    def known_account(self, nick: str) -> str | None:
        return self._client.user_info(nick)[0]

    def wants_raw(self, command: str) -> bool:
        return self._wants(command)
