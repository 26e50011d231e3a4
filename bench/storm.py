"""An alert storm: 500 Alertmanager notifications in 5 s on InspIRCd's stock class.

    .venv/bin/python bench/storm.py [--alerts 500] [--seconds 5] [--runs 1] [--settle 12]

What it does (all on 127.0.0.1, everything stopped at the end, even on error):

1. Starts InspIRCd (``tests/servers.py``) with the "stock" connect class
   (threshold 10, commandrate 1000, fakelag on, recvq 8192) and the real bot
   as a separate process (``masterchief run``) with its DEFAULT output
   settings (burst 7, 1 line/s, ``max_backlog_s`` 10) and an Alertmanager
   webhook (bearer token) announcing to ``#alerts``.
2. After the bot has been idle for ``--settle`` s (its registration penalty
   drained, as for a bot that has been up a while), posts the storm of
   ``tests/outputs/test_outbox_e2e.py`` as real Alertmanager v4 notifications,
   evenly over ``--seconds``: 200 HighCPU on web-N, 140 DiskFull on scattered
   db-N, 120 InstanceDown on mixed names, 10 notifications of 5 Latency
   alerts each, and 30 resolutions of HighCPU alerts late in the storm. Each
   one goes the whole way: HTTP, verification, durable intake, dispatcher,
   the built-in formatter, the durable outbox, the pacer, the server.
3. A client in ``#alerts`` reads every line the bot says there and checks
   (``Tally``) that each alert is represented: its instance named (in its own
   line, a summary, or a range there) or inside an exact count.

Reported per run: HTTP answers and latency, time from the first POST to the
bot's first line, time until every alert is represented, lines the bot sent
(alerts as is / summary lines), time until the storm was fully told (the last
resolution shown), and whether the bot stayed connected (no QUIT/ERROR, no
"RecvQ exceeded"/"Excess Flood", one connect in its log, and it answers
``!ping`` afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BenchClient, BotProcess, Line, connection_report, machine, percentile
from tests.outputs.test_outbox_e2e import Tally, alertmanager_notification, storm_announcements
from tests.servers import InspIRCd, free_port

CHANNEL = "#alerts"
TOKEN = "bench-storm-token"  # loopback benchmark, not a secret
# The built-in formatter's line: "[alertmanager] FIRING: HighCPU (warning) on web-1: ..."
AM_LINE = re.compile(
    r"^\[alertmanager\] (?P<status>FIRING|RESOLVED): (?P<name>\S+)(?: \u00d7\d+)?"
    r"(?: \([^)]*\))? on (?P<instances>.+?)(?:: .*)?$"
)


async def post_storm(
    url: str, bodies: list[bytes], seconds: float
) -> tuple[float, list[tuple[int, float]]]:
    """POST every body, evenly over *seconds*; (start, [(status, latency s)])."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    results: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:

        async def one(body: bytes) -> None:
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    results.append((resp.status, time.perf_counter() - t))
            except aiohttp.ClientError:
                results.append((0, time.perf_counter() - t))

        start = loop.time()
        t0 = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            due = start + seconds * i / len(bodies)
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return t0, results


