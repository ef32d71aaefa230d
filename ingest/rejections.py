"""Acting on rejected records: finding them, and replaying them under today's rules.

A replay takes the matching rejections that kept their whole record (`complete`) and were
never replayed, validates each record again as it would be validated now (today's families,
type validators and limits; "the future" is still judged against the time the record was
first received, so a clock-skewed record does not become valid by waiting; the site
allow-list of the app that posted it, as that list is now), and stores the ones now valid
through the normal path: a new batch (source "replay", the same app: one batch per app)
holding them as a JSON array is processed by `store_chunk(batch, batch_records(batch))`,
exactly like an API body of that app.
In the same transaction each stored rejection is marked with that batch, its position there,
the outcome and the event identity, so:

* a record is replayed at most once, however often a replay runs: marked rejections are never
  taken again, and two replays at once take disjoint rows (row locks, SKIP LOCKED on
  PostgreSQL; SQLite runs writers one at a time);
* a record that is still invalid is left as it was (no churn of new rejections);
* the event store stays exactly-once by identity: a replayed record whose id was stored since
  (resent by its client, say) is a duplicate, not a second event.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from events import identity
from events.db import chunked
from events.models import Event
from ingest.batches import API_SOURCE, batch_records
from ingest.models import RawBatch, Rejection
from ingest.records import Chunk, reason_rule, validate_into
from ingest.site_access import reject_sites_not_allowed
from ingest.store import store_chunk

REPLAY_SOURCE = "replay"
ROWS_PER_TRANSACTION = 500
ROWS_PER_STATEMENT = 250


@dataclass
class ReplayResult:
    examined: int = 0  # replayable rejections looked at
    accepted: int = 0  # stored as new events
    duplicates: int = 0  # valid now, but their identity was stored already
    still_rejected: Counter[str] = field(default_factory=Counter)  # by today's reason rule
    batches: list[int] = field(default_factory=list)  # the replay batches created

    @property
    def replayed(self) -> int:
        return self.accepted + self.duplicates

    def describe(self, *, dry_run: bool = False) -> str:
        if dry_run:
            head = f"{self.examined} replayable rejections: {self.replayed} valid now"
        else:
            head = (
                f"{self.examined} replayable rejections: {self.replayed} replayed "
                f"({self.accepted} stored, {self.duplicates} already stored)"
            )
        still = sum(self.still_rejected.values())
        if still:
            top = "; ".join(f"{n} × {rule}" for rule, n in self.still_rejected.most_common(3))
            head += f", {still} still rejected ({top}{'; …' if len(self.still_rejected) > 3 else ''})"
        return head


def matching(
    rejections: QuerySet[Rejection] | None = None,
    *,
    reason: str = "",
    rule: str = "",
    source: str = "",
    app: str = "",
    batch: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Rejection]:
    """Rejections narrowed by reason text (contains, any case), rule (exact), source ("api",
    "file", "replay" or a file's path), app name, batch and time rejected [since, until)."""
    rejections = Rejection.objects.all() if rejections is None else rejections
    if reason:
        rejections = rejections.filter(reason__icontains=reason)
    if rule:
        rejections = rejections.filter(rule=rule)
    if source == "file":
        rejections = rejections.exclude(batch__source__in=(API_SOURCE, REPLAY_SOURCE))
    elif source:
        rejections = rejections.filter(batch__source=source)
    if app:
        rejections = rejections.filter(batch__app__name=app)
    if batch is not None:
        rejections = rejections.filter(batch_id=batch)
    if since is not None:
        rejections = rejections.filter(created_at__gte=since)
    if until is not None:
        rejections = rejections.filter(created_at__lt=until)
    return rejections


def replayable(rejections: QuerySet[Rejection]) -> QuerySet[Rejection]:
    return rejections.filter(complete=True, replayed_at__isnull=True)


def unreplayable_count(rejections: QuerySet[Rejection]) -> int:
    """Rejections that kept only part of their record (or bytes no text can hold)."""
    return rejections.filter(complete=False).count()


def replay(rejections: QuerySet[Rejection], *, limit: int | None = None, dry_run: bool = False) -> ReplayResult:
    """Replay the replayable ones among `rejections` (at most `limit`), a few hundred per transaction."""
    result = ReplayResult()
    last_id = 0
    while limit is None or result.examined < limit:
        size = ROWS_PER_TRANSACTION if limit is None else min(ROWS_PER_TRANSACTION, limit - result.examined)
        with transaction.atomic():
            rows = list(
                replayable(rejections)
                .filter(id__gt=last_id)
                .select_related("batch__app")
                .defer("batch__body")
                .order_by("id")
                .select_for_update(skip_locked=True, of=("self",))[:size]
            )
            if not rows:
                break
            last_id = _replay_rows(rows, result, dry_run=dry_run)
    return result


def validate_again(rejection: Rejection, raw: bytes) -> Chunk:
    """The record validated as its batch would be today: today's families and limits, "the
    future" judged against its first receipt, and the site allow-list its app has now."""
    batch = rejection.batch
    chunk = validate_into(Chunk(), [(rejection.line, raw, 0)], batch.created_at.timestamp())
    return reject_sites_not_allowed(chunk, batch.app)


def _replay_rows(rows: list[Rejection], result: ReplayResult, *, dry_run: bool) -> int:
    """Replay the first of `rows` whose records fit in one API body; returns the id of the last one taken."""
    valid: dict[int | None, list[tuple[Rejection, bytes]]] = defaultdict(list)  # by app id
    size = 2
    last_id = rows[0].id
    for rejection in rows:
        raw = rejection.raw.encode().strip()
        if valid and size + len(raw) + 2 > settings.SWITCHBOARD["MAX_BODY_BYTES"]:
            break  # a replay batch is no larger than an API body; the rest go in the next one
        result.examined += 1
        last_id = rejection.id
        chunk = validate_again(rejection, raw)
        if chunk.rejections:
            result.still_rejected[reason_rule(chunk.rejections[0].reason)] += 1
        else:
            valid[rejection.batch.app_id].append((rejection, raw))
            size += len(raw) + 2
    if dry_run:
        result.accepted += sum(map(len, valid.values()))
        return last_id
    now = timezone.now()
    for records in valid.values():  # a batch per app, which is validated under that app's rules
        _store_replay_batch(records, result, now)
    return last_id


def _store_replay_batch(valid: list[tuple[Rejection, bytes]], result: ReplayResult, now: datetime) -> None:
    batch = RawBatch.objects.create(
        app=valid[0][0].batch.app,
        source=REPLAY_SOURCE,
        body=b"[" + b",\n".join(raw for _, raw in valid) + b"]",
        content_type="application/json",
        record_count=len(valid),
        status=RawBatch.Status.PROCESSING,
        attempts=1,
        claimed_at=now,
    )
    chunk = batch_records(batch)  # the normal path: the body validated and stored like any other
    store_chunk(batch, chunk)
    result.batches.append(batch.pk)
    for rejected in chunk.rejections:  # rejected after all (a rule changed meanwhile?): left as it was
        result.still_rejected[reason_rule(rejected.reason)] += 1
    uid_at = {line: event.uid for line, event in chunk.events}
    stored_here = identity.events_with_uids(Event.objects.filter(batch=batch), uid_at.values())
    stored = set(stored_here.values_list("uid", "line"))
    marks = []
    for position, (rejection, _) in enumerate(valid, start=1):
        if position not in uid_at:
            continue
        uid = uid_at[position]
        accepted = (uid, position) in stored
        result.accepted += accepted
        result.duplicates += not accepted
        outcome = Rejection.Outcome.ACCEPTED if accepted else Rejection.Outcome.DUPLICATE
        marks.append((rejection.pk, position, outcome.value, uid))
    _mark_replayed(marks, batch.pk, now)


def _mark_replayed(marks: list[tuple[int, int, str, str]], batch_id: int, at: datetime) -> None:
    """One UPDATE ... FROM a VALUES list per few hundred rejections (bulk_update's CASE per row
    and column costs milliseconds per row in Python)."""
    with connection.cursor() as cursor:
        for part in chunked(marks, ROWS_PER_STATEMENT):
            values = ", ".join(["(%s, %s, %s, %s)"] * len(part))
            cursor.execute(
                f"WITH v(id, line, outcome, uid) AS (VALUES {values})"
                " UPDATE ingest_rejection SET replayed_at = %s, replay_batch_id = %s, replay_line = v.line,"
                " replay_outcome = v.outcome, event_uid = v.uid FROM v WHERE ingest_rejection.id = v.id",
                [*(value for mark in part for value in mark), at, batch_id],
            )
