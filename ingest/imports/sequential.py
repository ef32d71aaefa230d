"""Importing a file from this process, chunk after chunk, each committed with its checkpoint.

Worker processes validate the next chunks while this one stores the current
one (`ingest.imports.loader`); the chunks are stored in file order, so the
checkpoint is always the end of the last stored chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ingest.framing import ARRAY, detect_framing, iter_records, open_stream
from ingest.imports import loader
from ingest.imports.identity import ConcurrentImport, fingerprint
from ingest.models import ImportJob
from reports import maintenance

ProgressCallback = Callable[[ImportJob], None]


def import_file(
    path: str,
    *,
    chunk_lines: int | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> ImportJob:
    """Import an NDJSON or JSON-array file (optionally gzip), resuming from its checkpoint.

    Each chunk commits its events, rejections and the advanced checkpoint in one
    transaction, so a kill at any moment loses nothing and counts nothing twice.
    """
    limits = settings.SWITCHBOARD
    chunk_lines = chunk_lines or limits["IMPORT_CHUNK_LINES"]
    workers = limits["IMPORT_WORKERS"] if workers is None else workers
    job, _ = ImportJob.objects.get_or_create(fingerprint=fingerprint(path), defaults={"path": path})
    with open_stream(path) as stream:
        framing = detect_framing(stream.read(64 * 1024))
        stream.seek(job.next_offset)
        records = iter_records(
            stream,
            framing,
            offset=job.next_offset,
            line_no=job.next_line,
            max_record=limits["MAX_RECORD_BYTES"],
            inside=framing == ARRAY and job.next_offset > 0,
        )
        chunks = iter(lambda: list(islice(records, chunk_lines)), [])
        for prepared in loader.prepared_chunks(chunks, workers, array=framing == ARRAY):
            _store_file_chunk(job, path, prepared)
            if on_progress:
                on_progress(job)
    if job.finished_at is None:
        job.finished_at = timezone.now()
        job.save(update_fields=["finished_at"])
    maintenance.rebuild_stale()
    return job


@transaction.atomic
def _store_file_chunk(job: ImportJob, path: str, prepared: loader.Prepared) -> None:
    locked = ImportJob.objects.select_for_update().get(pk=job.pk)
    if locked.next_offset != job.next_offset:
        raise ConcurrentImport(f"{path} is being imported by another process")
    stored = loader.store(prepared, source=path, job_id=job.pk, byte_start=job.next_offset)
    job.next_offset = prepared.end_offset
    job.next_line = prepared.next_line
    job.accepted += stored.accepted
    job.duplicates += stored.duplicates
    job.rejected += stored.rejected
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
