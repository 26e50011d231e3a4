"""Dispatcher benchmark: events/s and submit-to-handler latency.

    .venv/bin/python bench/dispatch.py [--events N] [--bindings 1000] [--seed 1]

Drives the real ``masterchief.bindings.Dispatcher`` (its ``run()`` worker,
fed with ``submit()``) against a ``BindingTable`` of mixed bind types (pub
with distinct command words, pubm wildcard masks such as ``#ops *kw12x*``,
msg, msgm, join/part host masks, evnt names, event masks, raw numerics and a
few time/cron entries) and a realistic stream of chains: channel messages as
``(pubm, pub)`` where most match nothing or one pub binding, private
messages as ``(msgm, msg)``, joins, parts, raw lines and a few evnt/event
notices.  The resolver returns user records with global and channel flags,
so flag checks (and some refusals) are exercised.

Events are built before the timed region (Event() construction is the
source's cost; it is reported separately).  "chains/s" counts submit()
calls, i.e. input lines; "Events/s" counts the Events in them (a channel
message is two).  The process is pinned to one CPU (``--cpu``, default 0)
when the OS allows it, and the output says whether it was.

Throughput: chains are submitted in batches of ``--batch`` and the producer
awaits ``Dispatcher.drain()`` after each batch.  Latency: one chain (or a
small batch) per loop iteration with ``await asyncio.sleep(0)`` in between,
so the worker is never saturated; the time is ``monotonic_ns()`` at submit
(kept in a side dict keyed by the chain's Event id) to the first line of
the handler, for chains that fire a handler.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from masterchief.bindings import BindingTable, Dispatcher, Event
from masterchief.identity.principal import Identity
from masterchief.identity.users import User

CHANNELS = [
    "#ops",
    "#dev",
    "#alerts",
    "#deploy",
    "#sre",
    "#random",
    "#db",
    "#net",
    "#sec",
    "#infra",
]
WORDS = (  # noqa: SIM905 (one string reads better than 54 quoted words)
    "the deploy is done now ok so can we roll back please why does it fail again "
    "looks fine to me check logs graph latency disk full restart service ticket "
    "lunch coffee meeting review merge branch prod staging canary alert paged "
    "thanks sure yes no maybe later tomorrow today build green red flaky test"
).split()
COMMON_RAW = ["PING", "PRIVMSG", "NOTICE", "MODE", "CAP", "AWAY", "QUIT", "NICK"]
PUB_FLAGS = ["-|-", "-|-", "-|-", "o|o", "-|v", "m", "n|n", "o&o"]

# share of the binding table per type (pub takes the rounding remainder)
BIND_MIX = {
    "pub": 0.30,
    "pubm": 0.25,
    "msg": 0.10,
    "join": 0.10,
    "raw": 0.08,
    "part": 0.05,
    "evnt": 0.04,
    "event": 0.04,
    "msgm": 0.03,
    "time": 0.005,
    "cron": 0.005,
}
# share of the input stream per kind of chain
EVENT_MIX = {
    "chanmsg": 0.65,
    "raw": 0.13,
    "join": 0.10,
    "privmsg": 0.05,
    "part": 0.05,
    "notice": 0.02,
}


# -- users -------------------------------------------------------------------


def Who(handle: str, flags: str = "", chans: dict[str, str] | None = None) -> Identity:
    """A user record as the bot's resolver returns it (the one principal adapter)."""
    return Identity(User(handle, flags=flags, chanflags=chans or {}), "account")


def make_users(rng: random.Random, n: int = 200) -> tuple[list[str], dict[str, Identity]]:
    """Nicks, and the user records of the 80% of them that have one."""
    nicks = [f"user{i}" for i in range(n)]
    users: dict[str, Identity] = {}
    for nick in nicks:
        r = rng.random()
        if r < 0.40:
            users[nick] = Who(nick, "", {"#ops": "o", "#dev": "v", "#deploy": "o"})
        elif r < 0.70:
            users[nick] = Who(nick, "o", {"#sre": "m"})
        elif r < 0.80:
            users[nick] = Who(nick, "n")
        # else: no user record (resolver returns None)
    return nicks, users


