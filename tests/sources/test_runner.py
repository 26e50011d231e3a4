"""The source seam: a family defined here plugs in through the families list
and fires bindings end to end; the runner supervises, reconfigures, reports.

``TicksFamily`` below is the proof that adding a kind of source touches no
file outside its own: it is defined only in this test, handed to the bot as
``(*FAMILIES, TicksFamily(...))`` -- the same list the bot uses -- and a
script's ``stream`` binding on real IRC sees its Events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel, ConfigDict, Field

from masterchief.bindings.event import Event
from masterchief.config.engine import build_config
from masterchief.config.schema import LogConfig, RestPollConfig
from masterchief.errors import ConfigError
from masterchief.metrics import Family
from masterchief.sources.base import EventSink, SourceDeps, SourceStatus
from masterchief.sources.families import FAMILIES, config_schema
from masterchief.sources.logs.tail import FAMILY as LOGS
from masterchief.sources.rest.family import FAMILY as REST
from masterchief.sources.runner import SourceRunner
from tests.harness import TRUST_HOSTMASKS, bot_config_data, client_mask, running_bot, wait_until


class Tick(BaseModel):
    """One entry of the test family's own config section, ``ticks:``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    every_s: float = Field(default=0.05, gt=0)
    crash_after: int | None = None  # raise after this many ticks (each run)


class Ticker:
    """A source: a ``stream`` Event ``ticks:<name>`` every ``every_s``."""

    family = "ticks"

    def __init__(self, entry: Tick) -> None:
        self.entry = entry
        self.name = entry.name
        self.sent = 0
        self.runs = 0

    async def run(self, sink: EventSink, started: asyncio.Event) -> None:
        self.runs += 1
        started.set()
        n = 0
        while True:
            if self.entry.crash_after is not None and n >= self.entry.crash_after:
                raise RuntimeError("the upstream went away")
            payload = {"n": self.sent}
            await sink.put(Event(type="stream", key=f"ticks:{self.name}", payload=payload))
            self.sent += 1
            n += 1
            await asyncio.sleep(self.entry.every_s)

    def status(self) -> SourceStatus:
        return SourceStatus(self.family, self.name, "ok", "ticking", events=self.sent)

    def metrics(self) -> list[Family]:
        return [Family("test_ticks", "ticks sent", "counter", (), {(): self.sent})]


class TicksFamily:
    """Brings its own config section (``ticks: [{name, every_s}]``)."""

    name = "ticks"
    section = "ticks"
    bind_types = ("stream",)
    entry_model = Tick

    def entries(self, config: Any) -> Sequence[Tick]:
        ticks: Sequence[Tick] = config.ticks
        return ticks

    def build(self, entry: Tick, deps: SourceDeps) -> Ticker:
        return Ticker(entry)


# -- end to end: a family defined here, real IRC ---------------------------------------


async def test_a_family_defined_in_a_test_fires_bindings_end_to_end(
    tmp_path: Path, ircd: Any, irc_client: Any
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "ticks.py").write_text(
        "from masterchief import bind, say\n"
        "@bind('stream', '-|-', 'ticks:*')\n"
        "def on_tick(ev):\n"
        "    say('#ops', f'{ev.key} tick {ev.payload[\"n\"]}')\n"
    )
    families = (*FAMILIES, TicksFamily())
    # the family's section, validated by the configuration like any other
    data = bot_config_data(
        tmp_path,
        ircd.host,
        ircd.port,
        users=TRUST_HOSTMASKS,
        ticks=[{"name": "beat", "every_s": 0.3}],
    )
    config = build_config(data, project_dir=tmp_path, schema=config_schema(families))
    async with running_bot(tmp_path, ircd.host, ircd.port, config=config, families=families) as app:
        me = app.irc.nickname  # type: ignore[union-attr]
        ident = "srcop"
        await app.users.add_user(ident, hostmasks=(client_mask(ident),), flags="o")
        c = await irc_client(username=ident)
        await c.join("#ops")
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :ticks:beat tick \d+$", 15)
        # the runner reports it like every other source: !sources and /metrics
        await c.say("#ops", "!sources")
        line = await c.wait_for(rf"^:{me}!\S+ PRIVMSG {c.nick} :ticks:beat ok -- ticking; ", 15)
        assert "events" in line.text
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG {c.nick} :clock:minutes ok ", 15)
        assert app.web is not None and app.web.port is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{app.web.port}/metrics") as resp,
        ):
            text = await resp.text()
        assert 'masterchief_source_events_total{family="ticks",source="beat"}' in text
        assert "test_ticks_total" in text


# -- the runner, without IRC -------------------------------------------------------------


