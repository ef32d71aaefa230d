"""Accepted events per (hour, family, site): the rollup behind the dashboard's time series.

Counting 10 M events by hour on every page view would scan the event table; this table has
one row per hour, family and site instead, so a chart costs the rows of its window.

Exact on every path: `add_new_events` runs inside the transaction that stores the events
(through `reports.maintenance.events_stored`, on the worker path and the bulk paths alike)
with the events that were new there, so a rolled-back attempt adds nothing, a retried one
adds once, and a duplicate never. Rows are upserted in key order, so concurrent batches wait
for each other instead of deadlocking. `rebuild` recomputes the table from the events.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import truediv

import orjson
from django.db import connection, transaction

from events.db import chunked, is_postgresql

HOUR = 3600
ROWS_PER_STATEMENT = 500


def hour_of(ts: float) -> int:
    """The epoch hour of a timestamp, computed as SQL does (FLOOR(ts / 3600)), so that an
    increment and a rebuild put an event in the same hour."""
    return math.floor(ts / HOUR)


def _hour_sql() -> str:
    # ts >= 0 (a constraint), so SQLite's truncating cast is the floor.
    return f"FLOOR(ts / {HOUR})" if is_postgresql() else f"CAST(ts / {HOUR} AS INTEGER)"


def add_new_events(events: Iterable[object]) -> None:
    """Count newly stored events (NormalizedEvents); call inside their storing transaction."""
    add_counts(tally(events))


def tally(events: Iterable[object]) -> Counter[tuple[int, str, str]]:
    """How many of these events fall in each (hour, family, site)."""
    return Counter((hour_of(e.ts), e.family, e.site) for e in events)


def tally_of(ts: Sequence[float], families: Sequence[str], sites: Sequence[str]) -> Counter[tuple[int, str, str]]:
    """`tally` of events given by column (an import's rows), counted in C: each `hour_of`
    is `math.floor(ts / HOUR)` mapped. An import's chunk is mostly of one family, and often
    of one hour (25,000 lines of a day's log span minutes): then only the sites are counted,
    a quarter of the work of counting (hour, family, site) keys."""
    if not ts or families.count(families[0]) != len(families):
        return Counter(zip(map(math.floor, map(truediv, ts, repeat(HOUR))), families, sites, strict=True))
    family = families[0]
    low, high = hour_of(min(ts)), hour_of(max(ts))  # hour_of never decreases as ts grows
    if low == high:
        return Counter({(low, family, site): n for site, n in Counter(sites).items()})
    hours = map(math.floor, map(truediv, ts, repeat(HOUR)))
    return Counter({(hour, family, site): n for (hour, site), n in Counter(zip(hours, sites, strict=True)).items()})


def add_counts(counts: Mapping[tuple[int, str, str], int]) -> None:
    """Add events counted per (hour, family, site) (`tally`), inside their storing transaction."""
    rows: Sequence[tuple] = sorted((hour, family, site, n) for (hour, family, site), n in counts.items() if n)
    upsert = " ON CONFLICT (hour, family, site) DO UPDATE SET events = reports_eventcount.events + excluded.events"
    with connection.cursor() as cursor:
        if is_postgresql() and rows:
            # The rows as one JSON parameter: adapting four parameters a row (an import chunk
            # has ~1,500 rows) cost the import command 6x the CPU, and the server no less.
            cursor.execute(
                "INSERT INTO reports_eventcount (hour, family, site, events)"
                " SELECT (r->>0)::bigint, r->>1, r->>2, (r->>3)::bigint FROM json_array_elements(%s::json) AS r"
                + upsert,
                [orjson.dumps(rows).decode()],
            )
            return
        for part in chunked(rows, ROWS_PER_STATEMENT):
            cursor.execute(
                "INSERT INTO reports_eventcount (hour, family, site, events) VALUES "
                + ", ".join(["(%s, %s, %s, %s)"] * len(part))
                + upsert,
                [value for row in part for value in row],
            )


def rebuild() -> int:
    """Recompute the table from the stored events and the pruned ones (events/retention.py:
    the dashboard keeps counting what was accepted); returns its rows.

    On PostgreSQL the table is locked first: a batch storing meanwhile either committed
    before the recount (and is in it) or waits and adds its events after it.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        if is_postgresql():
            cursor.execute("LOCK TABLE reports_eventcount IN EXCLUSIVE MODE")
        cursor.execute("DELETE FROM reports_eventcount")
        cursor.execute(
            "INSERT INTO reports_eventcount (hour, family, site, events)"
            f" SELECT {_hour_sql()}, family, site_id, COUNT(*) FROM (SELECT ts, family, site_id FROM events_event"
            " UNION ALL SELECT ts, family, site_id FROM events_prunedevent) e GROUP BY 1, 2, 3"
        )
        cursor.execute("SELECT COUNT(*) FROM reports_eventcount")
        return cursor.fetchone()[0]
