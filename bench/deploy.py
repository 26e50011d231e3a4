"""Parallel script deploys through the bot: overhead, lines/s through redaction, IRC lines, CPU.

    .venv/bin/python bench/deploy.py [--jobs 20] [--lines 10000] [--users 4] [--settle 10]
                                     [--profile] [--keep]

What it does (all on 127.0.0.1, everything stopped at the end, even on error):

1. Writes a deploy module ``bench`` (kind script, environments env01..envNN,
   flags ``o|o``, no approval) whose ``run.sh`` execs one ``awk`` that prints
   ``--lines`` lines of ~80 bytes; every 100th line carries ``MC_VAR_TOKEN``,
   which comes from the module config ``token: "${env:MC_BENCH_TOKEN}"`` and
   so is a registered secret the runner must redact.
2. Baseline: the same ``run.sh``, ``--jobs`` copies in parallel as asyncio
   subprocesses with the runner's kind of environment, output read in 64 KiB
   chunks and discarded (``--baseline-runs`` times; the median counts).
3. Starts InspIRCd (``tests/servers.py``) with the "stock" connect class
   (threshold 10, commandrate 1000, fakelag on, recvq 8192) and the bot
   in-process (``tests/harness.py`` ``running_bot``) with the DEFAULT output
   pacer (burst 7, 1 line/s, recvq 8192: the harness's fast test pacer is
   overridden), the default handler timeout, and
   ``deploy: {modules, work_dir, progress_interval_s: 5}``.  ``--users``
   users with +o on #ops connect (``tests/ircclient.py``); after
   ``--settle`` s idle (the bot's registration penalty drained) they say
   ``!deploy bench envNN``, ``--jobs`` commands split between them so none
   goes over the server's burst (one user's 20 commands would be spread over
   ~12 s by fakelag, and that would be the server's time, not the bot's).
4. Waits until every job is finished (``app.jobs``), then until the bot's
   output has drained (every summary line arrived, queue and outbox empty).

Reported: wall time through the bot vs direct (overhead); lines through the
runner and redaction and lines/s; secret occurrences in job tails, the
store's files, the job folders, the captured log and every IRC line the
users received (all must be 0), and how many lines were masked in the tails;
IRC lines the bot sent (output queue ``sent``) and the users received, against
the pacer's budget (burst + rate x seconds); whether the bot stayed
connected; event-loop lag; CPU of this process (the bot, plus the small
IRC clients of the bench) from ``getrusage(RUSAGE_SELF)`` and of the reaped
children (the scripts) from ``RUSAGE_CHILDREN``; peak RSS.

``--profile`` runs cProfile on the event loop thread during the job window
and prints the top functions (the timings above are then inflated).
Exit status 1 when a secret leaked, the tails are not masked as expected, a
job did not succeed, a line was lost, the bot sent more than the pacer allows
or it lost its connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import logging
import os
import pstats
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bot_revision, machine, percentile, verdict
from masterchief.config.schema import BotConfig, OutputConfig
from masterchief.config.secrets import MASK, RedactingFilter
from masterchief.deploy.job import TERMINAL, Job
from masterchief.deploy.kinds.base import SAFE_PATH, VENV_BIN
from masterchief.runtime.compose import App
from tests.harness import running_bot
from tests.ircclient import Line, TestClient
from tests.servers import InspIRCd

CHANNEL = "#ops"
MODULE = "bench"
TOKEN_ENV = "MC_BENCH_TOKEN"
TOKEN_EVERY = 100
PROGRESS_INTERVAL_S = 5.0

# One awk process prints everything (exec: it is the process group leader).
# Plain lines ~80 bytes; every 100th names the token.
RUN_SH = r"""#!/bin/sh
# bench/deploy.py load generator: MC_VAR_LINES lines of ~80 bytes, every
# 100th carrying the secret MC_VAR_TOKEN (the runner must redact it).
exec awk 'BEGIN {
  n = ENVIRON["MC_VAR_LINES"] + 0; tok = ENVIRON["MC_VAR_TOKEN"]; env = ENVIRON["MC_ENV"]
  for (i = 1; i <= n; i++) {
    if (i % 100 == 0)
      printf "%s %06d/%06d registry login as deploy@%s with token=%s: ok\n", env, i, n, env, tok
    else
      printf "%s %06d/%06d TASK [app : copy release] changed: [web-%02d.%s.example.net]\n", env, i, n, i % 50, env
  }
}'
"""


# --------------------------------------------------------------------------- the module


def env_names(jobs: int) -> list[str]:
    width = max(2, len(str(jobs)))
    return [f"env{i:0{width}d}" for i in range(1, jobs + 1)]


def write_module(root: Path, envs: list[str], lines: int) -> Path:
    """The ``bench`` module and its config; returns the module folder."""
    mod = root / "modules" / MODULE
    mod.mkdir(parents=True)
    (mod / "module.yaml").write_text(
        f"name: {MODULE}\n"
        "version: 1.0.0\n"
        "kind: script\n"
        "description: bench/deploy.py load generator\n"
        "entry: run.sh\n"
        f"environments: [{', '.join(envs)}]\n"
        'flags: "o|o"\n'
        "timeout_s: 600\n"
        "script: {changes_bot_host: false}\n"  # a load generator: not the bot-host rule
    )
    (mod / "run.sh").write_text(RUN_SH)
    (mod / "run.sh").chmod(0o755)
    conf = root / "bot" / "config" / "modules"
    conf.mkdir(parents=True)
    (conf / f"{MODULE}.yaml").write_text(f'token: "${{env:{TOKEN_ENV}}}"\nlines: {lines}\n')
    return mod


# --------------------------------------------------------------------------- baseline


@dataclass
class Direct:
    wall_s: float
    lines: int
    bytes: int
    token_lines: int
    exit_codes: list[int]
    children_cpu_s: float


def cpu(ru: resource.struct_rusage) -> float:
    return ru.ru_utime + ru.ru_stime


async def run_direct(script: Path, envs: list[str], token: str, lines: int, tmp: Path) -> Direct:
    """``len(envs)`` copies of ``script`` at once, output read and discarded."""
    needle = token.encode()
    counts = {"lines": 0, "bytes": 0, "tokens": 0}

    async def one(env: str) -> int:
        home = tmp / "direct" / env
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        environ = {
            "PATH": f"{VENV_BIN}:{SAFE_PATH}",
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "LANG": "C.UTF-8",
            "MC_ENV": env,
            "MC_MODULE": MODULE,
            "MC_MODE": "deploy",
            "MC_VAR_TOKEN": token,
            "MC_VAR_LINES": str(lines),
        }
        proc = await asyncio.create_subprocess_exec(
            str(script),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=environ,
            cwd=script.parent,
            start_new_session=True,
        )
        assert proc.stdout is not None
        carry = b""
        while chunk := await proc.stdout.read(65536):
            counts["lines"] += chunk.count(b"\n")
            counts["bytes"] += len(chunk)
            buf = carry + chunk
            counts["tokens"] += buf.count(needle)
            carry = buf[-(len(needle) - 1) :]
        return await proc.wait()

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    codes = await asyncio.gather(*(one(env) for env in envs))
    wall = time.perf_counter() - started
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Direct(
        wall, counts["lines"], counts["bytes"], counts["tokens"], list(codes), cpu(ru1) - cpu(ru0)
    )


# --------------------------------------------------------------------------- measuring


class TimedClient(TestClient):
    """A TestClient that also notes when each line arrived (monotonic)."""

    __test__ = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arrived: list[float] = []
        super().__init__(*args, **kwargs)

    def _track(self, line: Line) -> None:
        self.arrived.append(time.monotonic())
        super()._track(line)


class LogCapture(logging.Handler):
    """The bot's log records as a deployment would write them (redacted)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(RedactingFilter())
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


