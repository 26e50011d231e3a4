"""Log tailing throughput: a 2,000,000-line file through the real tailer and dispatcher.

The file (plain format, ~90 bytes a line) is written to a temporary folder; 1% of
the lines carry one of 20 error codes, and 20 ``log`` bindings (``"<path> *ERRCODE-k *"``,
plain ``def`` handlers that count) each match one code, so 1% of lines fire a handler.
A ``LogTailer`` (start_at beginning, offsets flushed to a real store) reads the file
into a real ``Dispatcher``; the clock runs from the tailer's start until every line
has been dispatched and its offset committed.  ``grep -c`` on the same file is
timed for scale.

Run: ``.venv/bin/python bench/tail.py [--lines 2000000] [--cpu 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masterchief.bindings import BindingTable, Dispatcher, Event
from masterchief.config.schema import LogConfig
from masterchief.sources.logs.tail import LogTailer
from masterchief.store.sqlite import open_store

CODES = 20
WORDS = [
    "GET",
    "POST",
    "PUT",
    "/api/v1/users",
    "/api/v1/orders",
    "/health",
    "/metrics",
    "ok",
    "slow",
    "cache",
]


def write_log(path: Path, n: int, seed: int = 1) -> int:
    """Write ``n`` lines; returns how many carry an error code."""
    rng = random.Random(seed)
    matching = 0
    with path.open("w", encoding="utf-8") as fh:
        buf: list[str] = []
        for i in range(n):
            level = "INFO"
            tail = f"{rng.choice(WORDS)} {rng.choice(WORDS)} took={rng.randrange(1, 900)}ms"
            if i % 100 == 37:
                level = "ERROR"
                tail += f" ERRCODE-{rng.randrange(CODES)} "
                matching += 1
            buf.append(
                f"2026-11-27T12:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z {level}"
                f" req={i:08d} host=web-{i % 17:02d} {tail}\n"
            )
            if len(buf) >= 10_000:
                fh.write("".join(buf))
                buf.clear()
        fh.write("".join(buf))
    return matching


def pin(cpu: int | None) -> str:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


async def run(path: Path, store_path: Path) -> tuple[float, int, int]:
    table = BindingTable()
    hits = [0]

    def count(ev: Event) -> None:
        hits[0] += 1

    for k in range(CODES):
        table.bind("log", "-|-", f"{path} *ERRCODE-{k} *", count)
    dispatcher = Dispatcher(table, resolver=lambda ev: None, handler_timeout_s=10)
    size = path.stat().st_size
    async with await open_store(store_path) as store:
        tailer = LogTailer(
            LogConfig(name="bench", path=path, start_at="beginning"),
            dispatcher,
            store=store,
            poll_s=0.05,
            wanted=lambda key: table.snapshot.mask_matches("log", key),
        )
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            worker = tg.create_task(dispatcher.run())
            tail = tg.create_task(tailer.run())
            while True:
                f = tailer.followers.get(str(path))
                if f is not None and f.offset == size and f.status()["committed"] == size:
                    break
                await asyncio.sleep(0.01)
            await dispatcher.drain(60)
            elapsed = time.perf_counter() - t0
            lines = f.lines
            tail.cancel()
            worker.cancel()
    return elapsed, lines, hits[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--cpu", type=int, default=0)
    args = ap.parse_args()
    where = pin(args.cpu)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.log"
        expected = write_log(path, args.lines)
        size = path.stat().st_size
        t0 = time.perf_counter()
        grep = subprocess.run(
            ["grep", "-c", "ERRCODE-", str(path)], capture_output=True, text=True, check=False
        )
        grep_s = time.perf_counter() - t0
        elapsed, lines, hits = asyncio.run(run(path, Path(tmp) / "store.db"))
    print(
        f"file: {args.lines:,} lines, {size / 1e6:.1f} MB; {where}; Python {sys.version.split()[0]}"
    )
    print(
        f"tailer: {lines:,} lines in {elapsed:.2f} s = {lines / elapsed:,.0f} lines/s "
        f"({size / elapsed / 1e6:.1f} MB/s); handler hits {hits:,} (expected {expected:,})"
    )
    print(
        f"grep -c: {grep.stdout.strip()} matches in {grep_s:.3f} s = "
        f"{args.lines / grep_s:,.0f} lines/s"
    )
    ok = lines == args.lines and hits == expected
    print("target >= 300,000 lines/s:", "MET" if lines / elapsed >= 300_000 else "NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
