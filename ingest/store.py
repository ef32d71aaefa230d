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

from events import retention
from events.db import chunked, copy_text, copy_unless_raced, insert_ignoring_conflicts, is_postgresql
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


COPY_ATTEMPTS = 3  # straight COPYs of a group's new events before it is inserted ON CONFLICT instead


def _copy_lines(rows: Sequence[tuple]) -> list[str]:
    return ["\t".join(map(copy_text, row)) + "\n" for row in rows]


def _copy_new_events(rows: Sequence[tuple], lines: Sequence[str]) -> set[str] | None:
    """PostgreSQL bulk path: COPY the rows whose ids are not stored yet straight into the
    table (written a page at a time, without INSERT's speculative insertion per row).

    If another writer stores one of them meanwhile, the unique index makes the COPY wait
    for that writer and refuses it once the writer commits: the stored ids are read again
    (now including the writer's) and the rest copied again, up to COPY_ATTEMPTS times;
    then None, for the caller to insert ON CONFLICT instead.
    """
    uids = [row[0] for row in rows]
    copy = f"COPY events_event ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
    with connection.cursor() as cursor:
        for attempt in range(1, COPY_ATTEMPTS + 1):
            cursor.execute("SELECT uid FROM events_event WHERE uid = ANY(%s)", [uids])
            stored = {uid for (uid,) in cursor.fetchall()}
            new = [i for i, uid in enumerate(uids) if uid not in stored]
            if not new:
                return set()
            if copy_unless_raced(cursor, copy, io.StringIO("".join([lines[i] for i in new]))):
                return {uids[i] for i in new}
            logger.debug("COPY %d of %d events met an id another writer stored", attempt, len(new))
    return None


def _insert_events_staged(lines: Sequence[str]) -> set[str]:
    """COPY into a temporary table, then one set-based insert that skips stored ids."""
    columns = ", ".join(EVENT_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS event_staging ON COMMIT DELETE ROWS"
            f" AS SELECT {columns} FROM events_event WITH NO DATA"
        )
        cursor.cursor.copy_expert(f"COPY event_staging ({columns}) FROM STDIN", io.StringIO("".join(lines)))
        cursor.execute(
            f"INSERT INTO events_event ({columns}) SELECT {columns} FROM event_staging"
            " ON CONFLICT (uid) DO NOTHING RETURNING uid"
        )
        inserted = {uid for (uid,) in cursor.fetchall()}
        cursor.execute("TRUNCATE event_staging")
    return inserted


def insert_events(rows: Sequence[tuple]) -> set[str]:
    """Insert event rows (in the order given); return the uids of those not already stored."""
    if is_postgresql() and len(rows) >= COPY_THRESHOLD:
        lines = _copy_lines(rows)  # built once for every attempt
        new = _copy_new_events(rows, lines)
        return _insert_events_staged(lines) if new is None else new
    return {uid for (uid,) in insert_ignoring_conflicts("events_event", EVENT_COLUMNS, rows, "uid", "uid")}


def event_ids(uids: Sequence[str]) -> dict[str, int]:
    """uid -> id of stored events."""
    ids: dict[str, int] = {}
    for part in chunked(uids, 1000):
        ids.update(Event.objects.filter(uid__in=part).values_list("uid", "id"))
    return ids


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
    for uid in retention.pruned_ids(unique):  # stored once, then pruned: duplicates
        del unique[uid]
    # Inserting in uid order: two groups sharing ids then wait on each other
    # instead of deadlocking on the unique index (PostgreSQL).
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
