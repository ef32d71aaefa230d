"""The id registry (`EventIdentity`): an event id is stored once, whatever its timestamp.

On PostgreSQL the event table is partitioned by `ts` (events/partitions.py), and a unique
index of a partitioned table must hold the partition key: `uid` cannot be unique there.
The registry holds every id ever stored, pruned ones included (events/retention.py), with
the stored event's time; it is the identity on both databases (one code path):

* every writer claims its events' ids first (`claim`: `INSERT … ON CONFLICT DO NOTHING
  RETURNING uid`, in id order, so two writers sharing ids wait on each other instead of
  deadlocking) and stores the events of the ids it claimed only, in the same transaction:
  a writer rolled back gives its claims back;
* a bulk import looks the ids up first (`claimed`) and `COPY`s the rest (`copy_claims`),
  which a unique violation refuses only when another writer claimed one meanwhile;
* a look-up by id reads the registry's time first (`located`), so it probes one month's
  partition through the (ts, id) index instead of scanning every partition.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

from django.db import connection
from django.db.models import QuerySet

from events.db import chunked, copy_unless_raced, insert_ignoring_conflicts, is_postgresql
from events.models import Event, EventIdentity

TABLE = EventIdentity._meta.db_table
IDS_PER_STATEMENT = 500  # SQLite's parameters; PostgreSQL takes one array


def claim(pairs: Sequence[tuple[str, float]]) -> set[str]:
    """Register the (uid, ts) pairs whose ids are new; return those ids. Give them in uid order."""
    if not pairs:
        return set()
    if not is_postgresql():
        return {uid for (uid,) in insert_ignoring_conflicts(TABLE, ("uid", "ts"), pairs, "uid", "uid")}
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (uid, ts) SELECT * FROM unnest(%s::varchar[], %s::float8[])"
            " ON CONFLICT (uid) DO NOTHING RETURNING uid",
            [[uid for uid, _ in pairs], [ts for _, ts in pairs]],
        )
        return {uid for (uid,) in cursor.fetchall()}


def claimed(uids: Sequence[str]) -> set[str]:
    """Which of these ids are registered (stored, or stored once and pruned)."""
    return set(located(uids))


def located(uids: Iterable[str]) -> dict[str, float]:
    """uid -> the stored event's time, for the registered ones of these ids."""
    found: dict[str, float] = {}
    values = sorted(set(uids))
    if not values:
        return found
    with connection.cursor() as cursor:
        if is_postgresql():
            cursor.execute(f"SELECT uid, ts FROM {TABLE} WHERE uid = ANY(%s)", [values])
            return dict(cursor.fetchall())
        for part in chunked(values, IDS_PER_STATEMENT):
            cursor.execute(f"SELECT uid, ts FROM {TABLE} WHERE uid IN ({', '.join(['%s'] * len(part))})", part)
            found.update(cursor.fetchall())
    return found


def copy_claims(cursor, text: bytes) -> bool:  # noqa: ANN001 - a database cursor
    """PostgreSQL: COPY `uid\\tts` lines of ids just found unregistered; False if another
    writer registered one of them meanwhile (the caller then claims ON CONFLICT)."""
    return copy_unless_raced(cursor, f"COPY {TABLE} (uid, ts) FROM STDIN", io.BytesIO(text))


def forget(uids: Iterable[str]) -> None:
    """Unregister erased events' ids (events/privacy/services.py): no row keeps them."""
    for part in chunked(sorted(set(uids)), IDS_PER_STATEMENT):
        EventIdentity.objects.filter(uid__in=part).delete()


def events_with_uids(events: QuerySet[Event], uids: Iterable[str]) -> QuerySet[Event]:
    """`events` with these ids, looked up through their registered times (one partition each)."""
    times = located(uids)
    return events.filter(uid__in=list(times), ts__in=sorted(set(times.values())))
