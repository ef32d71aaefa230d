"""Importing a file from this process, chunk after chunk, each committed with its checkpoint.

Worker processes validate the next chunks while this one stores the current
one (`ingest.imports.loader`); the chunks are stored in file order, so the
checkpoint is always the end of the last stored chunk.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ingest.framing import ARRAY, LineBlock, RawRecord, detect_framing, end_of, iter_pieces, open_stream
from ingest.imports import bulk, loader
from ingest.imports.identity import ConcurrentImport, TailKeeper
from ingest.imports.jobs import find_job
from ingest.imports.seen import SeenIds, seen_ids_of_table
from ingest.models import ImportJob
from ingest.records import whole_record_limit
from reports import maintenance

ProgressCallback = Callable[[ImportJob], None]
NoticeCallback = Callable[[str], None]


def import_file(
    path: str,
    *,
    chunk_lines: int | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    on_notice: NoticeCallback | None = None,
) -> ImportJob:
    """Import an NDJSON or JSON-array file (optionally gzip), resuming from its checkpoint.

    Each chunk commits its events, rejections and the advanced checkpoint in one
    transaction, so a kill at any moment loses nothing and counts nothing twice.
    """
    limits = settings.SWITCHBOARD
    chunk_lines = chunk_lines or limits["IMPORT_CHUNK_LINES"]
    workers = limits["IMPORT_WORKERS"] if workers is None else workers
    with open_stream(path) as raw_stream:
        framing = detect_framing(raw_stream.read(64 * 1024))
        found = find_job(path, raw_stream)
        job = found.job
        if found.notice and on_notice:
            on_notice(found.notice)
        left = _bytes_left(path, raw_stream, job)
        dominating = bulk.dominates(left)
        seen = None
        if dominating:
            bulk.defer_indexes(job)
        stream = TailKeeper(raw_stream, job.next_offset, found.before)
        pieces = iter_pieces(
            stream,  # type: ignore[arg-type]
            framing,
            offset=job.next_offset,
            line_no=job.next_line,
            max_record=whole_record_limit(),
            inside=framing == ARRAY and job.next_offset > 0,
        )
        per_chunk, parts = _parts_with_hashes(pieces, chunk_lines, stream)
        chunk: list[loader.Prepared] = []
        for prepared, checkpoint_hash in loader.prepared_chunks(
            parts, workers, array=framing == ARRAY, ahead=per_chunk
        ):
            chunk.append(prepared)
            if checkpoint_hash is None:
                continue  # the chunk's next part is still to come
            if dominating and seen is None:
                # Built once the validating workers are forked (handing out the first chunk
                # forks them): forked before, each kept the filter's pages (32-64 MiB at 10 M
                # lines) as the command wrote its own copy, counted twice in the import's RSS.
                seen = seen_ids_of_table(left // BYTES_PER_RECORD)
            _store_file_chunk(job, path, chunk, checkpoint_hash, seen)
            chunk = []
            if on_progress:
                on_progress(job)
    if job.finished_at is None:
        job.finished_at = timezone.now()
        job.save(update_fields=["finished_at"])
    bulk.finish_load(dominating or bool(job.deferred_ddl))  # a resumed import may have deferred them before
    return job


# For sizing the filter of stored ids: records are rarely shorter (a gzip file's bytes
# are counted compressed, so its estimate is low: the filter then errs towards "maybe").
BYTES_PER_RECORD = 100


def _bytes_left(path: str, stream: object, job: ImportJob) -> int:
    """About how many bytes are left to import (a gzip file: its compressed size, once)."""
    size = os.path.getsize(path)
    if isinstance(stream, gzip.GzipFile):
        return size if job.next_offset == 0 else 0
    return max(0, size - job.next_offset)


def _chunks_with_hashes(
    pieces: Iterator[LineBlock | RawRecord], size: int, stream: TailKeeper
) -> Iterator[tuple[list[LineBlock | RawRecord], str]]:
    """The records in chunks of `size` (whole lines in blocks, cut where a chunk ends), each
    with the hash of the bytes before its end (its checkpoint's proof)."""
    chunk: list[LineBlock | RawRecord] = []
    room = size
    for piece in pieces:
        if isinstance(piece, LineBlock):
            while piece.count > room:
                head, piece = piece.split(room)
                chunk.append(head)
                yield chunk, stream.hash_before(head.end)
                chunk, room = [], size
            room -= piece.count
        else:
            room -= 1
        chunk.append(piece)
        if room == 0:
            yield chunk, stream.hash_before(end_of(piece))
            chunk, room = [], size
    if chunk:
        yield chunk, stream.hash_before(end_of(chunk[-1]))


def _parts_with_hashes(
    pieces: Iterator[LineBlock | RawRecord], size: int, stream: TailKeeper
) -> tuple[int, Iterator[tuple[list[LineBlock | RawRecord], str | None]]]:
    """(parts per chunk, the parts): the records in chunks of about `size` (a transaction
    each), each cut into as many equal parts of at most `loader.PART_LINES` as it takes. A
    chunk's last part comes with the hash of the bytes before its end, the others with None."""
    per_chunk = -(-size // loader.PART_LINES)
    return per_chunk, _marked_parts(_chunks_with_hashes(pieces, -(-size // per_chunk), stream), per_chunk)


def _marked_parts(
    parts: Iterator[tuple[list[LineBlock | RawRecord], str]], per_chunk: int
) -> Iterator[tuple[list[LineBlock | RawRecord], str | None]]:
    held = next(parts, None)  # one part held back: the file's last part ends its chunk, whatever its number
    for number, following in enumerate(parts, 1):
        yield held[0], held[1] if number % per_chunk == 0 else None  # type: ignore[index]
        held = following
    if held is not None:
        yield held


@transaction.atomic
def _store_file_chunk(
    job: ImportJob, path: str, parts: list[loader.Prepared], checkpoint_hash: str, seen: SeenIds | None
) -> None:
    locked = ImportJob.objects.select_for_update().get(pk=job.pk)
    if locked.next_offset != job.next_offset:
        raise ConcurrentImport(f"{path} is being imported by another process")
    stored = loader.store_parts(parts, source=path, job_id=job.pk, byte_start=job.next_offset, seen=seen)
    job.next_offset = parts[-1].end_offset
    job.next_line = parts[-1].next_line
    job.checkpoint_hash = checkpoint_hash
    job.accepted += sum(part.accepted for part in stored)
    job.duplicates += sum(part.duplicates for part in stored)
    job.rejected += sum(part.rejected for part in stored)
    job.deferred_ddl = locked.deferred_ddl  # another import may have built them meanwhile
    job.save()


def rebuild_abandoned_stale_summaries(quiet_seconds: int = 600) -> int:
    """Rebuild what an import killed and not rerun left behind: its deferred indexes, then
    the summaries it left stale.

    While an import is still advancing it does this itself at its end; doing it
    now would be wasted work, so this waits until no import has moved for `quiet_seconds`.
    """
    cutoff = timezone.now() - timezone.timedelta(seconds=quiet_seconds)
    if ImportJob.objects.filter(finished_at__isnull=True, updated_at__gte=cutoff).exists():
        return 0
    return maintenance.rebuild_stale(bulk=bulk.restore_deferred() > 0)
