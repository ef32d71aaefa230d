"""Parallel file imports: an NDJSON file cut into byte ranges that workers import.

The command plans the ranges (cut at newlines, with the true line number each
starts on) as pending batches in one transaction, enqueues them and waits.
A worker imports its range in sub-chunks; each commits its events, rejections
and the range's advanced `next_offset` together, so a worker killed mid-range
is resumed by the next delivery without counting anything twice. Every worker
reads the file itself, so the file must be at the same path on all of them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from ingest.framing import ARRAY, detect_framing, iter_ndjson
from ingest.models import ImportJob, RawBatch, RawBatchQuerySet
from ingest.records import Chunk, validate_into
from ingest.services import ConcurrentImport, fingerprint
from ingest.store import store_records
from reports import maintenance

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024
SCAN_BLOCK = 8 * 1024 * 1024


class FileUnavailable(RuntimeError):
    """A worker cannot read the range's file as it was planned (not on shared storage?)."""


@dataclass(frozen=True, slots=True)
class Range:
    start: int
    end: int
    first_line: int


def cannot_split(path: str) -> str | None:
    """Why a file has to be imported sequentially, or None if it can be split."""
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    if head[:2] == b"\x1f\x8b":
        return "a gzip file cannot be split without decompressing it"
    if detect_framing(head) == ARRAY:
        return "a JSON-array file cannot be split at line boundaries"
    return None


def split_ranges(path: str, start: int, first_line: int, size: int, chunk_bytes: int) -> tuple[list[Range], int]:
    """Cut [start, size) into ranges of about `chunk_bytes`, each ending after a newline.

    One pass counts the newlines (bytes.count, about 1 GB/s) so that every range
    knows its true first line number; returns the ranges and the line after them.
    """
    ranges: list[Range] = []
    range_start, range_line = start, first_line
    target = start + chunk_bytes
    pos, line, last_byte = start, first_line, b"\n"
    with open(path, "rb") as f:
        f.seek(start)
        while pos < size and (block := f.read(min(SCAN_BLOCK, size - pos))):
            scanned = 0
            while target < pos + len(block):
                cut = block.find(b"\n", max(target - pos, scanned))
                if cut < 0:
                    break
                line += block.count(b"\n", scanned, cut + 1)
                scanned = cut + 1
                ranges.append(Range(range_start, pos + scanned, range_line))
                range_start, range_line = pos + scanned, line
                target = range_start + chunk_bytes
            line += block.count(b"\n", scanned)
            pos += len(block)
            last_byte = block[-1:]
    if range_start < pos:
        ranges.append(Range(range_start, pos, range_line))
    # A last line without a newline is a record too (the sequential import counts it so).
    return ranges, line + (last_byte != b"\n")


@dataclass(frozen=True, slots=True)
class Plan:
    job: ImportJob
    ranges: int  # all ranges of the file, from this run and earlier ones
    planned: int  # ranges created by this run
    unfinished: list[int]  # batch ids still to import


def file_ranges(job: ImportJob) -> RawBatchQuerySet:
    return RawBatch.objects.filter(import_job=job, next_offset__isnull=False)


def unfinished_ranges(path: str) -> int:
    """How many ranges of a parallel import of this file are not imported yet."""
    job = ImportJob.objects.filter(fingerprint=fingerprint(path)).first()
    return file_ranges(job).unfinished().count() if job else 0


