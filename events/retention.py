"""Retention (SPEC §10): `prune_events` removes old events and keeps what the summaries need.

An event older than the cut leaves the event store (`Event`: its payload, provenance and
every index entry) and a `PrunedEvent` row keeps its identity and the fields the site
summary's rules read (site, kind, actor, timestamp, status value). So:

* a resend of a pruned id is a duplicate: its id stays in the id registry
  (events/identity.py), which every storing path claims ids in;
* the site summaries read stored and pruned events alike (reports/site_summary.py), so a
  late message or status older than the cut is classified, and re-classifies, exactly as
  if nothing had been pruned, and `site_summary --rebuild` gives the same lines;
* erasure deletes an actor's pruned rows too (events/privacy/services.py).

Pruned families: chat and interaction. Xmpp events are kept whole: a room's summary counts
its distinct ids, participants and stanza bodies, which would need a baseline of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from django.conf import settings
from django.db import connection, transaction

from events import ddl_locks, partitions
from events.db import chunked, is_postgresql
from events.models import Event, Family
from events.privacy import blocks

PRUNED_FAMILIES = (Family.CHAT.value, Family.INTERACTION.value)
ROWS = 10_000  # events pruned per transaction
KEPT_COLUMNS = "uid, family, kind, site_id, actor, ts, online"
IDS_PER_STATEMENT = 500  # SQLite's parameters; PostgreSQL takes one array


def prune_events(before: float, *, rows: int = ROWS, progress: Callable[[int], None] | None = None) -> int:
    """Prune the chat and interaction events with a timestamp before `before` (epoch seconds),
    oldest first; returns how many.

    On PostgreSQL each month partition entirely before the cut (and this month) goes whole
    (`_drop_month`); the rest (the month holding the cut, the default partition, a month
    holding xmpp events) is pruned by range, `rows` per transaction. Each transaction holds the lock
    storing transactions take in shared mode (the erasure lock), so no writer stores
    while rows move. A kill loses at most the open transaction; running it again carries on.
    """
    pruned = 0
    # Months that have not ended are still written to (and made ahead): pruned by range.
    last = min(before, partitions.Month.of(time.time()).start)
    for month in [m for m in partitions.existing() if m.end <= last] if partitions.partitioned() else []:
        if (dropped := _drop_month(month)) is not None:
            pruned += dropped
            if progress:
                progress(pruned)
    while True:
        with transaction.atomic():
            blocks.lock_exclusive()
            ids = list(
                Event.objects.filter(family__in=PRUNED_FAMILIES, ts__lt=before)
                .order_by("ts", "id")
                .values_list("id", flat=True)[:rows]
            )
            if not ids:
                return pruned
            with connection.cursor() as cursor:
                for part in _id_parts(ids):
                    where, params = _in_ids(part)
                    # The time bound lets PostgreSQL look in the partitions before the cut only.
                    where, params = f"{where} AND ts < %s", [*params, before]
                    cursor.execute(
                        f"INSERT INTO events_prunedevent ({KEPT_COLUMNS})"
                        f" SELECT {KEPT_COLUMNS} FROM events_event WHERE {where}"
                        # Only if an id was both stored and pruned, which the storing paths rule out.
                        " ON CONFLICT (uid) DO NOTHING",
                        params,
                    )
                    cursor.execute(f"DELETE FROM events_event WHERE {where}", params)
        pruned += len(ids)
        if progress:
            progress(pruned)


def _drop_month(month: partitions.Month) -> int | None:
    """Copy a month partition's events to the pruned baseline, then detach and drop it, in
    one transaction; returns how many. None, and nothing done, if it holds xmpp events
    (kept whole): the range pruning then takes its other events.

    Writers to the event table wait meanwhile (they take the erasure lock first; the table
    lock is for any other); readers go on until the detach, a catalog change of an instant.
    Its ids stay in the id registry, so they remain duplicates. 0 if another prune dropped it
    while this one waited for the lock. The table lock and the detach's are waited for a
    moment at a time (events/ddl_locks.py): while a long read holds the table, readers are
    not queued behind the detach for longer than that; `LockWaitGaveUp` past the deadline,
    nothing dropped.
    """
    return ddl_locks.with_table_lock(
        partitions.PARENT,
        "SHARE ROW EXCLUSIVE",
        lambda cursor: _copy_and_drop(cursor, month),
        what=f"dropping partition {month.name}",
        meanwhile="its events stay stored until the next prune_events (beat: hourly) drops the month.",
    )


def _copy_and_drop(cursor, month: partitions.Month) -> int | None:  # noqa: ANN001 - a database cursor
    """`_drop_month`'s work, inside its transaction holding the erasure lock and the table's."""
    if month not in partitions.existing():
        return 0
    cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {month.name} WHERE family <> ALL(%s))", [list(PRUNED_FAMILIES)])
    if cursor.fetchone()[0]:
        return None
    cursor.execute(
        f"INSERT INTO events_prunedevent ({KEPT_COLUMNS}) SELECT {KEPT_COLUMNS} FROM {month.name}"
        " ON CONFLICT (uid) DO NOTHING"
    )
    cursor.execute(f"SELECT count(*) FROM {month.name}")
    (count,) = cursor.fetchone()
    partitions.detach_and_drop(cursor, month)
    return count


def _id_parts(values: Sequence[object]) -> Iterable[Sequence[object]]:
    return [values] if is_postgresql() and values else chunked(values, IDS_PER_STATEMENT)


def _in_ids(ids: Sequence[object]) -> tuple[str, list[object]]:
    if is_postgresql():
        return "id = ANY(%s)", [list(ids)]
    return f"id IN ({', '.join(['%s'] * len(ids))})", list(ids)


def retention_cut(now: float | None = None) -> float | None:
    """The cut `RETENTION_DAYS` sets (epoch seconds), or None when events are kept forever."""
    days = settings.SWITCHBOARD["RETENTION_DAYS"]
    if days <= 0:
        return None
    return (time.time() if now is None else now) - days * 86_400
