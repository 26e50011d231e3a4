"""The job launcher: a child subreaper that starts one tool and reaps its tree.

Run as ``python -I -S reaper.py STATUS_FD ARGV...`` by ``process.run_process``
(standalone on purpose: it imports only the standard library, so it starts
fast in the tool's scrubbed environment).

How this works.  It marks itself a *child subreaper* (Linux
``prctl(PR_SET_CHILD_SUBREAPER)``): any descendant whose parent dies is
re-parented to it instead of to PID 1, however it got there -- ``cmd &``,
``setsid cmd``, ``setsid env -i cmd`` (which leaves the process group and
drops the job's marker from its environment), ``nohup cmd &``, a double
fork.  So while the launcher lives, every live process of the job is a
descendant of it, and the bot finds them all by walking ``/proc`` down from
its pid.  The bot itself is not made a subreaper: asyncio's child watcher
waits for the pids it started, so orphans re-parented to the bot would
stay zombies for ever.

It spawns ARGV (``posix_spawnp``: PATH from its own environment, which is
the tool's) and writes to STATUS_FD one line when the tool started
(``started PID``) or could not be (``error ERRNO``), and one when the tool
exited (``exit CODE``; negative: killed by that signal), with `` alone``
appended when no other child is left then.  Then it keeps reaping until it
has no children left and exits -- so it outlives the tool as long as a
straggler does, and the bot's sweep can find the straggler.  ``alone`` is
exact, not a guess: an orphan is re-parented to the launcher when its
parent exits, before that parent can be reaped, so with no child left the
launcher has no descendant at all, and the bot skips its ``/proc`` sweep.
SIGTERM, SIGINT and SIGHUP do not stop it (the bot signals the job's whole
process group, the launcher included, and must not lose the tree); the bot
kills it last, once its descendants are gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36
_SURVIVE = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Python ignores these at start-up; the tool gets the default, as from a shell.
_RESET = (signal.SIGPIPE, signal.SIGXFSZ, *_SURVIVE)


def _ignore(signum: int, frame: object) -> None:
    """A handler, not SIG_IGN: handlers are reset by exec, SIG_IGN is inherited."""


def _subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _report(fd: int, text: str) -> None:
    # Not contextlib.suppress: importing contextlib is ~4 ms of a ~10 ms
    # start, and 20 jobs started together start 20 launchers at once.
    try:
        os.write(fd, f"{text}\n".encode())
    except OSError:  # the bot stopped listening: reap all the same
        return


def _alone() -> bool:
    """Reap the children that already exited; True if none is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:  # a child still runs: a straggler
            return False


def main(argv: list[str]) -> int:
    fd, command = int(argv[0]), argv[1:]
    os.set_inheritable(fd, False)
    for signum in _SURVIVE:
        signal.signal(signum, _ignore)
    try:
        _subreaper()
        child = os.posix_spawnp(command[0], command, os.environ, setsigdef=_RESET)
    except OSError as exc:
        _report(fd, f"error {exc.errno or 0}")
        return 127
    _report(fd, f"started {child}")
    code = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break  # no child left: the tool and every straggler are gone
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            _report(fd, f"exit {code} alone" if _alone() else f"exit {code}")
            os.close(fd)
            fd = -1
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
