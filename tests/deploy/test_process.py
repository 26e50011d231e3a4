"""deploy.process: line splitting (table) and real process groups, real signals."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest

import masterchief.deploy.process as process
from masterchief.deploy.process import (
    LAUNCHER,
    READ_CHUNK,
    LineSplitter,
    ProcessResult,
    decode_line,
    find_members,
    run_process,
)
from tests.procs import marked_pids

PY = sys.executable

# --- LineSplitter: bytes in, lines out ----------------------------------------

SPLIT_CASES = [
    # (max_bytes, chunks, lines from feed+close)
    (8, [b"a\nb\n"], [(b"a", False), (b"b", False)]),
    (8, [b"ab", b"c\nd"], [(b"abc", False), (b"d", False)]),
    (8, [b"\n\n"], [(b"", False), (b"", False)]),
    (4, [b"abcd\n"], [(b"abcd", False)]),  # exactly the limit: not cut
    (4, [b"abcdef\nxy\n"], [(b"abcd", True), (b"xy", False)]),
    (4, [b"abcd", b"ef", b"gh\nz\n"], [(b"abcd", True), (b"z", False)]),
    (4, [b"abcd", b"\nz"], [(b"abcd", False), (b"z", False)]),
    (4, [b"ab", b"cdefgh"], [(b"abcd", True)]),  # cut, rest skipped, no newline ever
    (4, [b"abcdefgh", b"ijk", b"lmn\nok\n"], [(b"abcd", True), (b"ok", False)]),
    (3, [b"a\r\nb"], [(b"a\r", False), (b"b", False)]),
]


@pytest.mark.parametrize(("max_bytes", "chunks", "expected"), SPLIT_CASES)
def test_line_splitter(
    max_bytes: int, chunks: list[bytes], expected: list[tuple[bytes, bool]]
) -> None:
    splitter = LineSplitter(max_bytes)
    out: list[tuple[bytes, bool]] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    out += splitter.close()
    assert out == expected


def test_line_splitter_byte_at_a_time_matches_whole() -> None:
    data = b"short\n" + b"x" * 50 + b"\nlast\n" + b"y" * 7
    whole = LineSplitter(10)
    expected = whole.feed(data) + whole.close()
    single = LineSplitter(10)
    got: list[tuple[bytes, bool]] = []
    for i in range(len(data)):
        got += single.feed(data[i : i + 1])
    got += single.close()
    assert (
        got
        == expected
        == [
            (b"short", False),
            (b"x" * 10, True),
            (b"last", False),
            (b"y" * 7, False),
        ]
    )


DECODE_CASES = [
    (b"plain", False, "plain"),
    (b"caf\xc3\xa9", False, "café"),
    (b"caf\xc3", True, "caf"),  # a character split by the cut is dropped
    (b"bad \xff byte", False, "bad \ufffd byte"),
    (b"crlf\r", False, "crlf"),
]


@pytest.mark.parametrize(("raw", "cut", "text"), DECODE_CASES)
def test_decode_line(raw: bytes, cut: bool, text: str) -> None:
    assert decode_line(raw, cut) == text


# --- real processes --------------------------------------------------------------


def _marker() -> tuple[str, dict[str, str]]:
    job = uuid.uuid4().hex[:12]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MASTERCHIEF_JOB": job}
    return f"MASTERCHIEF_JOB={job}", env


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in (b"Z", b"X")


async def _wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Lines:
    def __init__(self) -> None:
        self.items: list[tuple[str, bool]] = []

    def __call__(self, text: str, cut: bool) -> None:
        self.items.append((text, cut))

    @property
    def texts(self) -> list[str]:
        return [t for t, _ in self.items]


async def _run(code: str, tmp_path: Path, **kwargs) -> tuple[ProcessResult, Lines, str]:  # type: ignore[no-untyped-def]
    marker, env = _marker()
    lines = kwargs.pop("lines", None) or Lines()
    result = await run_process(
        [PY, "-c", textwrap.dedent(code)],
        env=kwargs.pop("env", env),
        cwd=tmp_path,
        on_line=lines,
        marker=kwargs.pop("marker", marker),
        **{"timeout_s": 20.0, "kill_grace_s": 2.0, **kwargs},
    )
    return result, lines, marker


async def test_exit_code_output_order_and_stderr_merged(tmp_path: Path) -> None:
    result, lines, _ = await _run(
        """
        import sys
        print("one", flush=True)
        print("two", file=sys.stderr, flush=True)
        print("three", end="")
        sys.exit(3)
        """,
        tmp_path,
    )
    assert result.outcome == "exited"
    assert result.exit_code == 3
    assert lines.items == [("one", False), ("two", False), ("three", False)]
    assert result.stragglers == 0


async def test_marker_must_be_in_env(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="marker"):
        await run_process(
            [PY, "-c", "pass"],
            env={"PATH": "/usr/bin"},
            cwd=tmp_path,
            on_line=Lines(),
            timeout_s=5,
            marker="MASTERCHIEF_JOB=x",
        )


async def test_missing_program_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run_process(
            [str(tmp_path / "nope")], env={}, cwd=tmp_path, on_line=Lines(), timeout_s=5
        )


GRANDCHILD = """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", {child!r}])
    print("grandchild", child.pid, flush=True)
    time.sleep(60)
