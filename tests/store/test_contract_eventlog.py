"""Contract: ``EventLogStore`` (audit and replay source) and ``ReplayStore``."""

from __future__ import annotations

import asyncio

from masterchief.store.api import EventLogRecord, Store


def _ev(
    n: int, *, type: str = "pub", at: float | None = None, replay_of: str | None = None
) -> EventLogRecord:
    return EventLogRecord(
        id=f"e{n:04d}",
        time=float(n) if at is None else at,
        type=type,
        key=f"!cmd{n}",
        origin='{"nick": "alice"}',
        payload=f'{{"n": {n}}}',
        outcome="ok",
        replay_of=replay_of,
    )


async def test_append_is_idempotent_by_id(store: Store) -> None:
    assert await store.event_log_append([]) == 0
    assert await store.event_log_append([_ev(1), _ev(2), _ev(1)]) == 2
    assert await store.event_log_append([_ev(2), _ev(3)]) == 1
    assert await store.event_log_count() == 3
    [got] = await store.event_log_get(["e0002"])
    assert got.seq > 0
    assert got == EventLogRecord(
        "e0002", 2.0, "pub", "!cmd2", '{"nick": "alice"}', '{"n": 2}', "ok", None, got.seq
    )


async def test_page_newest_first_with_filters_and_paging(store: Store) -> None:
    await store.event_log_append(
        [_ev(i, type="pub" if i % 2 else "webhook", replay_of="e0001" if i == 9 else None)
         for i in range(1, 11)]
    )  # fmt: skip
    page = await store.event_log_page()
    assert [r.id for r in page] == [f"e{i:04d}" for i in range(10, 0, -1)]
    assert [r.seq for r in page] == sorted((r.seq for r in page), reverse=True)
    assert page[1].replay_of == "e0001"
    assert [r.id for r in await store.event_log_page(types=["webhook"])] == [
        "e0010",
        "e0008",
        "e0006",
        "e0004",
        "e0002",
    ]
    assert [r.id for r in await store.event_log_page(types=["pub", "webhook"], since=8.0)] == [
        "e0010",
        "e0009",
        "e0008",
    ]
    first = await store.event_log_page(limit=3)
    assert [r.id for r in first] == ["e0010", "e0009", "e0008"]
    rest = await store.event_log_page(before_seq=first[-1].seq, limit=3)
    assert [r.id for r in rest] == ["e0007", "e0006", "e0005"]
    assert await store.event_log_page(types=["nothing"]) == []


async def test_get_in_the_order_asked(store: Store) -> None:
    await store.event_log_append([_ev(i) for i in range(1, 6)])
    got = await store.event_log_get(["e0003", "nope", "e0001", "e0003"])
    assert [r.id for r in got] == ["e0003", "e0001"]
    assert await store.event_log_get([]) == []


async def test_get_many_ids_at_once(store: Store) -> None:
    await store.event_log_append([_ev(i) for i in range(1200)])
    ids = [f"e{i:04d}" for i in range(1199, -1, -1)]
    assert [r.id for r in await store.event_log_get(ids)] == ids


async def test_prune_drops_old_events_and_finished_requests(store: Store) -> None:
    await store.event_log_append([_ev(i, at=float(i * 100)) for i in range(1, 6)])
    pending, running, done = await store.replay_enqueue(
        ["e0001", "e0002", "e0003"], requested_at=50.0
    )
    assert await store.replay_claim(running) and await store.replay_claim(done)
    assert await store.replay_finish(done, "done", "replayed")
    [late] = await store.replay_enqueue(["e0004"], requested_at=900.0)
    await store.replay_claim(late)
    await store.replay_finish(late, "failed", "no")
    assert await store.event_log_prune(250.0) == 2
    assert [r.id for r in await store.event_log_page()] == ["e0005", "e0004", "e0003"]
    assert await store.event_log_count() == 3
    # pending requests stay (the bot has not seen them yet); finished old ones go
    left = await store.replay_get([pending, running, done, late])
    assert [r.id for r in left] == [pending, late]
    assert await store.event_log_prune(250.0) == 0


async def test_replay_requests_move_pending_running_finished(store: Store) -> None:
    a, b, c = await store.replay_enqueue(["e1", "e2", "e3"], requested_at=7.0)
    assert a < b < c
    assert [(r.id, r.event_id, r.state, r.requested_at) for r in await store.replay_pending()] == [
        (a, "e1", "pending", 7.0), (b, "e2", "pending", 7.0), (c, "e3", "pending", 7.0),
    ]  # fmt: skip
    assert [r.id for r in await store.replay_pending(limit=2)] == [a, b]
    # finish needs running; cancel needs pending
    assert await store.replay_finish(a, "done", "x") is False
    assert await store.replay_claim(a) is True
    assert await store.replay_claim(a) is False
    assert await store.replay_cancel(a, "too late") is False
    assert await store.replay_finish(a, "done", "replayed as e9: ok") is True
    assert await store.replay_finish(a, "failed", "again") is False
    assert await store.replay_cancel(b, "nobody took it") is True
    assert await store.replay_claim(b) is False
    got = {r.id: r for r in await store.replay_get([c, b, a, 999])}
    assert [r for r in got] == [a, b, c]  # id order, unknown left out
    assert (got[a].state, got[a].result) == ("done", "replayed as e9: ok")
    assert (got[b].state, got[b].result) == ("cancelled", "nobody took it")
    assert (got[c].state, got[c].result) == ("pending", None)
    assert [r.id for r in await store.replay_pending()] == [c]
    assert await store.replay_get([]) == []


async def test_enqueue_defaults_to_now(store: Store) -> None:
    import time

    before = time.time()
    [r] = await store.replay_get(await store.replay_enqueue(["e1"]))
    assert before <= r.requested_at <= time.time()


async def test_a_claim_race_has_exactly_one_winner(store: Store, other: Store) -> None:
    [rid] = await store.replay_enqueue(["e1"])
    won = await asyncio.gather(*(s.replay_claim(rid) for _ in range(10) for s in (store, other)))
    assert won.count(True) == 1
    [r] = await other.replay_get([rid])
    assert r.state == "running"