def make_resolver(users: dict[str, Identity]) -> Callable[[Event], Identity | None]:
    get = users.get

    def resolve(ev: Event) -> Identity | None:
        return get(ev.nick) if ev.nick is not None else None

    return resolve


# -- bindings ----------------------------------------------------------------


@dataclass
class Catalog:
    """What got bound, so the workload can hit some of it."""

    counts: dict[str, int] = field(default_factory=dict)
    pub: list[str] = field(default_factory=list)
    msg: list[str] = field(default_factory=list)
    pubm: list[tuple[str, str]] = field(default_factory=list)  # (channel or "*", word)
    msgm: list[str] = field(default_factory=list)
    join_hosts: list[tuple[str, str]] = field(default_factory=list)
    part_hosts: list[tuple[str, str]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    evnt: list[str] = field(default_factory=list)
    event: list[str] = field(default_factory=list)


def plan_counts(n: int) -> dict[str, int]:
    counts = {t: max(1, round(n * share)) for t, share in BIND_MIX.items() if t != "pub"}
    counts["pub"] = max(1, n - sum(counts.values()))
    return counts


def build_table(n: int, handler: Callable[[Event], Any]) -> tuple[BindingTable, Catalog]:
    """A table of ``n`` bindings of mixed types, all calling ``handler``."""
    table = BindingTable()
    cat = Catalog(counts=plan_counts(n))
    raw_keys = [str(k) for k in range(200, 600)]
    random.Random(7).shuffle(raw_keys)
    owners = ["scripts/ops.py", "scripts/deploy.py", "builtin:irc"]
    binds: dict[str, list[tuple[str, str, str]]] = {o: [] for o in owners}

    def add(i: int, type_: str, flags: str, mask: str) -> None:
        binds[owners[i % len(owners)]].append((type_, flags, mask))

    c = cat.counts
    for i in range(c["pub"]):
        word = f"!c{i}"
        cat.pub.append(word)
        add(i, "pub", PUB_FLAGS[i % len(PUB_FLAGS)], word)
    for i in range(c["msg"]):
        word = f"m{i}"
        cat.msg.append(word)
        add(i, "msg", PUB_FLAGS[i % len(PUB_FLAGS)], word)
    for i in range(c["pubm"]):
        chan = "*" if i % 10 == 9 else CHANNELS[i % len(CHANNELS)]
        cat.pubm.append((chan, f"kw{i}x"))
        add(i, "pubm", "-|-", f"{chan} *kw{i}x*")
    for i in range(c["msgm"]):
        cat.msgm.append(f"mw{i}x")
        add(i, "msgm", "-|-", f"*mw{i}x*")
    for i in range(c["join"]):
        chan, host = CHANNELS[i % len(CHANNELS)], f"h{i}.example.net"
        cat.join_hosts.append((chan, host))
        add(i, "join", "-|-" if i % 2 else "o|o", f"{chan} *!*@{host}")
    for i in range(c["part"]):
        chan, host = CHANNELS[i % len(CHANNELS)], f"p{i}.example.net"
        cat.part_hosts.append((chan, host))
        add(i, "part", "-|-", f"{chan} *!*@{host}")
    for i in range(c["raw"]):
        key = raw_keys[i % len(raw_keys)]
        cat.raw.append(key)
        add(i, "raw", "-", key)
    for i in range(c["evnt"]):
        name = ["init-server", "connect-server", "rehash", "disconnect-server"][i] if i < 4 else ""
        name = name or f"evnt{i}"
        cat.evnt.append(name)
        add(i, "evnt", "-", name)
    for i in range(c["event"]):
        cat.event.append(f"app.e{i}.fired")
        add(i, "event", "-", f"app.e{i}.*")
    for i in range(c["time"]):
        add(i, "time", "-", f"{i % 60} * * * *")
    for i in range(c["cron"]):
        add(i, "cron", "-", f"*/{i % 10 + 2} * * * *")

    for owner, entries in binds.items():
        with table.collecting(owner) as bucket:
            for type_, flags, mask in entries:
                table.bind(type_, flags, mask, handler)
        table.replace_owner(owner, bucket)
    return table, cat


# -- workload ----------------------------------------------------------------

Chain = tuple[Event, ...]


def make_chain(rng: random.Random, cid: str, cat: Catalog, nicks: list[str]) -> Chain:
    """One input line as the IRC source would submit it (see bot/irc.py)."""
    nick = rng.choice(nicks)
    uhost = f"~{nick}@{nick}.users.example.org"
    common: dict[str, Any] = {"nick": nick, "uhost": uhost, "source": "irc", "id": cid}
    kind = rng.choices(list(EVENT_MIX), weights=list(EVENT_MIX.values()))[0]
    chat = " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))
    if kind == "chanmsg":
        chan = rng.choice(CHANNELS)
        r = rng.random()
        if r < 0.12:  # a bound command
            text = f"{rng.choice(cat.pub)} {chat}"
        elif r < 0.15:  # an unbound command
            text = f"!nosuch {chat}"
        elif r < 0.20:  # a pubm trigger word (may be bound to another channel)
            where, word = rng.choice(cat.pubm)
            chan = chan if where == "*" or rng.random() < 0.5 else where
            text = f"{chat} {word} {chat}"
        else:
            text = chat
        word, _, rest = text.partition(" ")
        return (
            Event(type="pubm", key=f"{chan} {text}", channel=chan, text=text, **common),
            Event(type="pub", key=word, channel=chan, text=rest.strip(), **common),
        )
    if kind == "privmsg":
        r = rng.random()
        if r < 0.5:
            text = f"{rng.choice(cat.msg)} {chat}"
        elif r < 0.55:
            text = f"{chat} {rng.choice(cat.msgm)}"
        else:
            text = chat
        word, _, rest = text.partition(" ")
        return (
            Event(type="msgm", key=text, text=text, **common),
            Event(type="msg", key=word, text=rest.strip(), **common),
        )
    if kind in ("join", "part"):
        hosts = cat.join_hosts if kind == "join" else cat.part_hosts
        if rng.random() < 0.2:
            chan, host = rng.choice(hosts)
            common["uhost"] = uhost = f"~{nick}@{host}"
        else:
            chan = rng.choice(CHANNELS)
        key = f"{chan} {nick}!{uhost}"
        return (Event(type=kind, key=key, channel=chan, **common),)
    if kind == "raw":
        key = rng.choice(cat.raw) if rng.random() < 0.3 else rng.choice(COMMON_RAW)
        if key in COMMON_RAW and rng.random() < 0.5:
            key = str(rng.randint(200, 599))  # any numeric, bound or not
        return (Event(type="raw", key=key, text=chat, **common),)
    # a core/app notice: evnt + event, no user
    if rng.random() < 0.5:
        name = rng.choice(cat.evnt)
        return (Event(type="evnt", key=name, source="core", id=cid),)
    name = rng.choice(cat.event) if rng.random() < 0.5 else "app.other.thing"
    return (Event(type="event", key=name, source="core", id=cid),)


def make_workload(n: int, cat: Catalog, nicks: list[str], seed: int) -> list[Chain]:
    rng = random.Random(seed)
    return [make_chain(rng, f"c{i:x}", cat, nicks) for i in range(n)]


# -- runs --------------------------------------------------------------------


def noop(ev: Event) -> None:
    return None


async def anoop(ev: Event) -> None:
    return None


@dataclass
class Result:
    name: str
    handlers: str
    chains: int = 0
    events: int = 0
    seconds: float = 0.0
    fired: int = 0
    refused: int = 0
    dropped: int = 0
    lat_us: list[float] = field(default_factory=list)

    @property
    def chains_s(self) -> float:
        return self.chains / self.seconds if self.seconds else 0.0

    @property
    def events_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        s = self.lat_us
        return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


async def _start(table: BindingTable, resolver: Any, queue_size: int) -> tuple[Dispatcher, Any]:
    disp = Dispatcher(table, resolver=resolver, queue_size=queue_size, max_inflight=1_000)
    worker = asyncio.get_running_loop().create_task(disp.run())
    await asyncio.sleep(0)
    return disp, worker


async def _stop(worker: Any) -> None:
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)