class LoopLag:
    """How late a 20 ms sleep wakes up: the event loop's responsiveness."""

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.lags: list[float] = []

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.period)
            self.lags.append(time.perf_counter() - t - self.period)


@dataclass
class Snapshot:
    t: float
    self_cpu: float
    user_cpu: float
    sys_cpu: float
    children_cpu: float
    maxrss_kb: int
    sent: int
    out: dict[str, int] = field(default_factory=dict)

    @classmethod
    def take(cls, app: App) -> Snapshot:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = app.output.stats()
        return cls(
            time.monotonic(),
            cpu(me),
            me.ru_utime,
            me.ru_stime,
            cpu(kids),
            me.ru_maxrss,
            out["sent"],
            out,
        )


def bot_lines(client: TimedClient, bot_nick: str, since: int) -> list[tuple[float, Line]]:
    """PRIVMSG/NOTICE lines from the bot that ``client`` received from index ``since``."""
    nick = bot_nick.lower()
    return [
        (client.arrived[i], ln)
        for i, ln in enumerate(client.lines[since:], since)
        if ln.command in ("PRIVMSG", "NOTICE") and (ln.nick or "").lower() == nick
    ]


def max_excess(times: list[float], rate: float) -> float:
    """The largest ``lines - rate x span`` over any run of consecutive arrivals:
    a token bucket of ``burst`` lets it reach ``burst`` at most."""
    best = 0.0
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            best = max(best, (j - i + 1) - rate * (times[j] - start))
    return best