class Collect:
    """An EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def submit(self, *chain: Event, on_done: Any = None) -> bool:
        self.events.extend(chain)
        return True

    async def put(self, *chain: Event, on_done: Any = None) -> None:
        self.events.extend(chain)

    def wants(self, type: str, key: str) -> bool:
        return True

    def keys(self) -> set[str]:
        return {e.key for e in self.events}


async def _no_announce(channel: str, text: str) -> None:
    raise AssertionError("not used")


DEPS = SourceDeps(store=None, announce=_no_announce)


def runner(family: Any, config: Any, sink: Collect) -> SourceRunner:
    return SourceRunner([family], config, DEPS, sink)


@pytest.mark.parametrize(
    ("family", "config"),
    [
        (
            REST,
            SimpleNamespace(
                rest=(
                    RestPollConfig(name="svc", url="http://127.0.0.1/a"),
                    RestPollConfig(name="svc", url="http://127.0.0.1/b"),
                )
            ),
        ),
        (
            LOGS,
            SimpleNamespace(
                logs=(
                    LogConfig(name="app", path=Path("/a.log")),
                    LogConfig(name="app", path=Path("/b.log")),
                )
            ),
        ),
        (TicksFamily(), SimpleNamespace(ticks=(Tick(name="x"), Tick(name="x", every_s=1)))),
    ],
)
def test_names_are_unique_within_every_family(family: Any, config: Any) -> None:
    with pytest.raises(ConfigError, match=r"names must be unique: (svc|app|x)$"):
        runner(family, config, Collect())


async def test_a_crashing_source_is_restarted_and_shown_failing_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Collect()
    r = runner(
        TicksFamily(),
        SimpleNamespace(ticks=(Tick(name="bad", crash_after=1), Tick(name="good"))),
        sink,
    )
    started = asyncio.Event()
    task = asyncio.create_task(r.run(started))
    try:
        await asyncio.wait_for(started.wait(), 15)
        bad = r.find("ticks", "bad")
        assert isinstance(bad, Ticker)
        await wait_until(lambda: any(s.state == "failing" for s in r.statuses()), 15)
        (failing,) = [s for s in r.statuses() if s.name == "bad"]
        assert failing.detail.startswith("crashed (ref ")
        assert "upstream went away" not in failing.detail  # a ref, never exception text
        good_sent = r.find("ticks", "good").sent  # type: ignore[union-attr]
        await wait_until(lambda: r.find("ticks", "good").sent > good_sent + 3, 15)  # type: ignore[union-attr]
        await wait_until(lambda: bad.runs >= 2, 15)  # started again after the backoff
        assert "source ticks:bad crashed" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_reconfigure_adds_removes_changes_and_keeps_equal_entries() -> None:
    sink = Collect()
    r = runner(
        TicksFamily(),
        SimpleNamespace(ticks=(Tick(name="keep"), Tick(name="drop"), Tick(name="edit"))),
        sink,
    )
    started = asyncio.Event()
    task = asyncio.create_task(r.run(started))
    try:
        await asyncio.wait_for(started.wait(), 15)
        kept, edited = r.find("ticks", "keep"), r.find("ticks", "edit")
        changes = r.reconfigure(
            SimpleNamespace(
                ticks=(Tick(name="keep"), Tick(name="edit", every_s=0.02), Tick(name="new"))
            )
        )
        assert sorted(changes) == ["ticks:drop removed", "ticks:edit changed", "ticks:new added"]
        assert r.find("ticks", "keep") is kept  # untouched: still the running one
        assert r.find("ticks", "edit") is not edited
        assert r.find("ticks", "drop") is None
        sink.events.clear()
        await wait_until(lambda: {"ticks:new", "ticks:edit", "ticks:keep"} <= sink.keys(), 15)
        n = len([e for e in sink.events if e.key == "ticks:drop"])
        await wait_until(lambda: len([e for e in sink.events if e.key == "ticks:keep"]) > 5, 15)
        assert len([e for e in sink.events if e.key == "ticks:drop"]) == n  # it stopped
        assert [s.name for s in r.statuses()] == ["edit", "keep", "new"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_invalid_new_entry_changes_nothing() -> None:
    sink = Collect()
    config = SimpleNamespace(rest=(RestPollConfig(name="a", url="http://127.0.0.1/a"),))
    r = runner(REST, config, sink)
    before = r.find("rest", "a")
    bad = RestPollConfig.model_construct(
        **{**RestPollConfig(name="b", url="http://127.0.0.1/b").__dict__, "url": "ftp://x/y"}
    )
    with pytest.raises(ConfigError, match="http and https"):
        r.reconfigure(SimpleNamespace(rest=(bad,)))
    assert r.find("rest", "a") is before and r.find("rest", "b") is None


def test_a_familys_section_is_validated_like_the_built_in_ones(tmp_path: Path) -> None:
    """A typo in a family's section is a ``file: key: detail`` error; without
    the family its section is an unknown key; a bot given the family but a
    configuration without its section refuses to start."""
    schema = config_schema((*FAMILIES, TicksFamily()))
    good = build_config(
        {"ticks": [{"name": "a", "every_s": 2}]}, project_dir=tmp_path, schema=schema
    )
    assert [t.every_s for t in good.ticks] == [2.0]  # type: ignore[attr-defined]
    with pytest.raises(
        ConfigError, match=r"<config>: ticks\[0\]\.evry_s: unknown key \(did you mean 'every_s'\?\)"
    ):
        build_config({"ticks": [{"name": "a", "evry_s": 2}]}, project_dir=tmp_path, schema=schema)
    with pytest.raises(ConfigError, match=r"<config>: ticks\[0\]\.every_s: "):
        build_config({"ticks": [{"name": "a", "every_s": 0}]}, project_dir=tmp_path, schema=schema)
    with pytest.raises(ConfigError, match=r"<config>: ticks: unknown key"):
        build_config({"ticks": [{"name": "a"}]}, project_dir=tmp_path)
    assert config_schema(FAMILIES) is config_schema(FAMILIES)  # no family brings one yet


async def test_a_bot_given_a_family_without_its_section_refuses_to_start(tmp_path: Path) -> None:
    from masterchief.runtime.compose import compose

    data = bot_config_data(tmp_path, "127.0.0.1", 6667)
    config = build_config(data, project_dir=tmp_path)  # without config_schema(...)
    with pytest.raises(ConfigError, match="loaded without ticks"):
        await compose(config, families=(*FAMILIES, TicksFamily()))