async def run_throughput(
    name: str,
    handlers: str,
    table: BindingTable,
    resolver: Any,
    pool: list[Chain],
    n: int,
    batch: int,
) -> Result:
    disp, worker = await _start(table, resolver, queue_size=max(10_000, 2 * batch))
    submit, drain = disp.submit, disp.drain
    plen = len(pool)
    # warm-up: regex/lru caches, _is_async cache, allocator
    for ch in pool[: min(plen, 5_000)]:
        submit(*ch)
    await drain(60)
    base_fired, base_refused, base_dropped = (
        disp.stats.fired,
        disp.stats.refused,
        disp.stats.dropped,
    )
    events = 0
    t0 = time.perf_counter()
    i = 0
    while i < n:
        end = min(n, i + batch)
        for j in range(i, end):
            ch = pool[j % plen]
            events += len(ch)
            submit(*ch)
        await drain(60)
        i = end
    seconds = time.perf_counter() - t0
    res = Result(
        name,
        handlers,
        chains=n,
        events=events,
        seconds=seconds,
        fired=disp.stats.fired - base_fired,
        refused=disp.stats.refused - base_refused,
        dropped=disp.stats.dropped - base_dropped,
    )
    await _stop(worker)
    return res


async def run_latency(
    name: str,
    handlers: str,
    table: BindingTable,
    stamps: dict[str, int],
    samples: list[int],
    resolver: Any,
    pool: list[Chain],
    n: int,
    batch: int,
) -> Result:
    disp, worker = await _start(table, resolver, queue_size=10_000)
    submit = disp.submit
    now = time.monotonic_ns
    plen = len(pool)
    for ch in pool[: min(plen, 2_000)]:  # warm-up
        submit(*ch)
    await disp.drain(60)
    stamps.clear()
    samples.clear()
    t0 = time.perf_counter()
    i = 0
    while i < n:
        end = min(n, i + batch)
        for j in range(i, end):
            ch = pool[j % plen]
            stamps[ch[0].id] = now()
            submit(*ch)
        await asyncio.sleep(0)
        i = end
    await disp.drain(60)
    seconds = time.perf_counter() - t0
    res = Result(name, handlers, chains=n, seconds=seconds)
    res.lat_us = sorted(ns / 1_000 for ns in samples)
    stamps.clear()
    await _stop(worker)
    return res


