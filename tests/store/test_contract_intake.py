"""Contract: ``DeliveryStore`` (durable webhook intake) and ``OutboxStore``."""

from __future__ import annotations

import asyncio

from masterchief.store.api import NewDelivery, Store


def _d(key: str, provider: str = "github", **over: object) -> NewDelivery:
    fields: dict[str, object] = {
        "provider": provider,
        "dedup_key": key,
        "event_key": f"{provider}/push",
        "body": f'{{"k": "{key}"}}',
        "meta": '{"m": 1}',
    }
    fields.update(over)
    return NewDelivery(**fields)  # type: ignore[arg-type]


async def test_insert_delivery_stores_once(store: Store) -> None:
    first = await store.insert_delivery(_d("a", received_at=100.0))
    assert first is not None
    assert await store.insert_delivery(_d("a", body="{}")) is None  # a redelivery
    assert await store.insert_delivery(_d("a", provider="gitlab")) is not None  # per provider
    [got, _] = await store.pending_deliveries()
    assert (got.id, got.provider, got.dedup_key, got.event_key) == (
        first,
        "github",
        "a",
        "github/push",
    )
    assert (got.body, got.meta, got.received_at, got.done) == (
        '{"k": "a"}',
        '{"m": 1}',
        100.0,
        False,
    )


async def test_received_at_defaults_to_now(store: Store) -> None:
    import time

    before = time.time()
    await store.insert_delivery(_d("a"))
    await store.record_deliveries([_d("b")])
    for d in await store.pending_deliveries():
        assert before <= d.received_at <= time.time()


async def test_pending_deliveries_oldest_first_with_a_limit(store: Store) -> None:
    ids = [await store.insert_delivery(_d(f"k{i}")) for i in range(5)]
    await store.delivery_done(ids[1])  # type: ignore[arg-type]
    assert [d.id for d in await store.pending_deliveries()] == [ids[0], *ids[2:]]
    assert [d.id for d in await store.pending_deliveries(limit=2)] == [ids[0], ids[2]]


async def test_record_deliveries_is_one_group_commit(store: Store) -> None:
    old = await store.insert_delivery(_d("old"))
    assert old is not None
    ids = await store.record_deliveries(
        [_d("n1"), _d("old"), _d("n2"), _d("n1")],  # a stored one, and a repeat in the batch
        done=[old],
    )
    assert ids[0] is not None and ids[2] is not None and ids[0] < ids[2]
    assert ids[1] is None and ids[3] is None
    assert [d.dedup_key for d in await store.pending_deliveries()] == ["n1", "n2"]
    assert await store.record_deliveries([]) == []


async def test_record_deliveries_beyond_one_statement(store: Store) -> None:
    # more rows than fit in one statement's parameters (SQLite: chunks of 500)
    ids = await store.record_deliveries([_d(f"k{i}") for i in range(1203)])
    stored = [i for i in ids if i is not None]
    assert len(stored) == 1203 and stored == sorted(stored)
    await store.record_deliveries([], done=stored[:1100])
    assert len(await store.pending_deliveries(limit=5000)) == 103


async def test_prune_forgets_only_old_dispatched_deliveries(store: Store) -> None:
    old = await store.insert_delivery(_d("old", received_at=10.0))
    recent = await store.insert_delivery(_d("recent", received_at=1000.0))
    waiting = await store.insert_delivery(_d("waiting", received_at=10.0))
    assert old is not None and recent is not None and waiting is not None
    await store.delivery_done(old)
    await store.delivery_done(recent)
    assert await store.prune_deliveries(500.0) == 1
    assert await store.prune_deliveries(500.0) == 0
    assert [d.id for d in await store.pending_deliveries()] == [waiting]  # never pruned
    # the pruned key may come again (a new delivery); the kept one is still a duplicate
    assert await store.insert_delivery(_d("old")) is not None
    assert await store.insert_delivery(_d("recent")) is None


async def test_outbox_in_order_with_limit_and_remove(store: Store) -> None:
    a = await store.outbox_add("#ops", "one", created_at=5.0)
    b = await store.outbox_add("#ops", "two", kind="alert", fold_key="k", meta='{"n": 1}')
    c = await store.outbox_add("alice", "three")
    assert a < b < c
    assert await store.outbox_count() == 3
    rows = await store.outbox_pending()
    assert [(r.id, r.target, r.text) for r in rows] == [
        (a, "#ops", "one"),
        (b, "#ops", "two"),
        (c, "alice", "three"),
    ]
    assert (rows[0].kind, rows[0].fold_key, rows[0].meta, rows[0].created_at) == (
        "text",
        None,
        None,
        5.0,
    )
    assert (rows[1].kind, rows[1].fold_key, rows[1].meta) == ("alert", "k", '{"n": 1}')
    assert [r.id for r in await store.outbox_pending(limit=2)] == [a, b]
    await store.outbox_remove([])
    await store.outbox_remove([a, c])
    assert [r.id for r in await store.outbox_pending()] == [b]
    assert await store.outbox_count() == 1
    await store.outbox_remove([a])  # already gone: fine
    assert await store.outbox_count() == 1


async def test_outbox_ids_are_unique_under_concurrent_adds(store: Store, other: Store) -> None:
    ids = await asyncio.gather(
        *(s.outbox_add("#ops", f"m{i}") for i in range(20) for s in (store, other))
    )
    assert len(set(ids)) == 40
    assert [r.id for r in await store.outbox_pending()] == sorted(ids)