async def one_run(args: argparse.Namespace, run: int) -> tuple[dict[str, Any], bool]:
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-storm-"))
    ircd = InspIRCd(tmp / "ircd", limits="stock", services=False)
    watch: BenchClient | None = None
    bot: BotProcess | None = None
    try:
        ircd.start()
        host, port = ircd.address
        watch = await BenchClient.connect(host, port, f"stormw{run}")
        await watch.join(CHANNEL)
        bot = BotProcess(tmp / "bot", ircd, nick=f"mcstorm{run}", channel=CHANNEL, output=None)
        web_port = free_port()
        cfg_file = bot.config_dir / "global" / "config.yaml"
        config = yaml.safe_load(cfg_file.read_text())
        config["web"] = {"host": "127.0.0.1", "port": web_port}
        config["webhooks"] = {"alertmanager": {"bearer_token": TOKEN, "channels": [CHANNEL]}}
        cfg_file.write_text(yaml.safe_dump(config, sort_keys=False))
        joined = watch.expect(lambda ln: ln.command == "JOIN" and ln.nick == bot.nick)
        bot.start()
        await asyncio.wait_for(joined, 30)
        await asyncio.sleep(args.settle)  # let the registration penalty drain
        bot.check_alive()

        announcements = storm_announcements()[: args.alerts]
        tally = Tally(announcements, verbatim=AM_LINE)
        bodies = [
            json.dumps(alertmanager_notification(i, name, meta)).encode()
            for i, (_, name, meta) in enumerate(announcements)
        ]
        lines: list[tuple[float, str]] = []
        trouble: list[str] = []
        pongs: list[float] = []
        represented = asyncio.Event()
        represented_at: list[tuple[float, int]] = []  # (when, lines by then)

        def on_line(line: Line) -> None:
            if line.command == "ERROR" or (
                line.nick == bot.nick and line.command in {"QUIT", "PART", "KICK"}
            ):
                trouble.append(line.raw)
            if line.nick != bot.nick or line.command != "PRIVMSG" or line.params[:1] != [CHANNEL]:
                return
            t = line.t_ns / 1e9
            if line.text.startswith("pong"):
                pongs.append(t)
                return
            lines.append((t, line.text))
            tally.see(line.text)
            if not represented_at and not tally.missing():
                represented_at.append((t, len(lines)))
                represented.set()

        watch.on_line = on_line
        url = f"http://127.0.0.1:{web_port}/webhooks/alertmanager"
        t0, answers = await post_storm(url, bodies, args.seconds)
        posted_at = time.perf_counter() - t0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(represented.wait(), 120)
        represented_s = represented_at[0][0] - t0 if represented_at else float("nan")
        represented_lines = represented_at[0][1] if represented_at else len(lines)
        # the rest of the story (resolutions): until 5 s pass without a line
        while True:
            count = len(lines)
            await asyncio.sleep(5.0)
            if len(lines) == count or time.perf_counter() - t0 > 180:
                break
        ping_t = watch.say(CHANNEL, "!ping after-storm") / 1e9
        for _ in range(1500):
            if pongs or trouble:
                break
            await asyncio.sleep(0.02)
        log = bot.log()
        alive = bot.running
        connects, log_bad = connection_report(log)
        folds = [
            tuple(int(x) for x in m.groups())
            for m in re.finditer(r"outbox: (\d+) alerts for \S+ folded into (\d+) lines", log)
        ]
        stayed = alive and connects == 1 and not trouble and not log_bad and watch.error is None
        latencies = sorted(lat * 1000 for _, lat in answers)
        result = {
            "posts": len(answers),
            "accepted": sum(1 for st, _ in answers if st == 202),
            "other": sorted({st for st, _ in answers if st != 202}),
            "posted_s": posted_at,
            "http_p50_ms": percentile(latencies, 50),
            "http_p99_ms": percentile(latencies, 99),
            "first_line_s": lines[0][0] - t0 if lines else float("nan"),
            "represented_s": represented_s,
            "represented_lines": represented_lines,
            "missing": tally.missing(),
            "lines": len(lines),
            "alerts_as_is": tally.alerts_as_is,
            "summary_lines": tally.summaries,
            "told_s": lines[-1][0] - t0 if lines else float("nan"),
            "stale": len(tally.stale()),
            "errors": tally.errors[:3],
            "folds": folds,
            "stayed": stayed,
            "ping_ms": (pongs[0] - ping_t) * 1000 if pongs else None,
            "connects": connects,
            "trouble": trouble[:3] + log_bad[:3],
        }
        ok = (
            result["accepted"] == len(bodies)
            and result["missing"] == 0
            and not tally.errors
            and represented_s <= 60
            and stayed
            and result["ping_ms"] is not None
        )
        return result, ok
    finally:
        if watch is not None:
            with contextlib.suppress(Exception):
                await watch.close()
        if bot is not None:
            with contextlib.suppress(Exception):
                bot.stop()
        ircd.kill()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


async def main_async(args: argparse.Namespace) -> int:
    where = machine()
    results = []
    all_ok = True
    for run in range(1, args.runs + 1):
        result, ok = await one_run(args, run)
        results.append(result)
        all_ok = all_ok and ok
        print(
            f"run {run}: {'PASS' if ok else 'FAIL'} {json.dumps(result, default=str)}", flush=True
        )
    print()
    print(f"machine: {where}")
    print(
        f"storm: {args.alerts} Alertmanager notifications (one announcement each, "
        f"{sum(len(m['instances']) for _, _, m in storm_announcements()[: args.alerts])} alert "
        f"states) posted evenly over {args.seconds:g} s; ircd class 'stock' (threshold 10, "
        "commandrate 1000, fakelag on, recvq 8192); bot: default output (burst 7, 1 line/s, "
        f"max_backlog_s 10), settled {args.settle:g} s after joining"
    )
    print()
    print(
        "| run | 202s | HTTP p50 / p99 | first line | every alert represented | lines by then "
        "| lines in all (as is + summary) | storm fully told | stale | bot stayed connected "
        "| !ping after |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for i, r in enumerate(results, 1):
        ping = f"{r['ping_ms']:.0f} ms" if r["ping_ms"] is not None else "NO REPLY"
        print(
            f"| {i} | {r['accepted']}/{r['posts']} | {r['http_p50_ms']:.1f} / "
            f"{r['http_p99_ms']:.1f} ms | {r['first_line_s']:.2f} s | {r['represented_s']:.2f} s "
            f"| {r['represented_lines']} | {r['lines']} ({r['alerts_as_is']} + "
            f"{r['summary_lines']}) | {r['told_s']:.2f} s | {r['stale']} | "
            f"{'yes' if r['stayed'] else 'NO'} (connects {r['connects']}) | {ping} |"
        )
    if len(results) > 1:
        rep = [r["represented_s"] for r in results]
        print(
            f"\nevery alert represented: median {statistics.median(rep):.2f} s, max {max(rep):.2f} s"
        )
    for i, r in enumerate(results, 1):
        print(f"run {i} folds (alerts -> lines): {r['folds']}")
    print(f"\n{'PASS' if all_ok else 'FAIL'}: all 202, every alert represented within 60 s, "
          "exact counts, bot stayed connected and answers")  # fmt: skip
    return 0 if all_ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--alerts", type=int, default=500, help="notifications (at most 500)")
    ap.add_argument("--seconds", type=float, default=5.0, help="spread the storm over")
    ap.add_argument("--settle", type=float, default=12.0, help="bot idle time before the storm")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = ap.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
