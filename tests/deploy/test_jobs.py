"""JobManager without IRC: progress ticker, expiry, recovery, requires, lease.

A job's news goes the road it takes in the bot: ``deploy.announce`` Events
through a real dispatcher to the built-in ``DeployAnnouncer``, whose lines
reach a stand-in for the outbox (``Rig.announced``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import DeployConfig
from masterchief.config.secrets import REDACTOR, Secret
from masterchief.deploy.announce import DeployAnnouncer, install
from masterchief.deploy.catalog import ModuleLoader
from masterchief.deploy.job import Job, Person
from masterchief.deploy.jobs import JobManager
from masterchief.deploy.runners import OutputLine
from masterchief.errors import UserError
from masterchief.outputs.targets import Target
from masterchief.store.api import JobRecord
from masterchief.store.sqlite import SqliteStore, open_store
from tests.harness import wait_until

MANIFEST = """\
name: {name}
version: 1.0.0
kind: script
entry: run.sh
environments: [dev, prod]
flags: "o|o"
requires: {requires}
approval: {{prod: {{approvers: 2, flags: "m|m", ttl_s: 60}}}}
script: {{changes_bot_host: false}}  # a test script: approved jobs re-check the bot-host rule
parameters:
  service: {{type: string, pattern: '^[a-z0-9-]+$', required: true}}
  token: {{type: string, secret: true}}
