"""Importing a file in this process, chunk after chunk, each committed with its checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ingest.framing import ARRAY, RawRecord, detect_framing, iter_records, open_stream
from ingest.imports.identity import ConcurrentImport, fingerprint
from ingest.models import ImportJob, RawBatch
from ingest.records import Chunk, validate_into
from ingest.store import store_chunk
from reports import maintenance

ProgressCallback = Callable[[ImportJob], None]


def import_file(path: str, *, chunk_lines: int | None = None, on_progress: ProgressCallback | None = None) -> ImportJob:
    """Import an NDJSON or JSON-array file (optionally gzip), resuming from its checkpoint.

    Each chunk commits its events, rejections and the advanced checkpoint in one
    transaction, so a kill at any moment loses nothing and counts nothing twice.
    """
    chunk_lines = chunk_lines or settings.SWITCHBOARD["IMPORT_CHUNK_LINES"]
    job, _ = ImportJob.objects.get_or_create(fingerprint=fingerprint(path), defaults={"path": path})
    with open_stream(path) as stream:
        framing = detect_framing(stream.read(64 * 1024))
        stream.seek(job.next_offset)
        records = iter_records(
            stream,
            framing,
            offset=job.next_offset,
            line_no=job.next_line,
            max_record=settings.SWITCHBOARD["MAX_RECORD_BYTES"],
            inside=framing == ARRAY and job.next_offset > 0,
        )
        while raw := list(islice(records, chunk_lines)):
            chunk = validate_into(Chunk(), raw, time.time())
            _store_file_chunk(job, path, chunk, _line_after(raw[-1], framing))
            if on_progress:
                on_progress(job)
    if job.finished_at is None:
        job.finished_at = timezone.now()
        job.save(update_fields=["finished_at"])
    maintenance.rebuild_stale()
    return job


def _line_after(record: RawRecord, framing: str) -> int:
    """The line number at a record's end offset, where a resumed import goes on counting."""
    line, raw, _end = record
    if framing == ARRAY:  # the offset is right after the element, on its last line
        return line + (raw.count(b"\n") if isinstance(raw, bytes) else 0)
    return line + 1  # the offset is after the line's newline


@transaction.atomic
def _store_file_chunk(job: ImportJob, path: str, chunk: Chunk, next_line: int) -> None:
    locked = ImportJob.objects.select_for_update().get(pk=job.pk)
    if locked.next_offset != job.next_offset:
        raise ConcurrentImport(f"{path} is being imported by another process")
    batch = RawBatch.objects.create(
        source=path,
        import_job=job,
        byte_start=job.next_offset,
        byte_end=chunk.end_offset,
        status=RawBatch.Status.PROCESSING,
    )
    result = store_chunk(batch, chunk, defer_summaries=True)
    job.next_offset = chunk.end_offset
    job.next_line = next_line
    job.accepted += result.accepted
    job.duplicates += result.duplicates
    job.rejected += result.rejected
    job.save()


def rebuild_abandoned_stale_summaries(quiet_seconds: int = 600) -> int:
    """Rebuild summaries left stale by an import that was killed and not rerun.

    While an import is still advancing it rebuilds its own sites at the end;
    rebuilding them now would be wasted work, so this waits until no import
    has moved for `quiet_seconds`.
    """
    cutoff = timezone.now() - timezone.timedelta(seconds=quiet_seconds)
    if ImportJob.objects.filter(finished_at__isnull=True, updated_at__gte=cutoff).exists():
        return 0
    return maintenance.rebuild_stale()
