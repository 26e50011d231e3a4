"""The durable outbox and alert-storm folding against the real InspIRCd.

- a server outage: 20 announcements while the IRCd is stopped arrive, in
  order and marked ``[delayed ...]``, once it is back;
- ``kill -9``: the real bot process (``masterchief run``) accepts
  announcements and is killed with SIGKILL and restarted: nothing is lost,
  whether the kill came while IRC was unreachable (announced by a script
  through ``masterchief.announce()``, and by a real Alertmanager
  webhook right after its 202) or while lines were still waiting in the
  pacer or in the server's receive queue;
- a storm: 500 alert announcements in 5 s on InspIRCd's stock flood settings
  with the bot's default pacing: the bot stays connected and within 60 s
  every alert is represented in the channel, as the test client parses it.

``storm_announcements()``, ``alertmanager_notification()`` and ``Tally`` are
shared with ``bench/storm.py``.
Waits are on conditions with deadlines; the only timed pauses pace the storm
generator (5 s of input), they order nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from masterchief.config.schema import OutputConfig
from masterchief.irc.storm import parse_summary
from masterchief.runtime.compose import App
from tests.harness import running_bot, wait_until
from tests.servers import LIMITS, free_port, unique_name

BIN = Path(sys.executable).parent / "masterchief"


def from_bot(nick: str, target: str) -> str:
    return rf"^:{re.escape(nick)}!\S+ PRIVMSG {re.escape(target)} :"


# --------------------------------------------------------------------------- outage


async def test_announcements_made_while_the_server_is_down_arrive_in_order_marked_delayed(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd_factory, irc_client
) -> None:
    server = ircd_factory("unlimited", services=False)
    # The bot's first reconnect comes 3-6 s after the drop, so the test client
    # (registered on the server's next 1 s tick) is in the channel before it.
    over: dict[str, Any] = {
        "irc": {"reconnect_min_s": 6.0, "reconnect_max_s": 6.0},
        "outbox": {"delayed_after_s": 0.0},
        "web": {"enabled": False},
    }
    async with running_bot(tmp_path, server.host, server.port, **over) as app:
        assert app.irc is not None
        nick = app.irc.nickname
        assert nick is not None
        await asyncio.to_thread(server.stop)
        await wait_until(lambda: not app.irc.connected.is_set(), 10)  # type: ignore[union-attr]
        sent = [f"while down {i:02d} é🚀" for i in range(20)]
        for text in sent:
            await app.outbox.announce("#ops", text, kind="github", meta={"source": "github"})
        assert await app.store.outbox_count() == 20  # durable before anything was sent
        await asyncio.to_thread(server.start)
        watcher = await irc_client(server=server)
        await watcher.join("#ops")
        assert app.irc.connects == 1, "the bot came back before the watcher: raise the backoff"
        got = await watcher.wait_for_many(from_bot(nick, "#ops"), 20, timeout=20)
        texts = [ln.text for ln in got]
        for text, want in zip(texts, sent, strict=True):
            assert re.fullmatch(r"\[delayed \d+s\] " + re.escape(want), text), text
        await watcher.expect_none(from_bot(nick, "#ops"), within=0.3)
        await wait_until(lambda: app.outbox.stats()["deleted"] == 20, 15)
        assert await app.store.outbox_count() == 0
        assert app.irc.connects == 2


# --------------------------------------------------------------------------- kill -9

QUEUE_SCRIPT = '''"""Test script: announcements through the durable outbox.

