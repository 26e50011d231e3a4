"""Shared pieces of the end-to-end benchmarks (``bench/rtt.py``, ``bench/flood.py``).

- :class:`BotProcess` runs the real bot as a separate process
  (``.venv/bin/masterchief run --config-dir DIR/config --env bench``) with a
  generated configuration: the benchmark ircd's host/port, one channel, a
  scripts folder holding a copy of ``scripts/ping.py`` (plus any bench
  scripts) and a store in the temporary folder. It is a
  :class:`tests.servers.Daemon`, so it is killed at interpreter exit and when
  this process dies.
- :class:`BenchClient` is a lean raw IRC client (no per-line bookkeeping as in
  ``tests/ircclient.py``, so 20 of them in one process stay cheap). It sets
  ``TCP_NODELAY``, negotiates ``echo-message`` like a normal client and by
  default re-arms ``TCP_QUICKACK`` after every read (see TEST-SERVERS.md: the
  server does not set ``TCP_NODELAY``; a client that delays its ACKs sees
  ~40 ms stalls after echo-message).
- small statistics and machine-description helpers.

Import it after putting the repository root on ``sys.path`` (the benchmark
scripts do that, so they run as ``.venv/bin/python bench/rtt.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.servers import Daemon, InspIRCd, poll_until  # noqa: E402

__all__ = [
    "REPO",
    "BenchClient",
    "BotProcess",
    "Line",
    "machine",
    "percentile",
    "rss_kb",
    "start_and_join",
    "tcp_counter",
]

MASTERCHIEF = REPO / ".venv" / "bin" / "masterchief"


# --------------------------------------------------------------------------- stats / machine


def bot_revision() -> str:
    """``git describe`` of the bot's source, with ``-dirty`` for local changes."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


_TROUBLE = ("disconnected", "RecvQ", "Excess", " ERROR ", "Traceback")


def connection_report(log: str) -> tuple[int, list[str]]:
    """How often a bot log (taken before its shutdown) says it connected, and
    its lines about trouble: disconnects, flood quits, errors, tracebacks."""
    lines = log.splitlines()
    connects = sum("connected to" in ln and "disconnected" not in ln for ln in lines)
    return connects, [ln for ln in lines if any(w in ln for w in _TROUBLE)]


def verdict(report: list[str], checks: dict[str, bool]) -> bool:
    """Append one ``PASS: ...``/``FAIL: ...`` line per check to ``report``;
    True when every check passed."""
    report.extend(f"{'PASS' if passed else 'FAIL'}: {what}" for what, passed in checks.items())
    return all(checks.values())


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (``q`` in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    """``VmRSS`` (or ``VmHWM``...) of a process in kB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def tcp_counter(name: str = "DelayedACKs") -> int | None:
    """A ``TcpExt`` counter from /proc/net/netstat (whole network namespace)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        keys = head.split()
        if keys and keys[0] == "TcpExt:" and name in keys:
            return int(values.split()[keys.index(name)])
    return None


def machine() -> str:
    """One line: date, CPUs, OS, Python, InspIRCd version."""
    try:
        osr = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if line
        )
        os_name = osr.get("PRETTY_NAME", "").strip('"')
    except OSError:
        os_name = platform.platform()
    with contextlib.suppress(OSError):
        os_name += f" (debian_version {Path('/etc/debian_version').read_text().strip()})"
    ircd = "?"
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "inspircd"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        ircd = out.stdout.strip() or "?"
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs; {os_name}; "
        f"Python {platform.python_version()}; kernel {platform.release()}; InspIRCd {ircd}; "
        f"load average {load}"
    )


# --------------------------------------------------------------------------- the bot


