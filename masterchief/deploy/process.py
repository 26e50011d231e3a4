"""Run one tool process in its own process group; stream its lines; kill it whole.

How this works.  ``run_process`` starts the launcher (``reaper.py``, a child
subreaper) with ``asyncio.create_subprocess_exec`` (never a shell) and
``start_new_session``, so the launcher leads a new session and process group
whose id is its pid; the launcher spawns the argv in that group and tells us
on a status pipe when it started (or why it could not) and when it exited.
Every process of the run is a descendant of the launcher for as long as the
launcher lives -- an orphan is re-parented to it, not to PID 1 -- however it
left the group or changed its environment.  stdout and stderr are one
pipe; a pump task reads it in chunks and a ``LineSplitter`` (pure, below)
turns the bytes into lines of at most ``max_line_bytes``: a longer line is
cut there and flagged, and the rest of it up to the newline is discarded as
it arrives, so memory stays bounded whatever the tool prints.  Lines are
decoded as UTF-8 with replacement.

When the tool exits and the launcher has no other child left, it says so
(``exit CODE alone``) and the run is over: no process of it can be left, so
nothing is swept.  Otherwise stopping (timeout or ``cancel``) and cleaning
up (after the tool exited) are the same sweep, ``terminate``: it finds the
processes that belong to the run -- the launcher's descendants (read from
``/proc``), members of the process group, and any process whose environment
carries the run's ``marker`` entry (``MASTERCHIEF_JOB=<id>``) -- sends them
SIGTERM (and SIGCONT, so a stopped one can act on it), waits up to
``kill_grace_s`` for them to go, and SIGKILLs whatever is left, again and
again while any is found.  The launcher is spared until then (it ignores
SIGTERM; while it lives no orphan can slip away to PID 1); it exits by
itself when its last child is reaped, and is killed if it does not.  Zombies
do not count: they are already dead.

Process ids are signalled only while they are known to be ours: the group id
is reserved by the kernel for as long as any member lives, a descendant of
the live launcher is ours, and each marked pid was seen carrying the marker
a moment before.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "LineSink",
    "LineSplitter",
    "Outcome",
    "ProcessResult",
    "decode_line",
    "find_members",
    "run_process",
    "terminate",
]

log = logging.getLogger(__name__)

LineSink = Callable[[str, bool], None]
"""Receives each output line (decoded, without its newline) and its ``cut`` flag."""

Outcome = Literal["exited", "timed_out", "cancelled"]

LAUNCHER = str(Path(__file__).resolve().with_name("reaper.py"))
READ_CHUNK = 8192
"""Output handled per job per event-loop turn (~100 lines of 80 bytes, ~1 ms).

Jobs started together print together, and one loop turn runs a chunk of
every job with output before the loop looks at its timers again: the chunk
bounds that stall (bench/deploy.py, 20 jobs: 64 KiB chunks ~190 ms, 16 KiB
~50 ms)."""
POLL_S = 0.05
KILL_WAIT_S = 5.0
"""How long to wait for SIGKILLed processes to vanish, and for the pipe to drain."""


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """How a process ended.

    ``exit_code`` is the child's return code (negative: killed by that
    signal).  ``stragglers`` counts the processes the final sweep found:
    after a normal exit, background children the tool left behind.
    """

    outcome: Outcome
    exit_code: int | None
    duration_s: float
    stragglers: int


class LineSplitter:
    """Bytes in, complete lines out, each at most ``max_bytes`` long.

    ``feed`` returns ``(line, cut)`` pairs without the newline; a line longer
    than ``max_bytes`` comes out once, cut, and the rest of it is skipped.
    ``close`` returns the unterminated last line, if any.
    """

    __slots__ = ("_buf", "_max", "_skipping")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._max = max_bytes
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        out: list[tuple[bytes, bool]] = []
        start, size = 0, len(data)
        while start < size:
            nl = data.find(b"\n", start)
            end = size if nl < 0 else nl
            if self._skipping:
                if nl < 0:
                    break
                self._skipping = False
            else:
                room = self._max - len(self._buf)
                if end - start > room:
                    self._buf += data[start : start + room]
                    out.append((bytes(self._buf), True))
                    self._buf.clear()
                    if nl < 0:
                        self._skipping = True
                        break
                else:
                    self._buf += data[start:end]
                    if nl >= 0:
                        out.append((bytes(self._buf), False))
                        self._buf.clear()
            start = end + 1
        return out

    def close(self) -> list[tuple[bytes, bool]]:
        if self._skipping or not self._buf:
            self._skipping = False
            self._buf.clear()
            return []
        last = bytes(self._buf)
        self._buf.clear()
        return [(last, False)]


def decode_line(raw: bytes, cut: bool) -> str:
    """UTF-8 with replacement; a cut line drops a character split by the cut."""
    if cut:
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=False)
    else:
        text = raw.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text


# --- finding and killing a run's processes ------------------------------------


def _stat(pid: str) -> tuple[str, int, int] | None:
    """(state, parent, process group) of ``pid`` from /proc, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ..."; comm may itself contain ") ".
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 3:
        return None
    return fields[0].decode("ascii", "replace"), int(fields[1]), int(fields[2])