On disconnect-server it announces 5 lines when MC_TEST_ANNOUNCE_ON_DISCONNECT
is set (the bot accepts work while IRC is unreachable, as the webhook intake
does) and logs once they are stored; ``!queue N`` announces N lines at once.
"""

import logging
import os

from masterchief import Event, announce, bind

log = logging.getLogger("masterchief.test")


@bind("evnt", "-|-", "disconnect-server")
async def while_away(ev: Event) -> None:
    if not os.environ.get("MC_TEST_ANNOUNCE_ON_DISCONNECT"):
        return
    for i in range(5):
        await announce("#ops", f"while away {i}")
    log.info("QUEUED 5 announcements")


@bind("pub", "-|-", "!queue")
async def queue(ev: Event) -> None:
    n = int(ev.args[0])
    for i in range(n):
        await announce(ev.channel or "#ops", f"queued {i:02d}/{n}")
    log.info("QUEUED %d announcements", n)
'''


@dataclass
class BotProcess:
    """``masterchief run`` as a child process over one config dir and store."""

    root: Path
    host: str
    port: int
    nick: str = field(default_factory=lambda: unique_name("mc"))
    outbox: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level config
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        cfg = self.root / "config"
        (cfg / "global").mkdir(parents=True, exist_ok=True)
        (self.root / "scripts").mkdir(exist_ok=True)
        (self.root / "scripts" / "queue.py").write_text(QUEUE_SCRIPT)
        data: dict[str, Any] = {
            "irc": {"host": self.host, "port": self.port, "nick": self.nick,
                    "alt_nicks": [self.nick + "_"], "channels": ["#ops"],
                    "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
            "bot": {"scripts": ["scripts"]},
            "store": {"path": "var/mc.db"},
            "web": {"enabled": False},
            "outbox": self.outbox,
            **self.extra,
        }  # fmt: skip
        (cfg / "global" / "config.yaml").write_text(yaml.safe_dump(data))
        (cfg / "environments").mkdir(exist_ok=True)  # MASTERCHIEF_ENV=test must exist
        (cfg / "environments" / "test.yaml").write_text("{}\n")
        self.log_path = self.root / "bot.log"

    @property
    def db(self) -> Path:
        return self.root / "var" / "mc.db"

    def start(self, **env: str) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN), "run", "--config-dir", str(self.root / "config")],
                env={**os.environ, "MASTERCHIEF_ENV": "test", **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, text: str, count: int = 1, timeout: float = 15) -> None:
        def seen() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            return self.log().count(text) >= count

        await wait_until(seen, timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 15)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stored(self) -> int:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def pending_deliveries(self) -> int:
        """Webhook deliveries stored but not yet marked done by their handlers."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE done = 0").fetchone()[0])


async def test_kill_9_while_irc_is_unreachable_loses_nothing(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd_factory, irc_client
) -> None:
    server = ircd_factory("unlimited", services=False)
    bot = BotProcess(tmp_path, server.host, server.port, outbox={"delayed_after_s": 0.0})
    try:
        watcher = await irc_client(server=server)
        await watcher.join("#ops")
        bot.start(MC_TEST_ANNOUNCE_ON_DISCONNECT="1")
        await watcher.wait_for(rf"^:{bot.nick}!\S+ JOIN :?#ops", timeout=15)
        await asyncio.to_thread(server.stop)
        await bot.wait_log("QUEUED 5 announcements")  # announce() returned: "202"
        bot.kill9()
        assert bot.stored() == 5
        await asyncio.to_thread(server.start)
        watcher = await irc_client(server=server)
        await watcher.join("#ops")
        bot.start()
        got = await watcher.wait_for_many(from_bot(bot.nick, "#ops") + r"\[delayed", 5, timeout=20)
        assert [re.sub(r"^\[delayed \d+[smh]\] ", "", ln.text) for ln in got] == [
            f"while away {i}" for i in range(5)
        ]
        await watcher.expect_none(from_bot(bot.nick, "#ops") + "while away", within=0.3)
        assert await bot.stop() == 0
        assert bot.stored() == 0  # forgotten once sent
    finally:
        bot.close()


async def test_kill_9_while_lines_wait_in_the_pacer_loses_nothing(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd_factory, irc_client
) -> None:
    # Stock flood settings and default pacing: 20 announcements take ~13 s to
    # send, so most are still in the store (some already handed to the output
    # queue) when the bot is killed. Sent lines may repeat once (at-least-once).
    server = ircd_factory("stock", services=False)
    bot = BotProcess(tmp_path, server.host, server.port)
    try:
        watcher = await irc_client(server=server)
        await watcher.join("#ops")
        bot.start()
        await watcher.wait_for(rf"^:{bot.nick}!\S+ JOIN :?#ops", timeout=15)
        await watcher.say("#ops", "!queue 20")
        await bot.wait_log("QUEUED 20 announcements")
        pattern = from_bot(bot.nick, "#ops") + "queued "
        await watcher.wait_for_many(pattern, 10, timeout=20)
        bot.kill9()
        left = bot.stored()
        quit_line = await watcher.wait_for(rf"^:{bot.nick}!\S+ QUIT", timeout=15)
        bot.start()
        await watcher.wait_for(rf"^:{bot.nick}!\S+ JOIN :?#ops", timeout=15)
        ours = re.compile(pattern)

        def received() -> list[tuple[int, str]]:
            return [(ln.seq, ln.text) for ln in watcher.lines if ours.search(ln)]

        await wait_until(lambda: len({t for _, t in received()}) == 20, 30)
        watcher.drain()
        await watcher.expect_none(pattern, within=1.5)  # nothing more after that
        before = [t for seq, t in received() if seq < quit_line.seq]
        after = [t for seq, t in received() if seq > quit_line.seq]
        assert len(after) == left  # the restarted bot sends what was stored, once
        assert 10 <= len(before) < 20
        everything = before + after
        assert list(dict.fromkeys(everything)) == [f"queued {i:02d}/20" for i in range(20)]
        repeated = len(everything) - 20  # sent, but killed before the row was deleted
        assert 0 <= repeated <= 2, everything
        assert after[:repeated] == before[len(before) - repeated :]
    finally:
        bot.close()


