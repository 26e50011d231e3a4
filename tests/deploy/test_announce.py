"""The built-in deploy announcer: a job's news as lines, to whom, in order."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from masterchief.bindings.dispatcher import Dispatcher
from masterchief.bindings.event import Event
from masterchief.bindings.registry import BindingTable
from masterchief.config.schema import DeployConfig
from masterchief.deploy.announce import KEY, OWNER, DeployAnnouncer, install
from masterchief.deploy.job import JobNews, Progress
from masterchief.outputs.targets import Target

OPS, DEPLOYS = Target.irc("#ops"), Target.irc("#deploys")
ALICE = Target.irc("alice")
SESSION = Target("test", "s1")
CONFIG = DeployConfig(work_dir=Path("jobs"), plan_lines=2, plan_private_lines=4)

NEWS = JobNews(
    what="started",
    job="abc123",
    where="svc/dev",
    mode="deploy",
    command="!deploy svc dev service=api token=***",
    requester="alice",
    targets=(OPS, DEPLOYS),
    private=ALICE,
    status="running",
)


async def nothing(_target: Target, _text: str) -> None:
    return None


def lines(news: JobNews) -> list[tuple[str, str, bool]]:
    return [
        (str(t), text, packable)
        for t, text, packable in DeployAnnouncer(nothing, print, lambda: CONFIG).lines(news)
    ]


@pytest.mark.parametrize(
    ("news", "text"),
    [
        (NEWS, "job abc123 started: !deploy svc dev service=api token=*** by alice"),
        (
            replace(NEWS, what="approval", status="awaiting_approval", approvers=2,
                    approval_flags="global +m or +m on #ops", ttl_s=300),
            "job abc123 (!deploy svc dev service=api token=***, by alice) needs 2 approvals "
            "from someone else with global +m or +m on #ops: !approve abc123 (expires in 5m)",
        ),
        (
            replace(NEWS, what="finished", status="succeeded", took=1.25),
            "job abc123 svc/dev deploy succeeded in 1.2s",
        ),
        (
            replace(NEWS, what="finished", status="failed", summary="failed: exit 3", took=2.0,
                    reason="cancelled by bob"),
            "job abc123 svc/dev deploy failed: exit 3 (cancelled by bob)",
        ),
        (
            replace(NEWS, what="finished", status="refused", reason="svc/dev is busy"),
            "job abc123 svc/dev deploy refused: svc/dev is busy",  # never ran
        ),
    ],
)  # fmt: skip
def test_each_kind_of_news_is_one_line_to_every_target(news: JobNews, text: str) -> None:
    assert lines(news) == [("irc:#ops", text, True), ("irc:#deploys", text, True)]


PLAN = replace(
    NEWS, what="finished", mode="plan", status="succeeded", took=1.0, summary="3 to change",
    plan=("+ a", "+ b", "+ c"), plan_count=3,
)  # fmt: skip


def test_a_short_plan_follows_the_result_in_the_channels() -> None:
    short = replace(PLAN, plan=("+ a",), plan_count=1)
    assert [(t, x) for t, x, _ in lines(short)][2:] == [
        ("irc:#ops", "[abc123] + a"),
        ("irc:#deploys", "[abc123] + a"),
    ]


def test_a_long_plan_goes_to_the_requester_and_a_pointer_to_the_channels() -> None:
    got = [(t, x) for t, x, _ in lines(PLAN)]
    assert got[2:] == [
        ("irc:#ops", "[abc123] 3 changes: the plan went to alice privately"),
        ("irc:#deploys", "[abc123] 3 changes: the plan went to alice privately"),
        ("irc:alice", "job abc123 svc/dev plan 3 to change"),
        ("irc:alice", "[abc123] + a"),
        ("irc:alice", "[abc123] + b"),
        ("irc:alice", "[abc123] + c"),
    ]


def test_a_console_requester_gets_the_long_plan_in_the_session_told_the_result_once() -> None:
    news = replace(PLAN, targets=(OPS, SESSION), private=SESSION)
    got = [(t, x) for t, x, _ in lines(news)]
    result = "job abc123 svc/dev plan 3 to change"
    assert got == [
        ("irc:#ops", result),
        ("test:s1", result),
        ("irc:#ops", "[abc123] 3 changes: the plan went to alice privately"),
        ("test:s1", "[abc123] + a"),
        ("test:s1", "[abc123] + b"),
        ("test:s1", "[abc123] + c"),
    ]


def test_secrets_are_redacted_on_the_way_out() -> None:
    from masterchief.config.secrets import REDACTOR

    REDACTOR.register("hunter2-secret-value")
    news = replace(
        NEWS, what="finished", status="failed", summary="bad hunter2-secret-value", took=1.0
    )
    assert all("hunter2" not in text for _, text, _ in lines(news))


async def test_the_binding_is_done_once_its_lines_are_announced() -> None:
    """What lets the job start its process only after its "started" line."""
    gate = asyncio.Event()
    announced: list[tuple[Target, str]] = []

    async def announce(target: Target, text: str) -> None:
        await gate.wait()  # a slow store
        announced.append((target, text))

    table = BindingTable()
    install(table, DeployAnnouncer(announce, print, lambda: CONFIG, gather_s=0.01))
    assert [b.owner for b in table.binds("event")] == [OWNER]
    dispatcher = Dispatcher(table, handler_timeout_s=30)
    task = asyncio.create_task(dispatcher.run())
    done = asyncio.Event()
    try:
        await dispatcher.put(Event(type="event", key=KEY, payload=NEWS), on_done=done.set)
        await asyncio.sleep(0.2)  # a negative check: time enough to finish, were it not held
        assert not done.is_set() and announced == []
        gate.set()
        await asyncio.wait_for(done.wait(), 15)
        assert [t for t, _ in announced] == [OPS, DEPLOYS]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_progress_tick_is_one_line_per_job_and_target_or_one_combined() -> None:
    said: list[tuple[Target, str]] = []
    announcer = DeployAnnouncer(nothing, lambda t, x: said.append((t, x)), lambda: CONFIG)
    few = [Progress(f"j{i}", "svc/dev", "3s", f"TASK [t{i}]", (OPS, DEPLOYS)) for i in range(2)]
    assert announcer.progress(few) == 4
    assert said[:2] == [(OPS, "[j0 svc/dev 3s] TASK [t0]"), (OPS, "[j1 svc/dev 3s] TASK [t1]")]
    said.clear()
    many = [Progress(f"j{i}", "svc/dev", "3s", "x" * 80, (OPS,)) for i in range(4)]
    assert announcer.progress([*many, few[0]]) == 2  # #ops combined, #deploys one line
    assert said[0][0] == OPS and said[0][1].startswith(
        "5 jobs running — j0 svc/dev: " + "x" * 60 + ";"
    )
    assert said[1] == (DEPLOYS, "[j0 svc/dev 3s] TASK [t0]")
    assert announcer.progress_lines == 6
