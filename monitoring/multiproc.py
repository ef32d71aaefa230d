"""The shared directory of PROMETHEUS_MULTIPROC_DIR: prepared at start, tidied when a process ends.

Each process writes `<kind>_<pid>.db` files there; a scrape adds them all up. Counters of a
process that ended stay (they are part of the totals since start); a fresh start removes
the files of processes that are gone, but not those of live ones, so that the web server
and a worker may share one directory on one machine (`make run`) and restart apart.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def directory() -> Path | None:
    value = os.environ.get(ENV, "")
    return Path(value) if value else None


def ensure_directory() -> None:
    """Create the directory if it is configured and missing (prometheus-client only opens files in it)."""
    if (path := directory()) is not None:
        path.mkdir(parents=True, exist_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def prepare(path: Path) -> int:
    """Create the directory; remove the files of processes no longer running. Returns how many."""
    path.mkdir(parents=True, exist_ok=True)
    removed = 0
    for file in path.glob("*.db"):
        pid = file.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            file.unlink(missing_ok=True)
            removed += 1
    return removed


def process_ended(pid: int) -> None:
    """A process of this directory ended (gunicorn's child_exit, a Celery pool child's exit)."""
    if directory() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
