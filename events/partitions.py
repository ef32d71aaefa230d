"""Monthly partitions of the event table (PostgreSQL; SQLite keeps one plain table).

`events_event` is partitioned by `RANGE (ts)` (epoch seconds): one partition per calendar
month (UTC), `events_event_yYYYYmMM`, plus `events_event_default`, which takes every
timestamp no month partition covers, so no record is ever refused for its time.
`make_partitions` (the command, and beat's daily task) creates the next months ahead
and the months the default partition holds many rows of; creating a month whose rows
the default partition holds moves them, in the same transaction (PostgreSQL refuses to
create a partition over rows its default partition holds). Retention drops whole months
(events/retention.py).

Built by hand rather than with pg_partman (an extension a managed server may not offer,
whose background worker is one more moving part) or django-postgres-extra (its
partitioned models replace Django's migrations and manager of the table): a few
statements.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from django.db import connection

from events import ddl_locks
from events.db import is_postgresql

PARENT = "events_event"
DEFAULT = "events_event_default"
NAME = re.compile(r"^events_event_y(\d{4})m(\d{2})$")
MONTHS_AHEAD = 3
# A month of the past gets its partition once the default partition holds this many of its
# events: a few stray timestamps (1970, 2100) stay in the default partition instead of
# making a partition each, which every query without a time range would plan for.
MIN_ROWS = 10_000
# No month partition is made from December 9999 on (its end, year 10000, is past what
# Python's dates hold); later times stay in the default partition.
LAST_TS = 253399622400.0  # 9999-12-01T00:00:00Z


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, ts: float) -> Month:
        moment = time.gmtime(ts)
        return cls(moment.tm_year, moment.tm_mon)

    @property
    def name(self) -> str:
        return f"events_event_y{self.year:04d}m{self.month:02d}"

    @property
    def start(self) -> float:
        return float(calendar.timegm((self.year, self.month, 1, 0, 0, 0)))

    @property
    def end(self) -> float:
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)


def partitioned() -> bool:
    """Whether the event table is partitioned (PostgreSQL after events 0008)."""
    if not is_postgresql():
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [PARENT])
        return cursor.fetchone()[0] == "p"


def existing() -> list[Month]:
    """The month partitions there are, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        names = [NAME.match(name) for (name,) in cursor.fetchall()]
    return sorted(Month(int(m.group(1)), int(m.group(2))) for m in names if m)


def months_holding(table: str, min_rows: int) -> list[Month]:
    """The months `table` holds at least `min_rows` events of (one scan of it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT y, m FROM (SELECT extract(year FROM t)::int AS y, extract(month FROM t)::int AS m"
            # floor: to_timestamp rounds to the microsecond, which would put the last fraction of
            # a month's last microsecond in the next month, not in the month its partition bounds give.
            f" FROM (SELECT to_timestamp(floor(ts)) AT TIME ZONE 'UTC' AS t FROM {table} WHERE ts < %s) times) months"
            " GROUP BY y, m HAVING count(*) >= %s",
            [LAST_TS, min_rows],
        )
        return sorted(Month(y, m) for y, m in cursor.fetchall())


def create(month: Month) -> int | None:
    """Create a month's partition, moving its rows out of the default partition; returns how many
    moved, or None if it was there already (another `make_partitions` made it meanwhile).

    Readers and writers of the event table wait meanwhile (rows are moved only when the
    default partition holds many of a month's): no row of the month can reach the default
    partition between the move and the creation. The table lock is the one `CREATE TABLE …
    PARTITION OF` takes, taken first: from a weaker one it would be an upgrade, a deadlock
    with any transaction that read the table and then writes it (an erasure's, a prune's).
    The erasure lock, which every writer of the event table takes first, is taken before
    it: the wait for writers to finish is spent on it, with readers going on, rather than
    queued for the table lock, which every new reader would queue behind. The table lock is
    waited for a moment at a time (events/ddl_locks.py): while a long read holds the table,
    readers are not queued behind the request for longer than that; `LockWaitGaveUp` past
    the deadline, nothing created (the month's events go to the default partition meanwhile).
    """
    return ddl_locks.with_table_lock(
        PARENT,
        "ACCESS EXCLUSIVE",
        lambda cursor: _create(cursor, month),
        what=f"creating partition {month.name}",
        meanwhile="until the partition exists, the month's events are stored in the default partition"
        " (nothing is lost); the next make_partitions (beat: daily) tries again.",
    )


def _create(cursor, month: Month) -> int | None:  # noqa: ANN001 - a database cursor
    """`create`'s work, inside its transaction holding the erasure lock and the table's."""
    if month in existing():
        return None
    cursor.execute(f"CREATE TEMPORARY TABLE partition_moved (LIKE {PARENT}) ON COMMIT DROP")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE ts >= %s AND ts < %s RETURNING *)"
        " INSERT INTO partition_moved SELECT * FROM moved",
        [month.start, month.end],
    )
    moved = cursor.rowcount
    cursor.execute(
        f"CREATE TABLE {month.name} PARTITION OF {PARENT} FOR VALUES FROM (%s) TO (%s)",
        [month.start, month.end],
    )
    if moved:
        cursor.execute(f"INSERT INTO {PARENT} OVERRIDING SYSTEM VALUE SELECT * FROM partition_moved")
    cursor.execute("DROP TABLE partition_moved")
    return moved


def make_partitions(
    months_ahead: int = MONTHS_AHEAD, min_rows: int = MIN_ROWS, now: float | None = None
) -> list[tuple[Month, int]]:
    """Create this month's and the next `months_ahead` months' partitions, and those of the
    months the default partition holds at least `min_rows` events of; each with the rows it
    took from the default partition. Idempotent; nothing on SQLite. `LockWaitGaveUp`
    (events/ddl_locks.py) if a month's lock was not had within the deadline: the months
    before it are made, the others are left to the next run."""
    if not partitioned():
        return []
    month = Month.of(time.time() if now is None else now)
    wanted = {month}
    for _ in range(months_ahead):
        month = month.next()
        wanted.add(month)
    wanted.update(months_holding(DEFAULT, min_rows))
    made = [(m, create(m)) for m in sorted(wanted - set(existing()))]
    return [(m, moved) for m, moved in made if moved is not None]


def detach_and_drop(cursor, month: Month) -> None:  # noqa: ANN001 - a database cursor
    """Detach a month's partition and drop it (inside the caller's transaction, whose lock waits
    events/ddl_locks.py bounds: the detach takes `ACCESS EXCLUSIVE` on the event table).

    Not `DETACH … CONCURRENTLY`: PostgreSQL refuses it while the table has a default
    partition (and outside a transaction it could not commit with the copy of its rows).
    """
    cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {month.name}")
    cursor.execute(f"DROP TABLE {month.name}")
