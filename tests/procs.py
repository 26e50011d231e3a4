"""Which processes are still alive with a marker in their environment (for the
deploy tests' "no process left" checks; independent of the code under test)."""

from __future__ import annotations

import os


def marked_pids(marker: str) -> set[int]:
    """Live (not zombie) processes whose environment holds ``marker`` exactly,
    e.g. ``MASTERCHIEF_JOB=1a2b3c``."""
    wanted = marker.encode()
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if state not in (b"Z", b"X") and wanted in environ:
            found.add(int(name))
    return found


def job_pids(job_id: str) -> set[int]:
    """Processes of a deploy job (the runner marks them ``MASTERCHIEF_JOB=<id>``)."""
    return marked_pids(f"MASTERCHIEF_JOB={job_id}")