AM_TOKEN = "e2e-am-token"  # loopback test server, not a secret


async def test_kill_9_right_after_a_webhook_was_accepted_loses_nothing(  # type: ignore[no-untyped-def]
    tmp_path: Path, ircd_factory, irc_client
) -> None:
    # The real path: Alertmanager posts while IRC is down, the bot answers 202
    # and is killed at once (before or after its formatter reached the
    # outbox: the intake's own recovery and the outbox cover both).
    server = ircd_factory("unlimited", services=False)
    web_port = free_port()
    bot = BotProcess(
        tmp_path,
        server.host,
        server.port,
        outbox={"delayed_after_s": 0.0},
        extra={
            "web": {"host": "127.0.0.1", "port": web_port},
            "webhooks": {"alertmanager": {"bearer_token": AM_TOKEN, "channels": ["#ops"]}},
        },
    )
    try:
        watcher = await irc_client(server=server)
        await watcher.join("#ops")
        bot.start()
        await watcher.wait_for(rf"^:{bot.nick}!\S+ JOIN :?#ops", timeout=15)
        await asyncio.to_thread(server.stop)
        _, name, meta = storm_announcements()[0]
        body = json.dumps(alertmanager_notification(1, name, meta)).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {AM_TOKEN}"}
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{web_port}/webhooks/alertmanager"
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 202, await resp.text()
        bot.kill9()
        await asyncio.to_thread(server.start)
        watcher = await irc_client(server=server)
        await watcher.join("#ops")
        bot.start()
        line = await watcher.wait_for(from_bot(bot.nick, "#ops"), timeout=20)
        instance = meta["instances"][0]
        assert re.fullmatch(
            rf"(\[delayed \d+s\] )?\[alertmanager\] FIRING: {name} \(warning\) on {instance}: .*",
            line.text,
        ), line.text
        # Exactly once across the two durable layers. When the intake's "done"
        # mark was not yet on disk at the kill, the restarted intake dispatches
        # the delivery again (at start, before IRC is even connected) and the
        # formatter announces it again; that announcement names its delivery
        # (meta["delivery"], set by web/announce.py) and equals the row still
        # waiting in the outbox, so the outbox keeps one. Wait until both
        # layers are done (delivery marked, outbox row confirmed by the
        # server's echo and deleted): a repeat would have been sent by then.
        await wait_until(lambda: bot.pending_deliveries() == 0 and bot.stored() == 0, 20)
        assert await watcher.collect(from_bot(bot.nick, "#ops"), within=1.0) == []
        assert await bot.stop() == 0
        assert bot.stored() == 0
    finally:
        bot.close()


def alertmanager_notification(i: int, name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """An Alertmanager v4 notification carrying one announcement of the storm."""
    status = meta["status"]
    alerts = [
        {
            "status": status,
            "labels": {"alertname": name, "instance": inst, "severity": meta["severity"]},
            "annotations": {"summary": meta["summary"]},
            "startsAt": meta["starts_at"],
            "endsAt": "2026-11-28T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.com:9090/graph",
            "fingerprint": fp,
        }
        for inst, fp in zip(meta["instances"], meta["fingerprints"], strict=True)
    ]
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}", n="{i}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "masterchief",
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name, "severity": meta["severity"]},
        "commonAnnotations": {"summary": meta["summary"]},
        "externalURL": "http://alertmanager.example.com:9093",
        "alerts": alerts,
    }


# --------------------------------------------------------------------------- storm

ALERT_RE = re.compile(r"^\[(?P<status>FIRING|RESOLVED)\] (?P<name>\S+) on (?P<instances>.+?): ")
DELAYED_RE = re.compile(r"^\[delayed [^\]]*\] ")


