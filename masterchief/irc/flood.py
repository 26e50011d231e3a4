"""Flood limits, sans-I/O: per-user command floods and a bot-wide reply budget.

How this works
--------------
Both are sliding windows over timestamps the caller passes in (no clock, no
I/O here; ``irc.py`` is the adapter).

``FloodGate`` is Eggdrop's ``flood-msg``/``flood-pub`` for commands: more
than ``commands`` commands from one *key* within ``per_s`` seconds and that
key is ignored for ``ignore_s`` seconds.  ``hit()`` answers

- ``OK``: run the command;
- ``WARN``: this command tipped the key over: drop it and tell the user,
  once, that they are ignored (``notice_text()``);
- ``IGNORED``: drop it silently (the key is being ignored).

The key is the user's services account when known, else ``user@host``
(lower-cased): never the nick, so changing nick does not reset the count.
Memory is bounded: at most ``max_keys`` keys are tracked; when full, keys
with nothing in their window and no ignore running are forgotten first,
then the least recently active key that is not being ignored.

``Window`` is one sliding window without a key: ``allow(now)`` is true at
most ``limit`` times within any ``per_s`` seconds.  The bot answers CTCP
requests through one of these for the whole bot (Eggdrop answers at most 3
CTCPs a minute), so a CTCP flood from many clients costs at most that many
lines.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["FloodGate", "FloodPolicy", "Verdict", "Window"]


class Verdict(enum.Enum):
    """What to do with a command (see ``FloodGate.hit``)."""

    OK = "ok"
    WARN = "warn"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class FloodPolicy:
    """More than ``commands`` within ``per_s`` seconds: ignored for ``ignore_s``."""

    commands: int = 5
    per_s: float = 10.0
    ignore_s: float = 60.0

    def __post_init__(self) -> None:
        if self.commands < 1:
            raise ValueError(f"flood commands must be at least 1, got {self.commands}")
        if not self.per_s > 0:
            raise ValueError(f"flood per_s must be positive, got {self.per_s}")
        if self.ignore_s < 0:
            raise ValueError(f"flood ignore_s must not be negative, got {self.ignore_s}")

    def notice_text(self) -> str:
        """The one line an ignored user is told."""
        return f"you are being ignored for {self.ignore_s:g} s: too many commands"


class Window:
    """At most ``limit`` events within any ``per_s`` seconds."""

    __slots__ = ("_limit", "_per_s", "_times")

    def __init__(self, limit: int, per_s: float) -> None:
        if limit < 0:
            raise ValueError(f"window limit must not be negative, got {limit}")
        if not per_s > 0:
            raise ValueError(f"window per_s must be positive, got {per_s}")
        self._limit = limit
        self._per_s = per_s
        self._times: deque[float] = deque()

    @property
    def limits(self) -> tuple[int, float]:
        """``(limit, per_s)``: a rehash keeps a window whose limits did not change."""
        return self._limit, self._per_s

    def _expire(self, now: float) -> None:
        times = self._times
        while times and now - times[0] >= self._per_s:
            times.popleft()

    def count(self, now: float) -> int:
        """Events inside the window ending at *now*."""
        self._expire(now)
        return len(self._times)

    def allow(self, now: float) -> bool:
        """Record an event at *now* if the window has room; whether it had."""
        self._expire(now)
        if len(self._times) >= self._limit:
            return False
        self._times.append(now)
        return True

    def record(self, now: float) -> int:
        """Record an event at *now* whatever the count; the count after it."""
        self._expire(now)
        self._times.append(now)
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()


@dataclass(slots=True)
class _Track:
    window: Window
    ignored_until: float = float("-inf")
    last: float = float("-inf")


class FloodGate:
    """Per-key command flood limits; see the module doc."""

    def __init__(self, policy: FloodPolicy, *, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.policy = policy
        self._max_keys = max_keys
        self._tracks: OrderedDict[str, _Track] = OrderedDict()
        self.stats: dict[str, int] = {"ok": 0, "warned": 0, "ignored": 0}

    def ignored(self, key: str, now: float) -> bool:
        """Whether *key* is being ignored at *now* (nothing is recorded)."""
        track = self._tracks.get(key)
        return track is not None and now < track.ignored_until

    def hit(self, key: str, now: float) -> Verdict:
        """Count one command from *key* at *now*; what to do with it."""
        track = self._tracks.get(key)
        if track is None:
            self._make_room(now)
            track = self._tracks[key] = _Track(Window(self.policy.commands, self.policy.per_s))
        self._tracks.move_to_end(key)
        track.last = now
        if now < track.ignored_until:
            self.stats["ignored"] += 1
            return Verdict.IGNORED
        if track.window.record(now) > self.policy.commands:
            track.window.clear()
            track.ignored_until = now + self.policy.ignore_s
            self.stats["warned"] += 1
            return Verdict.WARN
        self.stats["ok"] += 1
        return Verdict.OK

    def __len__(self) -> int:
        return len(self._tracks)

    def _make_room(self, now: float) -> None:
        if len(self._tracks) < self._max_keys:
            return
        idle = [
            k
            for k, t in self._tracks.items()
            if now >= t.ignored_until and now - t.last >= self.policy.per_s
        ]
        for k in idle:
            del self._tracks[k]
        if len(self._tracks) < self._max_keys:
            return
        # Still full: forget the least recently active key that is not being
        # ignored (an ignore is the point of all this), else the oldest.
        victim = next((k for k, t in self._tracks.items() if now >= t.ignored_until), None)
        if victim is None:
            victim = next(iter(self._tracks))
        del self._tracks[victim]