def probes(stamps: dict[str, int], samples: list[int]) -> tuple[Any, Any]:
    """Sync and async handlers that record submit-to-start time once per chain."""
    now, pop, add = time.monotonic_ns, stamps.pop, samples.append

    def probe(ev: Event) -> None:
        t = pop(ev.id, None)
        if t is not None:
            add(now() - t)

    async def aprobe(ev: Event) -> None:
        t = pop(ev.id, None)
        if t is not None:
            add(now() - t)

    return probe, aprobe


# -- main --------------------------------------------------------------------


def pin(cpu: int) -> str:
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
            return f"pinned to CPU {cpu} (os.sched_setaffinity; {os.cpu_count()} CPUs online)"
        except OSError as exc:
            return f"NOT pinned ({exc})"
    return "NOT pinned (os.sched_setaffinity unavailable)"


def event_build_cost(pool: list[Chain], n: int = 20_000) -> float:
    """Microseconds per chain to construct its Events as bot/irc.py does (default
    id and time, a tags dict); the source's cost, not part of the runs above."""
    chains = pool[:n]
    t0 = time.perf_counter()
    for ch in chains:
        for e in ch:
            Event(
                type=e.type,
                key=e.key,
                nick=e.nick,
                uhost=e.uhost,
                channel=e.channel,
                text=e.text,
                tags={},
                source=e.source,
            )
    return (time.perf_counter() - t0) / len(chains) * 1e6


