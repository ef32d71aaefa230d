"""Writing a validated chunk to the event store, exactly once.

Call inside a transaction: events, rejections, the batch's counts and the
summary maintenance commit together, so a retried batch counts once.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from django.db import connection
from django.utils import timezone

from events.db import copy_text, insert_ignoring_conflicts, is_postgresql
from events.models import Site, Stanza
from events.registry import NormalizedEvent
from ingest.models import RawBatch, Rejection
from ingest.records import Chunk
from reports import maintenance

EVENT_COLUMNS = (
    "uid", "family", "kind", "category", "site_id", "session", "actor", "ts", "online", "raw",
    "batch_id", "line",
)  # fmt: skip
COPY_THRESHOLD = 2000  # rows; below it multi-row INSERTs are as fast as COPY


@dataclass(slots=True)
class StoreResult:
    accepted: int
    duplicates: int
    rejected: int


def _event_row(event: NormalizedEvent, batch_id: int, line: int) -> tuple:
    return (
        event.uid, event.family, event.kind, event.category, event.site, event.session, event.actor,
        event.ts, event.online, (event.payload_json or orjson.dumps(event.payload)).decode(), batch_id, line,
    )  # fmt: skip


def _insert_events_copy(rows: Sequence[tuple]) -> list[tuple]:
    """PostgreSQL bulk path: COPY into a temporary table, then one set-based insert."""
    buffer = io.StringIO()
    buffer.writelines("\t".join(map(copy_text, row)) + "\n" for row in rows)
    buffer.seek(0)
    columns = ", ".join(EVENT_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS event_staging ON COMMIT DELETE ROWS"
            f" AS SELECT {columns} FROM events_event WITH NO DATA"
        )
        cursor.cursor.copy_expert(f"COPY event_staging ({columns}) FROM STDIN", buffer)
        cursor.execute(
            f"INSERT INTO events_event ({columns}) SELECT {columns} FROM event_staging"
            " ON CONFLICT (uid) DO NOTHING RETURNING uid, id"
        )
        inserted = cursor.fetchall()
        cursor.execute("TRUNCATE event_staging")
    return inserted


def insert_events(rows: Sequence[tuple]) -> dict[str, int]:
    """Insert event rows; return uid -> id of those that were not already stored."""
    if is_postgresql() and len(rows) >= COPY_THRESHOLD:
        inserted = _insert_events_copy(rows)
    else:
        inserted = insert_ignoring_conflicts("events_event", EVENT_COLUMNS, rows, "uid", "uid, id")
    return dict(inserted)


def store_chunk(batch: RawBatch, chunk: Chunk, *, defer_summaries: bool = False) -> StoreResult:
    """Store a batch's only chunk (an API body, a chunk of a sequential import) and mark the batch done."""
    result = store_records(batch, chunk, defer_summaries=defer_summaries)
    batch.record_count = chunk.record_count
    batch.first_line, batch.last_line = chunk.first_line, chunk.last_line
    batch.accepted, batch.duplicates, batch.rejected = result.accepted, result.duplicates, result.rejected
    batch.status = RawBatch.Status.DONE
    batch.processed_at = timezone.now()
    batch.save()
    return result


def store_records(batch: RawBatch, chunk: Chunk, *, defer_summaries: bool) -> StoreResult:
    """Store a chunk's events (once each) and its rejections under `batch`; the batch's own row is the caller's."""
    unique: dict[str, tuple[int, NormalizedEvent]] = {}
    for line, event in chunk.events:
        unique.setdefault(event.uid, (line, event))  # the first of a batch wins
    # Inserting in uid order: two batches sharing ids then wait on each other
    # instead of deadlocking on the unique index (PostgreSQL).
    unique = dict(sorted(unique.items()))
    sites = sorted({event.site for _, event in unique.values()})
    Site.objects.bulk_create([Site(code=code) for code in sites], ignore_conflicts=True, batch_size=1000)
    new_ids = insert_events([_event_row(event, batch.pk, line) for line, event in unique.values()])
    new_events = [event for _, event in unique.values() if event.uid in new_ids]
    Stanza.objects.bulk_create(
        [Stanza(event_id=new_ids[e.uid], **e.detail) for e in new_events if e.detail], batch_size=1000
    )
    maintenance.events_stored(new_events, defer=defer_summaries)
    Rejection.objects.bulk_create([Rejection.from_record(batch, r) for r in chunk.rejections], batch_size=1000)
    return StoreResult(
        accepted=len(new_events),
        duplicates=len(chunk.events) - len(new_events),
        rejected=len(chunk.rejections),
    )
