"""Job history and the (module, environment) lease in the store."""

from __future__ import annotations

import time
from pathlib import Path

from masterchief.store.sqlite.store import Store


def _job(job_id: str, **over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": job_id,
        "module": "api",
        "module_version": "1.0.0",
        "env": "prod",
        "mode": "deploy",
        "params": {"version": "1.4.2"},
        "digest": "d" * 64,
        "requester": "alice",
        "requester_account": "alice",
        "requester_nick": "alice",
        "channel": "#ops",
        "status": "running",
        "created_at": time.time(),
    }
    row.update(over)
    return row


async def test_job_round_trip_and_update(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        await store.job_insert(_job("a1b2c3"))
        await store.job_update(
            "a1b2c3",
            status="succeeded",
            exit_code=0,
            finished_at=time.time(),
            tail=["line 1", "line 2"],
            approvals=[{"handle": "bob", "at": 1.0}],
        )
        row = await store.job_get("a1b2c3")
        assert row is not None
        assert row["status"] == "succeeded" and row["exit_code"] == 0
        assert row["params"] == {"version": "1.4.2"}
        assert row["tail"] == ["line 1", "line 2"]
        assert row["approvals"] == [{"handle": "bob", "at": 1.0}]
        assert await store.job_get("nope") is None
        assert (await store.job_last_success("api", "prod"))["id"] == "a1b2c3"  # type: ignore[index]
        assert await store.job_last_success("api", "dev") is None


async def test_jobs_list_newest_first_and_by_status(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        for i, status in enumerate(["succeeded", "running", "failed"]):
            await store.job_insert(_job(f"job{i}", status=status, created_at=100.0 + i))
        assert [r["id"] for r in await store.jobs_list()] == ["job2", "job1", "job0"]
        assert [r["id"] for r in await store.jobs_list(statuses=["running"])] == ["job1"]
        assert len(await store.jobs_list(limit=2)) == 2


async def test_lease_is_exclusive_names_the_holder_and_expires(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.db") as store:
        assert (
            await store.lease_acquire(
                "api", "prod", job_id="j1", holder="job j1 by alice", ttl_s=60
            )
            is None
        )
        taken = await store.lease_acquire(
            "api", "prod", job_id="j2", holder="job j2 by bob", ttl_s=60
        )
        assert (
            taken is not None and taken["job_id"] == "j1" and taken["holder"] == "job j1 by alice"
        )
        # another environment is independent
        assert await store.lease_acquire("api", "dev", job_id="j3", holder="x", ttl_s=60) is None
        # only the holder releases it
        assert not await store.lease_release("api", "prod", "j2")
        assert await store.lease_release("api", "prod", "j1")
        assert (
            await store.lease_acquire("api", "prod", job_id="j2", holder="job j2", ttl_s=-1) is None
        )
        # an expired lease is taken over
        assert (
            await store.lease_acquire("api", "prod", job_id="j4", holder="job j4", ttl_s=60) is None
        )
        assert [lease["job_id"] for lease in await store.leases()] == ["j3", "j4"]


async def test_two_store_connections_share_the_lease(tmp_path: Path) -> None:
    async with (
        await Store.open(tmp_path / "s.db") as one,
        await Store.open(tmp_path / "s.db") as two,
    ):
        assert await one.lease_acquire("api", "prod", job_id="j1", holder="bot-1", ttl_s=60) is None
        taken = await two.lease_acquire("api", "prod", job_id="j2", holder="bot-2", ttl_s=60)
        assert taken is not None and taken["holder"] == "bot-1"
