"""Raw batches from the API: stored first, then drained by workers in groups, exactly once.

The pending rows are the outbox and the queue: the request path inserts a row
and asks for a wake-up (ingest/wakeups.py); a woken worker claims groups of
pending batches (`SELECT ... FOR UPDATE SKIP LOCKED`, so workers on any
machines never wait on each other), validates them outside any write
transaction and stores each group in one transaction. Whatever happens to the
broker or a worker, a batch answered 202 is in the database and processed
eventually: by a woken worker, by the sweeper's wake-up, or by
`manage.py process_pending`.

Exactly once: storing a group first locks its batches and skips any that is
no longer `processing` (another worker finished it), and everything a group
writes commits together. A worker killed mid-group leaves its batches
`processing`; once their claim is older than PROCESSING_TIMEOUT_SECONDS any
worker claims them again. Failures: a group that fails is halved until the
failing batch is alone; it goes back to pending with its error and is retried
after RETRY_DELAY_SECONDS, alone; a batch claimed MAX_ATTEMPTS times without
finishing (errors, or workers lost while holding it) ends `failed` and is
retried only by `manage.py retry_failed`. A database outage is no batch's failure: the
interrupted group is given back (`release_claims`) by the task's retry once the database is back.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Field, Min, Q
from django.utils import timezone

from config.errors import database_unavailable
from events.clock import Receipt
from events.db import pk_among, update_rows
from ingest import wakeups
from ingest.body import decode_body, iter_body_records
from ingest.collector import collector_paused
from ingest.models import Application, RawBatch
from ingest.monitoring import recording
from ingest.records import Chunk, validate_into, whole_record_limit
from ingest.site_access import reject_sites_not_allowed
from ingest.store import StoreResult, finish_batch, store_group

API_SOURCE = "api"
# Rows a claim looks at (and locks): CANDIDATES at first; while claims take every one (a
# stream of tiny batches) the drain doubles it up to MAX_CANDIDATES, so that one group's
# statements and commits serve thousands of one-event batches (-15 % worker CPU and -30 %
# PostgreSQL CPU per batch at 2,000 vs 500); large batches keep locking few rows they cannot take.
CANDIDATES = 500
MAX_CANDIDATES = 2000
ERROR_LENGTH = 2000


def receive_batch(
    app: Application,
    body: bytes,
    content_type: str,
    content_encoding: str,
    records: int,
    sent_at: datetime | None = None,
) -> RawBatch:
    """Store a request body as it was received (one insert) and ask for a worker to wake up.

    `sent_at`: the client's send time for the body (`X-Sent-At`); `created_at` is the receive time."""
    values = {
        "app_id": app.pk,
        "source": API_SOURCE,
        "body": body,
        "content_type": content_type[:100],
        "content_encoding": content_encoding[:32],
        "record_count": records,
        "created_at": timezone.now(),
        "sent_at": sent_at,
    }
    batch_id = _insert_batch(values)
    transaction.on_commit(wakeups.wake)
    return RawBatch(pk=batch_id, **values)


# The columns a request gives; every other column takes its model default.
_GIVEN = ("app_id", "source", "body", "content_type", "content_encoding", "record_count", "created_at", "sent_at")


@functools.cache
def _batch_insert() -> tuple[str, list[Field], list]:
    """The outbox insert (the ORM's save costs ~10x the SQL): its SQL, the fields a request
    gives, and the other columns' defaults, converted once (they are constants)."""
    fields = [f for f in RawBatch._meta.concrete_fields if not f.primary_key]
    given = [next(f for f in fields if f.attname == name) for name in _GIVEN]
    others = [f for f in fields if f.attname not in _GIVEN]
    if per_row := [f.attname for f in others if f.has_default() and callable(f.default)]:
        raise TypeError(f"RawBatch defaults computed per row must be given by the request: {per_row}")
    columns = ", ".join(connection.ops.quote_name(f.column) for f in given + others)
    marks = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {RawBatch._meta.db_table} ({columns}) VALUES ({marks}) RETURNING id"
    return sql, given, [f.get_db_prep_save(f.get_default(), connection) for f in others]


def _insert_batch(values: dict) -> int:
    sql, given, defaults = _batch_insert()
    params = [f.get_db_prep_save(values[f.attname], connection) for f in given]
    with connection.cursor() as cursor:
        cursor.execute(sql, params + defaults)
        return cursor.fetchone()[0]


