"""The shared directory of PROMETHEUS_MULTIPROC_DIR: prepared at start, tidied when a process ends.

Each process writes `<kind>_<pid>.db` files there; a scrape adds them all up. Counters of a
process that ended stay part of the totals since start: gunicorn's master adds those of each
worker that exits to a file of its own pid (`fold_into`), so that the files, and the cost of
a scrape, do not grow with every worker it replaces (`max_requests`). A fresh start removes
the files of processes that are gone, but not those of live ones, so that the web server
and a worker may share one directory on one machine (`make run`) and restart apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLDED_KINDS = ("counter", "histogram")  # summed across processes; live gauges are marked dead instead
LOCK_FILE = "fold.lock"  # a fold holds it exclusively, a scrape shared: none sees a count twice or not at all


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


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool) -> Iterator[None]:
    with open(path / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def fold_into(path: Path, pid: int, owner: int) -> None:
    """Add the counters and histograms of ended process `pid` to the files of live process `owner`
    (one that writes no metrics of its own, such as gunicorn's master), then remove pid's files."""
    from prometheus_client.mmap_dict import MmapedDict

    with locked(path, exclusive=True):
        for kind in FOLDED_KINDS:
            ended = path / f"{kind}_{pid}.db"
            if not ended.exists():
                continue
            kept = MmapedDict(str(path / f"{kind}_{owner}.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(ended)):
                    total, _ = kept.read_value(key)
                    kept.write_value(key, total + value, timestamp)
            finally:
                kept.close()
            ended.unlink()


def process_ended(pid: int, *, fold_into_owner: int | None = None) -> None:
    """A process of this directory ended (gunicorn's child_exit, a Celery pool child's exit)."""
    path = directory()
    if path is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))
    if fold_into_owner is not None:
        fold_into(path, pid, fold_into_owner)
