"""Webhook intake benchmark: signed GitHub deliveries/s accepted, and latency.

    .venv/bin/python bench/webhooks.py [--requests 20000] [--concurrency 50]

The server side is the real intake of an App, in this process: a ``Store``
(SQLite file in a temp folder, WAL, as configured for the bot), a
``BindingTable`` with one ``webhook`` binding on ``github/*`` (a plain
handler that counts), the real ``Dispatcher`` worker, and the
``WebServer`` on 127.0.0.1 with an ephemeral port.  IRC is not involved: a
delivery is accepted once it is verified and durably stored.

The senders run in a separate process (``--client``, started by this
script) so that they do not share the server's event loop: ``--concurrency``
aiohttp workers over one ``ClientSession`` (a connection per worker,
keep-alive), each posting GitHub ``push`` deliveries (the documented example
payload from tests/sources/webhooks/payloads/github_push.json, ~3 KB) with a valid
``X-Hub-Signature-256``, a distinct ``X-GitHub-Delivery`` and a distinct
``after`` sha (the bot deduplicates GitHub deliveries by the signed body).  Requests
are signed before the clock starts.  Latency is the client's time from
sending a request to reading its answer.  A warm-up of ``--warmup``
requests is not counted.

After the run the script checks that every 202 is a row in the store's
``deliveries`` table and that every delivery was dispatched once and marked
done.  Exit status 1 when a target (>= 1,500 deliveries/s, p99 < 100 ms) is
missed or a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAYLOAD = ROOT / "tests" / "sources" / "webhooks" / "payloads" / "github_push.json"
SECRET = "bench-secret-not-real"
TARGET_RATE = 1500.0
TARGET_P99_MS = 100.0


# --------------------------------------------------------------------------- client


async def client_main(args: argparse.Namespace) -> None:
    import aiohttp

    template = PAYLOAD.read_bytes()
    after = b'"after": "0000000000000000000000000000000000000000"'
    assert template.count(after) == 1, "the payload's 'after' sha is where each push differs"
    url = f"http://127.0.0.1:{args.port}/webhooks/github"
    total = args.warmup + args.requests
    # Every real push differs (its 'after' sha): GitHub deliveries are
    # deduplicated by the signed body, so identical bodies would be replays.
    bodies = [template.replace(after, b'"after": "%040x"' % i) for i in range(total)]
    headers = [
        {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256="
            + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "User-Agent": "GitHub-Hookshot/bench",
        }
        for body in bodies
    ]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    errors = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(stop_at: int, record: bool) -> None:
            nonlocal next_index, errors
            while next_index < stop_at:
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=bodies[i], headers=headers[i]) as resp:
                        await resp.read()
                        status = resp.status
                except aiohttp.ClientError:
                    errors += 1
                    continue
                if record:
                    latencies.append(time.perf_counter() - t0)
                    statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker(args.warmup, False) for _ in range(args.concurrency)))
        t_start = time.perf_counter()
        await asyncio.gather(*(worker(total, True) for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - t_start
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "statuses": statuses,
                "errors": errors,
                "latencies": latencies,
            }
        )
    )


# --------------------------------------------------------------------------- server


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def server_main(args: argparse.Namespace) -> int:
    from masterchief.bindings import BindingTable, Dispatcher, Event
    from masterchief.config.engine import build_config
    from masterchief.eventlog.writer import EventLog
    from masterchief.http.server import WebServer
    from masterchief.sources.webhooks.intake import WebhookIntake
    from masterchief.store.sqlite import open_store

    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-webhooks-"))
    config = build_config(
        {
            "web": {"host": "127.0.0.1", "port": 0, "max_body_bytes": 1048576},
            "webhooks": {"github": {"secret": SECRET, "channels": ["#dev"]}},
            "store": {"path": str(tmp / "bench.db")},
        },
        project_dir=tmp,
    )
    store = await open_store(config.store.path)
    table = BindingTable()
    handled = 0

    def on_push(ev: Event) -> None:
        nonlocal handled
        handled += 1

    table.bind("webhook", "-|-", "github/*", on_push)
    dispatcher = Dispatcher(table, queue_size=config.bot.queue_size)
    server = WebServer(config.web, ping=store.ping)
    intake = WebhookIntake(
        config.webhooks, store, max_body_bytes=config.web.max_body_bytes, mount=server
    )
    intake.writer.max_batch = args.max_batch
    intake_started = asyncio.Event()
    tasks = [
        asyncio.create_task(dispatcher.run(), name="dispatcher"),
        asyncio.create_task(server.run(), name="web"),
        asyncio.create_task(intake.run(dispatcher, intake_started), name="intake"),
    ]
    eventlog: EventLog | None = None
    if args.eventlog:  # as in the bot: every delivery's Event is also in the event log
        eventlog = EventLog(store, config.events)
        dispatcher.recorder = eventlog.record
        tasks.append(asyncio.create_task(eventlog.run(), name="eventlog"))
    await asyncio.wait_for(server.started.wait(), 10)
    await asyncio.wait_for(intake_started.wait(), 10)
    load1 = os.getloadavg()
    print(f"masterchief bench/webhooks.py  {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.platform()}; {os.cpu_count()} CPUs; load average at start "
        f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}"
    )
    print(
        f"payload: {PAYLOAD.relative_to(ROOT)} ({PAYLOAD.stat().st_size} bytes); "
        f"{args.requests} requests (+{args.warmup} warm-up) from {args.concurrency} "
        f"concurrent senders in a separate process; store {config.store.path}; "
        f"max rows per transaction {args.max_batch}; event log {'on' if args.eventlog else 'off'}"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        "--port",
        str(server.port),
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
        "--concurrency",
        str(args.concurrency),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        print(f"client failed with exit status {proc.returncode}")
        return 1
    result: dict[str, Any] = json.loads(out)
    await dispatcher.drain(30)
    # wait for the batched done marks to land
    for _ in range(300):
        if not intake.depths()["webhook_inflight"]:
            break
        await asyncio.sleep(0.05)
    logged = 0
    if eventlog is not None:
        await eventlog.flush()
        logged = await store.event_log_count()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    counters = intake.counters().get("github", {})
    await store.close()

    db = sqlite3.connect(config.store.path)
    rows, done = db.execute("SELECT COUNT(*), SUM(done) FROM deliveries").fetchone()
    db.close()

    statuses = {int(k): v for k, v in result["statuses"].items()}
    accepted = statuses.get(202, 0)
    lat = sorted(x * 1000 for x in result["latencies"])
    rate = accepted / result["elapsed"]
    p50, p90, p99 = pct(lat, 50), pct(lat, 90), pct(lat, 99)
    print()
    print(
        "| senders | requests | 202 | other | errors | s | deliveries/s | p50 ms | p90 ms "
        "| p99 ms | max ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    other = sum(v for k, v in statuses.items() if k != 202)
    print(
        f"| {args.concurrency} | {args.requests} | {accepted} | {other} | {result['errors']} "
        f"| {result['elapsed']:.2f} | {rate:,.0f} | {p50:.1f} | {p90:.1f} | {p99:.1f} "
        f"| {lat[-1]:.1f} |"
    )
    print()
    print(f"statuses: {statuses}; server counters: {counters}")
    print(
        f"store: {rows} deliveries, {done} marked done; handler ran {handled} times; "
        f"group commit: {intake.writer.stats()}"
    )
    ok = True
    checks = [
        (rate >= TARGET_RATE, f"throughput {rate:,.0f} deliveries/s >= {TARGET_RATE:,.0f}"),
        (p99 < TARGET_P99_MS, f"p99 {p99:.1f} ms < {TARGET_P99_MS:.0f} ms"),
        (other == 0 and result["errors"] == 0, "every request answered 202"),
        (rows == accepted + args.warmup, f"every 202 is stored ({rows} rows)"),
        (handled == rows and done == rows, "every delivery dispatched once and marked done"),
    ]
    if eventlog is not None:
        print(f"event log: {logged} rows; {eventlog.counters()}")
        checks.append((logged == rows, f"every delivery in the event log ({logged} rows)"))
    for passed, text in checks:
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}: {text}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument(
        "--max-batch",
        type=int,
        default=500,
        help="rows per store transaction (1: no group commit, for comparison)",
    )
    ap.add_argument(
        "--eventlog", action="store_true", help="also write every Event to the event log"
    )
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        asyncio.run(client_main(args))
        return 0
    return asyncio.run(server_main(args))


if __name__ == "__main__":
    sys.exit(main())