def batch_records(batch: RawBatch) -> Chunk:
    """Validate a stored API body into a chunk (pure: no database access)."""
    limits = settings.SWITCHBOARD
    body = decode_body(bytes(batch.body), batch.content_encoding, limits["MAX_BODY_BYTES"])
    # "Future" is judged against the time the batch was received, so a batch
    # processed late (or twice) is judged the same way every time.
    chunk = Chunk(max_rejections=limits["MAX_STORED_REJECTIONS"])
    # Streamed: a body of many tiny records is never held as a list of them.
    records = iter_body_records(body, batch.content_type, whole_record_limit())
    chunk = validate_into(chunk, records, batch.created_at.timestamp(), batch_receipt(batch))
    return reject_sites_not_allowed(chunk, batch.app)


def batch_receipt(batch: RawBatch) -> Receipt | None:
    """An API batch's receive time (and its client's send time), by which records that have a
    send time are placed (events/clock.py); None for other batches (replays), whose records
    are taken as given unless they bring both times."""
    if batch.source != API_SOURCE:
        return None
    received = batch.created_at.timestamp()
    return Receipt(received, None if batch.sent_at is None else batch.sent_at.timestamp())


# -- claiming ------------------------------------------------------------------


def _claimable(now: datetime) -> Q:
    limits = settings.SWITCHBOARD
    retry_after = now - timedelta(seconds=limits["RETRY_DELAY_SECONDS"])
    abandoned = now - timedelta(seconds=limits["PROCESSING_TIMEOUT_SECONDS"])
    return Q(status=RawBatch.Status.PENDING) & (Q(attempts=0) | Q(claimed_at__lte=retry_after)) | Q(
        status=RawBatch.Status.PROCESSING, claimed_at__lte=abandoned
    )


def claimable_batches(now: datetime | None = None):  # -> QuerySet[RawBatch]
    """API batches a worker may take now, oldest first."""
    return RawBatch.objects.unfinished().filter(_claimable(now or timezone.now())).order_by("created_at", "pk")


class Claimed(list):
    """Claimed batch ids; `full` when the group stopped at its bounds or took every candidate
    the claim looked at (`took_all`): more may be waiting, the drain claims again at once."""

    full = False
    took_all = False
    claimed_at: datetime | None = None


def claim_group(batch_ids: list[int] | None = None, look_at: int = CANDIDATES) -> Claimed:
    """Claim pending batches, oldest first, bounded by GROUP_RECORDS and GROUP_BYTES (at least one),
    among the `look_at` oldest claimable ones.

    A batch that was tried before (an error, or a worker lost while holding
    it) is claimed alone, so that it cannot take others down with it; one
    that has used up MAX_ATTEMPTS ends `failed` instead.
    """
    limits = settings.SWITCHBOARD
    now = timezone.now()
    candidates = claimable_batches(now)
    if batch_ids is not None:
        candidates = candidates.filter(pk__in=batch_ids)
    if connection.features.has_select_for_update_skip_locked:
        candidates = candidates.select_for_update(skip_locked=True)
    with transaction.atomic():
        rows = list(
            candidates.annotate(size=_body_size()).values_list("pk", "record_count", "size", "attempts", "last_error")[
                :look_at
            ]
        )
        chosen = Claimed()
        records = size = 0
        for pk, record_count, body_size, attempts, last_error in rows:
            if attempts >= limits["MAX_ATTEMPTS"]:
                _give_up(pk, attempts, last_error, now)
                continue
            if attempts and chosen:
                break  # tried before: alone, on the next claim
            full = records + record_count > limits["GROUP_RECORDS"] or size + body_size > limits["GROUP_BYTES"]
            if chosen and full:
                chosen.full = True
                break
            chosen.append(pk)
            records, size = records + record_count, size + body_size
            if attempts:
                break
        else:
            # Every candidate taken and as many as were asked for: more are likely waiting
            # (a stream of one-event posts), so the drain claims again at once instead of lingering.
            chosen.took_all = chosen.full = bool(chosen) and len(rows) == look_at
        if chosen:
            RawBatch.objects.filter(pk_among(RawBatch, chosen)).update(
                status=RawBatch.Status.PROCESSING, attempts=F("attempts") + 1, claimed_at=now
            )
            chosen.claimed_at = now
    return chosen