def storm_announcements(seed: int = 3) -> list[tuple[str, str, dict[str, Any]]]:
    """500 Alertmanager-style announcements: (text, alertname, meta).

    200 HighCPU on web-1..web-200, 140 DiskFull on scattered db-N, 120
    InstanceDown on mixed names, 10 Latency notifications of 5 instances each,
    then 30 of the HighCPU alerts resolve (the last ones arrive late in the
    storm). Shuffled, resolutions after their firing.
    """
    rng = random.Random(seed)
    words = ["api", "auth", "cache", "cart", "cdn", "chat", "db", "dns", "edge", "feed", "git",
             "kafka", "ldap", "log", "mail", "media", "mq", "nfs", "ntp", "pay", "proxy", "queue",
             "redis", "s3", "search", "sso", "stats", "store", "tick", "vault", "video", "vpn",
             "web", "wiki"]  # fmt: skip
    mixed = [f"{w}-{r}" for w in words for r in ("eu", "us", "ap", "sa")][:120]
    alerts: list[tuple[str, list[str]]] = [("HighCPU", [f"web-{i}"]) for i in range(1, 201)]
    alerts += [("DiskFull", [f"db-{i}"]) for i in sorted(rng.sample(range(1, 400), 140))]
    alerts += [("InstanceDown", [name]) for name in mixed]
    alerts += [
        ("Latency", [f"10.0.{n // 20}.{n % 20 + 1}:9100" for n in range(k * 5, k * 5 + 5)])
        for k in range(10)
    ]
    rng.shuffle(alerts)
    out = [_announcement(name, inst, "firing") for name, inst in alerts]
    for i, n in enumerate(rng.sample(range(1, 201), 30)):
        fired = next(
            j
            for j, (_, name, m) in enumerate(out)
            if name == "HighCPU" and m["instances"] == [f"web-{n}"]
        )
        at = rng.randint(max(fired + 1, 300 + i * 5), 470 + i)
        out.insert(at, _announcement("HighCPU", [f"web-{n}"], "resolved"))
    assert len(out) == 500
    return out


def _announcement(name: str, instances: list[str], status: str) -> tuple[str, str, dict[str, Any]]:
    text = f"[{status.upper()}] {name} on {', '.join(instances)}: " + (
        "resolved" if status == "resolved" else f"{name} above threshold"
    )
    meta = {"alertname": name, "status": status, "severity": "warning", "instances": instances,
            "fingerprints": [f"{name}/{i}" for i in instances], "summary": f"{name} above threshold",
            "starts_at": "2026-11-28T10:00:00Z"}  # fmt: skip
    return text, name, meta


class Tally:
    """What a channel saw of a storm: which alerts are represented, and how.

    An alert is represented when its instance is named (in its own line, in
    a summary, or inside a range there); the others of an alertname must be
    covered by that alertname's ``+K`` and bare ``xN`` counts. Each summary
    group's count must equal its named instances plus its ``+K``.
    """

    def __init__(
        self,
        announcements: list[tuple[str, str, dict[str, Any]]],
        verbatim: re.Pattern[str] = ALERT_RE,
    ) -> None:
        self.verbatim = verbatim  # an alert line as is: groups status, name, instances
        self.expected: dict[str, set[str]] = {}
        self.final: dict[tuple[str, str], str] = {}
        for _, name, meta in announcements:
            for inst in meta["instances"]:
                self.expected.setdefault(name, set()).add(inst)
                self.final[(name, inst)] = meta["status"]
        self.named: dict[tuple[str, str], str] = {}  # -> the state it was last shown in
        self.counted: Counter[str] = Counter()
        self.errors: list[str] = []
        # one section over several lines (1/n .. n/n): alertname -> [count, named, more]
        self._section: dict[str, list[int]] = {}
        self.lines = self.summaries = self.alerts_as_is = 0

    def see(self, text: str) -> None:
        self.lines += 1
        body = DELAYED_RE.sub("", text)
        m = self.verbatim.match(body)
        if m is not None:
            self.alerts_as_is += 1
            state = "resolved" if m["status"].upper() == "RESOLVED" else "firing"
            instances, more = m["instances"], 0
            if (tail := re.search(r" and (\d+) more$", instances)) is not None:
                instances, more = instances[: tail.start()], int(tail[1])
            for inst in instances.split(", "):
                self._name(m["name"], inst, state)
            self.counted[m["name"]] += more  # "a, b, c and 2 more"
            return
        parsed = parse_summary(text)
        if parsed is None:
            self.errors.append(f"neither an alert nor a summary: {text!r}")
            return
        self.summaries += 1
        state = "firing" if parsed.outcome == "firing" else "resolved"
        if parsed.page == 1:
            self._section = {}
        for g in parsed.groups:
            for inst in g.names:
                self._name(g.alertname, inst, state)
            self.counted[g.alertname] += g.more
            tally = self._section.setdefault(g.alertname, [0, 0, 0])
            tally[0] += g.count or 0
            tally[1] += len(g.names)
            tally[2] += g.more
        if parsed.page == parsed.pages:
            for name, (count, named, more) in self._section.items():
                if not named and not more:  # a bare count stands for all of them
                    self.counted[name] += count
                elif count != named + more:
                    self.errors.append(f"inexact count for {name} in {text!r}")

    def _name(self, name: str, inst: str, state: str) -> None:
        if inst not in self.expected.get(name, ()):
            self.errors.append(f"{name} on {inst} was never announced")
        self.named[(name, inst)] = state

    def missing(self) -> int:
        """Alerts neither named nor covered by a count."""
        gone = 0
        for name, instances in self.expected.items():
            unnamed = sum(1 for i in instances if (name, i) not in self.named)
            gone += max(0, unnamed - self.counted[name])
        return gone

    def stale(self) -> list[tuple[str, str]]:
        """Named alerts last shown in an older state than their newest."""
        return [k for k, shown in self.named.items() if shown != self.final[k]]


