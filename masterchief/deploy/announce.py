"""Deploy announcements: the built-in binding that turns a job's news into
lines in its channels -- the road webhooks take (``outputs/announce.py``).

How this works.  The deploy domain says nothing itself: ``JobRuns`` emits a
``deploy.announce`` Event whose payload is a ``JobNews`` (an approval
request, a start, a result with a dry run's plan).  ``install`` binds
``DeployAnnouncer.handle`` to it under the owner ``builtin:deploy-announce``;
the handler makes the lines, tells them to the ``Teller`` (``telling.py``:
gathered, packed, in order, into the durable outbox) and returns once they
are in the outbox.  ``JobRuns`` starts a job's process, and fires
``deploy.started``/``deploy.finished``, only when that Event is done (the
dispatcher's ``on_done``), so nothing the bot or a script says about a job
overtakes its start or result line.  A script that binds
``deploy.announce`` and returns True replaces the built-in lines (the
dispatcher skips the built-ins of that stage); the job goes on all the same.

What goes where.  Every line goes to the news's ``targets`` (the job's
channel, ``deploy.channels``, else the requester; a console requester's
session too).  A dry run's plan follows its result: in those targets when
it is short (``plan_lines``), else to the requester privately (up to
``plan_private_lines``) with a pointer in the channels.  Every text passes
the redactor once more on the way out.

Progress ticks.  A tick is a ``deploy.announce`` Event too, its payload the
running jobs' ``Progress``: one line per job and target, or one combined
line per target when more than three jobs have news, said straight to the
transports (``say``: IRC's alert lane), not through the outbox -- they are
stale in a minute.  ``JobRuns`` sends none while a start or result is on
its way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..bindings.event import Event
from ..bindings.registry import BindingTable
from ..config.schema import DeployConfig
from ..config.secrets import REDACTOR
from ..outputs.targets import Target
from .job import PLAN_CHARS, JobNews, Progress, age
from .telling import Teller

__all__ = ["KEY", "OWNER", "DeployAnnouncer", "install"]

OWNER = "builtin:deploy-announce"
KEY = "deploy.announce"

Line = tuple[Target, str, bool]  # target, text, packable


def _same(a: Target, b: Target) -> bool:
    return a.transport == b.transport and a.name.casefold() == b.name.casefold()


class DeployAnnouncer:
    """Makes a job's lines and tells them in order (see the module doc)."""

    def __init__(
        self,
        announce: Callable[[Target, str], Awaitable[None]],
        say: Callable[[Target, str], object],
        config: Callable[[], DeployConfig],
        *,
        gather_s: float = 0.25,
    ) -> None:
        """``announce`` is the durable outbox's, ``say`` the transports'
        (progress ticks); ``config`` the running ``deploy`` section (rehash
        may change it)."""
        self.teller = Teller(announce, gather_s)
        self._say = say
        self._config = config
        self.progress_lines = 0

    async def handle(self, ev: Event) -> None:
        """The ``deploy.announce`` binding: done once the lines are in the outbox."""
        news = ev.payload
        if isinstance(news, tuple):
            self.progress([p for p in news if isinstance(p, Progress)])
            return
        if not isinstance(news, JobNews):
            return
        for target, text, packable in self.lines(news):
            self.teller.tell(target, text, packable=packable)
        told = asyncio.Event()
        self.teller.after(told.set)
        await told.wait()

    def lines(self, news: JobNews) -> list[Line]:
        """What ``news`` says, to whom, in order."""
        if news.what == "approval":
            need = f"{news.approvers} approval{'s' if news.approvers > 1 else ''}"
            text = (
                f"job {news.job} ({news.command}, by {news.requester}) needs {need} "
                f"from someone else with {news.approval_flags}: !approve {news.job} "
                f"(expires in {age(news.ttl_s)})"
            )
        elif news.what == "started":
            text = f"job {news.job} started: {news.command} by {news.requester}"
        else:
            text = self.result(news)
        text = REDACTOR.redact(text)
        out: list[Line] = [(target, text, True) for target in news.targets]
        if news.what == "finished" and news.plan_count:
            out += self._plan(news, text)
        return out

    def progress(self, items: list[Progress]) -> int:
        """Say a progress tick; the lines it became."""
        by_target: dict[Target, list[Progress]] = {}
        for item in items:
            for target in item.targets:
                by_target.setdefault(target, []).append(item)
        sent = 0
        for target, news in by_target.items():
            if len(news) <= 3:
                for p in news:
                    self._say(target, f"[{p.job} {p.where} {p.age}] {p.what}")
                    sent += 1
            else:
                parts = [f"{p.job} {p.where}: {p.what[:60]}" for p in news]
                self._say(target, f"{len(news)} jobs running — " + "; ".join(parts))
                sent += 1
        self.progress_lines += sent
        return sent

    @staticmethod
    def result(news: JobNews) -> str:
        """A job's last line: how it ended, and why."""
        text = f"job {news.job} {news.where} {news.mode} "
        if news.took is None:  # it never ran
            return text + (f"{news.status}: {news.reason}" if news.reason else news.status)
        text += news.summary if news.summary else f"{news.status} in {news.took:.1f}s"
        if news.reason and news.reason not in text:
            text += f" ({news.reason})"
        return text

    def _plan(self, news: JobNews, result: str) -> list[Line]:
        cfg = self._config()
        to = news.private
        channels = [t for t in news.targets if not (to and _same(to, t))]
        # told apart from the channels (a requester's own target is not one)
        private = to is not None and bool(channels)
        if news.plan_count <= cfg.plan_lines or not private or not cfg.plan_private_lines:
            shown = cfg.plan_private_lines if not private else cfg.plan_lines
            texts = self._plan_texts(news, shown)
            return [(target, text, False) for target in news.targets for text in texts]
        assert to is not None
        who = to.name if to.is_irc else news.requester
        pointer = f"[{news.job}] {news.plan_count} changes: the plan went to {who} privately"
        out: list[Line] = [(target, pointer, False) for target in channels]
        if to not in news.targets:  # a console requester was told the result already
            out.append((to, result, False))
        out += [(to, text, False) for text in self._plan_texts(news, cfg.plan_private_lines)]
        return out

    @staticmethod
    def _plan_texts(news: JobNews, shown: int) -> list[str]:
        job = news.job
        texts = [REDACTOR.redact(f"[{job}] {line}")[:PLAN_CHARS] for line in news.plan[:shown]]
        if news.plan_count > len(texts):
            more = news.plan_count - len(texts)
            texts.append(f"[{job}] ... {more} more (the job's last lines: !job {job})")
        return texts


def install(table: BindingTable, announcer: DeployAnnouncer) -> None:
    """Bind the announcer (replacing an earlier one) in one step."""
    table.install(OWNER, lambda: table.bind("event", "-|-", KEY, announcer.handle, owner=OWNER))
