"""How the deploy announcer tells channels: gathered, packed, in order, then events.

How this works.  A job's starts, summaries, approval requests and plan
lines (made by ``announce.py`` from the job's ``deploy.announce`` Events)
go to the durable outbox (``announce``), but not one by one: they are
gathered for ``gather_s`` so that twenty jobs ending together make a few
lines, not twenty (at the server's one line a second the last summary would
wait 20 s).  Up to three updates for a target go as they are; more are
packed into lines of ``" | "``-joined updates.  Plan lines are never packed:
they are the plan, one line each.

Order.  Everything for a target is announced in the order it was told, by
one flush task at a time; lines told while a flush is announcing go out in
the same task's next round (never stranded until some later line).  A
callback given with ``after()`` runs once every line told before it is in
the outbox: the announcer's binding returns only then, and the job starts
its ``deploy.started`` event and its process (and so its progress lines and
output events), or fires ``deploy.finished``, only when that binding is
done, so nothing the bot or a script says about a job can overtake its
"started" line or its result on the way to IRC.  (Whether anything is still
on its way is ``JobRuns``' to know: it counts its announcements until their
Events are done, and that covers a script that replaces these lines.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..outputs.targets import Target

__all__ = ["Teller", "pack"]

log = logging.getLogger("masterchief.deploy")

PACK_AFTER = 3  # more job updates than this for one target are packed
PACK_LIMIT = 360  # characters per packed line: fits IRC's 512 bytes with the prefix


def pack(texts: list[str], head: str, limit: int = PACK_LIMIT) -> list[str]:
    """Join ``texts`` with `` | `` into as few lines of at most ``limit``
    characters as possible, never cutting one (a longer one stands alone)."""
    lines: list[str] = []
    current = head
    for text in texts:
        if current not in (head, "") and len(current) + 3 + len(text) > limit:
            lines.append(current)
            current = ""
        current += (" | " if current not in (head, "") else "") + text
    lines.append(current)
    return lines


def _packed(entries: list[tuple[str, bool]]) -> list[str]:
    """A target's gathered lines as sent: with more than ``PACK_AFTER``
    packable ones, each run of consecutive packable lines is packed."""
    if sum(packable for _, packable in entries) <= PACK_AFTER:
        return [text for text, _ in entries]
    out: list[str] = []
    run: list[str] = []
    for text, packable in [*entries, ("", False)]:  # a sentinel ends the last run
        if packable:
            run.append(text)
            continue
        if len(run) > 1:
            out += pack(run, f"{len(run)} job updates: ")
        else:
            out += run
        run = []
        if text:
            out.append(text)
    return out


class Teller:
    """Gathers lines per target and announces them in order (see the module doc)."""

    def __init__(
        self, announce: Callable[[Target, str], Awaitable[None]], gather_s: float = 0.25
    ) -> None:
        self._announce = announce
        self.gather_s = gather_s
        self._gathered: dict[Target, list[tuple[str, bool]]] = {}
        self._after: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    def tell(self, target: Target, text: str, *, packable: bool = True) -> None:
        """Queue ``text`` (already redacted) for ``target``."""
        self._gathered.setdefault(target, []).append((text, packable))
        self._kick()

    def after(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every line told so far is in the outbox."""
        self._after.append(callback)
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(self.gather_s)
        # No await between this test and returning: a line told after it
        # finds the task done and starts a new one.
        while self._gathered or self._after:
            gathered, self._gathered = self._gathered, {}
            after, self._after = self._after, []
            for target, entries in gathered.items():
                for text in _packed(entries):
                    try:
                        await self._announce(target, text)
                    except Exception:
                        log.exception("could not announce to %s: %s", target, text[:80])
            for callback in after:
                try:
                    callback()
                except Exception:
                    log.exception("a deploy callback failed")