def _has_marker(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:  # gone, or not ours to read (then it cannot be ours to kill)
        return False
    return marker in environ.split(b"\0")


def _scan(pgid: int, marker: str | None, root: int | None = None) -> tuple[set[int], bool]:
    """Live (non-zombie) members of the run, and whether the group has any.

    Members: descendants of ``root`` (the launcher), processes in group
    ``pgid`` and processes carrying ``marker`` -- never ``root`` itself,
    which the caller stops last.
    """
    marker_bytes = marker.encode() if marker else None
    me = os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:  # no procfs: the group is all we can see
        try:
            os.killpg(pgid, 0)
        except OSError:
            return set(), False
        return {pgid}, True
    found: set[int] = set()
    children: dict[int, list[int]] = {}
    group_alive = False
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        st = _stat(name)
        if st is None or st[0] in ("Z", "X", "x"):
            continue
        pid = int(name)
        children.setdefault(st[1], []).append(pid)
        if st[2] == pgid:
            group_alive = True
            found.add(pid)
        elif marker_bytes is not None and _has_marker(name, marker_bytes):
            found.add(pid)
    if root is not None:
        todo = list(children.get(root, ()))
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(children.pop(pid, ()))  # popped: each subtree is walked once
        found.discard(root)
    return found, group_alive


def find_members(pgid: int, marker: str | None, root: int | None = None) -> set[int]:
    """Live (non-zombie) processes in group ``pgid``, carrying ``marker`` or
    descending from ``root`` (``root`` itself excluded).

    Blocking (reads /proc); call it through ``asyncio.to_thread``.
    """
    return _scan(pgid, marker, root)[0]


def _signal_all(pgid: int, scan: tuple[set[int], bool], sig: signal.Signals) -> None:
    pids, group_alive = scan
    if group_alive:  # the group id is ours only while the group has members
        with contextlib.suppress(OSError):
            os.killpg(pgid, sig)  # also reaches a member forked since the scan
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


async def _wait_gone(
    pgid: int, marker: str | None, root: int | None, timeout_s: float
) -> tuple[set[int], bool]:
    """Poll until no member is left or ``timeout_s`` passes; the last scan."""
    deadline = time.monotonic() + timeout_s
    while True:
        scan = await asyncio.to_thread(_scan, pgid, marker, root)
        if not scan[0] or time.monotonic() >= deadline:
            return scan
        await asyncio.sleep(POLL_S)


async def terminate(pgid: int, marker: str | None, grace_s: float, root: int | None = None) -> int:
    """SIGTERM every member of the run, SIGKILL the ones alive after ``grace_s``.

    ``root`` (the launcher) is not signalled here: the caller stops it once
    this returned.  Returns how many processes were found at the start (0:
    nothing to do).
    """
    found = await asyncio.to_thread(_scan, pgid, marker, root)
    if not found[0]:
        return 0
    _signal_all(pgid, found, signal.SIGTERM)
    _signal_all(pgid, found, signal.SIGCONT)
    left = await _wait_gone(pgid, marker, root, grace_s)
    deadline = time.monotonic() + KILL_WAIT_S
    while left[0]:  # a member may fork while we kill: repeat until none is left
        log.info("process group %d: %d process(es) outlived SIGTERM, killing", pgid, len(left[0]))
        _signal_all(pgid, left, signal.SIGKILL)
        left = await _wait_gone(pgid, marker, root, POLL_S * 4)
        if time.monotonic() >= deadline:
            log.warning("process group %d: %d process(es) survived SIGKILL", pgid, len(left[0]))
            break
    return len(found[0])


def _kill_now(pgid: int, marker: str | None, root: int) -> None:
    """Synchronous last resort when our own task is being cancelled."""
    _signal_all(pgid, _scan(pgid, marker, root), signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(root, signal.SIGKILL)


# --- running -------------------------------------------------------------------


async def _pump(stream: asyncio.StreamReader, max_bytes: int, on_line: LineSink) -> None:
    splitter = LineSplitter(max_bytes)
    failed = False

    def deliver(lines: list[tuple[bytes, bool]]) -> None:
        nonlocal failed
        for raw, cut in lines:
            try:
                on_line(decode_line(raw, cut), cut)
            except Exception:
                # Keep draining the pipe: a stalled pipe would stall the tool.
                if not failed:
                    log.exception("output callback failed; later failures are not logged")
                failed = True

    while chunk := await stream.read(READ_CHUNK):
        deliver(splitter.feed(chunk))
        # read() returns without yielding while the stream holds data (up to
        # 128 KiB buffered): yield here so each turn takes one chunk per job.
        await asyncio.sleep(0)
    deliver(splitter.close())


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    on_line: LineSink,
    timeout_s: float,
    kill_grace_s: float = 10.0,
    max_line_bytes: int = 4096,
    marker: str | None = None,
    cancel: asyncio.Event | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion, timeout or cancel; see the module docstring.

    ``env`` is the child's whole environment; ``marker`` (``NAME=value``) must
    be one of its entries.  Raises ``OSError`` when the program cannot be
    started (not found, not executable).
    """
    if not argv:
        raise ValueError("empty argv")
    if marker is not None:
        name, _, value = marker.partition("=")
        if env.get(name) != value:
            raise ValueError("the marker must be an entry of env")
    loop = asyncio.get_running_loop()
    started = loop.time()
    status_r, status_w = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            # -I -S: nothing of the environment or site-packages; stdlib only
            sys.executable, "-I", "-S", LAUNCHER, str(status_w), *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            pass_fds=(status_w,),
        )  # fmt: skip
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    pgid = launcher = proc.pid
    assert proc.stdout is not None
    status = _StatusReader(status_r)
    try:
        await status.started()
    except BaseException:
        status.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.communicate(), KILL_WAIT_S)
        raise
    pump = asyncio.create_task(_pump(proc.stdout, max_line_bytes, on_line))
    waiter = asyncio.create_task(proc.wait())  # the launcher exited and the pipe closed
    exited = asyncio.create_task(status.exited())  # the tool exited
    stopper = asyncio.create_task(cancel.wait()) if cancel is not None else None
    tasks = [t for t in (pump, waiter, exited, stopper) if t is not None]
    outcome: Outcome = "exited"
    try:
        watched = {waiter, exited} if stopper is None else {waiter, exited, stopper}
        done, _ = await asyncio.wait(
            watched, timeout=max(timeout_s, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done and exited not in done:
            outcome = "cancelled" if stopper is not None and stopper in done else "timed_out"
        if exited.done() and status.alone:
            # The launcher had no child left when the tool exited, so the run
            # has no process left (see reaper.py): nothing to sweep.  This
            # spares the usual end of a job its /proc scan -- 20 jobs ending
            # together were 20 scans in threads contending for the GIL.
            stragglers = 0
        else:
            stragglers = await terminate(pgid, marker, kill_grace_s, root=launcher)
        # No child left: the launcher exits by itself; if it does not, kill it.
        await asyncio.wait({waiter}, timeout=KILL_WAIT_S)
        if not waiter.done():
            with contextlib.suppress(OSError):
                os.kill(launcher, signal.SIGKILL)
        # All we found is dead now, so the pipe reaches EOF.
        await asyncio.wait({pump}, timeout=KILL_WAIT_S)
        if not pump.done():
            # Something we could not find still holds the pipe open.
            log.warning("process %d: output pipe still open after the run; closing it", pgid)
            _close_transport(proc)
        await asyncio.wait({waiter, exited}, timeout=KILL_WAIT_S)
        exit_code = status.exit_code if status.exit_code is not None else proc.returncode
    except BaseException:
        _kill_now(pgid, marker, launcher)
        _close_transport(proc)
        raise
    finally:
        status.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ProcessResult(
        outcome=outcome,
        exit_code=exit_code,
        duration_s=loop.time() - started,
        stragglers=stragglers,
    )


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _StatusReader:
    """The launcher's status pipe: ``started PID`` / ``error ERRNO``, then
    ``exit CODE`` or ``exit CODE alone`` (see ``reaper.py``).  EOF without
    them means the launcher itself died."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = b""
        self._eof = False
        self.exit_code: int | None = None
        self.alone = False
        """The tool exited leaving no process behind (``exit CODE alone``)."""

    async def _line(self) -> str | None:
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buf and not self._eof:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self._fd, _set_once, ready)
            try:
                await ready
            finally:
                loop.remove_reader(self._fd)
            data = os.read(self._fd, 256)
            self._eof = not data
            self._buf += data
        if b"\n" not in self._buf:
            return None
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("ascii", "replace")

    async def started(self) -> None:
        """Returns once the tool runs; raises ``OSError`` if it could not start."""
        line = await self._line()
        word, _, value = (line or "").partition(" ")
        if word == "started":
            return
        if word == "error" and value.isdigit():
            code = int(value)
            raise OSError(code, os.strerror(code))
        raise OSError(f"the job launcher failed ({line or 'no status'})")

    async def exited(self) -> None:
        """Returns once the tool exited (``exit_code`` set, ``alone``) or the
        launcher died (``exit_code`` stays None: the launcher's own code stands)."""
        fields = (await self._line() or "").split()
        if len(fields) >= 2 and fields[0] == "exit":
            self.exit_code = int(fields[1])
            self.alone = fields[2:] == ["alone"]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _close_transport(proc: asyncio.subprocess.Process) -> None:
    transport = getattr(proc, "_transport", None)  # Process has no public close()
    if transport is not None:
        transport.close()