async def amain(args: argparse.Namespace) -> int:
    pinned = pin(args.cpu)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    rng = random.Random(args.seed)
    nicks, users = make_users(rng)
    resolver = make_resolver(users)
    stamps: dict[str, int] = {}
    samples: list[int] = []
    probe, aprobe = probes(stamps, samples)

    t_sync, cat = build_table(args.bindings, noop)
    t_async, _ = build_table(args.bindings, anoop)
    t_probe, _ = build_table(args.bindings, probe)
    t_aprobe, _ = build_table(args.bindings, aprobe)
    t_floor = BindingTable()  # one binding that every channel message fires
    t_floor.bind("pubm", "-|-", "*", probe, owner="bench")
    pool = make_workload(min(args.events, args.pool), cat, nicks, args.seed)
    lat_n = min(args.events, args.latency_events)

    gc.collect()
    results: list[Result] = []
    results.append(
        await run_throughput("throughput", "def", t_sync, resolver, pool, args.events, args.batch)
    )
    results.append(
        await run_throughput(
            "throughput", "async def", t_async, resolver, pool, args.events, args.batch
        )
    )
    lat: list[Result] = [
        await run_latency(
            "floor b=1 (1 bind)", "def", t_floor, stamps, samples, resolver, pool, lat_n, 1
        )
    ]
    for b in (1, args.paced_batch):
        lat.append(
            await run_latency(
                f"latency b={b}", "def", t_probe, stamps, samples, resolver, pool, lat_n, b
            )
        )
        lat.append(
            await run_latency(
                f"latency b={b}", "async def", t_aprobe, stamps, samples, resolver, pool, lat_n, b
            )
        )

    # -- report --------------------------------------------------------------
    impl = platform.python_implementation()
    print(f"masterchief bench/dispatch.py  {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    print(f"Python {platform.python_version()} ({impl}) on {platform.platform(terse=True)}")
    print(f"CPU: {pinned}; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    counts = ", ".join(f"{t} {c}" for t, c in sorted(cat.counts.items(), key=lambda x: -x[1]))
    print(f"bindings: {sum(cat.counts.values())} ({counts}); resolver: {len(users)} users")
    mix = ", ".join(f"{k} {v:.0%}" for k, v in EVENT_MIX.items())
    print(f"input mix: {mix}; {len(pool):,} distinct chains, cycled")
    thr = results[0]
    print(
        f"per chain (def run): {thr.fired / thr.chains:.3f} handlers fired, "
        f"{thr.refused / thr.chains:.3f} refused; dropped {thr.dropped}"
    )
    print()
    print(
        f"{'run':<22}{'handlers':<11}{'chains':>9}{'chains/s':>11}{'Events/s':>11}{'us/chain':>10}"
    )
    for r in results:
        print(
            f"{r.name + f' b={args.batch}':<22}{r.handlers:<11}{r.chains:>9,}"
            f"{r.chains_s:>11,.0f}{r.events_s:>11,.0f}{1e6 / r.chains_s:>10.2f}"
        )
    print()
    print(
        f"{'run (paced, sleep(0))':<22}{'handlers':<11}{'samples':>9}"
        f"{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'max us':>9}"
    )
    for r in lat:
        print(
            f"{r.name:<22}{r.handlers:<11}{len(r.lat_us):>9,}"
            f"{r.pct(50):>9.1f}{r.pct(90):>9.1f}{r.pct(99):>9.1f}{r.pct(100):>9.1f}"
        )
    print()
    build = event_build_cost(pool)
    print(f"not included above: building the Events of one chain (source side) ~{build:.1f} us")
    ok = thr.chains_s >= 50_000
    verdict = "MET" if ok else "MISSED"
    print(
        f"target >= 50,000 events/s on one core (def handlers, counting chains): {verdict} "
        f"({thr.chains_s:,.0f} chains/s, {thr.events_s:,.0f} Events/s)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="chains per throughput run")
    p.add_argument("--bindings", type=int, default=1_000, help="bindings in the table")
    p.add_argument("--batch", type=int, default=1_000, help="chains per drain() in throughput")
    p.add_argument("--paced-batch", type=int, default=16, help="second latency batch size")
    p.add_argument("--latency-events", type=int, default=20_000, help="chains per latency run")
    p.add_argument("--pool", type=int, default=20_000, help="distinct pre-built chains")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cpu", type=int, default=0, help="CPU to pin to")
    args = p.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
