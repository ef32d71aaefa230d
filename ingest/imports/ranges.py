"""Parallel file imports: an NDJSON file cut into byte ranges that workers import.

The command plans the ranges (cut at newlines, with the true line number each
starts on) in one transaction; workers claim them (`ImportRange`). A worker
imports its range in chunks; each commits its events, rejections, a provenance
`RawBatch` and the range's advanced `next_offset` together, so a worker killed
mid-range is resumed by the next delivery without counting anything twice.
Every worker reads the file itself, so the file must be at the same path on all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from events.db import is_postgresql
from events.privacy.blocks import current_blocks
from ingest.collector import collector_paused
from ingest.framing import ARRAY, detect_framing, iter_ndjson
from ingest.imports import bulk, loader
from ingest.imports.identity import ConcurrentImport, bytes_before, fingerprint, window_hash
from ingest.imports.jobs import find_job
from ingest.models import ImportJob, ImportRange
from ingest.records import whole_record_limit

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
    unfinished: list[int]  # range ids still to import


def plan_import(path: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Plan:
    """Plan the file's ranges once; a rerun reuses them and plans only bytes appended since.

    The job's checkpoint moves to the end of the planned ranges: the file is
    handed out up to there, and a sequential run would not import it again.
    """
    path = os.path.abspath(path)
    with open(path, "rb") as stream:
        job = find_job(path, stream).job
        size = os.path.getsize(path)
        checkpoint_hash = window_hash(bytes_before(stream, size) or b"")
    ranges, next_line = [], job.next_line
    if job.next_offset < size:  # the scan reads the file, so not inside the transaction
        ranges, next_line = split_ranges(path, job.next_offset, job.next_line, size, chunk_bytes)
    with transaction.atomic():
        locked = ImportJob.objects.select_for_update().get(pk=job.pk)
        if locked.next_offset != job.next_offset:
            raise ConcurrentImport(f"{path} is being imported by another process")
        if ranges:
            ImportRange.objects.bulk_create([_new_range(job, r) for r in ranges], batch_size=1000)
            locked.next_offset, locked.next_line, locked.finished_at = size, next_line, None
            locked.checkpoint_hash = checkpoint_hash
            locked.save(update_fields=["next_offset", "next_line", "checkpoint_hash", "finished_at", "updated_at"])
    if ranges and bulk.dominates(size - job.next_offset):
        bulk.defer_indexes(locked)
    unfinished = list(locked.ranges.unfinished().order_by("byte_start").values_list("pk", flat=True))
    return Plan(locked, locked.ranges.count(), len(ranges), unfinished)


def _new_range(job: ImportJob, r: Range) -> ImportRange:
    return ImportRange(
        job=job, byte_start=r.start, byte_end=r.end, first_line=r.first_line,
        next_offset=r.start, next_line=r.first_line,
    )  # fmt: skip


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


def process_range(range_id: int, chunk_lines: int | None = None) -> ImportRange | None:
    """Import one range from its checkpoint; a second delivery, even a concurrent one, changes nothing."""
    if not ImportRange.objects.claim(range_id):
        return None
    part = ImportRange.objects.select_related("job").get(pk=range_id)
    _check_file(part)
    path = part.job.path
    chunk_lines = chunk_lines or settings.SWITCHBOARD["IMPORT_CHUNK_LINES"]
    # "Future" is judged against the time the range was planned, the same on every delivery.
    now = part.created_at.timestamp()
    with open(path, "rb") as f:
        f.seek(part.next_offset)
        records = iter_ndjson(
            _RangeReader(f, part.byte_end),  # type: ignore[arg-type]
            offset=part.next_offset,
            line_no=part.next_line,
            max_record=whole_record_limit(),
        )
        start = part.next_offset
        chunks = iter(lambda: list(islice(records, chunk_lines)), [])
        part_lines = -(-chunk_lines // -(-chunk_lines // loader.PART_LINES))  # as the command's (sequential.py)
        with collector_paused() as collect:
            withheld = current_blocks()  # erasures' blocks, read once per delivery
            for raw in chunks:
                prepared = [
                    loader.prepare(raw[i : i + part_lines], now, is_postgresql(), withheld=withheld)
                    for i in range(0, len(raw), part_lines)
                ]
                stored = _store_range_chunk(range_id, start, prepared)
                if stored is None:
                    return None  # another delivery moved this range on: it carries on from there
                part, start = stored, prepared[-1].end_offset
                ImportJob.objects.filter(pk=part.job_id).update(updated_at=timezone.now())  # still advancing
                collect()
    if start >= part.byte_end and part.status != ImportRange.Status.DONE:  # an empty range
        ImportRange.objects.filter(pk=range_id, next_offset=start).update(
            status=ImportRange.Status.DONE, processed_at=timezone.now()
        )
    return part


def _check_file(part: ImportRange) -> None:
    job = part.job
    try:
        with open(job.path, "rb") as stream:
            before = bytes_before(stream, job.next_offset)
        same = before is not None and fingerprint(job.path) == job.fingerprint
        same = same and job.checkpoint_hash in ("", window_hash(before))  # type: ignore[arg-type]
    except OSError as error:
        same, reason = False, str(error)
    else:
        reason = "the file differs from the one that was planned"
    if not same:
        # Back to pending: the command warns that no worker advances it.
        ImportRange.objects.filter(pk=part.pk, status=ImportRange.Status.PROCESSING).update(
            status=ImportRange.Status.PENDING
        )
        raise FileUnavailable(
            f"range {part.pk} of {job.path}: {reason} (the file must be at the same path on every worker)"
        )


@transaction.atomic
def _store_range_chunk(range_id: int, start: int, prepared: list[loader.Prepared]) -> ImportRange | None:
    part = ImportRange.objects.select_for_update().select_related("job").get(pk=range_id)
    if part.status == ImportRange.Status.DONE or part.next_offset != start:
        return None
    results = loader.store_parts(
        prepared, source=part.job.path, job_id=part.job_id, byte_start=start, range_id=range_id
    )
    # A range holds many chunks: its counts grow with each, and it is done at its end.
    part.record_count += sum(p.records for p in prepared)
    part.accepted += sum(r.accepted for r in results)
    part.duplicates += sum(r.duplicates for r in results)
    part.rejected += sum(r.rejected for r in results)
    last = prepared[-1]
    part.next_offset = last.end_offset
    part.next_line = last.next_line
    now = timezone.now()
    if last.end_offset >= part.byte_end:
        part.status, part.processed_at = ImportRange.Status.DONE, now
    part.claimed_at = now  # a heartbeat: the sweeper leaves an advancing range alone
    part.save()
    return part


def stale_ranges(now: datetime | None = None) -> QuerySet[ImportRange]:
    """Ranges a worker should have taken by now: never enqueued, lost by the broker, or
    claimed by a worker that died (SIGKILL leaves them "processing")."""
    now = now or timezone.now()
    limits = settings.SWITCHBOARD
    grace = now - timedelta(seconds=limits["PENDING_GRACE_SECONDS"])
    requeue = now - timedelta(seconds=limits["PENDING_REQUEUE_SECONDS"])
    processing_timeout = now - timedelta(seconds=limits["PROCESSING_TIMEOUT_SECONDS"])
    pending = Q(status=ImportRange.Status.PENDING) & (
        Q(enqueued_at__isnull=True, created_at__lte=grace) | Q(enqueued_at__lte=requeue)
    )
    abandoned = Q(status=ImportRange.Status.PROCESSING, claimed_at__lte=processing_timeout)
    return ImportRange.objects.filter(pending | abandoned).order_by("pk")