def _body_size():  # -> Func
    from django.db.models.functions import Length

    return Length("body")


def _give_up(pk: int, attempts: int, last_error: str, now: datetime) -> None:
    reason = last_error or "its worker was lost (killed, out of memory or over PROCESSING_TIMEOUT_SECONDS)"
    RawBatch.objects.filter(pk=pk).update(
        status=RawBatch.Status.FAILED,
        processed_at=now,
        last_error=f"gave up after {attempts} attempts; last: {reason}"[:ERROR_LENGTH],
    )
    recording.batch_error(pk, f"gave up after {attempts} attempts: {reason}", final=True)


# -- processing ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    done: int
    failed: int  # batches that went back to pending (or ended failed) with an error


def process_group(batch_ids: list[int]) -> GroupOutcome:
    """Validate claimed batches (no transaction held) and store them in one transaction.

    The cycle collector is off meanwhile: a group is bounded (GROUP_RECORDS, GROUP_BYTES)
    and freed by reference counting when it ends (ingest/collector.py)."""
    with collector_paused():
        return _process_group(batch_ids)


def _process_group(batch_ids: list[int]) -> GroupOutcome:
    batches = list(RawBatch.objects.filter(pk_among(RawBatch, batch_ids)).select_related("app").order_by("pk"))
    items: list[tuple[RawBatch, Chunk]] = []
    failed = 0
    for batch in batches:
        try:
            items.append((batch, batch_records(batch)))
        except Exception as error:  # a bug or a body that no longer decodes: that batch alone
            _record_failure(batch.pk, error)
            failed += 1
    done, store_failed = _store_isolating(items, group=min(batch_ids))
    return GroupOutcome(done, failed + store_failed)


def _store_isolating(items: list[tuple[RawBatch, Chunk]], group: int) -> tuple[int, int]:
    """Store the group; if it fails, halve it until the failing batches are alone."""
    if not items:
        return 0, 0
    try:
        return _store(items, group), 0
    except Exception as error:
        if not connection.is_usable():
            raise  # the database is gone, not a batch's fault: the claims expire and are taken again
        if len(items) == 1:
            _record_failure(items[0][0].pk, error)
            return 0, 1
    middle = len(items) // 2
    left = _store_isolating(items[:middle], group)
    right = _store_isolating(items[middle:], group)
    return left[0] + right[0], left[1] + right[1]


