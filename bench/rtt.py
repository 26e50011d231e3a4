"""`!ping` round trip through the real InspIRCd, and the bot's memory.

    .venv/bin/python bench/rtt.py [--pings 2000] [--runs 1x1,4x4,20x1] [--quiet-pings 10]

What it does (all on 127.0.0.1, everything stopped at the end, even on error):

1. Starts InspIRCd (``tests/servers.py``) with the "unlimited" connect class
   (no flood limits) and the real bot as a separate process
   (``.venv/bin/masterchief run --config-dir <tmp>/config --env bench``) with
   ``scripts/ping.py``. The bot's own output pacer would still hold it to
   burst 7 / 1 line/s, so for this server it is configured as
   ``irc.output: {burst: 1000, rate: 100000}`` (printed in the report).
2. Test clients negotiate ``echo-message`` (as a normal client would), set
   ``TCP_NODELAY`` and re-arm ``TCP_QUICKACK`` after every read, all join one
   channel with the bot. Each client runs a closed loop: ``!ping <id>``, wait
   for ``pong <id>`` from the bot, next. Latency = write of the ping to
   arrival of the pong at that client (``perf_counter_ns``). A ping without a
   pong within ``--timeout`` s is lost (the run goes on).
   Runs (``--runs``, ``CLIENTSxWINDOW``): each client keeps ``WINDOW`` pings in
   flight and the clients share ``--pings`` (so ``20x1`` has 20 pings in
   flight and every line fans out to 21 members; ``4x4`` has 16 and 5
   members: a client joins the channels right before the first run that
   uses it, runs go from few clients to many).
2b. The floor: ``bench/floorbot.py``, a minimal asyncio bot (no library, no
   queue, no pacing; a ``Protocol`` that answers ``!ping`` from
   ``data_received``) as its own process on the same ircd, in a second
   channel the same clients are in. Each run above is measured against
   MasterChief and then at once against the floor, so both see the same
   machine load.
3. Control: one client that does *not* re-arm ``TCP_QUICKACK`` (what a client
   with ordinary delayed ACKs sees; the ~40 ms trap of TEST-SERVERS.md).
   Each run also reports the ircd's own round trip (the client's echo of its
   ``!ping``) and how many delayed ACKs the kernel sent meanwhile
   (``TcpExt DelayedACKs``, machine-wide).
4. The bot's RSS (``VmRSS`` from /proc/<pid>/status) after it joined and
   settled, and after all runs (plus ``VmHWM``, the peak).
5. While a script's plain ``def`` handler blocks (``!block`` sleeps
   ``--block-s`` s in ``time.sleep``; another client sent it), one client
   sends ``--blocked-pings`` ``!ping`` (an ``async def``, on the event loop)
   and as many private ``ping`` (a plain ``def`` in ``scripts/ping.py``: it
   runs in the handler lane, queued behind the blocked call until the lane
   hands over after 20 ms). The handler writes a file when it starts and one
   when it ends: the run starts after the first and must end before the
   second (issue 8, item 17: answered within 100 ms).
6. Spaced pings, one client, ``--quiet-pings`` pings ``--spacing`` s apart:
   first against the bot above, then against a second bot process with the
   DEFAULT output settings (burst 7, 1 line/s; one reply per 1.1 s stays
   within that budget), to show pacing adds no latency to a quiet channel.

Targets (issues 6, 8 and 9): no lost replies; one client p50 < 1 ms; at 4
clients x window 4, MasterChief's p99 at most 2x the floor's; RSS < 60 MB;
while a def handler blocks, every ping answered within 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BenchClient,
    BotProcess,
    Line,
    bot_revision,
    connection_report,
    machine,
    percentile,
    start_and_join,
    tcp_counter,
    teardown,
    verdict,
)
from tests.servers import Daemon, InspIRCd

CHANNEL = "#rtt"
FLOOR_CHANNEL = "#rttfloor"
FLOOR = Path(__file__).resolve().parent / "floorbot.py"
FLOOR_RATIO = 2.0  # MasterChief's p99 at most this times the floor's (4 clients x 4)
UNLIMITED_OUTPUT = {"burst": 1000, "rate": 100000.0, "recvq": 1048576}
RSS_TARGET_MB = 60.0
P50_TARGET_MS = 1.0
QUIET_TOLERANCE_MS = 2.0  # a pacer delay would be hundreds of ms (1 token = 1 s)
BLOCKED_TARGET_MS = 100.0
BLOCKER = """\
import time
from pathlib import Path
from masterchief import Event, bind

