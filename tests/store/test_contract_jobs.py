"""Contract: ``JobStore`` (deploy history) and ``LeaseStore`` (named locks)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from masterchief.store.api import Approval, ConflictError, JobRecord, Store


def _job(job_id: str, **over: object) -> JobRecord:
    job = JobRecord(
        id=job_id,
        module="api",
        module_version="1.0.0",
        env="prod",
        mode="deploy",
        params={"version": "1.4.2"},
        digest="d" * 64,
        requester="alice",
        requester_account="alice",
        requester_nick="alice",
        channel="#ops",
        status="running",
        created_at=time.time(),
    )
    return dataclasses.replace(job, **over)  # type: ignore[arg-type]


async def test_job_round_trip_and_update(store: Store) -> None:
    new = _job("a1b2c3")
    await store.job_insert(new)
    assert await store.job_get("a1b2c3") == new  # every field, the defaults included
    done = _job(
        "a1b2c3",
        status="succeeded",
        exit_code=0,
        started_at=5.0,
        finished_at=9.5,
        reason="why not",
        summary="succeeded in 4.5s",
        tail=("line 1", "line 2"),
        approvals=(Approval("bob", 1.0, nick="bobby", account="bob"), Approval("carol", 2.0)),
        params={"version": "1.4.3", "token": "***"},
    )
    assert await store.job_update(done) is True
    row = await store.job_get("a1b2c3")
    assert row is not None
    assert row.status == "succeeded" and row.exit_code == 0
    assert dict(row.params) == {"version": "1.4.3", "token": "***"}
    assert row.tail == ("line 1", "line 2")
    assert row.approvals == (Approval("bob", 1.0, "bobby", "bob"), Approval("carol", 2.0))
    assert (row.started_at, row.finished_at, row.reason, row.summary) == (
        5.0, 9.5, "why not", "succeeded in 4.5s",
    )  # fmt: skip
    assert dataclasses.replace(row, params=done.params) == done
    assert await store.job_get("nope") is None
    assert await store.job_update(_job("nope")) is False
    assert await store.job_get("nope") is None


async def test_job_ids_are_unique(store: Store) -> None:
    await store.job_insert(_job("a1"))
    with pytest.raises(ConflictError):
        await store.job_insert(_job("a1", module="other"))
    assert (await store.job_get("a1")).module == "api"  # type: ignore[union-attr]


async def test_jobs_list_newest_first_and_by_status(store: Store) -> None:
    for i, status in enumerate(["succeeded", "running", "failed", "awaiting_approval"]):
        await store.job_insert(_job(f"job{i}", status=status, created_at=100.0 + i))
    assert [r.id for r in await store.jobs_list()] == ["job3", "job2", "job1", "job0"]
    assert [r.id for r in await store.jobs_list(statuses=["running"])] == ["job1"]
    active = await store.jobs_list(statuses=["running", "awaiting_approval"])
    assert [r.id for r in active] == ["job3", "job1"]
    assert [r.id for r in await store.jobs_list(limit=2)] == ["job3", "job2"]
    assert await store.jobs_list(statuses=["expired"]) == []


async def test_last_success_is_the_newest_succeeded_deploy(store: Store) -> None:
    await store.job_insert(_job("old", status="succeeded", finished_at=10.0))
    await store.job_insert(_job("new", status="succeeded", finished_at=20.0))
    await store.job_insert(_job("fail", status="failed", finished_at=30.0))
    await store.job_insert(_job("plan", status="succeeded", mode="plan", finished_at=40.0))
    await store.job_insert(_job("dev", status="succeeded", env="dev", finished_at=50.0))
    assert (await store.job_last_success("api", "prod")).id == "new"  # type: ignore[union-attr]
    assert (await store.job_last_success("api", "dev")).id == "dev"  # type: ignore[union-attr]
    assert await store.job_last_success("api", "qa") is None
    assert await store.job_last_success("web", "prod") is None


# --- leases ------------------------------------------------------------------------------


async def test_lease_is_exclusive_names_the_holder_and_expires(store: Store) -> None:
    assert (
        await store.lease_acquire("deploy:api/prod", holder="j1", info="job j1 by alice", ttl_s=60)
        is None
    )
    taken = await store.lease_acquire("deploy:api/prod", holder="j2", info="job j2", ttl_s=60)
    assert taken is not None
    assert (taken.name, taken.holder, taken.info) == ("deploy:api/prod", "j1", "job j1 by alice")
    assert taken.acquired_at <= time.time() and taken.expires_at > time.time() + 50
    # another name is independent
    assert await store.lease_acquire("deploy:api/dev", holder="j3", ttl_s=60) is None
    # only the holder releases it
    assert not await store.lease_release("deploy:api/prod", "j2")
    assert await store.lease_release("deploy:api/prod", "j1")
    assert not await store.lease_release("deploy:api/prod", "j1")
    assert await store.lease_acquire("deploy:api/prod", holder="j2", ttl_s=-1) is None
    # an expired lease is taken over
    assert await store.lease_acquire("deploy:api/prod", holder="j4", info="j4", ttl_s=60) is None
    assert [(lease.name, lease.holder) for lease in await store.leases()] == [
        ("deploy:api/dev", "j3"),
        ("deploy:api/prod", "j4"),
    ]


async def test_the_holder_renews_its_lease(store: Store) -> None:
    assert await store.lease_acquire("speaker", holder="bot-1", info="a", ttl_s=1) is None
    [before] = await store.leases()
    assert await store.lease_acquire("speaker", holder="bot-1", info="b", ttl_s=600) is None
    [after] = await store.leases()
    assert after.expires_at > before.expires_at + 500 and after.info == "b"
    assert await store.lease_acquire("speaker", holder="bot-2", ttl_s=60) is not None


async def test_leases_by_prefix_in_name_order(store: Store) -> None:
    for name in ("deploy:web/prod", "speaker", "deploy:api/prod", "deploy_x", "source:kafka"):
        assert await store.lease_acquire(name, holder="h", ttl_s=60) is None
    assert [x.name for x in await store.leases()] == [
        "deploy:api/prod", "deploy:web/prod", "deploy_x", "source:kafka", "speaker",
    ]  # fmt: skip
    assert [x.name for x in await store.leases("deploy:")] == ["deploy:api/prod", "deploy:web/prod"]
    assert await store.leases("nothing") == []
    # expired leases are listed too (they say who held it last)
    await store.lease_acquire("gone", holder="h", ttl_s=-1)
    assert [x.name for x in await store.leases("gone")] == ["gone"]


async def test_two_connections_share_the_lease(store: Store, other: Store) -> None:
    assert await store.lease_acquire("deploy:api/prod", holder="j1", info="bot-1", ttl_s=60) is None
    taken = await other.lease_acquire("deploy:api/prod", holder="j2", info="bot-2", ttl_s=60)
    assert taken is not None and taken.info == "bot-1"
    assert not await other.lease_release("deploy:api/prod", "j2")
    assert await other.lease_release("deploy:api/prod", "j1")  # e.g. recovery after a crash
    assert await store.leases() == []


async def test_a_lease_race_has_exactly_one_winner(store: Store, other: Store) -> None:
    async def grab(s: Store, holder: str) -> bool:
        return await s.lease_acquire("speaker", holder=holder, ttl_s=60) is None

    won = await asyncio.gather(
        *(grab(s, f"{tag}{i}") for i in range(10) for tag, s in (("a", store), ("b", other)))
    )
    assert sum(won) == 1
    [lease] = await store.leases()
    winner = [f"{tag}{i}" for i in range(10) for tag in "ab"][won.index(True)]
    assert lease.holder == winner
