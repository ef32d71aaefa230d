"""Writing validated chunks to the event store, exactly once.

Call inside a transaction: events, rejections, the batches' counts and the
summary maintenance commit together, so a retried batch counts once.
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from events import identity
from events.db import copy_text, insert_ignoring_conflicts, is_postgresql
from events.models import Event, Site, Stanza
from events.privacy import blocks
from events.registry import NormalizedEvent
from ingest.models import RawBatch, Rejection
from ingest.monitoring.recording import count_rejections
from ingest.records import REFUSED, Chunk, rejected
from reports import maintenance

logger = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "uid", "family", "kind", "category", "site_id", "session", "actor", "ts", "online", "raw",
    "batch_id", "line", "client_timestamp",
)  # fmt: skip
COPY_THRESHOLD = 2000  # rows; below it multi-row INSERTs are as fast as COPY


@dataclass(slots=True)
class StoreResult:
    accepted: int
    duplicates: int
    rejected: int
    families: Counter[str] = field(default_factory=Counter)  # the accepted, by family (metrics)
    rules: Counter[str] = field(default_factory=Counter)  # the rejected, by `rejection_rule` (metrics)


def _event_row(event: NormalizedEvent, batch_id: int, line: int) -> tuple:
    return (
        event.uid, event.family, event.kind, event.category, event.site, event.session, event.actor,
        event.ts, event.online, (event.payload_json or orjson.dumps(event.payload)).decode(), batch_id, line,
        event.client_ts,
    )  # fmt: skip


def _copy_lines(rows: Sequence[tuple]) -> list[str]:
    return ["\t".join(map(copy_text, row)) + "\n" for row in rows]


def insert_events(rows: Sequence[tuple]) -> set[str]:
    """Insert event rows (in uid order) whose ids are new; return their uids.

    The ids are claimed in the registry first (events/identity.py); only the events of
    the ids claimed are stored, straight (PostgreSQL: COPY for many, written a page at
    a time). Call under a savepoint: a refused row gives its group's claims back.
    """
    new = identity.claim([(row[0], row[7]) for row in rows])
    if len(new) < len(rows):
        rows = [row for row in rows if row[0] in new]
    if not rows:
        return new
    if is_postgresql() and len(rows) >= COPY_THRESHOLD:
        with connection.cursor() as cursor, connection.wrap_database_errors:  # psycopg2's errors as Django's
            copy = f"COPY events_event ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
            cursor.cursor.copy_expert(copy, io.StringIO("".join(_copy_lines(rows))))
    else:
        insert_ignoring_conflicts("events_event", EVENT_COLUMNS, rows, conflict="")
    return new


def event_ids(uids: Sequence[str]) -> dict[str, int]:
    """uid -> id of stored events."""
    return dict(identity.events_with_uids(Event.objects.all(), uids).values_list("uid", "id"))


def insert_events_isolating(rows: Sequence[tuple]) -> tuple[set[str], list[tuple[tuple, str]]]:
    """Like `insert_events`, but a row the database refuses (a constraint, a trigger, a value
    it cannot hold) is set aside with the database's message instead of failing the others.

    The rows are tried together first; only when that fails are they halved until
    the refused ones are found, each try under a savepoint.
    """
    try:
        with transaction.atomic():
            return insert_events(rows), []
    except DatabaseError as error:
        if len(rows) == 1:
            return set(), [(rows[0], str(error).strip().splitlines()[0] if str(error).strip() else repr(error))]
        if not connection.is_usable():
            raise
    middle = len(rows) // 2
    left, left_refused = insert_events_isolating(rows[:middle])
    right, right_refused = insert_events_isolating(rows[middle:])
    return left | right, left_refused + right_refused


def store_group(items: Sequence[tuple[RawBatch, Chunk]], *, defer_summaries: bool = False) -> list[StoreResult]:
    """Store the chunks of several batches at once: one insert of their events, one of
    their rejections, one summary upkeep for all their new events.

    Within the group the first occurrence of an id (in the order given) is the
    one stored; later ones count as duplicates, as they would across batches.
    The batches' own rows are the caller's. Records of erased actors are withheld first
    (events/privacy/blocks.py), under the erasure lock that this transaction then holds.
    """
    blocks.lock_shared()
    if withheld := blocks.current_blocks():
        for batch, chunk in items:
            received_at = batch.created_at.timestamp() if batch.created_at else time.time()
            withheld.withhold(chunk, received_at)
            if chunk.withheld and batch.body:  # also when an earlier try of this group withheld them
                withheld.cut_body(batch, received_at)
    unique: dict[str, tuple[int, int, NormalizedEvent]] = {}  # uid -> (item index, line, event)
    for index, (_, chunk) in enumerate(items):
        for line, event in chunk.events:
            unique.setdefault(event.uid, (index, line, event))
    # Claiming in uid order: two groups sharing ids then wait on each other
    # instead of deadlocking on the registry's primary key (PostgreSQL).
    ordered = sorted(unique.items())
    sites = sorted({event.site for _, (_, _, event) in ordered})
    Site.objects.bulk_create([Site(code=code) for code in sites], ignore_conflicts=True, batch_size=1000)
    rows = [_event_row(event, items[index][0].pk, line) for _, (index, line, event) in ordered]
    new_uids, refused = insert_events_isolating(rows) if rows else (set(), [])
    refused_uids = {row[0]: reason for row, reason in refused}
    accepted = [0] * len(items)
    families: list[Counter[str]] = [Counter() for _ in items]
    new_events = []
    for uid, (index, _, event) in ordered:
        if uid in new_uids:
            accepted[index] += 1
            families[index][event.family] += 1
            new_events.append(event)
    if details := [e for e in new_events if e.detail]:
        ids = event_ids([e.uid for e in details])
        Stanza.objects.bulk_create([Stanza(event_id=ids[e.uid], **e.detail) for e in details], batch_size=1000)
    results = []
    rejections = []
    for index, (batch, chunk) in enumerate(items):
        refused_here = [
            rejected(line, REFUSED + refused_uids[event.uid], event_bytes(event))
            for line, event in chunk.events
            if event.uid in refused_uids and unique[event.uid][0] == index
        ]
        kept = chunk.rejections + refused_here
        rejections += [Rejection.from_record(batch, r) for r in kept]
        results.append(
            StoreResult(
                accepted=accepted[index],
                duplicates=len(chunk.events) - accepted[index] - len(refused_here),
                rejected=chunk.rejected + len(refused_here),
                families=families[index],
                rules=count_rejections((r.reason for r in kept), chunk.omitted_rules),
            )
        )
    Rejection.objects.bulk_create(rejections, batch_size=1000)
    # Last, so that the summary rows it locks are held for as short a time as possible.
    maintenance.events_stored(new_events, defer=defer_summaries)
    return results


def event_bytes(event: NormalizedEvent) -> bytes:
    return event.payload_json or orjson.dumps(event.payload)


def store_records(batch: RawBatch, chunk: Chunk, *, defer_summaries: bool) -> StoreResult:
    """Store a chunk's events (once each) and its rejections under `batch`; the batch's own row is the caller's."""
    return store_group([(batch, chunk)], defer_summaries=defer_summaries)[0]


def finish_batch(batch: RawBatch, chunk: Chunk, result: StoreResult) -> RawBatch:
    """Set a batch's counts and `done` status (not saved)."""
    batch.record_count = chunk.record_count
    batch.first_line, batch.last_line = chunk.first_line, chunk.last_line
    batch.accepted, batch.duplicates, batch.rejected = result.accepted, result.duplicates, result.rejected
    batch.status = RawBatch.Status.DONE
    batch.processed_at = timezone.now()
    batch.last_error = ""
    return batch


def store_chunk(batch: RawBatch, chunk: Chunk, *, defer_summaries: bool = False) -> StoreResult:
    """Store a batch's only chunk (an API body, a chunk of a sequential import) and mark the batch done."""
    result = store_records(batch, chunk, defer_summaries=defer_summaries)
    finish_batch(batch, chunk, result).save()
    return result
