"""Contract: ``CheckpointStore`` (named JSON values) and ``FileLedgerStore``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from masterchief.store.api import (
    FileIdentity,
    JsonObject,
    LedgerCounts,
    LedgerEntry,
    Store,
    from_json,
    to_json,
)


async def test_checkpoint_round_trip_and_replace(store: Store) -> None:
    assert await store.checkpoint_get("rest:api") is None
    value: JsonObject = {
        "s": "ünïcode ✓",
        "i": 2**40,
        "f": 1.5,
        "none": None,
        "yes": True,
        "list": [1, "two", None, {"x": []}],
        "obj": {"nested": {"deep": "yes"}},
    }
    before = time.time()
    await store.checkpoint_put("rest:api", value)
    got = await store.checkpoint_get("rest:api")
    assert got is not None and got.name == "rest:api" and got.value == value
    assert before <= got.updated_at <= time.time()
    await store.checkpoint_put("rest:api", {"only": 1})
    again = await store.checkpoint_get("rest:api")
    assert again is not None and again.value == {"only": 1}  # replaced, not merged
    assert again.updated_at >= got.updated_at


async def test_checkpoints_by_prefix_in_name_order(store: Store) -> None:
    for name in ("log:b:/x", "rest:z", "log:a:/y", "log_", "log%", "cursor:kafka"):
        await store.checkpoint_put(name, {"n": name})
    assert [c.name for c in await store.checkpoints("log:")] == ["log:a:/y", "log:b:/x"]
    # the prefix is text, not a pattern
    assert [c.name for c in await store.checkpoints("log%")] == ["log%"]
    assert [c.name for c in await store.checkpoints("log_")] == ["log_"]
    everything = await store.checkpoints()
    assert [c.name for c in everything] == sorted(c.name for c in everything)
    assert len(everything) == 6 and all(c.value == {"n": c.name} for c in everything)


async def test_checkpoint_delete(store: Store) -> None:
    await store.checkpoint_put("rest:gone", {"n": 1})
    assert await store.checkpoint_delete("rest:gone") is True
    assert await store.checkpoint_delete("rest:gone") is False
    assert await store.checkpoint_get("rest:gone") is None


async def test_concurrent_checkpoint_writes_leave_one_whole_value(
    store: Store, other: Store
) -> None:
    await asyncio.gather(
        *(s.checkpoint_put("log:a:/f", {"offset": i, "by": tag})
          for i in range(20) for tag, s in (("a", store), ("b", other)))
    )  # fmt: skip
    got = await other.checkpoint_get("log:a:/f")
    assert got is not None and set(got.value) == {"offset", "by"}
    assert await store.checkpoints("log:") == [got]


@dataclass(frozen=True, slots=True)
class _State:
    fingerprint: str
    failures: int = 0
    etag: str | None = None


async def test_typed_values_through_to_json_and_from_json(store: Store) -> None:
    await store.checkpoint_put("rest:x", to_json(_State("abc", 2)))
    got = await store.checkpoint_get("rest:x")
    assert got is not None and from_json(_State, got.value) == _State("abc", 2)
    # a newer writer's extra key is ignored; a missing one takes its default
    await store.checkpoint_put("rest:x", {"fingerprint": "abc", "later": [1]})
    got = await store.checkpoint_get("rest:x")
    assert got is not None and from_json(_State, got.value) == _State("abc")


# --- file ledger -------------------------------------------------------------------------


def _entry(digest: str, state: str = "seen", *, watch: str = "inbox", ino: int = 7) -> LedgerEntry:
    return LedgerEntry(
        watch,
        digest,
        FileIdentity(dev=1, ino=ino, size=10, mtime_ns=99),
        f"/in/{digest}",
        state,  # type: ignore[arg-type]
    )


async def test_ledger_put_get_and_move_on(store: Store) -> None:
    assert await store.file_ledger_get("inbox", "h1") is None
    await store.file_ledger_put(_entry("h1"))
    got = await store.file_ledger_get("inbox", "h1")
    assert got is not None and got.updated_at > 0
    assert (got.watch, got.hash, got.identity, got.path, got.state) == (
        "inbox", "h1", FileIdentity(1, 7, 10, 99), "/in/h1", "seen",
    )  # fmt: skip
    moved = LedgerEntry("inbox", "h1", FileIdentity(2, 8, 10, 100), "/in/renamed", "dispatched")
    await store.file_ledger_put(moved)
    got = await store.file_ledger_get("inbox", "h1")
    assert got is not None
    assert (got.identity, got.path, got.state) == (moved.identity, "/in/renamed", "dispatched")
    assert await store.file_ledger_get("other", "h1") is None  # per watched folder


async def test_ledger_find_by_identity(store: Store) -> None:
    ident = FileIdentity(dev=1, ino=7, size=10, mtime_ns=99)
    assert await store.file_ledger_find("inbox", ident) is None
    await store.file_ledger_put(_entry("h1", "done"))
    found = await store.file_ledger_find("inbox", ident)
    assert found is not None and (found.hash, found.state) == ("h1", "done")
    # the same identity later holding other content (an inode reused): the newest wins
    await store.file_ledger_put(_entry("h2", "seen"))
    found = await store.file_ledger_find("inbox", ident)
    assert found is not None and (found.hash, found.state) == ("h2", "seen")
    assert await store.file_ledger_find("inbox", FileIdentity(1, 7, 11, 99)) is None
    assert await store.file_ledger_find("elsewhere", ident) is None


async def test_ledger_counts_per_state_and_folder(store: Store) -> None:
    assert await store.file_ledger_counts("inbox") == LedgerCounts()
    for i, state in enumerate(["seen", "dispatched", "dispatched", "done", "done", "done"]):
        await store.file_ledger_put(_entry(f"h{i}", state, ino=i))
    await store.file_ledger_put(_entry("x", "done", watch="other"))
    assert await store.file_ledger_counts("inbox") == LedgerCounts(seen=1, dispatched=2, done=3)
    assert await store.file_ledger_counts("other") == LedgerCounts(done=1)