"""


async def test_cancel_kills_the_group_with_its_grandchild(tmp_path: Path) -> None:
    cancel = asyncio.Event()
    lines = Lines()
    pids: list[int] = []

    def on_line(text: str, cut: bool) -> None:
        lines(text, cut)
        if text.startswith("grandchild"):
            pids.append(int(text.split()[1]))
            cancel.set()

    code = GRANDCHILD.format(child="import time; time.sleep(60)")
    started = time.monotonic()
    result, _, marker = await _run(code, tmp_path, lines=on_line, cancel=cancel)
    assert result.outcome == "cancelled"
    assert result.exit_code is not None and result.exit_code < 0  # killed by a signal
    assert pids and not _alive(pids[0])
    assert marked_pids(marker) == set()
    assert time.monotonic() - started < 10


async def test_setsid_grandchild_is_found_by_its_marker(tmp_path: Path) -> None:
    cancel = asyncio.Event()
    pids: list[int] = []

    def on_line(text: str, cut: bool) -> None:
        if text.startswith("grandchild"):
            pids.append(int(text.split()[1]))
            cancel.set()

    # The grandchild leaves the process group (setsid) before sleeping.
    code = GRANDCHILD.format(child="import os, time; os.setsid(); time.sleep(60)")
    result, _, marker = await _run(code, tmp_path, lines=on_line, cancel=cancel)
    assert result.outcome == "cancelled"
    assert pids and not _alive(pids[0])
    assert marked_pids(marker) == set()


async def test_sigterm_ignored_gets_sigkill_after_grace(tmp_path: Path) -> None:
    ready = asyncio.Event()

    def on_line(text: str, cut: bool) -> None:
        if text == "ready":
            ready.set()

    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    cancel = asyncio.Event()

    async def cancel_when_ready() -> None:
        await ready.wait()
        cancel.set()

    task = asyncio.create_task(cancel_when_ready())
    started = time.monotonic()
    result, _, marker = await _run(code, tmp_path, lines=on_line, cancel=cancel, kill_grace_s=0.5)
    await task
    assert result.outcome == "cancelled"
    assert result.exit_code == -9  # SIGKILL: it ignored SIGTERM
    assert time.monotonic() - started >= 0.5
    assert marked_pids(marker) == set()


async def test_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    result, lines, marker = await _run(
        'print("start", flush=True)\nimport time\ntime.sleep(60)', tmp_path, timeout_s=0.5
    )
    assert result.outcome == "timed_out"
    assert result.exit_code == -15  # SIGTERM was enough
    assert lines.texts == ["start"]
    assert 0.5 <= time.monotonic() - started < 30  # the timeout, not the 60 s sleep
    assert marked_pids(marker) == set()


async def test_background_child_left_behind_is_swept_after_normal_exit(tmp_path: Path) -> None:
    code = """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 stdout=subprocess.DEVNULL)
        print("grandchild", child.pid, flush=True)
    """
    result, lines, marker = await _run(code, tmp_path)
    assert result.outcome == "exited"
    assert result.exit_code == 0
    assert result.stragglers == 1
    pid = int(lines.texts[0].split()[1])
    assert not _alive(pid)
    assert marked_pids(marker) == set()


async def test_find_members_sees_group_and_marker(tmp_path: Path) -> None:
    marker, env = _marker()
    proc = await asyncio.create_subprocess_exec(
        PY, "-c", "import time; time.sleep(30)", env=env, start_new_session=True
    )
    try:
        await _wait_for(lambda: proc.pid in marked_pids(marker))
        assert find_members(proc.pid, None) == {proc.pid}
        assert find_members(-1, marker) == {proc.pid}
        assert find_members(-1, "MASTERCHIEF_JOB=someone-else") == set()
    finally:
        proc.kill()
        await proc.wait()


async def test_hundred_thousand_lines_in_order(tmp_path: Path) -> None:
    result, lines, _ = await _run(
        """
        import sys
        sys.stdout.write("".join(f"line {i}\\n" for i in range(100000)))
        """,
        tmp_path,
    )
    assert result.exit_code == 0
    assert lines.texts == [f"line {i}" for i in range(100000)]
    assert not any(cut for _, cut in lines.items)


async def test_huge_line_is_cut_flagged_and_memory_bounded(tmp_path: Path) -> None:
    code = """
        import sys
        sys.stdout.write("before\\n")
        sys.stdout.write("x" * (8 * 1024 * 1024) + "\\n")
        sys.stdout.write("after\\n")
    """
    tracemalloc.start()
    try:
        result, lines, _ = await _run(code, tmp_path, max_line_bytes=4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    assert lines.items == [("before", False), ("x" * 4096, True), ("after", False)]
    # An 8 MiB line went through; it was never held whole.
    assert peak < 2 * 1024 * 1024


# --- every descendant, however it left (the launcher is a child subreaper) -------------

# The four ways a job's tool leaves a process behind.  Each grandchild writes
# its own pid (``$$`` of a shell that then execs sleep) to a file: with
# ``env -i`` it carries no marker, and ``setsid`` takes it out of the group.
FORMS = {
    "background": "/bin/sh -c 'echo $$ > {d}/background; exec sleep 300' &",
    "setsid": "setsid /bin/sh -c 'echo $$ > {d}/setsid; exec sleep 300' &",
    "setsid_env_i": "setsid env -i /bin/sh -c 'echo $$ > {d}/setsid_env_i; exec sleep 300' &",
    "nohup": "nohup /bin/sh -c 'echo $$ > {d}/nohup; exec sleep 300' >/dev/null 2>&1 &",
}


def _forking_tool(folder: Path, then: str) -> list[str]:
    """A shell tool that starts the four forms, waits until each wrote its
    pid, says ``ready``, then runs ``then`` (``exit 0``, or a long wait)."""
    lines = ["set -e", *(f.format(d=folder) for f in FORMS.values())]
    names = " ".join(FORMS)
    lines += [
        f"for n in {names}; do while [ ! -s {folder}/$n ]; do sleep 0.01; done; done",
        "echo ready",
        then,
    ]
    return ["/bin/sh", "-c", "\n".join(lines)]


def _grandchildren(folder: Path) -> dict[str, int]:
    return {name: int((folder / name).read_text()) for name in FORMS}


@pytest.mark.parametrize("how", ["timeout", "cancel", "exit"])
async def test_every_form_of_grandchild_is_gone_after_the_run(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    cancel = asyncio.Event()
    seen: dict[str, int] = {}

    def on_line(text: str, cut: bool) -> None:
        if text == "ready":
            seen.update(_grandchildren(folder))
            assert all(_alive(pid) for pid in seen.values())
            if how == "cancel":
                cancel.set()

    then = "exit 0" if how == "exit" else "while :; do sleep 0.1; done"
    marker, env = _marker()
    result = await run_process(
        _forking_tool(folder, then),
        env=env,
        cwd=tmp_path,
        on_line=on_line,
        marker=marker,
        timeout_s=3.0 if how == "timeout" else 20.0,
        kill_grace_s=1.0,
        cancel=cancel,
    )
    expected = {"timeout": "timed_out", "cancel": "cancelled", "exit": "exited"}[how]
    assert result.outcome == expected
    assert sorted(seen) == sorted(FORMS)  # every form started and was seen alive
    alive = {name: pid for name, pid in seen.items() if _alive(pid)}
    for pid in alive.values():  # do not leave them behind if the sweep failed
        os.kill(pid, 9)
    assert alive == {}
    assert result.stragglers >= len(FORMS)
    if how == "exit":
        assert result.exit_code == 0


async def test_find_members_walks_the_tree_below_a_root(tmp_path: Path) -> None:
    folder = tmp_path / "pids"
    folder.mkdir()
    # A stand-in root that is not in the group and carries no marker.
    tool = _forking_tool(folder, "while :; do sleep 0.1; done")
    proc = await asyncio.create_subprocess_exec(
        *tool, env={"PATH": "/usr/bin:/bin"}, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await _wait_for(
            lambda: all((folder / n).exists() and (folder / n).read_text() for n in FORMS)
        )
        pids = _grandchildren(folder)
        members = find_members(-1, None, root=proc.pid)
        # still the shell's children (it has not exited): all reached by the walk
        assert set(pids.values()) <= members and proc.pid not in members
    finally:
        for pid in find_members(-1, None, root=proc.pid):
            os.kill(pid, 9)
        proc.kill()
        await proc.wait()


# --- a clean exit needs no sweep; output shares the loop ---------------------------


def _launch(argv: list[str]) -> list[str]:
    """Run the launcher directly; its status lines."""
    r, w = os.pipe()
    try:
        subprocess.run([PY, "-I", "-S", LAUNCHER, str(w), *argv], pass_fds=(w,), timeout=20)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as fh:
        return fh.read().decode().split("\n")[:-1]


def test_launcher_says_alone_only_when_no_child_is_left(tmp_path: Path) -> None:
    assert _launch(["/bin/sh", "-c", "exit 3"])[1:] == ["exit 3 alone"]
    # a background child still runs when the tool exits: no "alone"
    lines = _launch(["/bin/sh", "-c", "sleep 0.5 & exit 0"])
    assert lines[1:] == ["exit 0"]
    # a child that already ended (reaped by its shell, or a zombie) does not count
    assert _launch(["/bin/sh", "-c", "(exit 0) & wait; exit 0"])[1:] == ["exit 0 alone"]


async def test_clean_exit_skips_the_proc_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[int] = []
    real_scan = process._scan

    def counting_scan(*args, **kwargs):  # type: ignore[no-untyped-def]
        scans.append(1)
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(process, "_scan", counting_scan)
    result, lines, _ = await _run('print("done")', tmp_path)
    assert (result.outcome, result.exit_code, result.stragglers) == ("exited", 0, 0)
    assert lines.texts == ["done"]
    assert scans == []  # the launcher said "alone": nothing to look for
    # a straggler still gets the sweep
    code = """
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    """
    result, _, marker = await _run(code, tmp_path)
    assert result.stragglers == 1 and scans
    assert marked_pids(marker) == set()


async def test_output_yields_to_the_loop_between_chunks(tmp_path: Path) -> None:
    # 4 MiB arrive faster than they are handled; another task still gets a
    # turn after every READ_CHUNK of lines, not only when the buffer is empty
    # (64 KiB and more before: 20 jobs x 64 KiB stalled the loop ~190 ms).
    handled = 0
    seen_at: list[int] = []
    busy = True

    async def ticker() -> None:
        while busy:
            seen_at.append(handled)
            await asyncio.sleep(0)

    def on_line(text: str, cut: bool) -> None:
        nonlocal handled
        handled += 1

    task = asyncio.create_task(ticker())
    try:
        result, _, _ = await _run(
            'import sys\nsys.stdout.write(("x" * 79 + "\\n") * 50000)', tmp_path, lines=on_line
        )
    finally:
        busy = False
        await task
    assert result.exit_code == 0 and handled == 50000
    gaps = [b - a for a, b in itertools.pairwise(seen_at)]
    assert max(gaps) <= READ_CHUNK // 80 + 1  # lines of 80 bytes handled in one turn