HERE = Path(__file__).parent


@bind("pub", "-|-", "!block")
def block(ev: Event) -> None:
    (HERE / "block.started").touch()
    time.sleep(float(ev.text or 10))
    (HERE / "block.finished").touch()
"""


@dataclass
class RunResult:
    name: str
    clients: int
    sent: int
    latencies_ms: list[float]
    lost: int
    stray: int
    wall_s: float
    echo_ms: list[float]
    delayed_acks: int | None
    cpu_us: float | None = None  # the answering bot's CPU time (user + system) per pong

    def row(self) -> str:
        lat = sorted(self.latencies_ms)
        p50, p90, p99 = (percentile(lat, q) for q in (50, 90, 99))
        mx = lat[-1] if lat else float("nan")
        mn = lat[0] if lat else float("nan")
        rate = len(lat) / self.wall_s if self.wall_s > 0 else float("nan")
        echo = percentile(sorted(self.echo_ms), 50)
        return (
            f"| {self.name} | {self.clients} | {self.sent} | {len(lat)} | {self.lost} | "
            f"{mn:.3f} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {mx:.3f} | {rate:.0f} | {echo:.3f} | "
            f"{'?' if self.delayed_acks is None else self.delayed_acks} | "
            f"{'-' if self.cpu_us is None else f'{self.cpu_us:.0f}'} |"
        )


HEADER = (
    "| run | clients | pings | pongs | lost | min ms | p50 ms | p90 ms | p99 ms | max ms "
    "| pongs/s | ircd echo p50 ms | delayed ACKs | bot CPU µs/pong |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


class Pinger:
    """Matches the bot's ``pong <id>`` replies to one client's pending pings."""

    def __init__(
        self,
        client: BenchClient,
        bot_nick: str,
        tag: str,
        *,
        private: bool = False,
        channel: str = CHANNEL,
    ) -> None:
        self.client = client
        self.bot_nick = bot_nick.lower()
        self.tag = tag
        # private: "ping <id>" to the bot (the plain def in scripts/ping.py)
        self.target, self.word = (bot_nick, "ping") if private else (channel, "!ping")
        self.pending: dict[str, asyncio.Future[int]] = {}
        self.own_nick = client.nick.lower()
        self.sent: dict[str, int] = {}
        self.echo_ms: list[float] = []
        self.stray = 0
        self.seq = 0
        client.on_line = self._on_line

    def _on_line(self, line: Line) -> None:
        if line.command != "PRIVMSG":
            return
        nick = line.nick.lower()
        text = line.text
        if nick == self.own_nick and text.startswith("!ping "):
            sent = self.sent.pop(text[6:], None)  # our echo-message: the ircd's round trip
            if sent is not None:
                self.echo_ms.append((line.t_ns - sent) / 1e6)
            return
        if nick != self.bot_nick or not text.startswith("pong "):
            return
        pid = text[5:]
        if not pid.startswith(self.tag):
            return  # another client's pong
        fut = self.pending.pop(pid, None)
        if fut is None or fut.done():
            self.stray += 1  # late (after its timeout) or duplicated
        else:
            fut.set_result(line.t_ns)

    async def ping(self, timeout: float) -> float | None:
        """One round trip in ms, or None when the pong did not come in time."""
        self.seq += 1
        pid = f"{self.tag}{self.seq}"
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[pid] = fut
        t0 = self.client.say(self.target, f"{self.word} {pid}")
        self.sent[pid] = t0
        try:
            t1 = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.pending.pop(pid, None)
            return None
        return (t1 - t0) / 1e6


async def run_pings(
    name: str,
    pingers: list[Pinger],
    total: int,
    timeout: float,
    spacing: float = 0.0,
    window: int = 1,
    bot_pid: int | None = None,
) -> RunResult:
    per_client = [total // len(pingers) + (1 if i < total % len(pingers) else 0)
                  for i in range(len(pingers))]  # fmt: skip
    latencies: list[float] = []
    lost = 0
    stray_before = sum(p.stray for p in pingers)
    for p in pingers:
        p.echo_ms.clear()

    async def loop(p: Pinger, n: int) -> None:
        nonlocal lost
        for i in range(n):
            if spacing and i:
                await asyncio.sleep(spacing)
            ms = await p.ping(timeout)
            if ms is None:
                lost += 1
            else:
                latencies.append(ms)

    # ``window`` closed loops per client: that many of its pings in flight
    loops = [
        loop(p, n // window + (1 if w < n % window else 0))
        for p, n in zip(pingers, per_client, strict=True)
        for w in range(window)
    ]
    acks_before = tcp_counter()
    cpu_before = cpu_seconds(bot_pid)
    started = time.perf_counter()
    await asyncio.gather(*loops)
    wall = time.perf_counter() - started
    acks_after = tcp_counter()
    acks = None if acks_before is None or acks_after is None else acks_after - acks_before
    await asyncio.sleep(0.2)  # a late pong would show up as stray
    stray = sum(p.stray for p in pingers) - stray_before
    echo = [ms for p in pingers for ms in p.echo_ms]
    cpu_after = cpu_seconds(bot_pid)
    cpu_us = (
        (cpu_after - cpu_before) / len(latencies) * 1e6
        if cpu_before is not None and cpu_after is not None and latencies
        else None
    )
    return RunResult(name, len(pingers), total, latencies, lost, stray, wall, echo, acks, cpu_us)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used (/proc/<pid>/stat)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start_bot(
    workdir: Path,
    ircd: InspIRCd,
    watcher: BenchClient,
    nick: str,
    output: dict[str, float] | None,
    pythonpath: str | None,
    scripts: dict[str, str] | None = None,
) -> BotProcess:
    env = {"PYTHONPATH": pythonpath} if pythonpath else None
    # a closed loop of pings is a command flood by design: no per-user limit here
    bot = BotProcess(
        workdir,
        ircd,
        nick=nick,
        channel=CHANNEL,
        output=output,
        env=env,
        scripts=scripts,
        bot={"flood": {"commands": 1_000_000}},
    )
    await start_and_join(bot, bot.start, watcher, nick)
    return bot


def parse_runs(spec: str) -> list[tuple[int, int]]:
    """``"1x1,4x4"`` -> ``[(1, 1), (4, 4)]`` (clients, window)."""
    runs = []
    for part in spec.split(","):
        clients, _, window = part.strip().partition("x")
        runs.append((int(clients), int(window or 1)))
    return runs


def run_name(clients: int, window: int) -> str:
    return f"{clients} client(s) x window {window}"


class FloorBot(Daemon):
    """``bench/floorbot.py`` as its own process: the least a Python bot can do."""

    label = "floorbot"

    def __init__(self, workdir: Path, ircd: InspIRCd, nick: str) -> None:
        super().__init__(workdir)
        self.nick = nick
        host, port = ircd.address
        self.argv = [sys.executable, str(FLOOR), host, str(port), nick, FLOOR_CHANNEL]

    def start(self) -> None:
        self.spawn(self.argv)


def mb(kb: int) -> float:
    return kb / 1024


def log_problems(text: str) -> list[str]:
    """Reconnects, disconnects and errors in a bot log taken before its shutdown."""
    connects, bad = connection_report(text)
    if connects != 1:
        bad.append(f"{connects} connects")
    return bad


async def main_async(args: argparse.Namespace) -> int:
    runs = parse_runs(args.runs)
    most = max(c for c, _ in runs)
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-rtt-"))
    ircd = InspIRCd(tmp / "ircd", limits="unlimited", services=False)
    clients: list[BenchClient] = []
    bots: list[Daemon] = []
    results: list[RunResult] = []
    ok = True
    where = machine()  # at the start: date and load average before the run
    try:
        ircd.start()
        host, port = ircd.address
        # Registration ends on the server's 1 s tick: connect everyone at once.
        clients = list(
            await asyncio.gather(
                *(BenchClient.connect(host, port, f"rtt{i}") for i in range(most)),
                BenchClient.connect(host, port, "rttslow", quickack=False),
            )
        )
        slow = clients[-1]
        fast = clients[:-1]
        # Clients join right before the first run that uses them, so a run
        # with N clients fans each line out to N + 1 members, not to all.
        joined: set[int] = set()

        async def members(chosen: list[BenchClient]) -> None:
            for c in chosen:
                if id(c) not in joined:
                    joined.add(id(c))
                    await c.join(CHANNEL)
                    await c.join(FLOOR_CHANNEL)

        await members(fast[:1])
        if not all("echo-message" in c.caps for c in clients):
            raise RuntimeError("echo-message not negotiated")

        # -- the bot, output paced for the unlimited class ------------------------
        bot = await start_bot(
            tmp / "bot",
            ircd,
            fast[0],
            "mcbench",
            UNLIMITED_OUTPUT,
            args.bot_pythonpath,
            {"blocker.py": BLOCKER},
        )
        bots.append(bot)
        await asyncio.sleep(1.0)
        rss_start = bot.rss_kb()

        floor = FloorBot(tmp / "floor", ircd, "mcfloor")
        bots.append(floor)
        await start_and_join(floor, floor.start, fast[0], floor.nick)

        # A Pinger takes over its client's lines: make them right before each run.
        def mc(n: int, tag: str) -> list[Pinger]:
            return [Pinger(c, bot.nick, f"{tag}{i}-") for i, c in enumerate(fast[:n])]

        def fl(n: int, tag: str) -> list[Pinger]:
            # the floor answers in its own channel (the same clients are in it)
            return [
                Pinger(c, floor.nick, f"{tag}{i}-", channel=FLOOR_CHANNEL)
                for i, c in enumerate(fast[:n])
            ]

        warm = await run_pings("warm-up", mc(1, "w"), 50, args.timeout)
        await run_pings("warm-up", fl(1, "fw"), 50, args.timeout)
        floor_results: dict[tuple[int, int], RunResult] = {}
        for n, w in sorted(runs):
            await members(fast[:n])
            tag = f"{n}x{w}c"
            results.append(
                await run_pings(
                    run_name(n, w), mc(n, tag), args.pings, args.timeout, window=w, bot_pid=bot.pid
                )
            )
            floor_results[n, w] = await run_pings(
                "floor: " + run_name(n, w),
                fl(n, "f" + tag),
                args.pings,
                args.timeout,
                window=w,
                bot_pid=floor.pid,
            )
            results.append(floor_results[n, w])
        await members([slow, *fast[:2]])
        slow_pinger = Pinger(slow, bot.nick, "slow-")
        results.append(
            await run_pings("control: client without QUICKACK", [slow_pinger],
                            args.control_pings, args.timeout)
        )  # fmt: skip
        spaced = await run_pings(
            f"unlimited pacer, 1 ping / {args.spacing:g} s",
            [Pinger(fast[0], bot.nick, "s-")],
            args.quiet_pings,
            args.timeout,
            spacing=args.spacing,
        )
        results.append(spaced)

        # -- while a script's def handler blocks ------------------------------------
        marks = tmp / "bot" / "scripts"
        fast[1 % len(fast)].say(CHANNEL, f"!block {args.block_s:g}")
        deadline = time.monotonic() + 15
        while not (marks / "block.started").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("!block did not start")
            await asyncio.sleep(0.01)
        blocked = [
            await run_pings(
                "during !block: !ping (async def)",
                [Pinger(fast[0], bot.nick, "b-")],
                args.blocked_pings,
                args.timeout,
            ),
            await run_pings(
                "during !block: private ping (plain def)",
                [Pinger(fast[0], bot.nick, "bp-", private=True)],
                args.blocked_pings,
                args.timeout,
            ),
        ]
        still_blocked = not (marks / "block.finished").exists()
        results.extend(blocked)
        rss_end = bot.rss_kb()
        hwm = bot.rss_kb("VmHWM")
        problems = log_problems(bot.log())
        code = bot.stop()

        # -- a second bot with the DEFAULT output settings: quiet channel ---------
        bot2 = await start_bot(
            tmp / "bot-default", ircd, fast[0], "mcquiet", None, args.bot_pythonpath
        )
        bots.append(bot2)
        await asyncio.sleep(1.0)
        quiet = await run_pings(
            f"DEFAULT pacer, 1 ping / {args.spacing:g} s",
            [Pinger(fast[0], bot2.nick, "q-")],
            args.quiet_pings,
            args.timeout,
            spacing=args.spacing,
        )
        results.append(quiet)
        problems += log_problems(bot2.log())
        code2 = bot2.stop()

        # -- report -----------------------------------------------------------------
        one = next((r for r in results if r.name == run_name(1, 1)), None)
        four = next((r for r in results if r.name == run_name(4, 4)), None)
        floor4 = floor_results.get((4, 4))
        lost = sum(r.lost for r in results)
        p50_one = percentile(sorted(one.latencies_ms), 50) if one else float("nan")
        q50 = percentile(sorted(quiet.latencies_ms), 50)
        s50 = percentile(sorted(spaced.latencies_ms), 50)
        qmax = max(quiet.latencies_ms, default=float("nan"))
        report = [
            f"machine: {where}",
            f"bot: masterchief {bot_revision()}"
            + (f", PYTHONPATH={args.bot_pythonpath}" if args.bot_pythonpath else ""),
            f"ircd: connect class 'unlimited' {ircd.limits}",
            f"bot output for the unlimited class: irc.output = {UNLIMITED_OUTPUT}; "
            "the DEFAULT-pacer bot has no override (burst 7, rate 1.0)",
            "clients: echo-message negotiated, TCP_NODELAY, TCP_QUICKACK re-armed after each "
            "read (control: not re-armed); a client joins both channels before the first run that uses it",
            f"floor: bench/floorbot.py (no library, no queue) in {FLOOR_CHANNEL}, same clients, "
            "each run right after MasterChief's",
            f"warm-up: {len(warm.latencies_ms)} pings, not counted",
            "ircd echo = the client's own !ping coming back (echo-message): the server's share; "
            "delayed ACKs = TcpExt DelayedACKs during the run (whole machine, "
            "/proc/net/netstat)",
            "",
            HEADER,
            *(r.row() for r in results),
            "",
            f"stray/late pongs: {sum(r.stray for r in results)}; "
            f"bot exit codes: {code}, {code2}; bot log problems: {problems or 'none'}",
            f"bot RSS after start: {mb(rss_start):.1f} MB; after the runs: {mb(rss_end):.1f} MB; "
            f"peak (VmHWM): {mb(hwm):.1f} MB",
        ]
        p99_four = percentile(sorted(four.latencies_ms), 99) if four else float("nan")
        p99_floor = percentile(sorted(floor4.latencies_ms), 99) if floor4 else float("nan")
        checks = {
            f"lost replies: {lost} (must be 0)": lost == 0,
            f"4 clients x window 4: p99 {p99_four:.3f} ms <= {FLOOR_RATIO:g} x the floor's "
            f"{p99_floor:.3f} ms (ratio {p99_four / p99_floor:.2f})": (
                p99_four <= FLOOR_RATIO * p99_floor
            ),
            f"1 client p50 {p50_one:.3f} ms < {P50_TARGET_MS} ms": (p50_one < P50_TARGET_MS),
            f"RSS {mb(max(rss_start, rss_end)):.1f} MB < {RSS_TARGET_MB:.0f} MB": (
                mb(max(rss_start, rss_end)) < RSS_TARGET_MB
            ),
            f"default pacer adds no latency when within budget: quiet p50 {q50:.3f} ms vs "
            f"{s50:.3f} ms unpaced (within {QUIET_TOLERANCE_MS} ms), max {qmax:.3f} ms": (
                abs(q50 - s50) <= QUIET_TOLERANCE_MS and qmax < 50 and quiet.lost == 0
            ),
            "bot stayed connected, no errors in its log": not problems,
        }
        worst = max((ms for r in blocked for ms in r.latencies_ms), default=float("inf"))
        checks[
            f"while a def handler blocked ({args.block_s:g} s sleep, still blocking after the "
            f"runs: {still_blocked}): slowest of {sum(len(r.latencies_ms) for r in blocked)} "
            f"pongs {worst:.3f} ms < {BLOCKED_TARGET_MS:.0f} ms, lost "
            f"{sum(r.lost for r in blocked)}"
        ] = still_blocked and worst < BLOCKED_TARGET_MS and not any(r.lost for r in blocked)
        ok = verdict(report, checks) and ok
        print("\n".join(report))
    finally:
        await teardown(clients, bots, ircd, tmp, args.keep)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--pings", type=int, default=2000, help="pings per run")
    ap.add_argument(
        "--runs",
        default="1x1,4x4,20x1",
        help="CLIENTSxWINDOW runs, comma separated (each against MasterChief, then the floor)",
    )
    ap.add_argument("--control-pings", type=int, default=200, help="pings without QUICKACK")
    ap.add_argument("--quiet-pings", type=int, default=10, help="spaced pings per pacer setting")
    ap.add_argument("--spacing", type=float, default=1.1, help="seconds between spaced pings")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds before a ping is lost")
    ap.add_argument(
        "--blocked-pings", type=int, default=200, help="pings of each kind during !block"
    )
    ap.add_argument("--block-s", type=float, default=10.0, help="how long !block sleeps")
    ap.add_argument(
        "--bot-pythonpath",
        metavar="DIR",
        help="PYTHONPATH for the bot process (e.g. a sitecustomize.py patch, for experiments)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