"""


@contextlib.asynccontextmanager
async def announcing(
    announce: Callable[[Target, str], Awaitable[None]],
    say: Callable[[Target, str], object],
    config: DeployConfig,
) -> AsyncIterator[tuple[Dispatcher, DeployAnnouncer]]:
    """A dispatcher with the built-in deploy announcer bound, running."""
    table = BindingTable()
    announcer = DeployAnnouncer(announce, say, lambda: config)
    install(table, announcer)
    dispatcher = Dispatcher(table, handler_timeout_s=30)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher, announcer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Rig:
    def __init__(self, jobs: JobManager, store: SqliteStore, announcer: DeployAnnouncer) -> None:
        self.jobs = jobs
        self.store = store
        self.announcer = announcer
        self.announced: list[tuple[str, str]] = []
        self.said: list[tuple[str, str]] = []
        self.events: list[Event] = []
        self.gate = asyncio.Event()  # announcements wait for it (a slow store, a busy outbox)
        self.gate.set()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    for name, requires in (("base", "[]"), ("app", "[base]")):
        d = tmp_path / "modules" / name
        d.mkdir(parents=True)
        (d / "module.yaml").write_text(MANIFEST.format(name=name, requires=requires))
        (d / "run.sh").write_text('#!/bin/sh\necho "hello $MC_PARAM_SERVICE"\n')
        (d / "run.sh").chmod(0o755)
    loader = ModuleLoader([tmp_path / "modules"])
    assert not loader.reload().errors
    store = await open_store(tmp_path / "s.db")
    config = DeployConfig(work_dir=tmp_path / "jobs", channels=("#deploys",), kill_grace_s=1)
    holder: list[Rig] = []

    async def announce(target: Target, text: str) -> None:
        await holder[0].gate.wait()
        holder[0].announced.append((target.name, text))

    def say(target: Target, text: str) -> None:
        holder[0].said.append((target.name, text))

    def submit(*chain: Event, on_done: Callable[[], None] | None = None) -> bool:
        # the deploy.* events, seen here; progress ticks on to the announcer
        holder[0].events.extend(ev for ev in chain if ev.key != "deploy.announce")
        return dispatcher.submit(*chain, on_done=on_done)

    async with announcing(announce, say, config) as (dispatcher, announcer):
        jobs = JobManager(config, store, loader, put=dispatcher.put, submit=submit)
        holder.append(Rig(jobs, store, announcer))
        try:
            yield holder[0]
        finally:
            await jobs.shutdown()  # while the dispatcher runs: results are announced
            await store.close()


ALICE = Person("alice", "alice", "alice")
BOB = Person("bob", "bob", "bob")
CAROL = Person("carol", "carol", None)


def anyone(_mask: object, _chan: object) -> bool:
    return True


async def finished(job: Job) -> None:
    async with asyncio.timeout(15):
        while job.status in ("running", "starting", "awaiting_approval"):
            await asyncio.sleep(0.01)


async def told(rig: Rig, fragment: str) -> str:
    """Announcements are gathered for a moment: wait for one."""
    async with asyncio.timeout(5):
        while True:
            for _, text in rig.announced:
                if fragment in text:
                    return text
            await asyncio.sleep(0.01)


async def test_a_run_announces_start_and_summary_and_records_events(rig: Rig) -> None:
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "dev", "deploy", {"service": "api"}, ALICE, "#ops")
    await finished(job)
    assert job.status == "succeeded"
    await told(rig, f"job {job.id} base/dev deploy succeeded")
    targets = {t for t, _ in rig.announced}
    assert targets == {"#ops", "#deploys"}
    texts = [t for _, t in rig.announced]
    assert any(t.startswith(f"job {job.id} started: !deploy base dev service=api") for t in texts)
    assert any(t.startswith(f"job {job.id} base/dev deploy succeeded") for t in texts)
    # the deploy.finished event follows once the result line is in the outbox
    await wait_until(lambda: any(e.key == "deploy.finished" for e in rig.events), 15)
    keys = [e.key for e in rig.events]
    assert keys[:2] == ["deploy.requested", "deploy.started"] and keys[-1] == "deploy.finished"
    assert "deploy.progress" in keys
    row = await rig.store.job_get(job.id)
    assert row is not None and "hello api" in row.tail


async def test_secret_parameters_are_shown_and_stored_as_stars(rig: Rig) -> None:
    module = rig.jobs.module("base")
    job = await rig.jobs.request(
        module, "dev", "deploy", {"service": "api", "token": "param-secret-1234"}, ALICE, None
    )
    assert isinstance(job.params["token"], Secret)
    assert "token=***" in job.command
    await finished(job)
    row = await rig.store.job_get(job.id)
    assert row is not None and row.params["token"] == "***"
    assert "param-secret-1234" not in repr(row) + repr(rig.announced)
    # registered process-wide: the command's text in the event log and logs is masked
    assert REDACTOR.redact("deploy base dev token=param-secret-1234") == "deploy base dev token=***"


async def test_requires_must_have_succeeded_in_that_environment(rig: Rig) -> None:
    app = rig.jobs.module("app")
    with pytest.raises(UserError, match="app requires base deployed to dev first"):
        await rig.jobs.request(app, "dev", "deploy", {"service": "x"}, ALICE, "#ops")
    plan = await rig.jobs.request(app, "dev", "plan", {"service": "x"}, ALICE, "#ops")
    await finished(plan)  # a plan checks nothing
    base = await rig.jobs.request(
        rig.jobs.module("base"), "dev", "deploy", {"service": "x"}, ALICE, "#ops"
    )
    await finished(base)
    job = await rig.jobs.request(app, "dev", "deploy", {"service": "x"}, ALICE, "#ops")
    await finished(job)
    assert job.status == "succeeded"


async def test_two_approvers_needed_distinct_people(rig: Rig) -> None:
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "prod", "deploy", {"service": "api"}, ALICE, "#ops")
    assert job.status == "awaiting_approval"
    await told(rig, f"job {job.id} (!deploy base prod service=api, by alice) needs 2 approvals")
    with pytest.raises(UserError, match="someone else must approve"):
        await rig.jobs.approve(job.id, Person("ALICE", "other-nick", None), anyone)
    with pytest.raises(UserError, match="someone else must approve"):  # same account, other handle
        await rig.jobs.approve(job.id, Person("alice2", "a2", "Alice"), anyone)
    assert "1 more needed" in await rig.jobs.approve(job.id, BOB, anyone)
    with pytest.raises(UserError, match="already approved"):
        await rig.jobs.approve(job.id, BOB, anyone)
    await rig.jobs.approve(job.id, CAROL, anyone)
    await finished(job)
    assert job.status == "succeeded"
    row = await rig.store.job_get(job.id)
    assert row is not None and [a.handle for a in row.approvals] == ["bob", "carol"]


DAVE = Person("dave", "dave", "dave")


async def test_approvals_sent_at_the_same_moment_start_the_job_once(rig: Rig) -> None:
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "prod", "deploy", {"service": "api"}, ALICE, "#ops")
    # the same person double-sends: counted once
    got = await asyncio.gather(
        rig.jobs.approve(job.id, BOB, anyone),
        rig.jobs.approve(job.id, BOB, anyone),
        return_exceptions=True,
    )
    assert sum(isinstance(g, UserError) and "already approved" in str(g) for g in got) == 1
    assert [p.handle for p, _ in job.approvals] == ["bob"]
    # two people give the last approval at once: one starts it, the other is told
    got = await asyncio.gather(
        rig.jobs.approve(job.id, CAROL, anyone),
        rig.jobs.approve(job.id, DAVE, anyone),
        return_exceptions=True,
    )
    refused = [g for g in got if isinstance(g, UserError)]
    assert len(refused) == 1 and "not waiting for approval" in str(refused[0])
    await finished(job)
    assert job.status == "succeeded" and rig.jobs.runs.stats["started"] == 1
    assert len(job.approvals) == 2


async def test_an_approval_racing_a_cancel_never_runs(rig: Rig) -> None:
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "prod", "deploy", {"service": "api"}, ALICE, "#ops")
    await rig.jobs.approve(job.id, BOB, anyone)
    got = await asyncio.gather(
        rig.jobs.approve(job.id, CAROL, anyone),
        rig.jobs.cancel(job.id, ALICE, anyone),
        return_exceptions=True,
    )
    assert isinstance(got[0], UserError) and "(cancelled)" in str(got[0])
    assert got[1] == f"job {job.id} cancelled"
    assert job.status == "cancelled" and job.started_at is None
    assert rig.jobs.runs.stats["started"] == 0


async def test_the_same_request_twice_waits_once(rig: Rig) -> None:
    module = rig.jobs.module("base")
    first = await rig.jobs.request(module, "prod", "deploy", {"service": "api"}, ALICE, "#ops")
    with pytest.raises(UserError, match=f"job {first.id} .* is already waiting for approval"):
        await rig.jobs.request(module, "prod", "deploy", {"service": "api"}, ALICE, "#ops")
    other = await rig.jobs.request(module, "prod", "deploy", {"service": "web"}, ALICE, "#ops")
    assert other.id != first.id  # different parameters: a different job
    for job in (first, other):
        await rig.jobs.cancel(job.id, ALICE, anyone)


async def test_a_deny_reason_loses_control_and_format_characters(rig: Rig) -> None:
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "prod", "deploy", {"service": "api"}, ALICE, "#ops")
    hostile = "\x02\x0304,01ALL CLEAR\x0f \u202eesrever\u200b \x01ACTION x\x01"
    said = await rig.jobs.deny(job.id, BOB, anyone, hostile)
    for bad in ("\x02", "\x03", "\x0f", "\x01", "\u202e", "\u200b"):
        assert bad not in said and bad not in (job.reason or "") and bad not in job.summary
    assert "ALL CLEAR" in said and "esrever" in said


async def test_expiry_denial_and_cancel_of_waiting_jobs(rig: Rig) -> None:
    module = rig.jobs.module("base")
    a = await rig.jobs.request(module, "prod", "deploy", {"service": "a"}, ALICE, "#ops")
    b = await rig.jobs.request(module, "prod", "deploy", {"service": "b"}, ALICE, "#ops")
    c = await rig.jobs.request(module, "prod", "deploy", {"service": "c"}, ALICE, "#ops")
    await rig.jobs.expire(now=time.time() + 61)
    assert {a.status, b.status, c.status} == {"expired"}
    d = await rig.jobs.request(module, "prod", "deploy", {"service": "d"}, ALICE, "#ops")
    assert "denied by bob: not today" in await rig.jobs.deny(d.id, BOB, anyone, "not today")
    e = await rig.jobs.request(module, "prod", "deploy", {"service": "e"}, ALICE, "#ops")
    with pytest.raises(UserError, match="you need"):
        await rig.jobs.cancel(e.id, BOB, lambda m, c: False)
    assert await rig.jobs.cancel(e.id, ALICE, lambda m, c: False) == f"job {e.id} cancelled"
    assert (d.status, e.status) == ("denied", "cancelled")


async def test_progress_tick_is_bounded_per_channel(rig: Rig) -> None:
    module = rig.jobs.module("base")
    made: list[Job] = []
    for i in range(5):
        job = Job(
            id=f"00000{i}", module="base", module_version="1", env=f"e{i}", mode="deploy",
            params={}, shown={}, digest="", requester=ALICE, channel="#ops", rule=None,
            created_at=time.time(), status="running", started_at=time.time(),
        )  # fmt: skip
        rig.jobs.jobs[job.id] = job
        made.append(job)
    del module
    for job in made[:2]:
        rig.jobs.runs.output(job, OutputLine(text="TASK [install]", kind="task"))
        rig.jobs.runs.output(job, OutputLine(text="ok: host1"))
    assert rig.jobs.runs.progress_tick() == 2  # 2 jobs with news
    await wait_until(lambda: len(rig.said) == 4, 15)  # 2 jobs x (#ops, #deploys)
    assert all("TASK [install] | ok: host1" in text for _, text in rig.said)
    assert rig.jobs.runs.progress_tick() == 0  # nothing new
    rig.said.clear()
    for job in made:
        for n in range(1000):
            rig.jobs.runs.output(job, OutputLine(text=f"line {n}"))
    assert rig.jobs.runs.progress_tick() == 5
    await wait_until(lambda: len(rig.said) == 2, 15)  # 5 jobs: one combined line per channel
    assert rig.announcer.progress_lines == 6
    assert rig.said[0][1].startswith("5 jobs running — ")
    assert "line 999" in rig.said[0][1]
    for job in made:
        job.status = "succeeded"


async def test_progress_tick_names_the_boundaries_passed_since_the_last(rig: Rig) -> None:
    job = Job(
        id="000010", module="base", module_version="1", env="dev", mode="deploy",
        params={}, shown={}, digest="", requester=ALICE, channel="#ops", rule=None,
        created_at=time.time(), status="running", started_at=time.time(),
    )  # fmt: skip
    rig.jobs.jobs[job.id] = job
    try:
        for n in range(6):
            rig.jobs.runs.output(job, OutputLine(text=f"TASK [t{n}]", kind="task"))
            rig.jobs.runs.output(job, OutputLine(text=f"ok: t{n}"))
        assert rig.jobs.runs.progress_tick() == 1
        await wait_until(lambda: len(rig.said) == 2, 15)  # #ops and #deploys
        text = rig.said[0][1]
        # six boundaries in one interval: the last four by name, two more counted
        assert "(+2) TASK [t2] > TASK [t3] > TASK [t4] > TASK [t5] | ok: t5" in text
        assert "TASK [t1]" not in text
        rig.said.clear()
        rig.jobs.runs.output(job, OutputLine(text="still in t5"))
        assert rig.jobs.runs.progress_tick() == 1
        await wait_until(lambda: len(rig.said) == 2, 15)
        # no boundary since: the task it is in, then the newest line
        assert rig.said[0][1].endswith("TASK [t5] | still in t5")
    finally:
        job.status = "succeeded"


async def test_recover_marks_stale_jobs_interrupted_and_frees_leases(rig: Rig) -> None:
    await rig.store.job_insert(
        JobRecord(
            id="dead01",
            module="base",
            module_version="1",
            env="dev",
            mode="deploy",
            digest="",
            requester="alice",
            status="running",
            created_at=time.time(),
        )
    )
    await rig.store.lease_acquire("deploy:base/dev", holder="dead01", info="old", ttl_s=600)
    assert await rig.jobs.recover() == 1
    row = await rig.store.job_get("dead01")
    assert row is not None and row.status == "interrupted"
    assert await rig.store.leases() == []


async def test_many_updates_at_once_are_gathered_into_one_announcement(rig: Rig) -> None:
    module = rig.jobs.module("base")
    jobs = [
        await rig.jobs.request(module, "prod", "deploy", {"service": f"s{i}"}, ALICE, "#ops")
        for i in range(5)
    ]
    await told(rig, "5 job updates: ")
    await rig.jobs.shutdown()  # waits for the gathered lines to be announced
    lines = [text for target, text in rig.announced if target == "#ops"]
    assert len(lines) in (2, 3, 4)  # packed: fewer lines than jobs, none cut
    for j in jobs:
        assert sum(f"job {j.id} (!deploy base prod service=" in t for t in lines) == 1
    assert all(len(t) <= 360 for t in lines)


async def test_an_approval_after_the_ttl_is_refused_before_the_ticker_runs(rig: Rig) -> None:
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "prod", "deploy", {"service": "api"}, ALICE, "#ops")
    await rig.jobs.approve(job.id, BOB, anyone)
    assert job.expires_at is not None
    job.expires_at = time.time() - 0.001  # the TTL just passed; no expire() ran
    with pytest.raises(UserError, match=f"job {job.id} expired at .*request it again"):
        await rig.jobs.approve(job.id, CAROL, anyone)
    assert job.status == "expired" and job.started_at is None
    assert rig.jobs.runs.stats["started"] == 0
    await told(rig, f"job {job.id} base/prod deploy expired: no approval in time")
    with pytest.raises(UserError, match=r"not waiting for approval \(expired\)"):
        await rig.jobs.deny(job.id, CAROL, anyone, "late")


async def test_a_requester_gone_from_irc_cancels_their_waiting_jobs_once(rig: Rig) -> None:
    module = rig.jobs.module("base")
    mine = await rig.jobs.request(module, "prod", "deploy", {"service": "a"}, ALICE, "#ops")
    theirs = await rig.jobs.request(module, "prod", "deploy", {"service": "b"}, BOB, "#ops")

    def same(a: str, b: str) -> bool:
        return a.lower() == b.lower()

    rig.jobs.requester_gone("ALICE", "the requester quit IRC", same)
    rig.jobs.requester_gone("alice", "the requester quit IRC", same)  # seen on a 2nd channel
    assert mine.status == "cancelled" and theirs.status == "awaiting_approval"
    await told(rig, f"job {mine.id} base/prod deploy cancelled: the requester quit IRC")
    await rig.jobs.shutdown()
    ops = [t for target, t in rig.announced if target == "#ops" and f"job {mine.id} base" in t]
    assert len(ops) == 1
    rig.jobs.connection_lost()
    assert theirs.status == "cancelled"
    await told(rig, f"job {theirs.id} base/prod deploy cancelled: the bot lost its IRC")


async def test_nothing_about_a_job_overtakes_its_started_line(rig: Rig) -> None:
    """The outbox is slow to take the "started" line: the job's process, its
    deploy.started event and its progress lines (straight to the pacer) wait."""
    rig.gate.clear()
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "dev", "deploy", {"service": "api"}, ALICE, "#ops")
    assert job.status == "running"
    await asyncio.sleep(0.5)  # a negative check: time enough to run and print, were it started
    assert rig.jobs.runs.progress_tick() == 0 and rig.said == []
    assert [e.key for e in rig.events] == ["deploy.requested"]
    assert list(job.tail) == []  # the process has not started
    rig.gate.set()
    await finished(job)
    await told(rig, f"job {job.id} base/dev deploy succeeded")
    await rig.jobs.shutdown()
    ops = [t for target, t in rig.announced if target == "#ops"]
    assert ops[0].startswith(f"job {job.id} started") and "succeeded" in ops[-1]
    # the deploy.finished event follows once the result line is in the outbox
    await wait_until(lambda: any(e.key == "deploy.finished" for e in rig.events), 15)
    keys = [e.key for e in rig.events]
    assert keys[:2] == ["deploy.requested", "deploy.started"] and keys[-1] == "deploy.finished"


async def test_a_line_told_while_a_flush_is_announcing_is_not_stranded(rig: Rig) -> None:
    module = rig.jobs.module("base")
    first = await rig.jobs.request(module, "prod", "deploy", {"service": "a"}, ALICE, "#ops")
    await told(rig, f"job {first.id} (!deploy base prod service=a")
    rig.gate.clear()  # the next flush hangs in the middle of announcing
    second = await rig.jobs.request(module, "prod", "deploy", {"service": "b"}, ALICE, "#ops")
    teller = rig.announcer.teller
    # the flush took the line and waits on the gate
    await wait_until(
        lambda: not teller._gathered and teller._task is not None and not teller._task.done(), 15
    )
    third = await rig.jobs.request(module, "prod", "deploy", {"service": "c"}, ALICE, "#ops")
    rig.gate.set()
    await told(rig, f"job {second.id} (!deploy base prod service=b")
    await told(rig, f"job {third.id} (!deploy base prod service=c")  # no later line needed
    for job in (first, second, third):
        await rig.jobs.cancel(job.id, ALICE, anyone)


async def test_an_untrusted_match_of_the_requesters_record_is_not_the_requester(rig: Rig) -> None:
    # A stranger whose ident matches alice's weak hostmask resolves to alice's
    # record without privileges: he may not cancel or deny her job as "alice".
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "prod", "deploy", {"service": "a"}, ALICE, "#ops")
    stranger = Person("alice", "mallory", None, trusted=False)
    assert not stranger.same_as(ALICE)
    with pytest.raises(UserError, match="you need"):
        await rig.jobs.cancel(job.id, stranger, lambda m, c: False)
    with pytest.raises(UserError, match="you need"):
        await rig.jobs.deny(job.id, stranger, lambda m, c: False, "no")
    assert job.status == "awaiting_approval"
    assert await rig.jobs.cancel(job.id, ALICE, lambda m, c: False) == f"job {job.id} cancelled"


async def test_an_approved_job_rechecks_the_bot_host_rule_before_it_starts(
    tmp_path: Path,
) -> None:
    """A script changes the bot's host: the module config (for the job's
    environment) is read again once approved; ``allow_bot_host`` removed
    meanwhile closes the job as refused and runs nothing."""
    d = tmp_path / "modules" / "local"
    d.mkdir(parents=True)
    manifest = MANIFEST.format(name="local", requires="[]").replace(
        "script: {changes_bot_host: false}", ""
    )
    assert "changes_bot_host" not in manifest.split("#")[0]
    (d / "module.yaml").write_text(manifest)
    marker = tmp_path / "ran"
    (d / "run.sh").write_text(f'#!/bin/sh\ntouch "{marker}.$MC_JOB_ID"\n')
    (d / "run.sh").chmod(0o755)
    loader = ModuleLoader([tmp_path / "modules"])
    assert not loader.reload().errors
    store = await open_store(tmp_path / "s.db")
    settings: dict[str, object] = {"allow_bot_host": True}
    asked: list[tuple[str, str]] = []

    def module_config(name: str, env: str) -> dict[str, object]:
        asked.append((name, env))
        return dict(settings)

    announced: list[str] = []

    async def announce(_target: Target, text: str) -> None:
        announced.append(text)

    config = DeployConfig(work_dir=tmp_path / "jobs", channels=("#deploys",), kill_grace_s=1)
    stack = contextlib.AsyncExitStack()
    dispatcher, _ = await stack.enter_async_context(
        announcing(announce, lambda target, text: None, config)
    )
    jobs = JobManager(
        config,
        store,
        loader,
        put=dispatcher.put,
        submit=lambda *chain, on_done=None: True,
        module_config=module_config,
        project_dir=tmp_path,
    )
    try:
        module = jobs.module("local")
        for allowed, owner, status in ((True, True, "succeeded"), (False, True, "refused"),
                                       (True, False, "refused")):  # fmt: skip
            settings.clear()
            asked.clear()
            job = await jobs.request(
                module, "prod", "deploy", {"service": "api"}, ALICE, "#ops", owner=owner
            )
            assert job.status == "awaiting_approval" and asked == []
            if allowed:
                settings["allow_bot_host"] = True
            await jobs.approve(job.id, BOB, anyone)
            await jobs.approve(job.id, CAROL, anyone)
            await finished(job)
            assert job.status == status, (job.status, job.reason)
            assert asked[0] == ("local", "prod")  # the job's environment's config
            assert Path(f"{marker}.{job.id}").exists() == (status == "succeeded")
            if status == "refused":
                assert job.started_at is None
                assert job.reason is not None
                assert job.reason.startswith("re-checked before starting: local prod would run")
                why = "only a global owner (+n)" if allowed else "needs allow_bot_host: true"
                assert why in job.reason, job.reason
                async with asyncio.timeout(5):
                    while not any(
                        f"job {job.id} local/prod deploy refused" in t for t in announced
                    ):
                        await asyncio.sleep(0.01)
    finally:
        await jobs.shutdown()
        await stack.aclose()
        await store.close()


async def test_a_console_requester_is_told_in_their_session_too(rig: Rig) -> None:
    """Someone who asked from a console cannot see the channels: the job's
    lines go to the channels and to their session."""
    session = Target("test", "s1")
    dora = Person("dora", console=session)
    assert dora.private_target == session and ALICE.private_target == Target.irc("alice")
    module = rig.jobs.module("base")
    job = await rig.jobs.request(module, "dev", "deploy", {"service": "api"}, dora, None)
    assert rig.jobs.runs.targets(job) == [Target.irc("#deploys"), session]
    await finished(job)
    await told(rig, f"job {job.id} base/dev deploy succeeded")
    await rig.jobs.shutdown()
    told_there = [text for target, text in rig.announced if target == "s1"]
    assert told_there[0].startswith(f"job {job.id} started") and "succeeded" in told_there[-1]
