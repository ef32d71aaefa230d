"""Python's cyclic garbage collector paused while a bounded unit of work runs.

Validating and storing records allocates ~10 container objects per record (framed
lines, decoded records, events, rows) that all live until the unit (an import chunk,
a worker's group of batches) is done. The collector's automatic passes, started by
allocations, walk them again and again, and its older generations walk every object
of the process (Django, Celery): half of an import's validation time, 40 % of a
worker's CPU draining 1,000-event batches. Records make no reference cycles
(reference counting frees them); the caller collects now and then (`collect`), so
whatever else did make cycles is freed and memory stays bounded. What lived before
the work started (the process's modules, settings, connections) is frozen meanwhile:
those collections walk only what the work made (an import's command: 50 → 5 ms each).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator

COLLECT_EVERY = 8  # units of work between collections


@contextlib.contextmanager
def collector_paused() -> Iterator[Callable[[], None]]:
    """The collector off (unless the caller had it off already); `collect`, called once per
    unit of work, runs a collection every COLLECT_EVERY units."""
    count = 0

    def collect() -> None:
        nonlocal count
        count += 1
        if count % COLLECT_EVERY == 0:
            gc.collect()

    was_enabled = gc.isenabled()  # else an outer caller paused it, and froze what it found
    gc.disable()
    if was_enabled:
        gc.freeze()
    try:
        yield collect
    finally:
        if was_enabled:
            gc.unfreeze()
            gc.enable()