def plan_import(path: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Plan:
    """Plan the file's ranges once; a rerun reuses them and plans only bytes appended since.

    The job's checkpoint moves to the end of the planned ranges: the file is
    handed out up to there, and a sequential run would not import it again.
    """
    path = os.path.abspath(path)
    job, _ = ImportJob.objects.get_or_create(fingerprint=fingerprint(path), defaults={"path": path})
    size = os.path.getsize(path)
    ranges, next_line = [], job.next_line
    if job.next_offset < size:  # the scan reads the file, so not inside the transaction
        ranges, next_line = split_ranges(path, job.next_offset, job.next_line, size, chunk_bytes)
    with transaction.atomic():
        locked = ImportJob.objects.select_for_update().get(pk=job.pk)
        if locked.next_offset != job.next_offset:
            raise ConcurrentImport(f"{path} is being imported by another process")
        if ranges:
            RawBatch.objects.bulk_create([_range_batch(job, path, r) for r in ranges], batch_size=1000)
            locked.next_offset, locked.next_line, locked.finished_at = size, next_line, None
            locked.save(update_fields=["next_offset", "next_line", "finished_at", "updated_at"])
    unfinished = list(file_ranges(locked).unfinished().order_by("byte_start").values_list("pk", flat=True))
    return Plan(locked, file_ranges(locked).count(), len(ranges), unfinished)


def _range_batch(job: ImportJob, path: str, r: Range) -> RawBatch:
    return RawBatch(
        import_job=job, source=path, byte_start=r.start, byte_end=r.end, next_offset=r.start,
        first_line=r.first_line, last_line=r.first_line - 1,
    )  # fmt: skip


def enqueue_ranges(batch_ids: list[int], chunk_lines: int | None = None) -> int:
    """Hand ranges to the workers; returns how many the broker took (the others stay pending)."""
    from ingest.tasks import import_range_task  # tasks import this module

    sent: list[int] = []
    for batch_id in batch_ids:
        try:
            import_range_task.delay(batch_id, chunk_lines)
        except Exception as error:  # kombu raises OperationalError, redis ConnectionError, OSError...
            logger.warning("range %s stays pending: the broker is unavailable (%s)", batch_id, error)
            break
        sent.append(batch_id)
    RawBatch.objects.filter(pk__in=sent).update(enqueued_at=timezone.now())
    return len(sent)


class _RangeReader:
    """A file read up to `end` and no further."""

    def __init__(self, f, end: int) -> None:  # noqa: ANN001 - a binary file object
        self.f, self.left = f, end - f.tell()

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.f.read(self.left if size < 0 else min(size, self.left))
        self.left -= len(data)
        return data


def process_range(batch_id: int, chunk_lines: int | None = None) -> RawBatch | None:
    """Import one range from its checkpoint; a second delivery, even a concurrent one, changes nothing."""
    if not RawBatch.objects.claim(batch_id, file_range=True):
        return None
    batch = RawBatch.objects.select_related("import_job").get(pk=batch_id)
    _check_file(batch)
    chunk_lines = chunk_lines or settings.SWITCHBOARD["IMPORT_CHUNK_LINES"]
    # "Future" is judged against the time the range was planned, the same on every delivery.
    now = batch.created_at.timestamp()
    with open(batch.source, "rb") as f:
        f.seek(batch.next_offset)
        records = iter_ndjson(
            _RangeReader(f, batch.byte_end),  # type: ignore[arg-type]
            offset=batch.next_offset,
            line_no=batch.last_line + 1,
            max_record=settings.SWITCHBOARD["MAX_RECORD_BYTES"],
        )
        start = batch.next_offset
        while raw := list(islice(records, chunk_lines)):
            chunk = validate_into(Chunk(), raw, now)
            stored = _store_range_chunk(batch_id, start, chunk)
            if stored is None:
                return None  # another delivery moved this range on: it carries on from there
            batch, start = stored, chunk.end_offset
            ImportJob.objects.filter(pk=batch.import_job_id).update(updated_at=timezone.now())  # still advancing
    if start >= batch.byte_end and batch.status != RawBatch.Status.DONE:  # an empty range
        RawBatch.objects.filter(pk=batch_id, next_offset=start).update(status=RawBatch.Status.DONE)
    return batch


def _check_file(batch: RawBatch) -> None:
    try:
        same = (
            os.path.getsize(batch.source) >= batch.byte_end
            and fingerprint(batch.source) == batch.import_job.fingerprint
        )
    except OSError as error:
        same, reason = False, str(error)
    else:
        reason = "the file differs from the one that was planned"
    if not same:
        # Back to pending: the command warns that no worker advances it.
        RawBatch.objects.filter(pk=batch.pk, status=RawBatch.Status.PROCESSING).update(status=RawBatch.Status.PENDING)
        raise FileUnavailable(
            f"range {batch.pk} of {batch.source}: {reason} (the file must be at the same path on every worker)"
        )


@transaction.atomic
def _store_range_chunk(batch_id: int, start: int, chunk: Chunk) -> RawBatch | None:
    batch = RawBatch.objects.select_for_update().get(pk=batch_id)
    if batch.status == RawBatch.Status.DONE or batch.next_offset != start:
        return None
    result = store_records(batch, chunk, defer_summaries=True)
    # A range holds many chunks: its counts grow with each, and it is done at its end.
    batch.record_count += chunk.record_count
    batch.accepted += result.accepted
    batch.duplicates += result.duplicates
    batch.rejected += result.rejected
    batch.last_line = chunk.last_line
    batch.next_offset = chunk.end_offset
    now = timezone.now()
    if chunk.end_offset >= batch.byte_end:
        batch.status, batch.processed_at = RawBatch.Status.DONE, now
    batch.claimed_at = now  # a heartbeat: the sweeper leaves an advancing range alone
    batch.save()
    return batch


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
        rows = list(file_ranges(job).values_list("pk", "status", "byte_start", "byte_end", "next_offset",
                                                 "accepted", "duplicates", "rejected"))  # fmt: skip
        unfinished = {pk: (status, offset) for pk, status, _, _, offset, *_ in rows if status != RawBatch.Status.DONE}
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
            if status == RawBatch.Status.PROCESSING and now - changed_at[pk] >= stall_seconds
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
    from ingest.health import broker_check  # health imports the Celery app

    return broker_check().get("queue_depth")


def finish_import(job: ImportJob) -> ImportJob:
    """Once every range is imported: the file's totals, and the summaries it left stale."""
    totals = RawBatch.objects.filter(import_job=job).aggregate(
        accepted=Sum("accepted"), duplicates=Sum("duplicates"), rejected=Sum("rejected")
    )
    job.accepted, job.duplicates, job.rejected = (totals[k] or 0 for k in ("accepted", "duplicates", "rejected"))
    job.finished_at = job.finished_at or timezone.now()
    job.save(update_fields=["accepted", "duplicates", "rejected", "finished_at", "updated_at"])
    maintenance.rebuild_stale()
    return job