class BotProcess(Daemon):
    """The real bot as a child process, configured for one benchmark."""

    label = "masterchief"

    def __init__(
        self,
        workdir: Path,
        ircd: InspIRCd,
        *,
        nick: str,
        channel: str,
        output: dict[str, Any] | None = None,
        scripts: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        bot: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(workdir)
        self.extra_env = dict(env or {})
        self.nick = nick
        self.channel = channel
        self.config_dir = workdir / "config"
        scripts_dir = workdir / "scripts"
        scripts_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "scripts" / "ping.py", scripts_dir / "ping.py")
        for name, text in (scripts or {}).items():
            (scripts_dir / name).write_text(text)
        irc: dict[str, Any] = {
            "host": ircd.host,
            "port": ircd.port,
            "nick": nick,
            "alt_nicks": [nick + "_"],
            "username": "bench",
            "realname": "MasterChief benchmark",
            "channels": [channel],
            "reconnect_min_s": 1.0,
            "reconnect_max_s": 5.0,
        }
        if output is not None:
            irc["output"] = output
        config = {
            "irc": irc,
            "bot": {
                "scripts": ["scripts"],
                "timezone": "UTC",
                "command_prefix": "!",
                **(bot or {}),
            },
            "store": {"path": "var/bench.db"},
        }
        (self.config_dir / "global").mkdir(parents=True, exist_ok=True)
        (self.config_dir / "global" / "config.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False)
        )
        # --env must name an existing environment file (an empty one here)
        (self.config_dir / "environments").mkdir(exist_ok=True)
        (self.config_dir / "environments" / "bench.yaml").write_text("{}\n")
        self.argv = [
            str(MASTERCHIEF),
            "run",
            "--config-dir",
            str(self.config_dir),
            "--env",
            "bench",
        ]

    def start(self) -> BotProcess:
        if not MASTERCHIEF.exists():
            raise RuntimeError(f"{MASTERCHIEF} not found: make venv")
        env = dict(os.environ)
        env.pop("MASTERCHIEF_CONFIG_DIR", None)
        env.pop("MASTERCHIEF_ENV", None)
        env.update(self.extra_env)
        self.spawn(self.argv, env=env)
        return self

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        """Wait until the bot's log (stderr) contains ``text``."""
        poll_until(
            lambda: text in self.log(),
            timeout,
            f"bot log line {text!r}",
            check=self.check_alive,
            interval=0.02,
        )

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss_kb(self, key: str = "VmRSS") -> int:
        if self.pid is None:
            raise RuntimeError("bot not running")
        return rss_kb(self.pid, key)

    def stop(self) -> int | None:
        """SIGTERM (the bot QUITs), SIGKILL after 10 s; return the exit status."""
        proc = self.proc
        self.terminate(10.0)
        return proc.returncode if proc is not None else None


async def start_and_join(
    daemon: Daemon, start: Callable[[], object], watcher: BenchClient, nick: str
) -> None:
    """Run ``start()`` and wait (30 s at most) until ``watcher`` sees ``nick``
    join; fail with the daemon's log tails if it dies or never joins."""
    joined = watcher.expect(lambda ln: ln.command == "JOIN" and ln.nick.lower() == nick.lower())
    start()
    deadline = time.monotonic() + 30
    while not joined.done():
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{daemon.label} did not join:\n{daemon.diagnostics()}")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- the client


async def teardown(
    clients: list[BenchClient], bots: Sequence[Daemon], ircd: Daemon, tmp: Path, keep: bool
) -> None:
    """Close clients, kill bots and the ircd, remove (or keep) the work folder."""
    for c in clients:
        with contextlib.suppress(Exception):
            await c.close()
    for b in bots:
        with contextlib.suppress(Exception):
            b.kill()
    ircd.kill()
    if keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(slots=True)
class Line:
    """A received line: arrival time (perf_counter_ns) and its parsed pieces."""

    t_ns: int
    raw: str
    prefix: str
    command: str
    params: list[str] = field(default_factory=list)

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    @property
    def text(self) -> str:
        return self.params[-1] if self.params else ""


def parse(raw: str, t_ns: int) -> Line:
    rest = raw
    if rest.startswith("@"):
        _, _, rest = rest.partition(" ")
    prefix = ""
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
    trailing: str | None = None
    if " :" in rest:
        rest, _, trailing = rest.partition(" :")
    elif rest.startswith(":"):
        trailing, rest = rest[1:], ""
    words = rest.split()
    params = words[1:] + ([trailing] if trailing is not None else [])
    return Line(t_ns, raw, prefix, words[0].upper() if words else "", params)