def _store(items: list[tuple[RawBatch, Chunk]], group: int) -> int:
    with transaction.atomic():
        # Locked in id order (no deadlocks between groups); one finished meanwhile is skipped.
        mine = set(
            RawBatch.objects.select_for_update()
            .filter(pk_among(RawBatch, [b.pk for b, _ in items]), status=RawBatch.Status.PROCESSING)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        items = [(b, c) for b, c in items if b.pk in mine]
        if not items:
            return 0
        results = store_group(items)
        finished = [finish_batch(batch, chunk, result) for (batch, chunk), result in zip(items, results, strict=True)]
        update_rows(
            RawBatch,
            ["record_count", "first_line", "last_line", "accepted", "duplicates", "rejected", "status",
             "processed_at", "last_error"],
            finished,
        )  # fmt: skip
    for batch, result in zip(finished, results, strict=True):  # committed: count them
        _record_stored(batch, result, group)
    return len(finished)


def _record_stored(batch: RawBatch, result: StoreResult, group: int) -> None:
    recording.batch_stored(
        batch_id=batch.pk, group=group, created_at=batch.created_at, processed_at=batch.processed_at,
        records=batch.record_count, families=result.families, duplicates=result.duplicates, rules=result.rules,
    )  # fmt: skip


def _record_failure(batch_id: int, error: BaseException) -> None:
    """Back to pending with the error, to be retried (alone) after RETRY_DELAY_SECONDS."""
    message = f"{type(error).__name__}: {error}".strip()[:ERROR_LENGTH]
    recording.batch_error(batch_id, message, final=False)
    RawBatch.objects.filter(pk=batch_id, status=RawBatch.Status.PROCESSING).update(
        status=RawBatch.Status.PENDING, last_error=message, claimed_at=timezone.now()
    )


@dataclass(slots=True)
class DrainResult:
    groups: int = 0
    done: int = 0
    failed: int = 0


def drain(max_seconds: float | None = None, linger: float = 0) -> DrainResult:
    """Claim and process groups until nothing is claimable (or `max_seconds` have passed).

    With `linger`, a group that did not fill its bounds is followed by a pause
    before the next claim: under a steady stream of small posts the next group
    then holds `linger` seconds of them instead of the one or two that arrived
    while this one was stored, so the per-group cost (a few dozen statements
    and two commits) is shared by many batches. A group that took every candidate
    its claim looked at is followed at once by a claim looking at twice as many (up
    to MAX_CANDIDATES): a backlog of one-event batches is stored thousands at a time.
    """
    result = DrainResult()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    look_at = CANDIDATES
    while deadline is None or time.monotonic() < deadline:
        claimed = claim_group(look_at=look_at)
        look_at = min(2 * look_at, MAX_CANDIDATES) if claimed.took_all else CANDIDATES
        if not claimed:
            break
        try:
            outcome = process_group(claimed)
        except Exception as error:
            if database_unavailable(error):
                raise GroupInterrupted(claimed) from error
            raise
        result.groups += 1
        result.done += outcome.done
        result.failed += outcome.failed
        if linger and not claimed.full:
            time.sleep(linger)
    else:
        wakeups.publish()  # more to do: another round, after whatever else is queued
    if result.failed:  # their retry is due then, whether or not new posts wake a worker
        wakeups.publish(countdown=settings.SWITCHBOARD["RETRY_DELAY_SECONDS"] + 1)
    return result


class GroupInterrupted(Exception):
    """The database became unavailable while a group was claimed (the cause is chained):
    `release_claims` gives its batches back once the database is back."""

    def __init__(self, claimed: Claimed) -> None:
        super().__init__(f"the database became unavailable while {len(claimed)} claimed batches were processed")
        self.batch_ids = list(claimed)
        self.claimed_at = claimed.claimed_at


def release_claims(batch_ids: list[int], claimed_at: datetime) -> int:
    """Give back batches whose group a database outage interrupted: pending again at once, that
    attempt not counted (an outage is not the batch's fault, and must not make it fail). A batch
    finished meanwhile or claimed again by another worker is left alone."""
    return RawBatch.objects.filter(pk__in=batch_ids, status=RawBatch.Status.PROCESSING, claimed_at=claimed_at).update(
        status=RawBatch.Status.PENDING, attempts=F("attempts") - 1
    )


def process_batch(batch_id: int) -> RawBatch | None:
    """Process one batch now (tests, tools); None if it was not claimable (done, failed, another's)."""
    if not claim_group([batch_id]):
        return None
    process_group([batch_id])
    return RawBatch.objects.get(pk=batch_id)


def retry_failed(batch_ids: list[int] | None = None) -> int:
    """Give failed batches a fresh set of attempts (once their cause is fixed); returns how many."""
    failed = RawBatch.objects.filter(status=RawBatch.Status.FAILED)
    if batch_ids is not None:
        failed = failed.filter(pk__in=batch_ids)
    count = failed.update(status=RawBatch.Status.PENDING, attempts=0, claimed_at=None, processed_at=None)
    if count:
        transaction.on_commit(wakeups.publish)
    return count


# -- the sweeper -----------------------------------------------------------------


def stale_batches(now: datetime | None = None) -> list[int]:
    """API batches a worker should have taken by now: pending past PENDING_GRACE_SECONDS (no
    wake-up reached a worker: broker down, message lost) or claimed by a worker that died."""
    now = now or timezone.now()
    grace = now - timedelta(seconds=settings.SWITCHBOARD["PENDING_GRACE_SECONDS"])
    return list(
        claimable_batches(now)
        .filter(Q(status=RawBatch.Status.PROCESSING) | Q(created_at__lte=grace))
        .values_list("pk", flat=True)
    )


def requeue_stale() -> int:
    """The sweeper: wake the workers if API batches wait; returns how many were stale."""
    stale = stale_batches()
    if stale:
        wakeups.publish()
    return len(stale)


@dataclass(frozen=True, slots=True)
class Backlog:
    unfinished: int
    oldest_created_at: datetime | None


def backlog() -> Backlog:
    stats = RawBatch.objects.unfinished().aggregate(count=Count("pk"), oldest=Min("created_at"))
    return Backlog(stats["count"], stats["oldest"])