async def storm(
    app: App, channel: str, announcements: list[tuple[str, str, dict[str, Any]]], seconds: float
) -> None:
    """Announce everything evenly over *seconds* (as webhooks would arrive)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, (text, name, meta) in enumerate(announcements):
        due = start + seconds * i / len(announcements)
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        await app.outbox.announce(channel, text, kind="alert", fold_key=name, meta=meta)


@pytest.mark.timeout(150)
async def test_500_alerts_in_5s_on_stock_flood_settings(
    tmp_path: Path, ircd_factory, irc_client
) -> None:  # type: ignore[no-untyped-def]
    server = ircd_factory("stock", services=False)
    assert server.limits == LIMITS["stock"]
    defaults = OutputConfig().model_dump()  # the bot's default pacing (burst 7, 1 line/s)
    watcher_task = asyncio.create_task(irc_client(server=server))
    over = {"irc": {"channels": ["#alerts"], "output": defaults}, "web": {"enabled": False}}
    async with running_bot(tmp_path, server.host, server.port, **over) as app:
        assert app.irc is not None
        nick = app.irc.nickname
        assert nick is not None
        watcher = await watcher_task
        await watcher.join("#alerts")
        announcements = storm_announcements()
        tally = Tally(announcements)
        loop = asyncio.get_running_loop()
        started = loop.time()
        generator = asyncio.create_task(storm(app, "#alerts", announcements, 5.0))
        pattern = from_bot(nick, "#alerts")
        first_line_at: float | None = None
        try:
            while tally.missing() or not generator.done():
                remaining = started + 60 - loop.time()
                assert remaining > 0, f"after 60 s {tally.missing()} alerts not represented"
                line = await watcher.wait_for(pattern, timeout=remaining)
                first_line_at = first_line_at or loop.time() - started
                tally.see(line.text)
            await generator
            represented_at = loop.time() - started
            # The rest (e.g. resolutions of alerts already shown firing) follows,
            # until the outbox has nothing left, not even awaiting its echo.
            while app.outbox.depth() or app.outbox.stats()["in_flight"]:
                assert loop.time() < started + 90, app.outbox.stats()
                for line in await watcher.collect(pattern, within=0.2):
                    tally.see(line.text)
            for line in await watcher.collect(pattern, within=0.5):
                tally.see(line.text)
        finally:
            generator.cancel()
            await asyncio.gather(generator, return_exceptions=True)
        assert tally.errors == []
        assert tally.stale() == []
        # the bot never flooded off
        assert app.irc.connects == 1 and app.irc.connected.is_set()
        trouble = [
            ln for ln in watcher.lines if ln.nick == nick and ln.command in ("QUIT", "ERROR")
        ]
        assert trouble == []
        assert not [ln for ln in watcher.lines if "Excess Flood" in ln or "RecvQ" in ln]
        stats = app.outbox.stats()
        print(
            f"\nstorm: first line {first_line_at:.2f}s, all represented {represented_at:.2f}s, "
            f"{tally.lines} lines ({tally.alerts_as_is} alerts as is, {tally.summaries} summary lines), "
            f"outbox {stats}"
        )
        assert stats["summaries"] >= 1
        assert tally.lines < 60
        # and it still answers in the channel, behind at most a short backlog
        app.table.bind("pub", "-|-", "!ping", lambda ev: ev.reply("pong"))
        await watcher.say("#alerts", "!ping")
        await watcher.wait_for(pattern + "pong$", timeout=30)
        assert app.irc.connects == 1
