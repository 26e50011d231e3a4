"""150 replies at once on InspIRCd's stock connect class: time vs the server's budget.

    .venv/bin/python bench/flood.py [--lines 150] [--probe-lines 20]

What it does (all on 127.0.0.1, everything stopped at the end, even on error):

1. Starts InspIRCd (``tests/servers.py``) with the "stock" connect class
   (threshold 10, commandrate 1000, fakelag on, recvq 8192: 10 lines pass at
   once from an idle client -- about 8 right after registering and joining,
   as TEST-SERVERS.md says -- then 1 line/s; overflowing the receive queue
   quits the client with "RecvQ exceeded") and the real bot as a separate process
   (``.venv/bin/masterchief run --config-dir <tmp>/config --env bench``) with
   its DEFAULT output settings (no ``irc.output`` in the config) and two
   scripts: a copy of ``scripts/ping.py`` and a bench script where
   ``!flood N`` queues N numbered replies of 140 bytes of text at once.
2. The server's budget for N lines written at once by an idle client of this
   class: ``threshold`` (10) lines at once, the next at the server's next
   once-a-second tick (0-1 s later), then one per ``1000 / commandrate`` s:
   (N - 11) to (N - 10) s, 139-140 s for 150 lines. A probe checks the model:
   after 12 s idle, a raw client writes ``--probe-lines`` PRIVMSGs of the same
   size in one write and a watcher records when the server relays them.
3. After the bot has been idle for ``--settle`` s (its registration and JOIN
   penalty drained), a client says ``!flood N`` and times the arrival of
   every reply line: seconds until the last one, lines received, order, and
   whether the bot stayed connected (no QUIT/ERROR for it in the channel, no
   "RecvQ exceeded"/"Excess Flood", one connect in its log) and still answers
   ``!ping``.

Target (the issue): all N lines, in order, within 5% of the server's budget,
bot still connected. This takes about (N - 8) s by nature.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BenchClient,
    BotProcess,
    Line,
    connection_report,
    machine,
    percentile,
    start_and_join,
    teardown,
    verdict,
)
from tests.servers import InspIRCd

CHANNEL = "#flood"
PROBE_CHANNEL = "#probe"
TEXT_BYTES = 140
TARGET_RATIO = 1.05

FLOOD_SCRIPT = f'''"""!flood N: N numbered replies of {TEXT_BYTES} bytes, queued at once (bench/flood.py)."""

from masterchief import Event, bind


@bind("pub", "-|-", "!flood")
def flood(ev: Event) -> None:
    n = int(ev.args[0]) if ev.args and ev.args[0].isdigit() else 150
    for i in range(1, n + 1):
        head = f"flood {{i:03d}}/{{n}} "
        ev.reply(head + "x" * ({TEXT_BYTES} - len(head)))
'''


def numbered(prefix: str, i: int, n: int) -> str:
    head = f"{prefix} {i:03d}/{n} "
    return head + "x" * (TEXT_BYTES - len(head))


async def measure_budget(
    probe: BenchClient, watcher: BenchClient, n: int, idle_s: float
) -> dict[str, float]:
    """Write ``n`` lines at once from ``probe``; see when ``watcher`` gets them."""
    arrivals: list[float] = []
    done = asyncio.Event()
    previous = watcher.on_line

    def on_line(line: Line) -> None:
        if (
            line.command == "PRIVMSG"
            and line.nick == probe.nick
            and line.params[:1] == [PROBE_CHANNEL]
        ):
            arrivals.append(line.t_ns / 1e9)
            if len(arrivals) >= n:
                done.set()
        elif previous is not None:
            previous(line)

    watcher.on_line = on_line
    await asyncio.sleep(idle_s)  # let the probe's registration/JOIN penalty drain
    data = b"".join(
        f"PRIVMSG {PROBE_CHANNEL} :{numbered('probe', i, n)}\r\n".encode() for i in range(1, n + 1)
    )
    t0 = time.perf_counter_ns() / 1e9
    probe.writer.write(data)
    await probe.writer.drain()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), n * 1.5 + 10)
    watcher.on_line = previous
    if len(arrivals) < n:
        raise RuntimeError(f"probe: only {len(arrivals)} of {n} lines relayed")
    first = arrivals[0]
    at_once = sum(1 for t in arrivals if t - first <= 0.05)
    after = arrivals[at_once:]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    return {
        "at_once": at_once,
        "tick": after[0] - first if after else float("nan"),
        "rate": len(gaps) / (after[-1] - after[0]) if gaps else float("nan"),
        "gap_median": statistics.median(gaps) if gaps else float("nan"),
        "total": arrivals[-1] - t0,
        "first": first - t0,
    }


def budget_bounds(lines: int, threshold: int, commandrate: int) -> tuple[float, float]:
    """Seconds until the server has taken ``lines`` written at once by an idle client.

    The server takes ``threshold`` lines at once, the next one at its next
    once-a-second tick (0-1 s later, depending on the phase), then one per
    ``1000 / commandrate`` s. Returns (phase 0, phase 1).
    """
    per_line = 1000 / commandrate
    extra = max(0, lines - threshold)
    return max(0, extra - 1) * per_line, extra * per_line


async def main_async(args: argparse.Namespace) -> int:
    n = args.lines
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-flood-"))
    ircd = InspIRCd(tmp / "ircd", limits="stock", services=False)
    clients: list[BenchClient] = []
    bot: BotProcess | None = None
    ok = True
    where = machine()  # at the start: date and load average before the run
    try:
        ircd.start()
        host, port = ircd.address
        clients = list(
            await asyncio.gather(
                BenchClient.connect(host, port, "floodwatch"),
                BenchClient.connect(host, port, "floodprobe"),
            )
        )
        watch, probe = clients
        await watch.join(CHANNEL)
        await watch.join(PROBE_CHANNEL)
        await probe.join(PROBE_CHANNEL)

        bot = BotProcess(
            tmp / "bot",
            ircd,
            nick="mcflood",
            channel=CHANNEL,
            output=None,  # the DEFAULT pacer (burst 7, rate 1.0)
            scripts={"bench_flood.py": FLOOD_SCRIPT},
        )
        await start_and_join(bot, bot.start, watch, bot.nick)
        bot_joined = time.monotonic()

        # What the bot does in the channel from now on (other than the replies).
        trouble: list[str] = []
        flood_lines: list[tuple[float, str]] = []
        pongs: dict[str, float] = {}
        all_in = asyncio.Event()

        def on_line(line: Line) -> None:
            if line.nick != bot.nick and line.command != "ERROR":
                return
            if line.command == "PRIVMSG" and line.text.startswith("flood "):
                flood_lines.append((line.t_ns / 1e9, line.text))
                if len(flood_lines) >= n:
                    all_in.set()
            elif line.command == "PRIVMSG" and line.text.startswith("pong "):
                pongs[line.text[5:]] = line.t_ns / 1e9
            elif line.command in {"QUIT", "ERROR", "PART", "KICK"}:
                trouble.append(line.raw)

        watch.on_line = on_line

        # -- the server's budget, measured while the bot settles ------------------
        probed = await measure_budget(probe, watch, args.probe_lines, args.probe_idle)
        limits = ircd.limits
        lo, hi = budget_bounds(n, limits.threshold, limits.commandrate)
        probe_lo, probe_hi = budget_bounds(args.probe_lines, limits.threshold, limits.commandrate)
        probe_fits = probe_lo - 0.1 <= probed["total"] <= probe_hi + 0.1
        pacer_model = (n - 7) / 1.0  # the bot's default pacer: 7 at once, then 1/s
        await asyncio.sleep(max(0.0, args.settle - (time.monotonic() - bot_joined)))

        # -- the flood --------------------------------------------------------------
        t0 = watch.say(CHANNEL, f"!flood {n}") / 1e9
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), max(hi, pacer_model) * 1.5 + 30)
        # the bot must still answer
        ping_t0 = watch.say(CHANNEL, "!ping after-flood") / 1e9
        for _ in range(500):
            if "after-flood" in pongs or trouble:
                break
            await asyncio.sleep(0.02)
        ping_ms = (pongs["after-flood"] - ping_t0) * 1000 if "after-flood" in pongs else None
        await asyncio.sleep(0.5)
        log = bot.log()
        alive = bot.running
        code = bot.stop()

        # -- report -------------------------------------------------------------------
        times = [t - t0 for t, _ in flood_lines]
        numbers = [int(text.split()[1].split("/")[0]) for _, text in flood_lines]
        in_order = numbers == list(range(1, len(numbers) + 1))
        seconds = times[-1] if times else float("nan")
        gaps = sorted(b - a for a, b in itertools.pairwise(times[7:]))
        connects, log_bad = connection_report(log)
        stayed = not trouble and not log_bad and connects == 1 and alive and watch.error is None
        ratio_lo, ratio_hi = seconds / lo, seconds / hi
        report = [
            f"machine: {where}",
            f"ircd: connect class 'stock' {ircd.limits}",
            "bot: DEFAULT output settings (burst 7, rate 1.0, max_queue 300); "
            f"!flood {n} queues {n} replies of {TEXT_BYTES} bytes of text "
            f"(wire line {len(f'PRIVMSG {CHANNEL} :') + TEXT_BYTES + 2} bytes) at once",
            f"server budget, from the class: {limits.threshold} lines at once, the next at the "
            f"server's next 1 s tick (0-1 s later), then 1 per {1000 / limits.commandrate:g} s "
            f"-> {lo:.0f}-{hi:.0f} s for {n} lines (depending on the tick phase)",
            f"probe: {args.probe_lines} lines written at once by a raw client after "
            f"{args.probe_idle:g} s idle: {probed['at_once']} relayed at once (first after "
            f"{probed['first'] * 1000:.1f} ms), the next {probed['tick']:.2f} s later, then "
            f"{probed['rate']:.3f} lines/s (median gap {probed['gap_median']:.3f} s); all after "
            f"{probed['total']:.2f} s, model {probe_lo:.0f}-{probe_hi:.0f} s: "
            f"{'consistent' if probe_fits else 'INCONSISTENT'}",
            f"the bot's pacer model: ({n} - 7) / 1.0 = {pacer_model:.0f} s",
            "",
            "| lines asked | received | in order | first line | lines in first 0.5 s "
            "| median gap after burst | all arrived after | server budget | ratio | bot stayed connected "
            "| !ping after |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
            f"| {n} | {len(flood_lines)} | {'yes' if in_order else 'NO'} | "
            f"{times[0] * 1000 if times else float('nan'):.1f} ms | "
            f"{sum(1 for t in times if t < times[0] + 0.5) if times else 0} | "
            f"{percentile(gaps, 50):.3f} s | {seconds:.2f} s | {lo:.0f}-{hi:.0f} s | "
            f"{ratio_hi:.4f}-{ratio_lo:.4f} | "
            f"{'yes' if stayed else 'NO'} | "
            f"{f'{ping_ms:.0f} ms' if ping_ms is not None else 'NO REPLY'} |",
            "",
            f"bot exit code {code}; channel trouble: {trouble or 'none'}; "
            f"log problems: {log_bad or 'none'}; connects: {connects}",
        ]
        checks = {
            f"all {n} lines arrived ({len(flood_lines)})": len(flood_lines) == n,
            "in order": in_order,
            f"within 5% of the server's budget, even its low end ({seconds:.2f} s / {lo:.0f} s "
            f"= {ratio_lo:.4f} <= {TARGET_RATIO})": ratio_lo <= TARGET_RATIO,
            "the probe matches the budget model": probe_fits,
            "bot stayed connected (no QUIT/ERROR/RecvQ/Excess Flood, one connect)": stayed,
            "bot answers !ping after the flood": ping_ms is not None,
        }
        ok = verdict(report, checks) and ok
        print("\n".join(report))
    finally:
        await teardown(clients, [bot] if bot is not None else [], ircd, tmp, args.keep)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--lines", type=int, default=150, help="replies requested at once")
    ap.add_argument("--probe-lines", type=int, default=20, help="lines for the budget probe")
    ap.add_argument("--probe-idle", type=float, default=12.0, help="probe idle time before")
    ap.add_argument("--settle", type=float, default=15.0, help="bot idle time before the flood")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
