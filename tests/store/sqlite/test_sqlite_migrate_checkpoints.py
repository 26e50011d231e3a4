"""Upgrading a database made by the schema before issue 9: REST poller state,
tailed-log offsets and deploy leases move into the generic ``checkpoints``
and ``leases`` tables, and their readers find them there."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from masterchief.deploy.job import deploy_lease
from masterchief.sources.logs.offsets import LogOffset, load_offset, stored_offsets
from masterchief.sources.rest.polling import RestState
from masterchief.store.api import Lease, from_json
from masterchief.store.sqlite import MIGRATIONS, open_store

# The last step before the generic tables (found by content: later steps may follow).
BEFORE = next(i for i, step in enumerate(MIGRATIONS) if any("checkpoints" in s for s in step))


async def test_old_state_moves_into_checkpoints_and_leases(tmp_path: Path) -> None:
    path = tmp_path / "var" / "mc.db"
    async with await open_store(path, migrations=MIGRATIONS[:BEFORE]) as old:
        assert old.schema_version == BEFORE
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO rest_poll_state (name, fingerprint, hash, etag, last_modified,"
            " failures, failing_since, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    "api",
                    "fp1",
                    "h1",
                    '"etag-1"',
                    "Tue, 01 Dec 2026 10:00:00 GMT",
                    3,
                    1700.5,
                    1800.0,
                ),
                ("quiet", "fp2", None, None, None, 0, None, 1900.0),
            ],
        )
        conn.executemany(
            "INSERT INTO log_offsets (name, path, dev, ino, fingerprint, offset, updated_at,"
            " lines_per_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("app", "/var/log/app.log", 64769, 1234, b"\x00\xffline one\n", 4096, 2000.0, 12.5),
                ("app", "/var/log/other:colon.log", 1, 2, b"", 0, 2100.0, None),
            ],
        )
        conn.execute(
            "INSERT INTO deploy_leases (module, env, job_id, holder, acquired_at, expires_at)"
            " VALUES ('api', 'prod', 'j1', 'job j1 (deploy by alice) on host', 10.0, 9e9)"
        )

    async with await open_store(path) as store:
        assert store.schema_version == len(MIGRATIONS)
        # REST poller state: what RestPoller.load_state reads
        api = await store.checkpoint_get("rest:api")
        assert api is not None and api.updated_at == 1800.0
        assert from_json(RestState, api.value) == RestState(
            fingerprint="fp1",
            hash="h1",
            etag='"etag-1"',
            last_modified="Tue, 01 Dec 2026 10:00:00 GMT",
            failures=3,
            failing_since=1700.5,
        )
        quiet = await store.checkpoint_get("rest:quiet")
        assert quiet is not None and from_json(RestState, quiet.value) == RestState("fp2")
        # log offsets: what the tailer and `files status` read
        saved = await load_offset(store, "app", "/var/log/app.log")
        assert saved == LogOffset(
            name="app",
            path="/var/log/app.log",
            dev=64769,
            ino=1234,
            fingerprint=b"\x00\xffline one\n".hex(),
            offset=4096,
            lines_per_s=12.5,
        )
        assert bytes.fromhex(saved.fingerprint) == b"\x00\xffline one\n"
        listed = await stored_offsets(store)
        assert [(o.path, o.offset, o.lines_per_s, at) for o, at in listed] == [
            ("/var/log/app.log", 4096, 12.5, 2000.0),
            ("/var/log/other:colon.log", 0, None, 2100.0),
        ]
        # the deploy lease: still held by j1, released by the deploy code's name for it
        assert await store.leases() == [
            Lease("deploy:api/prod", "j1", "job j1 (deploy by alice) on host", 10.0, 9e9)
        ]
        taken = await store.lease_acquire(deploy_lease("api", "prod"), holder="j2", ttl_s=60)
        assert taken is not None and taken.holder == "j1"
        assert await store.lease_release(deploy_lease("api", "prod"), "j1")
    with closing(sqlite3.connect(path)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not {"rest_poll_state", "log_offsets", "deploy_leases"} & names
