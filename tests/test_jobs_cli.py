"""``masterchief jobs list|show`` read the job history the bot wrote."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

from click.testing import CliRunner

from masterchief.cli import main
from masterchief.store.api import Approval, JobRecord
from masterchief.store.sqlite import open_store


def _project(tmp_path: Path) -> Path:
    cfg = tmp_path / "config"
    (cfg / "global").mkdir(parents=True)
    (cfg / "global" / "config.yaml").write_text(
        textwrap.dedent(
            """\
            irc: {host: 127.0.0.1, channels: ["#ops"]}
            store: {path: var/mc.db}
            """
        )
    )
    return cfg


async def _seed(db: Path) -> None:
    (db.parent).mkdir(parents=True, exist_ok=True)
    async with await open_store(db) as store:
        now = time.time()
        await store.job_insert(
            JobRecord(
                id="a1b2c3",
                module="api",
                module_version="1.2.0",
                env="prod",
                mode="deploy",
                params={"version": "1.4.2", "token": "***"},
                digest="f" * 64,
                requester="alice",
                requester_account="alice",
                requester_nick="alice",
                channel="#ops",
                status="succeeded",
                approvals=(Approval(handle="bob", nick="bob", account="bob", at=now),),
                created_at=now - 60,
                started_at=now - 50,
                finished_at=now - 38,
                exit_code=0,
                summary="succeeded in 12.0s: changed 3, failed 0",
                tail=("TASK [deploy]", "ok: done"),
            )
        )
        await store.job_insert(
            JobRecord(
                id="d4e5f6",
                module="api",
                module_version="1.2.0",
                env="dev",
                mode="plan",
                digest="e" * 64,
                requester="carol",
                status="failed",
                created_at=now - 10,
                exit_code=2,
            )
        )


def run(cfg: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--config-dir", str(cfg)], env={})
    return result.exit_code, result.stdout, result.stderr


def test_jobs_list_and_show(tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    asyncio.run(_seed(tmp_path / "var" / "mc.db"))
    code, out, _ = run(cfg, "jobs", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("d4e5f6  failed") and lines[1].startswith("a1b2c3  succeeded")
    assert "12.0s" in lines[1] and "alice" in lines[1]
    code, out, _ = run(cfg, "jobs", "list", "--status", "succeeded")
    assert code == 0 and out.count("\n") == 1 and "a1b2c3" in out
    code, out, _ = run(cfg, "jobs", "show", "a1b2c3")
    assert code == 0
    assert "parameters:   token=*** version=1.4.2" in out
    assert "requested by: alice (account alice) in #ops" in out
    assert "approvals:    bob at " in out
    assert "  | ok: done" in out
    code, _, err = run(cfg, "jobs", "show", "zzzzzz")
    assert code == 1 and "no job 'zzzzzz'" in err