class BenchClient:
    """One raw IRC connection for the benchmarks; see the module docstring.

    ``on_line`` (if set) gets every line that no ``wait_for`` waiter took.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        nick: str,
        quickack: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.nick = nick
        self.quickack = quickack and hasattr(socket, "TCP_QUICKACK")
        self.sock: socket.socket | None = writer.get_extra_info("socket")
        self.caps: set[str] = set()
        self.on_line: Callable[[Line], None] | None = None
        self.waiters: list[tuple[Callable[[Line], bool], asyncio.Future[Line]]] = []
        self.closed = asyncio.Event()
        self.error: str | None = None
        self.task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        nick: str,
        *,
        caps: tuple[str, ...] = ("echo-message",),
        quickack: bool = True,
        timeout: float = 20.0,
    ) -> BenchClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 20), timeout
        )
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(reader, writer, nick, quickack)
        try:
            await client._register(caps, timeout)
        except BaseException:
            await client.close()
            raise
        return client

    async def _register(self, caps: tuple[str, ...], timeout: float) -> None:
        welcome = self.expect(lambda ln: ln.command in {"001", "433", "432", "ERROR"})
        if caps:
            ack = self.expect(
                lambda ln: ln.command == "CAP" and ln.params[1:2] in (["ACK"], ["NAK"])
            )
            self.send(f"CAP REQ :{' '.join(caps)}")
        self.send(f"NICK {self.nick}")
        self.send(f"USER {self.nick} 0 * :bench client")
        if caps:
            reply = await asyncio.wait_for(ack, timeout)
            if reply.params[1] != "ACK":
                raise RuntimeError(f"server refused caps {caps}: {reply.raw}")
            self.caps.update(reply.text.split())
            self.send("CAP END")
        motd = self.expect(lambda ln: ln.command in {"376", "422"})
        line = await asyncio.wait_for(welcome, timeout)
        if line.command != "001":
            raise RuntimeError(f"registration of {self.nick} failed: {line.raw}")
        await asyncio.wait_for(motd, timeout)

    async def join(self, channel: str, timeout: float = 20.0) -> None:
        names_end = self.expect(lambda ln: ln.command == "366" and ln.params[1:2] == [channel])
        self.send(f"JOIN {channel}")
        await asyncio.wait_for(names_end, timeout)

    def expect(self, match: Callable[[Line], bool]) -> asyncio.Future[Line]:
        """A future for the next line matching ``match`` (register before sending)."""
        fut: asyncio.Future[Line] = asyncio.get_running_loop().create_future()
        self.waiters.append((match, fut))
        return fut

    def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")

    def say(self, target: str, text: str) -> int:
        """Send a PRIVMSG; return the perf_counter_ns just before the write."""
        data = f"PRIVMSG {target} :{text}\r\n".encode()
        t = time.perf_counter_ns()
        self.writer.write(data)
        return t

    async def _read_loop(self) -> None:
        quickack = self.quickack
        sock = self.sock
        try:
            while True:
                data = await self.reader.readline()
                t = time.perf_counter_ns()
                if quickack and sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                if not data:
                    break
                raw = data.decode("utf-8", "replace").rstrip("\r\n")
                if not raw:
                    continue
                line = parse(raw, t)
                if line.command == "PING":
                    self.send(f"PONG :{line.text}")
                    continue
                if line.command == "ERROR":
                    self.error = raw
                taken = False
                if self.waiters:
                    for i, (match, fut) in enumerate(self.waiters):
                        if not fut.done() and match(line):
                            fut.set_result(line)
                            del self.waiters[i]
                            taken = True
                            break
                    self.waiters = [(m, f) for m, f in self.waiters if not f.done()]
                if not taken and self.on_line is not None:
                    self.on_line(line)
        except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            for _, fut in self.waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError(f"{self.nick}: connection closed"))

    async def quit(self, message: str = "bench done") -> None:
        with contextlib.suppress(Exception):
            self.send(f"QUIT :{message}")
            await self.writer.drain()
            await asyncio.wait_for(self.closed.wait(), 3.0)
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 3.0)
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
