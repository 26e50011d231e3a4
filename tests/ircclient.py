"""A small asyncio IRC client for driving the real server in tests.

It plays the humans (and other bots) the bot under test talks to::

    alice = await TestClient.connect(host, port, "alice", caps=["account-tag"],
                                     sasl=("alice", "pw"))
    await alice.join("#ops")
    await alice.say("#ops", "!deploy web")
    line = await alice.wait_for(r"PRIVMSG #ops :deploying web")
    line.prefix, line.command, line.params, line.tags   # parsed pieces
    await alice.expect_none(r"PRIVMSG #ops :error", within=0.5)

Every received line is kept in :attr:`TestClient.lines`. ``wait_for`` matches
lines that arrived before the call too, and each line is consumed at most once,
so two ``wait_for`` calls for the same pattern need two lines. PING is answered
by the reader itself.

Socket notes (TEST-SERVERS.md): TCP_NODELAY is set, and on Linux TCP_QUICKACK
is re-armed after every read — InspIRCd does not set TCP_NODELAY, and a client
that delays its ACKs sees ~40 ms stalls after echo-message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

__all__ = [
    "IRCError",
    "Line",
    "Matcher",
    "SaslError",
    "TestClient",
    "parse_line",
]

_TAG_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def _unescape_tag(value: str) -> str:
    out: list[str] = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            out.append(_TAG_UNESCAPE.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


def parse_line(raw: str) -> tuple[dict[str, str], str | None, str, list[str]]:
    """Split a raw IRC line into (tags, prefix, command, params)."""
    tags: dict[str, str] = {}
    rest = raw
    if rest.startswith("@"):
        tag_text, _, rest = rest[1:].partition(" ")
        for item in tag_text.split(";"):
            if not item:
                continue
            key, eq, value = item.partition("=")
            tags[key] = _unescape_tag(value) if eq else ""
        rest = rest.lstrip(" ")
    prefix: str | None = None
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    params: list[str] = []
    command = ""
    while rest:
        if rest.startswith(":") and command:
            params.append(rest[1:])
            break
        word, _, rest = rest.partition(" ")
        rest = rest.lstrip(" ")
        if not command:
            command = word.upper()
        else:
            params.append(word)
    return tags, prefix, command, params


class Line(str):
    """A received line: the raw text (it *is* a ``str``) plus its parsed pieces."""

    tags: dict[str, str]
    prefix: str | None
    command: str
    params: list[str]
    seq: int

    def __new__(cls, raw: str, seq: int = -1) -> Self:
        self = super().__new__(cls, raw)
        self.tags, self.prefix, self.command, self.params = parse_line(raw)
        self.seq = seq
        return self

    @property
    def raw(self) -> str:
        return str.__str__(self)

    @property
    def nick(self) -> str | None:
        """The nick (or server name) of the prefix."""
        if self.prefix is None:
            return None
        return self.prefix.split("!", 1)[0].split("@", 1)[0]

    @property
    def target(self) -> str | None:
        return self.params[0] if self.params else None

    @property
    def text(self) -> str:
        """The last parameter (the message text of a PRIVMSG/NOTICE)."""
        return self.params[-1] if self.params else ""


Matcher = str | re.Pattern[str] | Callable[[Line], bool]


def _compile(pattern: Matcher) -> Callable[[Line], bool]:
    if callable(pattern) and not isinstance(pattern, str | re.Pattern):
        return pattern
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    return lambda line: rx.search(line) is not None


def _describe(pattern: Matcher) -> str:
    if isinstance(pattern, re.Pattern):
        return repr(pattern.pattern)
    if isinstance(pattern, str):
        return repr(pattern)
    return getattr(pattern, "__name__", repr(pattern))


class IRCError(Exception):
    """The server refused something (nick in use, cannot join, connection closed...)."""


class SaslError(IRCError):
    """SASL authentication failed; ``numeric`` is e.g. ``"904"``."""

    def __init__(self, numeric: str, line: str) -> None:
        super().__init__(f"SASL failed with {numeric}: {line}")
        self.numeric = numeric
        self.line = line


_JOIN_ERRORS = {"403", "405", "471", "473", "474", "475", "476", "477", "489"}


class TestClient:
    """One raw IRC connection. Create it with :meth:`connect`."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        nick: str,
        *,
        log: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.nick = nick
        self.lines: list[Line] = []
        self.sent: list[str] = []
        self.caps: set[str] = set()
        self.available_caps: dict[str, str] = {}
        self.isupport: dict[str, str] = {}
        self.account: str | None = None
        self.sasl_result: str | None = None
        self._consumed: list[bool] = []
        self._cursor = 0  # every line before this index is consumed
        self._new_data = asyncio.Event()
        self._closed = asyncio.Event()
        self._log = log
        self._quickack = hasattr(socket, "TCP_QUICKACK")
        self._sock: Any = writer.get_extra_info("socket")
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"TestClient[{nick}] reader"
        )

    # ------------------------------------------------------------------ connecting

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        nick: str,
        *,
        caps: Iterable[str] = (),
        sasl: tuple[str, str] | None = None,
        sasl_required: bool = True,
        tls: bool = False,
        tls_cafile: str | None = None,
        username: str | None = None,
        realname: str | None = None,
        password: str | None = None,
        timeout: float = 15.0,
        log: bool = False,
    ) -> TestClient:
        """Connect and register; returns once the MOTD (or 422) has arrived.

        ``caps`` are requested (all must be offered, else :class:`IRCError`).
        ``sasl=(account, password)`` authenticates with PLAIN during
        registration; a failure raises :class:`SaslError` unless
        ``sasl_required=False`` (then see :attr:`sasl_result`, ``"904"``...).
        ``tls=True`` connects with TLS, verifying against ``tls_cafile`` if given
        (e.g. ``ircd.cert``), else without verification.
        On return every line received so far is marked consumed.
        """
        ssl_ctx: ssl.SSLContext | None = None
        if tls:
            if tls_cafile is not None:
                ssl_ctx = ssl.create_default_context(cafile=tls_cafile)
                ssl_ctx.check_hostname = False  # cert names localhost/irc.test, we dial an IP
            else:
                ssl_ctx = ssl.create_default_context()
                ssl_ctx.check_hostname = False
                ssl_ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_ctx, limit=1 << 20), timeout
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(reader, writer, nick, log=log)
        try:
            await asyncio.wait_for(
                client._register(
                    caps=list(caps),
                    sasl=sasl,
                    sasl_required=sasl_required,
                    username=username or nick[:10],
                    realname=realname or f"MasterChief test user {nick}",
                    password=password,
                    timeout=timeout,
                ),
                timeout,
            )
        except BaseException:
            await client.close()
            raise
        client.drain()
        return client

    async def _register(
        self,
        *,
        caps: list[str],
        sasl: tuple[str, str] | None,
        sasl_required: bool,
        username: str,
        realname: str,
        password: str | None,
        timeout: float,
    ) -> None:
        wanted = list(dict.fromkeys([*caps, *(["sasl"] if sasl else [])]))
        if password is not None:
            await self.send_raw(f"PASS {password}")
        if wanted:
            await self.send_raw("CAP LS 302")
        await self.send_raw(f"NICK {self.nick}")
        await self.send_raw(f"USER {username} 0 * :{realname}")
        if wanted:
            while True:
                ls = await self.wait_for(self._cmd("CAP", sub="LS"), timeout)
                more = len(ls.params) > 3 and ls.params[2] == "*"
                for item in ls.params[-1].split():
                    name, _, value = item.partition("=")
                    self.available_caps[name] = value
                if not more:
                    break
            missing = [c for c in wanted if c not in self.available_caps]
            if missing:
                offered = " ".join(sorted(self.available_caps))
                raise IRCError(f"server does not offer caps {missing} (offers: {offered})")
            await self.send_raw(f"CAP REQ :{' '.join(wanted)}")
            reply = await self.wait_for(
                lambda ln: (
                    ln.command == "CAP"
                    and len(ln.params) > 1
                    and ln.params[1]
                    in {
                        "ACK",
                        "NAK",
                    }
                ),
                timeout,
            )
            if reply.params[1] == "NAK":
                raise IRCError(f"server refused caps: {reply}")
            self.caps.update(reply.params[-1].split())
            if sasl is not None:
                await self._sasl_plain(*sasl, required=sasl_required, timeout=timeout)
            await self.send_raw("CAP END")
        welcome = await self.wait_for(
            lambda ln: ln.command in {"001", "432", "433", "436", "465", "ERROR"}, timeout
        )
        if welcome.command != "001":
            raise IRCError(f"registration as {self.nick} failed: {welcome}")
        self.nick = welcome.params[0]
        await self.wait_for(lambda ln: ln.command in {"376", "422"}, timeout)

    async def _sasl_plain(
        self, account: str, password: str, *, required: bool, timeout: float
    ) -> None:
        await self.send_raw("AUTHENTICATE PLAIN")
        await self.wait_for(lambda ln: ln.command == "AUTHENTICATE" and ln.params == ["+"], timeout)
        payload = base64.b64encode(f"{account}\0{account}\0{password}".encode()).decode()
        chunks = [payload[i : i + 400] for i in range(0, len(payload), 400)] or ["+"]
        if len(chunks[-1]) == 400:
            chunks.append("+")
        for chunk in chunks:
            await self.send_raw(f"AUTHENTICATE {chunk}")
        result = await self.wait_for(
            lambda ln: ln.command in {"903", "904", "905", "906", "907", "908"}, timeout
        )
        self.sasl_result = result.command
        if result.command != "903" and required:
            raise SaslError(result.command, result)

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.readline()
                if self._quickack and self._sock is not None:
                    with contextlib.suppress(OSError):
                        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                if not data:
                    break
                text = data.decode("utf-8", errors="replace").rstrip("\r\n")
                if not text:
                    continue
                line = Line(text, len(self.lines))
                self.lines.append(line)
                self._consumed.append(False)
                if self._log:
                    print(f"[{self.nick}] <- {text}")
                self._track(line)
                self._new_data.set()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._closed.set()
            self._new_data.set()

    def _track(self, line: Line) -> None:
        cmd = line.command
        if cmd == "PING":
            token = line.params[-1] if line.params else ""
            self._write(f"PONG :{token}")
        elif cmd == "900" and len(line.params) >= 3:
            self.account = line.params[2]
        elif cmd == "901":
            self.account = None
        elif cmd == "005":
            for item in line.params[1:-1]:
                key, _, value = item.partition("=")
                self.isupport[key.upper()] = value
        elif cmd == "NICK" and line.nick is not None and line.params:
            if line.nick.lower() == self.nick.lower():
                self.nick = line.params[0]
        elif cmd == "CAP" and len(line.params) >= 3:
            sub = line.params[1]
            names = line.params[-1].split()
            if sub == "ACK":
                for name in names:
                    if name.startswith("-"):
                        self.caps.discard(name[1:])
                    else:
                        self.caps.add(name)
            elif sub == "DEL":
                self.caps.difference_update(names)
                for name in names:
                    self.available_caps.pop(name, None)
            elif sub == "NEW":
                for item in names:
                    name, _, value = item.partition("=")
                    self.available_caps[name] = value

    @staticmethod
    def _cmd(command: str, *, sub: str | None = None) -> Callable[[Line], bool]:
        def match(line: Line) -> bool:
            if line.command != command:
                return False
            return sub is None or (len(line.params) > 1 and line.params[1] == sub)

        return match

    def _find(self, match: Callable[[Line], bool]) -> Line | None:
        while self._cursor < len(self._consumed) and self._consumed[self._cursor]:
            self._cursor += 1
        for i in range(self._cursor, len(self.lines)):
            if not self._consumed[i] and match(self.lines[i]):
                self._consumed[i] = True
                return self.lines[i]
        return None

    def _unconsumed_tail(self, n: int = 15) -> str:
        pending = [ln for ln, used in zip(self.lines, self._consumed, strict=True) if not used]
        shown = pending[-n:]
        if not shown:
            return "  (no unconsumed lines)"
        return "\n".join(f"  {ln}" for ln in shown)

    async def wait_for(self, pattern: Matcher, timeout: float = 10.0) -> Line:
        """Return (and consume) the first unconsumed line matching ``pattern``.

        ``pattern`` is a regex searched in the raw line (tags included), a
        compiled regex, or a predicate on :class:`Line`. Raises
        :class:`TimeoutError` after ``timeout`` s, :class:`ConnectionError` if
        the connection closed without a match.
        """
        match = _compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self._find(match)
            if found is not None:
                return found
            if self._closed.is_set():
                raise ConnectionError(
                    f"[{self.nick}] connection closed while waiting for {_describe(pattern)}; "
                    f"unconsumed lines:\n{self._unconsumed_tail()}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"[{self.nick}] no line matching {_describe(pattern)} within {timeout}s; "
                    f"unconsumed lines:\n{self._unconsumed_tail()}"
                )
            self._new_data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_data.wait(), remaining)

    async def wait_for_many(
        self, pattern: Matcher, count: int, timeout: float = 10.0
    ) -> list[Line]:
        """Wait until ``count`` matching lines have arrived (all within ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        found: list[Line] = []
        for _ in range(count):
            found.append(await self.wait_for(pattern, max(0.0, deadline - loop.time())))
        return found

    async def collect(self, pattern: Matcher, within: float) -> list[Line]:
        """Consume and return every matching line that arrives within ``within`` s."""
        match = _compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        found: list[Line] = []
        while True:
            line = self._find(match)
            if line is not None:
                found.append(line)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed.is_set():
                return found
            self._new_data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_data.wait(), remaining)

    async def expect_none(self, pattern: Matcher, within: float = 1.0) -> None:
        """Assert that no unconsumed line matches ``pattern`` during ``within`` s.

        Lines already buffered count too. Fails as soon as one arrives.
        """
        found = await self.collect(pattern, within) if within > 0 else []
        if not found:
            found_now = self._find(_compile(pattern))
            found = [found_now] if found_now is not None else []
        if found:
            raise AssertionError(
                f"[{self.nick}] unexpected line matching {_describe(pattern)}: {found[0]}"
            )

    def drain(self) -> list[Line]:
        """Mark every buffered line consumed; return those that were not yet."""
        pending = [ln for ln, used in zip(self.lines, self._consumed, strict=True) if not used]
        self._consumed = [True] * len(self.lines)
        self._cursor = len(self.lines)
        return pending

    @property
    def connected(self) -> bool:
        return not self._closed.is_set()

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until the server closes the connection."""
        await asyncio.wait_for(self._closed.wait(), timeout)

    # ------------------------------------------------------------------ sending

    def _write(self, line: str) -> None:
        if any(c in line for c in "\r\n\0"):
            raise ValueError(f"CR/LF/NUL in IRC line: {line!r}")
        if self._writer.is_closing():
            raise ConnectionError(f"[{self.nick}] connection is closed")
        self.sent.append(line)
        if self._log:
            print(f"[{self.nick}] -> {line}")
        self._writer.write(line.encode() + b"\r\n")

    async def send_raw(self, line: str) -> None:
        """Send one raw line (without CRLF)."""
        self._write(line)
        await self._writer.drain()

    async def send_many(self, lines: Sequence[str]) -> None:
        """Send several lines in one write (a burst, as a flooding client would)."""
        for line in lines:
            if any(c in line for c in "\r\n\0"):
                raise ValueError(f"CR/LF/NUL in IRC line: {line!r}")
        self.sent.extend(lines)
        self._writer.write(b"".join(line.encode() + b"\r\n" for line in lines))
        await self._writer.drain()

    async def say(self, target: str, text: str) -> None:
        await self.send_raw(f"PRIVMSG {target} :{text}")

    async def notice(self, target: str, text: str) -> None:
        await self.send_raw(f"NOTICE {target} :{text}")

    async def join(self, channel: str, key: str | None = None, timeout: float = 10.0) -> Line:
        """Join and wait for our own JOIN echo and the end of NAMES (366).

        Returns our JOIN line. Raises :class:`IRCError` on a join error numeric.
        """
        await self.send_raw(f"JOIN {channel}" + (f" {key}" if key else ""))
        chan = channel.lower()

        def own_join(ln: Line) -> bool:
            if ln.command == "JOIN":
                return (
                    ln.nick is not None
                    and ln.nick.lower() == self.nick.lower()
                    and bool(ln.params)
                    and ln.params[0].lower() == chan
                )
            return (
                ln.command in _JOIN_ERRORS and len(ln.params) > 1 and ln.params[1].lower() == chan
            )

        joined = await self.wait_for(own_join, timeout)
        if joined.command != "JOIN":
            raise IRCError(f"cannot join {channel}: {joined}")
        await self.wait_for(
            lambda ln: ln.command == "366" and len(ln.params) > 1 and ln.params[1].lower() == chan,
            timeout,
        )
        return joined

    async def part(self, channel: str, reason: str = "", timeout: float = 10.0) -> None:
        await self.send_raw(f"PART {channel}" + (f" :{reason}" if reason else ""))
        chan = channel.lower()
        await self.wait_for(
            lambda ln: (
                ln.command == "PART"
                and ln.nick is not None
                and ln.nick.lower() == self.nick.lower()
                and bool(ln.params)
                and ln.params[0].lower() == chan
            ),
            timeout,
        )

    async def quit(self, message: str = "bye", timeout: float = 5.0) -> None:
        """Send QUIT, wait for the server to close the connection, then clean up."""
        if self.connected and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, OSError):
                await self.send_raw(f"QUIT :{message}")
            with contextlib.suppress(TimeoutError):
                await self.wait_closed(timeout)
        await self.close()

    async def close(self) -> None:
        """Drop the connection without QUIT (idempotent)."""
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 5.0)
        if not self._reader_task.done():
            self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.quit()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<TestClient {self.nick} {state} lines={len(self.lines)}>"
