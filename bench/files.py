"""Benchmark: a large CSV dropped into a watched folder, streamed through a binding.

Builds the real ``FileWatcher`` (watchdog observer, ledger in a SQLite store)
with a ``BindingTable`` + ``Dispatcher`` and one ``file`` binding that counts
rows.  The CSV is written *next to* the inbox and renamed in (write-then-
rename), so only the watcher's work is timed: from the rename to the binding
having counted every row (the hash pass over the file is included).

Reports rows/s, MB/s and the process's peak RSS growth (``ru_maxrss`` after
minus before).  Target: growth < 100 MB for a 1 GB file.

Run: ``.venv/bin/python bench/files.py [--size-mb 1024] [--dir /tmp]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import FilesConfig
from masterchief.sources.files.watcher import FileWatcher
from masterchief.store.sqlite import open_store


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_csv(path: Path, size: int) -> int:
    row_tpl = "host{0:08d}.example.net,{1},eu-west-{2},OK,{0}\n"
    rows = 0
    with path.open("w", buffering=1 << 20) as fh:
        fh.write("host,port,region,status,serial\n")
        written = 0
        block: list[str] = []
        while written < size:
            line = row_tpl.format(rows, 1024 + rows % 50000, rows % 3)
            block.append(line)
            written += len(line)
            rows += 1
            if len(block) == 10000:
                fh.write("".join(block))
                block.clear()
        fh.write("".join(block))
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mc-bench-files-", dir=args.dir))
    try:
        src = work / "big.csv"
        t0 = time.perf_counter()
        expected = write_csv(src, args.size_mb * 1024 * 1024)
        size = src.stat().st_size
        print(f"wrote {size / 1e6:.0f} MB, {expected:,} rows in {time.perf_counter() - t0:.1f}s")

        store = await open_store(work / "mc.db")
        table = BindingTable()
        dispatcher = Dispatcher(table, handler_timeout_s=3600)
        counted: list[int] = []
        done = asyncio.Event()

        def count(ev: Event) -> None:
            n = 0
            for _row in ev.payload["content"]:
                n += 1
            counted.append(n)
            done.set()

        table.bind("file", "-|-", "*.csv", count)
        cfg = FilesConfig(
            name="inbox", path=work / "inbox", settle_s=0.2, max_bytes=size + 1, after="delete"
        )
        watcher = FileWatcher([cfg], dispatcher.put, store)
        tasks = [asyncio.create_task(dispatcher.run()), asyncio.create_task(watcher.run())]
        while not (work / "inbox").is_dir():
            await asyncio.sleep(0.01)
        before = maxrss_mb()
        t0 = time.perf_counter()
        os.rename(src, work / "inbox" / "big.csv")
        await asyncio.wait_for(done.wait(), 3600)
        elapsed = time.perf_counter() - t0
        after = maxrss_mb()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
        assert counted == [expected], (counted, expected)
        print(
            f"rows {counted[0]:,} in {elapsed:.1f}s: {counted[0] / elapsed:,.0f} rows/s,"
            f" {size / 1e6 / elapsed:.0f} MB/s (includes settle {cfg.settle_s}s and the hash pass)"
        )
        print(
            f"peak RSS before {before:.0f} MB, after {after:.0f} MB: growth {after - before:.1f} MB"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
