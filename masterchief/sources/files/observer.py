"""The watchdog side of watched folders, imported only when a folder is watched.

``Handler`` runs on watchdog's observer thread and only marshals paths into
the event loop (``FileWatcher.notice``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Protocol

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

__all__ = ["Handler", "Observer"]

# watchdog's inotify backend registers a new subdirectory twice when it is
# created right under another new one (the parent's walk and the child's own
# IN_CREATE both add it) and warns that it overwrites the identical callback.
# The watch is correct either way; the warning is noise in the log and, under
# ``-W error``, kills the observer thread.
WATCHDOG_DOUBLE_WATCH = r"Callback with id '\d+' already exists for watch"
warnings.filterwarnings("ignore", message=WATCHDOG_DOUBLE_WATCH, category=RuntimeWarning)


class Owner(Protocol):
    """The watcher, as its observer thread's handler sees it."""

    def notice(self, watch: Any, path: Path, closed: bool = False) -> None: ...


class Handler(FileSystemEventHandler):
    """Runs on the observer thread: only marshals paths into the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: Owner, watch: Any):
        self._loop = loop
        self._owner = owner
        self._watch = watch

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Our own reads (opened, closed_no_write) and deletions say nothing new.
        if event.event_type not in ("created", "modified", "moved", "closed"):
            return
        if event.is_directory and event.event_type not in ("created", "moved"):
            return
        closed = isinstance(event, FileClosedEvent)
        paths = [event.src_path]
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            paths = [event.dest_path]
        for p in paths:
            path = Path(os.fsdecode(p))
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._owner.notice, self._watch, path, closed)
