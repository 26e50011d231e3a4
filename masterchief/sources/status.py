"""``masterchief files status`` and ``!files``: watched folders and tailed logs.

Folders: files waiting (matching the patterns, not yet handled), processed
(the ledger's done rows) and quarantined (files anywhere under
``.quarantine/``, not counting their ``.reason`` notes).  Logs: each tailed
file with its committed offset, its size and lines per second: in the
running bot, since the previous ``!files`` (or since start); offline, the
rate over a minute the tailer stored with the offset, and when ("as of").
The offline command reads the same store and folders the bot uses.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..config.schema import Config, FilesConfig
from ..store.api import Checkpoint, CheckpointStore, FileLedgerStore
from .base import SourceStatus
from .files.watcher import ignored_name
from .logs.offsets import stored_offsets

__all__ = [
    "as_of",
    "folder_rows",
    "format_sources",
    "format_status",
    "log_rows",
    "stored_sources",
]

_SPECIAL = (".quarantine", ".processed")


def _pending_on_disk(cfg: FilesConfig) -> int:
    root = cfg.path
    if not root.is_dir():
        return 0
    n = 0
    for _dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SPECIAL and not d.startswith(".")]
        if not cfg.recursive:
            dirnames[:] = []
        for name in filenames:
            if ignored_name(name):
                continue
            if any(fnmatch.fnmatch(name, pat) for pat in cfg.patterns):
                n += 1
    return n


def _is_note(name: str) -> bool:
    """A quarantine ``.reason`` file, or one being written (``.<name>.reason.part``)."""
    return name.endswith(".reason") or (name.startswith(".") and name.endswith(".reason.part"))


def _quarantined(cfg: FilesConfig) -> int:
    """Files under ``.quarantine/`` at any depth (refused files keep their
    sub-folder), without the ``.reason`` notes beside them."""
    folder = cfg.path / ".quarantine"
    if not folder.is_dir():
        return 0
    n = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        n += sum(1 for name in filenames if not _is_note(name))
        # a refused symlink to a folder is listed (and not followed) as a folder
        n += sum(1 for name in dirnames if os.path.islink(os.path.join(dirpath, name)))
    return n


async def folder_rows(config: Config, store: FileLedgerStore) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for cfg in config.files:
        ledger = await store.file_ledger_counts(cfg.name)
        rows.append(
            {
                "name": cfg.name,
                "path": str(cfg.path),
                "pending": await asyncio.to_thread(_pending_on_disk, cfg),
                "processed": ledger.done,
                "in_flight": ledger.dispatched,
                "quarantined": await asyncio.to_thread(_quarantined, cfg),
            }
        )
    return rows


def _size(path: str) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


async def log_rows(
    store: CheckpointStore, live: Iterable[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Stored offsets, overlaid with the running tailers' view when given."""
    rows: dict[tuple[str, str], dict[str, Any]] = {
        (o.name, o.path): {
            "name": o.name,
            "path": o.path,
            "offset": o.offset,
            "updated_at": at,
            "lines_per_s": o.lines_per_s,
        }
        for o, at in await stored_offsets(store)
    }
    for st in live or ():
        key = (st["name"], st["path"])
        row = rows.setdefault(key, {"name": st["name"], "path": st["path"]})
        row["offset"] = st.get("committed") if st.get("committed") is not None else st["offset"]
        row["lines"] = st.get("lines", 0)
        if "lines_per_s" in st:  # the tailer's own last-minute rate, now: no "as of"
            row["lines_per_s"] = st["lines_per_s"]
            row.pop("updated_at", None)
    for row in rows.values():
        row["size"] = await asyncio.to_thread(_size, str(row["path"]))
    return sorted(rows.values(), key=lambda r: (r["name"], r["path"]))


def format_status(folders: list[dict[str, Any]], logs: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    if not folders and not logs:
        return ["no watched folders or tailed logs configured"]
    for f in folders:
        out.append(
            f"folder {f['name']} ({f['path']}): {f['pending']} pending, "
            f"{f['processed']} processed, {f['in_flight']} in flight, "
            f"{f['quarantined']} quarantined"
        )
    for lg in logs:
        size = "gone" if lg.get("size") is None else f"{lg['size']} bytes"
        out.append(
            f"log {lg['name']} {lg['path']}: offset {lg.get('offset')} of {size}, {_rate(lg)}"
        )
    return out


def _rate(row: dict[str, Any]) -> str:
    rate = row.get("lines_per_s")
    if rate is None:
        return "lines/s not measured yet"
    at = row.get("updated_at")
    if at is None:
        return f"{rate:.1f} lines/s"
    return f"{rate:.1f} lines/s (as of {as_of(float(at))})"


def as_of(epoch: float) -> str:
    """When a stored rate was measured, in UTC to the second."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_sources(statuses: Iterable[SourceStatus], now: float) -> list[str]:
    """``!sources`` / ``masterchief sources status``: one line per source,
    ``family:name state -- detail; N events, N errors, N pending, last ok 2m ago``."""
    out: list[str] = []
    for s in statuses:
        parts = [
            f"{s.events} event{'s' * (s.events != 1)}",
            f"{s.errors} error{'s' * (s.errors != 1)}",
        ]
        if s.pending is not None:
            parts.append(f"{s.pending} pending")
        if s.last_success is not None:
            parts.append(f"last ok {_ago(now - s.last_success)}")
        detail = f" -- {s.detail}" if s.detail else ""
        out.append(f"{s.qualified} {s.state}{detail}; {', '.join(parts)}")
    return out or ["no sources configured"]


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s}s ago"
    if s < 90 * 60:
        return f"{s // 60}m ago"
    if s < 36 * 3600:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def stored_sources(
    configured: Iterable[tuple[str, str]], stored: Iterable[Checkpoint], now: float
) -> list[str]:
    """``masterchief sources status`` offline: each configured source as the
    bot last stored it (``source-status:<family>:<name>`` checkpoints), with
    when; a configured source with no stored status was never run."""
    by_name: dict[str, Checkpoint] = {}
    for row in stored:
        by_name[row.name.partition(":")[2]] = row
    out: list[str] = []
    for family, name in configured:
        cp = by_name.get(f"{family}:{name}")
        if cp is None:
            out.append(f"{family}:{name} not reported yet (not run by the bot since configured)")
            continue
        try:
            fields: dict[str, Any] = dict(cp.value)
            st = SourceStatus(**fields)
        except TypeError:  # written by another version: show what is certain
            out.append(f"{family}:{name} status unreadable (as of {as_of(cp.updated_at)})")
            continue
        (line,) = format_sources([st], now)
        out.append(f"{line} (as of {as_of(cp.updated_at)})")
    return out or ["no sources configured"]