def files_under(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path


def count_in_files(paths: list[Path], needle: bytes) -> tuple[int, int]:
    """Occurrences of ``needle`` in ``paths``, and how many files were read."""
    hits = read = 0
    for path in paths:
        with contextlib.suppress(OSError):
            hits += path.read_bytes().count(needle)
            read += 1
    return hits, read


async def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``pred()`` until true; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic()


# --------------------------------------------------------------------------- the run


@dataclass
class BotRun:
    jobs: list[Job]
    start: Snapshot
    done: Snapshot
    drained: Snapshot
    lag_ms: list[float]
    lines_seen: list[tuple[float, Line]]
    clients: list[TimedClient]
    bot_nick: str
    connected: bool
    trouble: list[str]
    log: list[str]
    job_lines: int
    profile: str = ""
    store_files: list[Path] = field(default_factory=list)


async def connect_users(app: App, host: str, port: int, users: int) -> list[TimedClient]:
    handles = [f"bdep{i}" for i in range(users)]
    for handle in handles:
        # A mask that pins the host: a weak one (*!ident@*) carries no +o.
        await app.users.add_user(handle, hostmasks=(f"*!{handle}@127.0.0.1",))
        await app.users.chattr(handle, "+o", channel=CHANNEL, casemapping=app.casemapping)
    # Registration ends on the server's 1 s tick: connect everyone at once.
    clients = list(
        await asyncio.gather(
            *(TimedClient.connect(host, port, h, username=h, timeout=20) for h in handles)
        )
    )
    for c in clients:
        await c.join(CHANNEL)
    return [c for c in clients if isinstance(c, TimedClient)]


async def through_bot(
    args: argparse.Namespace, tmp: Path, ircd: InspIRCd, envs: list[str], capture: LogCapture
) -> BotRun:
    defaults = OutputConfig()
    output = {
        "burst": defaults.burst,
        "rate": defaults.rate,
        "recvq": defaults.recvq,
        "max_queue": defaults.max_queue,
        "max_backlog_s": defaults.max_backlog_s,
    }
    host, port = ircd.address
    async with running_bot(
        tmp / "bot",
        host,
        port,
        irc={"output": output},
        bot={"handler_timeout_s": BotConfig().handler_timeout_s},
        users={"hostmask_flags_on_account_networks": True},
        deploy={
            "modules": [str(tmp / "modules")],
            "work_dir": str(tmp / "jobs"),
            "progress_interval_s": PROGRESS_INTERVAL_S,
        },
    ) as app:
        assert app.irc is not None
        bot_nick = app.irc.nickname
        assert bot_nick is not None
        clients = await connect_users(app, host, port, args.users)
        watcher = clients[0]
        await asyncio.sleep(args.settle)  # idle: the server's flood budget for the bot refills
        connects_before = sum("connected to" in r for r in capture.records)

        lag = LoopLag()
        lag_task = asyncio.create_task(lag.run())
        profiler = cProfile.Profile() if args.profile else None
        since = len(watcher.lines)
        start = Snapshot.take(app)
        lines0 = app.jobs.runs.stats["lines"]
        if profiler is not None:
            profiler.enable()
        try:
            for i, env in enumerate(envs):
                await clients[i % len(clients)].say(CHANNEL, f"!deploy {MODULE} {env}")

            def ours() -> list[Job]:
                return [j for j in app.jobs.jobs.values() if j.module == MODULE]

            await wait_for(lambda: len(ours()) == len(envs), 60, "every job to be requested")
            await wait_for(
                lambda: all(j.status in TERMINAL for j in ours()),
                args.timeout,
                "every job to finish",
                0.01,
            )
            done = Snapshot.take(app)
        finally:
            if profiler is not None:
                profiler.disable()
            lag_task.cancel()
            await asyncio.gather(lag_task, return_exceptions=True)
        lag_ms = [x * 1000 for x in lag.lags]
        jobs = sorted(ours(), key=lambda j: j.env)
        job_lines = app.jobs.runs.stats["lines"] - lines0

        summary = re.compile(rf"job [0-9a-f]{{6}} {MODULE}/\S+ deploy (succeeded|failed)")

        def summaries() -> int:
            # the bot gathers updates that land together into one line
            return sum(
                len(summary.findall(ln.text)) for _, ln in bot_lines(watcher, bot_nick, since)
            )

        def drained() -> bool:
            out = app.outbox.stats()
            return (
                summaries() >= len(jobs)
                and not any(app.output.depths().values())
                and out["pending"] == 0
                and out["in_flight"] == 0
            )

        await wait_for(drained, args.drain_timeout, "the bot's output to drain", 0.1)
        end = Snapshot.take(app)
        trouble = [
            ln.raw
            for ln in watcher.lines[since:]
            if ln.command in ("QUIT", "PART", "KICK")
            and (ln.nick or "").lower() == bot_nick.lower()
        ]
        connected = app.irc.connected.is_set() and (
            sum("connected to" in r for r in capture.records) == connects_before
        )
        profile = ""
        if profiler is not None:
            buf = io.StringIO()
            st = pstats.Stats(profiler, stream=buf)
            st.sort_stats("tottime").print_stats(25)
            st.sort_stats("cumulative").print_stats(25)
            profile = buf.getvalue()
        store = Path(str(app.config.store.path))
        store_files = [p for p in store.parent.glob(store.name + "*") if p.is_file()]
        return BotRun(
            jobs=jobs,
            start=start,
            done=done,
            drained=end,
            lag_ms=lag_ms,
            lines_seen=bot_lines(watcher, bot_nick, since),
            clients=clients,
            bot_nick=bot_nick,
            connected=connected,
            trouble=trouble,
            log=list(capture.records),
            job_lines=job_lines,
            profile=profile,
            store_files=store_files,
        )


def private_lines(run: BotRun) -> list[Line]:
    """Notices/messages the bot sent to a user privately (not to the channel)."""
    out: list[Line] = []
    for c in run.clients:
        for ln in c.lines:
            if (
                ln.command in ("PRIVMSG", "NOTICE")
                and (ln.nick or "").lower() == run.bot_nick.lower()
                and ln.target is not None
                and ln.target.lower() == c.nick.lower()
            ):
                out.append(ln)
    return out


# --------------------------------------------------------------------------- report


def pct(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:,.0f} %" if b > 0 else "n/a"


def report(
    args: argparse.Namespace,
    where: str,
    direct: list[Direct],
    run: BotRun,
    token: str,
    tmp: Path,
) -> bool:
    jobs, lines = args.jobs, args.lines
    d_wall = statistics.median(d.wall_s for d in direct)
    d_best = min(direct, key=lambda d: d.wall_s)
    b_wall = run.done.t - run.start.t
    drain_wall = run.drained.t - run.start.t
    starts = [j.started_at for j in run.jobs if j.started_at is not None]
    ends = [j.finished_at for j in run.jobs if j.finished_at is not None]
    span = (max(ends) - min(starts)) if starts and ends else float("nan")
    durations = sorted(
        j.finished_at - j.started_at
        for j in run.jobs
        if j.started_at is not None and j.finished_at is not None
    )
    statuses: dict[str, int] = {}
    for j in run.jobs:
        statuses[j.status] = statuses.get(j.status, 0) + 1
    script_lines = run.job_lines - len(run.jobs)  # minus one summary each
    expected_lines = jobs * lines
    tokens_expected = jobs * (lines // TOKEN_EVERY)

    # -- secrets -----------------------------------------------------------------
    tails = [t for j in run.jobs for t in j.tail]
    leak_tails = sum(t.count(token) for t in tails)
    masked_tail = sum(1 for t in tails if MASK in t)
    tail_window = range(max(1, lines - len(run.jobs[0].tail) + 2), lines + 1) if run.jobs else []
    masked_expected = len(run.jobs) * sum(1 for i in tail_window if i % TOKEN_EVERY == 0)
    irc_text = [ln.raw for c in run.clients for ln in c.lines]
    leak_irc = sum(t.count(token) for t in irc_text)
    needle = token.encode()
    leak_store, store_read = count_in_files(run.store_files, needle)
    job_files = list(files_under(tmp / "jobs"))
    leak_jobdir, _ = count_in_files(job_files, needle)
    leak_log = sum(r.count(token) for r in run.log)
    leaks = leak_tails + leak_irc + leak_store + leak_jobdir + leak_log

    # -- IRC -------------------------------------------------------------------------
    out = OutputConfig()
    sent_jobs = run.done.sent - run.start.sent
    sent_all = run.drained.sent - run.start.sent
    budget_jobs = out.burst + out.rate * b_wall
    budget_all = out.burst + out.rate * drain_wall
    chan = [(t, ln) for t, ln in run.lines_seen if ln.target and ln.target.lower() == CHANNEL]
    chan_jobs = sum(1 for t, _ in chan if t <= run.done.t)
    private = private_lines(run)
    excess = max_excess([t for t, _ in chan], out.rate)
    progress = [
        ln.text for _, ln in chan if ln.text.startswith("[") or " jobs running — " in ln.text
    ]
    trouble = run.trouble
    log_trouble = [
        r
        for r in run.log
        if r.startswith(("WARNING", "ERROR", "CRITICAL")) or "disconnected" in r or "Excess" in r
    ]

    # -- CPU -----------------------------------------------------------------------
    bot_cpu = run.done.self_cpu - run.start.self_cpu
    bot_user = run.done.user_cpu - run.start.user_cpu
    bot_sys = run.done.sys_cpu - run.start.sys_cpu
    kids_cpu = run.done.children_cpu - run.start.children_cpu
    drain_cpu = run.drained.self_cpu - run.done.self_cpu
    lag = sorted(run.lag_ms)

    print(f"machine: {where}")
    print(f"bot: masterchief {bot_revision()}, in-process App (tests/harness.py running_bot)")
    print(
        f"ircd: InspIRCd, connect class 'stock' (threshold 10, commandrate 1000, fakelag on, "
        f"recvq 8192); bot output: DEFAULT pacer (burst {out.burst}, rate {out.rate:g}/s, "
        f"recvq {out.recvq}); deploy.progress_interval_s {PROGRESS_INTERVAL_S:g}"
    )
    print(
        f"workload: {jobs} script jobs x {lines:,} lines (~{d_best.bytes / max(1, d_best.lines):.0f} "
        f"bytes/line, one awk each), every {TOKEN_EVERY}th line carries the secret token "
        f"({tokens_expected:,} occurrences); commands: {jobs} x '!deploy {MODULE} envNN' from "
        f"{args.users} users with +o on {CHANNEL}, after {args.settle:g} s idle"
    )
    print()
    print("| run | wall s | lines | lines/s | exit codes / statuses | children CPU s |")
    print("|---|---:|---:|---:|---|---:|")
    for i, d in enumerate(direct, 1):
        codes = "all 0" if not any(d.exit_codes) else str(d.exit_codes)
        print(
            f"| direct #{i} | {d.wall_s:.3f} | {d.lines:,} | {d.lines / d.wall_s:,.0f} | {codes} "
            f"| {d.children_cpu_s:.2f} |"
        )
    st = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    print(
        f"| through the bot | {b_wall:.3f} | {script_lines:,} | {script_lines / b_wall:,.0f} "
        f"| {st} | {kids_cpu:.2f} |"
    )
    print()
    print(
        f"overhead: {b_wall:.2f} s through the bot vs {d_wall:.3f} s direct (median of "
        f"{len(direct)}): +{b_wall - d_wall:.2f} s, {pct(b_wall, d_wall)}"
    )
    print(
        f"jobs: first start to last finish {span:.2f} s; per-job run time min / median / max "
        f"{durations[0]:.2f} / {statistics.median(durations):.2f} / {durations[-1]:.2f} s"
        if durations
        else "jobs: none ran"
    )
    print(
        f"lines through the runner + redaction: {script_lines:,} of {expected_lines:,} "
        f"(+{len(run.jobs)} summaries; JobManager.stats lines {run.job_lines:,}) = "
        f"{script_lines / b_wall:,.0f} lines/s"
    )
    print(
        f"secret: {leaks} unredacted occurrences (job tails {leak_tails}, IRC lines received "
        f"{leak_irc} of {len(irc_text)}, store files {leak_store} in {store_read}, job folders "
        f"{leak_jobdir} in {len(job_files)} files, log {leak_log} in {len(run.log)} records); "
        f"masked lines in the tails {masked_tail} (expected {masked_expected})"
    )
    print(
        f"IRC, jobs window ({b_wall:.1f} s): output queue sent {sent_jobs} lines, budget "
        f"{out.burst} + {out.rate:g} x {b_wall:.1f} = {budget_jobs:.1f}; {CHANNEL} lines "
        f"received {chan_jobs}"
    )
    print(
        f"IRC, until drained ({drain_wall:.1f} s): sent {sent_all} lines, budget {budget_all:.1f}; "
        f"received {len(chan)} in {CHANNEL} ({len(progress)} progress) + {len(private)} private; "
        f"largest burst at the client (lines - rate x span) {excess:.2f} (burst {out.burst})"
    )
    print(f"output queue stats after: {run.drained.out}")
    print(
        f"bot stayed connected: {'yes' if run.connected and not trouble else 'NO'} "
        f"(QUIT/PART/KICK seen: {len(trouble)}; log warnings/errors: {len(log_trouble)})"
    )
    for r in log_trouble[:10]:
        print(f"  log: {r[:200]}")
    print(
        f"bot CPU (RUSAGE_SELF, this process) in the jobs window: {bot_cpu:.2f} s "
        f"(user {bot_user:.2f}, sys {bot_sys:.2f}) = {bot_cpu / b_wall * 100:.0f} % of one CPU; "
        f"children (RUSAGE_CHILDREN, the scripts): {kids_cpu:.2f} s "
        f"(direct: {statistics.median(d.children_cpu_s for d in direct):.2f} s); "
        f"while draining: {drain_cpu:.2f} s"
    )
    print(
        f"event-loop lag (20 ms sleep) in the jobs window: p50 {percentile(lag, 50):.1f} ms, "
        f"p99 {percentile(lag, 99):.1f} ms, max {lag[-1] if lag else float('nan'):.1f} ms"
    )
    print(
        f"peak RSS (ru_maxrss, this process): {run.start.maxrss_kb / 1024:.1f} MB before, "
        f"{run.drained.maxrss_kb / 1024:.1f} MB after"
    )
    if progress:
        print(f"a progress line: {progress[0][:160]}")
    if run.profile:
        print()
        print("cProfile of the event loop thread, jobs window (timings above are inflated):")
        print(run.profile)

    checks = {
        f"every job succeeded ({st})": statuses == {"succeeded": jobs},
        f"no line lost ({script_lines:,} of {expected_lines:,})": script_lines == expected_lines,
        f"no secret leaked ({leaks})": leaks == 0,
        f"redaction ran (masked {masked_tail} tail lines, expected {masked_expected})": (
            masked_tail == masked_expected
        ),
        f"within the pacer ({sent_all} sent <= {budget_all:.1f}; {sent_jobs} <= "
        f"{budget_jobs:.1f})": sent_all <= budget_all and sent_jobs <= budget_jobs,
        "bot stayed connected": run.connected and not trouble,
    }
    lines: list[str] = []
    ok = verdict(lines, checks)
    print("\n".join(lines))
    return ok


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-deploy-"))
    where = machine()
    token = f"bench-{secrets.token_hex(12)}"
    os.environ[TOKEN_ENV] = token  # the module config reads it: ${env:MC_BENCH_TOKEN}
    envs = env_names(args.jobs)
    ircd = InspIRCd(tmp / "ircd", limits="stock", services=False)
    capture = LogCapture()
    mc_log = logging.getLogger("masterchief")
    mc_log.addHandler(capture)
    mc_log.setLevel(logging.INFO)
    try:
        mod = write_module(tmp, envs, args.lines)
        direct = [
            await run_direct(mod / "run.sh", envs, token, args.lines, tmp)
            for _ in range(args.baseline_runs)
        ]
        for d in direct:
            if d.lines != args.jobs * args.lines or any(d.exit_codes):
                raise RuntimeError(f"direct run broken: {d}")
        ircd.start()
        run = await through_bot(args, tmp, ircd, envs, capture)
        for c in run.clients:
            with contextlib.suppress(Exception):
                await c.close()
        ok = report(args, where, direct, run, token, tmp)
    finally:
        mc_log.removeHandler(capture)
        ircd.kill()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--jobs", type=int, default=20, help="parallel deploys (environments)")
    ap.add_argument("--lines", type=int, default=10000, help="lines each script prints")
    ap.add_argument("--users", type=int, default=4, help="IRC users the commands come from")
    ap.add_argument("--settle", type=float, default=10.0, help="idle seconds before the run")
    ap.add_argument("--baseline-runs", type=int, default=3, help="direct runs (median counts)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for the jobs to end")
    ap.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to drain IRC")
    ap.add_argument("--profile", action="store_true", help="cProfile the bot's event loop")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    if args.jobs < 1 or args.lines < 1 or args.users < 1:
        ap.error("--jobs, --lines and --users must be positive")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
