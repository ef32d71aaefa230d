"""The command's side of a parallel import: wait for the workers, then finish the file.

The ranges themselves are planned and imported in `ingest.imports.ranges`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import Sum
from django.utils import timezone

from ingest.health import broker_check
from ingest.imports import bulk
from ingest.imports.jobs import matching_job
from ingest.imports.tasks import enqueue_ranges
from ingest.models import ImportJob, ImportRange, RawBatch


def unfinished_ranges(path: str) -> int:
    """How many ranges of a parallel import of this file are not imported yet."""
    job = matching_job(path)
    return job.ranges.unfinished().count() if job else 0


@dataclass(frozen=True, slots=True)
class Progress:
    ranges: int
    done: int
    total_bytes: int
    done_bytes: int
    accepted: int
    duplicates: int
    rejected: int
    started: bool  # a worker has taken a range during this wait


@dataclass(frozen=True, slots=True)
class Stall:
    """No progress for a while: what the waiting command did about it."""

    seconds: float
    requeued: int
    workers_seen: bool
    queue_depth: int | None


def wait_for_ranges(
    job: ImportJob,
    *,
    stall_seconds: float = 60,
    poll_seconds: float = 0.5,
    chunk_lines: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_stall: Callable[[Stall], None] | None = None,
) -> Progress:
    """Wait until every range of the file is imported.

    A range "processing" that has not advanced for `stall_seconds` lost its
    worker: it is enqueued again. When no range at all advanced for that long,
    `on_stall` is told (no workers?) and, if the broker's queue is empty
    (messages lost with a killed worker), the pending ranges are enqueued again.
    """
    seen: dict[int, tuple[str, int]] = {}
    changed_at: dict[int, float] = {}
    last_change = time.monotonic()
    started = False
    while True:
        rows = list(job.ranges.values_list("pk", "status", "byte_start", "byte_end", "next_offset",
                                                 "accepted", "duplicates", "rejected"))  # fmt: skip
        done = ImportRange.Status.DONE
        unfinished = {pk: (status, offset) for pk, status, _, _, offset, *_ in rows if status != done}
        now = time.monotonic()
        for pk, state in unfinished.items():
            if pk in seen and seen[pk] != state:
                last_change, started = now, True
            if seen.get(pk) != state:
                seen[pk], changed_at[pk] = state, now
        if len(unfinished) < len(seen):
            last_change, started = now, True  # ranges finished since the last look
            seen = {pk: seen[pk] for pk in unfinished}
        progress = Progress(
            ranges=len(rows),
            done=len(rows) - len(unfinished),
            total_bytes=sum(end - start for _, _, start, end, *_ in rows),
            done_bytes=sum(offset - start for _, _, start, _, offset, *_ in rows),
            accepted=sum(r[5] for r in rows),
            duplicates=sum(r[6] for r in rows),
            rejected=sum(r[7] for r in rows),
            started=started,
        )
        if on_progress:
            on_progress(progress)
        if not unfinished:
            return progress
        lost = [
            pk
            for pk, (status, _) in unfinished.items()
            if status == ImportRange.Status.PROCESSING and now - changed_at[pk] >= stall_seconds
        ]
        if now - last_change >= stall_seconds:
            depth = _queue_depth()
            if depth == 0:
                lost = [pk for pk in unfinished if now - changed_at[pk] >= stall_seconds]
            requeued = enqueue_ranges(lost, chunk_lines)
            if on_stall:
                on_stall(Stall(now - last_change, requeued, started, depth))
            last_change = now
        elif lost:
            enqueue_ranges(lost, chunk_lines)
        for pk in lost:
            changed_at[pk] = now
        time.sleep(poll_seconds)


def _queue_depth() -> int | None:
    return broker_check().get("queue_depth")


def finish_import(job: ImportJob) -> ImportJob:
    """Once every range is imported: the file's totals, and the summaries it left stale."""
    # Every chunk stored for the file, by a sequential run before the plan or by the workers.
    totals = RawBatch.objects.filter(import_job=job).aggregate(
        accepted=Sum("accepted"), duplicates=Sum("duplicates"), rejected=Sum("rejected")
    )
    job.accepted, job.duplicates, job.rejected = (totals[k] or 0 for k in ("accepted", "duplicates", "rejected"))
    job.finished_at = job.finished_at or timezone.now()
    job.save(update_fields=["accepted", "duplicates", "rejected", "finished_at", "updated_at"])
    bulk.finish_load(bool(ImportJob.objects.get(pk=job.pk).deferred_ddl))
    return job
