"""The site summary of SPEC §3: the one module that holds its semantics.

A site's chat events are ordered by (timestamp, status before message, id).
Each operator's state is its latest status (initially offline); the site is
online while any operator is. We keep, per site, the *online spans*: half-open
ranges [start, end) of time in which the site was online. Because a status
applies before a message with the same timestamp, a message is a chat exactly
when its timestamp falls inside a span, and an e-mail otherwise.

Every path uses the same two operations:

* `apply_new_events` (workers, per batch): classify each new message with one
  index probe of the stored spans and, for new statuses, recompute the spans
  only in the windows they can change: from a new status to its operator's
  next status (after which the operator's state is as it was), moving the
  messages of those windows whose side changed. The work is bounded by the
  events inside the windows, not by the site, however late a status arrives.
* `rebuild_sites` (bulk import, repair): recompute sites from their events,
  a few hundred at a time: one ordered pass over their statuses gives the
  spans, then one statement counts their messages against the spans.

Both are exact after any arrival order, batching, duplication or retry.
"""

from __future__ import annotations

import bisect
import itertools
import math
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby

from django.db import connection, transaction
from django.utils import timezone

from events.db import chunked, insert_ignoring_conflicts, settle, update_rows
from events.registry import FIELD_SEPARATOR, printable
from events.selectors import any_pruned
from reports.models import OnlineSpan, SiteActor, SiteSummary

Span = tuple[float, float]  # [start, end); end is math.inf while still online
Status = tuple[float, str, str, bool]  # (ts, uid, operator, online)

FETCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class SiteRow:
    site_id: str
    messages: int
    emails: int
    operators: int
    visitors: int
    # Freshness: a stale row waits for a rebuild (bulk import); not part of the value.
    stale: bool = field(default=False, compare=False)
    refreshed_at: datetime | None = field(default=None, compare=False)

    def classic(self) -> str:
        return (
            f"{printable(self.site_id, also=FIELD_SEPARATOR)},messages={self.messages},emails={self.emails},"
            f"operators={self.operators},visitors={self.visitors}"
        )


# -- the semantics, free of the database ---------------------------------


def online_spans(statuses: Iterable[Status], seed_online: set[str], since: float) -> list[Span]:
    """Spans of time >= `since` in which at least one operator is online.

    `statuses` are the site's statuses with ts >= since, in any order;
    `seed_online` the operators online just before `since`.
    """
    return spans_of_ordered(sorted(statuses), seed_online, since)


def spans_of_ordered(statuses: Iterable[Status], seed_online: set[str], since: float) -> list[Span]:
    """`online_spans` of statuses already in timestamp order (ties in any order): streams them."""
    online = set(seed_online)
    spans: list[Span] = []
    start = since if online else None
    for ts, group in groupby(statuses, key=lambda s: s[0]):
        for _ts, _uid, operator, is_online in sorted(group):  # ties in id order (code points)
            if is_online:
                online.add(operator)
            else:
                online.discard(operator)
        if online and start is None:
            start = ts
        elif not online and start is not None:
            if ts > start:
                spans.append((start, ts))
            start = None
    if start is not None:
        spans.append((start, math.inf))
    return spans


def is_chat(ts: float, spans: Sequence[Span]) -> bool:
    """Whether a message at `ts` falls inside one of the sorted, disjoint spans."""
    i = bisect.bisect_right(spans, (ts, math.inf)) - 1
    return i >= 0 and spans[i][0] <= ts < spans[i][1]


def count_chats(sorted_message_ts: Iterable[float], spans: Sequence[Span]) -> tuple[int, int]:
    """(chats, total) for message timestamps in ascending order: one merge pass."""
    chats = total = 0
    i, n = 0, len(spans)
    for ts in sorted_message_ts:
        total += 1
        while i < n and spans[i][1] <= ts:
            i += 1
        if i < n and spans[i][0] <= ts:
            chats += 1
    return chats, total


def ordered_sites(rows: Iterable[SiteRow]) -> list[SiteRow]:
    """Sites in ascending code-point order of site_id (Python's str order)."""
    return sorted(rows, key=lambda r: r.site_id)


# -- reading the event store ----------------------------------------------


PRUNED = "events_prunedevent"  # what is kept of pruned events (events/retention.py)
EVENT_TABLES = ("events_event", PRUNED)


def _chat_events(columns: str, where: str, tables: Sequence[str] = EVENT_TABLES) -> str:
    """`SELECT columns` of the events, aliased `x`, that match `where`: the stored ones and
    what is kept of pruned ones, as one UNION ALL, so that every rule counts both. Each
    branch carries its own condition (correlated ones included) and so probes its own
    index; a view of the union is not pushed down into by SQLite's correlated subqueries.
    Parameters of `where` are needed twice (`_twice`). `tables`: the worker's upkeep reads
    the pruned table only once it holds rows (`_tables_in_use`)."""
    return " UNION ALL ".join(f"SELECT {columns} FROM {table} x WHERE {where}" for table in tables)


def _tables_in_use() -> Sequence[str]:
    """The event tables for a storing transaction's upkeep: the pruned one only when it holds
    rows. Exact because storing transactions hold the lock that pruning takes exclusively."""
    return EVENT_TABLES if any_pruned() else EVENT_TABLES[:1]


def _twice(params: Sequence[object]) -> list[object]:
    return [*params, *params]


def _stream(sql: str, params: Sequence[object]) -> Iterator[tuple]:
    """Rows of a query, FETCH_SIZE at a time from the server: psycopg2's ordinary cursor
    would load the whole result at `execute`, so PostgreSQL gets a named (server-side)
    cursor; SQLite's cursor steps through the result anyway."""
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(FETCH_SIZE):
            yield from rows


def affected_windows(changes: Iterable[tuple[float, float]]) -> list[Span]:
    """Merge (status ts, next status ts of its operator) pairs into disjoint windows [start, end).

    Outside them no operator's state changed. A window of zero length (the
    status is overridden at its own timestamp) changes nothing.
    """
    merged: list[list[float]] = []
    for start, end in sorted(changes):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged if end > start]


def clip(spans: Iterable[Span], start: float, end: float) -> list[Span]:
    """The parts of sorted spans inside [start, end)."""
    return [(max(s, start), min(e, end)) for s, e in spans if min(e, end) > max(s, start)]


def merge_touching(spans: Iterable[Span]) -> list[Span]:
    """Disjoint spans with the ones that touch or overlap joined (stored spans are maximal)."""
    merged: list[Span] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


ACTORS_PER_STATEMENT = 20_000
VALUES_PER_QUERY = 300  # rows of a VALUES list per statement (SQLite allows 32,766 parameters)


def _values_query(sql: str, columns: str, rows: Sequence[tuple], row_sql: str) -> Iterator[tuple]:
    """Run `sql` with `WITH v(columns) AS (VALUES ...)` over `rows`, a few hundred at a time.

    One statement probes the indexes for many rows: the set-based form of a
    per-event lookup, on PostgreSQL and SQLite alike. For results of about one
    row per given row; `_values_stream` for larger ones.
    """
    for i in range(0, len(rows), VALUES_PER_QUERY):
        part = rows[i : i + VALUES_PER_QUERY]
        values = ", ".join([row_sql] * len(part))
        with connection.cursor() as cursor:
            cursor.execute(f"WITH v({columns}) AS (VALUES {values}) {sql}", [x for row in part for x in row])
            yield from cursor.fetchall()


def _values_stream(sql: str, columns: str, rows: Sequence[tuple], row_sql: str) -> Iterator[tuple]:
    """`_values_query` with the result streamed (`_stream`): any number of rows in bounded memory."""
    for i in range(0, len(rows), VALUES_PER_QUERY):
        part = rows[i : i + VALUES_PER_QUERY]
        values = ", ".join([row_sql] * len(part))
        yield from _stream(f"WITH v({columns}) AS (VALUES {values}) {sql}", [x for row in part for x in row])


DOUBLE = "CAST(%s AS DOUBLE PRECISION)"
LATEST = sys.float_info.max  # an upper time bound for open windows that indexes can seek to (ts is finite)


SPAN_READ_GAP = 3600.0  # seconds between a site's new messages beyond which their spans are read apart


def _message_ranges(times_by_site: dict[str, list[float]]) -> list[tuple[str, float, float]]:
    """(site, first, last) stretches covering each site's sorted message times, split where
    SPAN_READ_GAP passes without one: a late message does not make a whole history be read."""
    ranges = []
    for site_id, times in times_by_site.items():
        first = last = times[0]
        for ts in times:
            if ts - last > SPAN_READ_GAP:
                ranges.append((site_id, first, last))
                first = ts
            last = ts
        ranges.append((site_id, first, last))
    return ranges


def _chats_among(messages: Sequence[tuple[str, float]]) -> Counter[str]:
    """Per site, how many of these (site, ts) messages fall in a stored span.

    One statement reads the stored spans that can hold them (per stretch of a
    site's messages: the last span starting before it and those starting in it);
    the messages are then counted against them here, in one merge pass per site.
    """
    times_by_site: dict[str, list[float]] = {}
    for site_id, ts in messages:
        times_by_site.setdefault(site_id, []).append(ts)
    for times in times_by_site.values():
        times.sort()
    spans: dict[str, set[Span]] = {}
    for site_id, start, end in _values_query(
        'SELECT v.site, s.start, s."end" FROM v JOIN reports_onlinespan s ON s.site_id = v.site'
        " AND s.start >= COALESCE((SELECT MAX(x.start) FROM reports_onlinespan x"
        " WHERE x.site_id = v.site AND x.start <= v.lo), v.lo) AND s.start <= v.hi",
        "site, lo, hi",
        _message_ranges(times_by_site),
        f"(%s, {DOUBLE}, {DOUBLE})",
    ):
        spans.setdefault(site_id, set()).add((start, math.inf if end is None else end))
    chats: Counter[str] = Counter()
    for site_id, times in times_by_site.items():
        if site_id in spans:
            chats[site_id] = count_chats(times, sorted(spans[site_id]))[0]
    return chats


def _codepoint() -> str:
    """A collation comparing ids in code-point order (UTF-8 bytes), as Python does."""
    return ' COLLATE "C"' if connection.vendor == "postgresql" else ""  # SQLite's default is BINARY


def _next_status_times(statuses: Sequence[tuple[str, str, float, str]], tables: Sequence[str]) -> list[float]:
    """For each new (site, operator, ts, uid) status: when the operator's next status is given.

    Its effect on who is online ends there (inf: never); a status of the same
    operator at the same timestamp with a greater id (code-point order) ends it
    at once. One statement of correlated index probes (site, actor, ts) per 300
    statuses: a join here let PostgreSQL hash the whole event table.
    """
    keys = [(i, site, actor, ts, uid) for i, (site, actor, ts, uid) in enumerate(statuses)]
    status_of = "x.family = 'chat' AND x.kind = 'status' AND x.site_id = v.site AND x.actor = v.actor"
    later = _chat_events("MIN(x.ts) AS ts", f"{status_of} AND x.ts > v.ts", tables)
    overriding = _chat_events("1 AS one", f"{status_of} AND x.ts = v.ts AND x.uid{_codepoint()} > v.uid", tables)
    rows = _values_query(
        f"SELECT v.i, (SELECT MIN(b.ts) FROM ({later}) b), EXISTS (SELECT 1 FROM ({overriding}) b) FROM v",
        "i, site, actor, ts, uid",
        keys,
        f"(%s, %s, %s, {DOUBLE}, %s)",
    )
    ends: list[float] = [math.inf] * len(statuses)
    for i, later, overridden in rows:
        ends[i] = statuses[i][2] if overridden else (math.inf if later is None else later)
    return ends


def _online_before(windows: Sequence[tuple[str, float]], tables: Sequence[str]) -> list[set[str]]:
    """For each (site, time): the operators whose latest status before that time is online.

    One index probe per operator of the site finds its latest timestamp, one
    more its statuses there; ties are settled by id here (code-point order).
    """
    keys = [(i, site, start) for i, (site, start) in enumerate(windows)]
    before = _chat_events(
        "MAX(x.ts) AS ts",
        "x.site_id = v.site AND x.actor = a.actor AND x.family = 'chat' AND x.kind = 'status' AND x.ts < v.start",
        tables,
    )
    latest_ts = [
        row
        for row in _values_query(
            f"SELECT v.i, v.site, a.actor, (SELECT MAX(b.ts) FROM ({before}) b)"
            " FROM v JOIN reports_siteactor a ON a.site_id = v.site AND a.role = 'operator'",
            "i, site, start",
            keys,
            f"(%s, %s, {DOUBLE})",
        )
        if row[3] is not None
    ]
    # A second statement, so that the timestamps are constants the index can seek to;
    # of several statuses at that timestamp, the greatest id (code-point order) is the latest.
    online_sets: list[set[str]] = [set() for _ in windows]
    at = _chat_events(
        "x.uid, x.online",
        "x.site_id = v.site AND x.actor = v.actor AND x.ts = v.ts AND x.family = 'chat' AND x.kind = 'status'",
        tables,
    )
    for i, actor, online in _values_query(
        f"SELECT v.i, v.actor, (SELECT b.online FROM ({at}) b ORDER BY b.uid{_codepoint()} DESC LIMIT 1) FROM v",
        "i, site, actor, ts",
        latest_ts,
        f"(%s, %s, %s, {DOUBLE})",
    ):
        if online:
            online_sets[i].add(actor)
    return online_sets


def _span_rows(site_id: str, spans: Iterable[Span]) -> Iterator[OnlineSpan]:
    return (OnlineSpan(site_id=site_id, start=s, end=None if e == math.inf else e) for s, e in spans)


def _lock_summaries(site_ids: Iterable[str]) -> dict[str, SiteSummary]:
    """Lock the sites' summary rows in a fixed order, creating missing ones."""
    ids = sorted(set(site_ids))
    SiteSummary.objects.bulk_create([SiteSummary(site_id=s) for s in ids], ignore_conflicts=True, batch_size=1000)
    locked = SiteSummary.objects.select_for_update().filter(site_id__in=ids).order_by("site_id")
    return {s.site_id: s for s in locked}


def add_actors(actors: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str], int]:
    """Record (site, role, actor) triples; return how many were new per (site, role)."""
    rows = sorted(set(actors))
    if connection.vendor == "postgresql":  # three arrays: one statement, not one per 500 rows
        inserted: list[tuple] = []
        with connection.cursor() as cursor:
            for part in chunked(rows, ACTORS_PER_STATEMENT):
                cursor.execute(
                    "INSERT INTO reports_siteactor (site_id, role, actor)"
                    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])"
                    " ON CONFLICT (site_id, role, actor) DO NOTHING RETURNING site_id, role",
                    [list(column) for column in zip(*part, strict=True)],
                )
                inserted += cursor.fetchall()
    else:
        inserted = insert_ignoring_conflicts(
            "reports_siteactor", ("site_id", "role", "actor"), rows, "site_id, role, actor", "site_id, role"
        )
    return Counter(map(tuple, inserted))


def actor_triples(events: Iterable[object]) -> set[tuple[str, str, str]]:
    """The (site, role, actor) of chat events: statuses name operators, messages visitors."""
    return {
        (e.site, SiteActor.Role.OPERATOR if e.kind == "status" else SiteActor.Role.VISITOR, e.actor)
        for e in events
        if e.family == "chat"
    }


def mark_stale(site_ids: Iterable[str]) -> None:
    """Bulk path: counters will be rebuilt once at the end instead of per chunk.

    Only rows not stale yet are written (and locked): a long import marks each of
    its sites once, not once per chunk, and waits on no worker that holds a fresh row.
    """
    ids = sorted(set(site_ids))
    if not ids:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # one array, in site order: 3 ms a chunk, not 8.5 (1,500 sites)
            cursor.execute(
                "INSERT INTO reports_sitesummary (site_id, messages, emails, operators, visitors, stale)"
                " SELECT site_id, 0, 0, 0, 0, true FROM unnest(%s::text[]) AS site_id"
                " ON CONFLICT (site_id) DO UPDATE SET stale = excluded.stale WHERE NOT reports_sitesummary.stale",
                [ids],
            )
            return
        for part in chunked(ids, REBUILD_SITES):
            # One statement creates the missing rows and marks the fresh ones, in site order.
            cursor.execute(
                "INSERT INTO reports_sitesummary (site_id, messages, emails, operators, visitors, stale)"
                f" VALUES {', '.join(['(%s, 0, 0, 0, 0, %s)'] * len(part))}"
                " ON CONFLICT (site_id) DO UPDATE SET stale = excluded.stale WHERE NOT reports_sitesummary.stale",
                [x for site_id in part for x in (site_id, True)],
            )


def apply_new_events(events: Sequence[object]) -> None:
    """Fold a batch's newly stored chat events into the summaries (inside its transaction).

    `events` are NormalizedEvents that were inserted by this batch (not
    duplicates). Lookups are set-based over the batch's sites; only the
    windows that new statuses change are recomputed one by one.
    """
    chat = [e for e in events if e.family == "chat"]
    if not chat:
        return
    new_actors = add_actors(actor_triples(chat))
    summaries = _lock_summaries({e.site for e in chat})
    live = [e for e in chat if not summaries[e.site].stale]  # a stale site's rebuild counts them too
    messages = [(e.site, e.ts) for e in live if e.kind == "message"]
    chats = _chats_among(messages)  # against the spans as stored, before the windows move them
    sent = Counter(site_id for site_id, _ in messages)
    statuses = [(e.site, e.actor, e.ts, e.uid) for e in live if e.kind == "status"]
    tables = _tables_in_use() if statuses else EVENT_TABLES  # only windows of new statuses read events
    changes: dict[str, list[tuple[float, float]]] = {}
    for (site_id, _, ts, _), end in zip(statuses, _next_status_times(statuses, tables), strict=True):
        changes.setdefault(site_id, []).append((ts, end))
    windows = [(site_id, window) for site_id, found in changes.items() for window in affected_windows(found)]
    seeds = _online_before([(site_id, start) for site_id, (start, _) in windows], tables)
    moved = _recompute_windows(windows, seeds, tables)
    now = timezone.now()
    changed = []
    for site_id, summary in summaries.items():
        if summary.stale:
            continue
        summary.messages += chats[site_id] + moved[site_id]
        summary.emails += sent[site_id] - chats[site_id] - moved[site_id]
        summary.operators += new_actors.get((site_id, SiteActor.Role.OPERATOR), 0)
        summary.visitors += new_actors.get((site_id, SiteActor.Role.VISITOR), 0)
        summary.refreshed_at = now
        changed.append(summary)
    update_rows(SiteSummary, ["messages", "emails", "operators", "visitors", "refreshed_at"], changed)


def _recompute_windows(
    windows: Sequence[tuple[str, Span]], seeds: Sequence[set[str]], tables: Sequence[str]
) -> Counter[str]:
    """Recompute the spans inside each window [start, end) from the statuses; returns, per
    site, how many messages became chats (negative: e-mails).

    Set-based for all the windows at once: one statement reads the stored spans
    they touch, one streams their statuses in time order, one counts the messages
    in the stretches whose side changed (no message is loaded), and the spans are
    replaced with one delete and one insert. The statuses at `end` are included:
    after them every operator is in the state it was in before, so the spans from
    `end` on stand.
    """
    if not windows:
        return Counter()
    keys = [(i, site_id, start, None if end == math.inf else end) for i, (site_id, (start, end)) in enumerate(windows)]
    row_sql = f"(%s, %s, {DOUBLE}, {DOUBLE})"
    touching: dict[int, list[tuple[int, float, float]]] = {}
    for i, pk, start, end in _values_query(
        'SELECT v.i, s.id, s.start, s."end" FROM v JOIN reports_onlinespan s ON s.site_id = v.site'
        " AND s.start >= COALESCE((SELECT MAX(x.start) FROM reports_onlinespan x"
        " WHERE x.site_id = v.site AND x.start <= v.start), v.start)"
        " AND (v.stop IS NULL OR s.start <= v.stop)",
        "i, site, start, stop",
        keys,
        row_sql,
    ):
        touching.setdefault(i, []).append((pk, start, math.inf if end is None else end))
    new_spans = dict(_window_spans(keys, seeds, tables))
    changes: list[tuple[str, float, float | None, int]] = []  # (site, from, to, +1 or -1)
    by_site: dict[str, list[int]] = {}
    for i, (site_id, _) in enumerate(windows):
        by_site.setdefault(site_id, []).append(i)
    stale_ids: list[int] = []
    fresh: list[OnlineSpan] = []
    for site_id, indexes in by_site.items():
        # The site's windows are disjoint, but may touch the same stored spans: replaced together.
        rows = sorted({(s, e, pk) for i in indexes for pk, s, e in touching.get(i, ())})
        spans = [(s, e) for s, e, _ in rows]
        changed = False
        for i in indexes:
            start, end = windows[i][1]
            old, new = clip(spans, start, end), new_spans.get(i, [])
            for a, b, sign in span_changes(old, new):
                changes.append((site_id, a, None if b == math.inf else b, sign))
                changed = True
        if changed:
            site_windows = [windows[i][1] for i in indexes]
            new = [span for i in indexes for span in new_spans.get(i, [])]
            stale_ids += [pk for _, _, pk in rows]
            fresh += _span_rows(site_id, merge_touching(outside(spans, site_windows) + new))
    for part in chunked(stale_ids, 1000):
        OnlineSpan.objects.filter(pk__in=part).delete()
    OnlineSpan.objects.bulk_create(fresh, batch_size=1000)
    moved: Counter[str] = Counter()
    in_stretch = _chat_events(
        "COUNT(*) AS n",
        "x.site_id = v.site AND x.family = 'chat' AND x.kind = 'message' AND x.ts >= v.start"
        " AND (v.stop IS NULL OR x.ts < v.stop)",
        tables,
    )
    for site_id, count in _values_query(
        f"SELECT v.site, SUM(v.sign * (SELECT SUM(b.n) FROM ({in_stretch}) b)) FROM v GROUP BY v.site",
        "site, start, stop, sign",
        changes,
        f"(%s, {DOUBLE}, {DOUBLE}, CAST(%s AS INTEGER))",
    ):
        moved[site_id] += int(count or 0)
    return moved


def _window_spans(
    keys: Sequence[tuple[int, str, float, float | None]], seeds: Sequence[set[str]], tables: Sequence[str]
):
    """(window index, its new spans), the statuses of every window streamed in time order."""
    statuses = "x.site_id = v.site AND x.family = 'chat' AND x.kind = 'status' AND x.ts >= v.start AND x.ts <= v.stop"
    if connection.vendor == "postgresql":
        # One (site, family, kind, ts) index range per window whatever the statistics say
        # (the ORDER BY keeps the planner from flattening it): a join, planned on a young
        # table's estimates, read every status of every site once per window.
        sql = (
            "SELECT v.i, w.ts, w.uid, w.actor, w.online FROM v CROSS JOIN LATERAL"
            f" ({_chat_events('x.ts, x.uid, x.actor, x.online', statuses, tables)} ORDER BY 1) w ORDER BY v.i, w.ts"
        )
    else:  # SQLite has no LATERAL; its planner probes the index from each window anyway
        sql = (
            " UNION ALL ".join(
                f"SELECT v.i, x.ts, x.uid, x.actor, x.online FROM v JOIN {table} x ON {statuses}" for table in tables
            )
            + " ORDER BY 1, 2"
        )
    rows = iter(
        _values_stream(
            sql,
            "i, site, start, stop",
            [(i, site, start, LATEST if stop is None else stop) for i, site, start, stop in keys],
            f"(%s, %s, {DOUBLE}, {DOUBLE})",
        )
    )
    for i, statuses in groupby(rows, key=lambda row: row[0]):
        _, _, start, stop = keys[i]
        end = math.inf if stop is None else stop
        yield i, clip(spans_of_ordered((row[1:] for row in statuses), seeds[i], start), start, end)
    # A window always holds the status that opened it, so every window is yielded.


def outside(spans: Iterable[Span], windows: Sequence[Span]) -> list[Span]:
    """The parts of `spans` outside every one of the disjoint `windows`."""
    parts = list(spans)
    for start, end in windows:
        parts = [p for s, e in parts for p in ((s, min(e, start)), (max(s, end), e)) if p[1] > p[0]]
    return parts


def span_changes(old: Sequence[Span], new: Sequence[Span]) -> list[tuple[float, float, int]]:
    """Where two sorted, disjoint span lists differ: (start, end, +1) where only `new` is
    online (messages there become chats), (start, end, -1) where only `old` is."""
    points = sorted({p for s, e in (*old, *new) for p in (s, e)})
    changes: list[tuple[float, float, int]] = []
    for a, b in itertools.pairwise(points):
        sign = is_chat(a, new) - is_chat(a, old)
        if sign:
            if changes and changes[-1][1] == a and changes[-1][2] == sign:
                changes[-1] = (changes[-1][0], b, sign)
            else:
                changes.append((a, b, sign))
    return changes


REBUILD_SITES = 500  # sites per rebuild transaction (and per IN list)


def rebuild_site(site_id: str) -> None:
    """Recompute one site from its stored events, in its own transaction."""
    rebuild_sites([site_id])


def rebuild_sites(site_ids: Iterable[str], *, bulk: bool = False, actors_added: Collection[str] = ()) -> None:
    """Recompute sites from their stored events, a few hundred per transaction.

    Set-based: one ordered pass over the sites' statuses gives their spans (the
    semantics above, in Python); the database then counts the messages inside
    those spans (`_count_messages`), and the actors are added with one insert.
    `bulk` (after an import that dominated the event table): the actors of all
    the sites are added first, with the actor table's unique index built after
    (`add_actors_of_sites`), but for `actors_added`, the sites whose actors that already did.
    """
    ids = sorted(set(site_ids))
    added = set(actors_added)
    if bulk and connection.vendor == "postgresql" and (missing := [i for i in ids if i not in added]):
        add_actors_of_sites(missing)
        added.update(missing)
    for part in chunked(ids, REBUILD_SITES):
        with transaction.atomic():
            _rebuild_part(part, add_actors=not added.issuperset(part))


ACTOR_TABLE = SiteActor._meta.db_table
# Building the actor indexes may use this much memory (PostgreSQL's default is 64 MB).
MAINTENANCE_WORK_MEM = "512MB"
WORK_MEM = "256MB"  # and finding the distinct actors this much (the default is 4 MB)


def _actor_indexes(cursor) -> list[tuple[str, str]]:  # noqa: ANN001 - a database cursor
    """(drop, create) statements of the actor table's indexes, read from the catalog: its
    primary key and unique constraint as constraints, any other index as an index. An
    index a foreign key depends on is left alone (none does today)."""
    cursor.execute(
        "SELECT c.relname, con.conname, pg_get_constraintdef(con.oid), pg_get_indexdef(i.indexrelid)"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid"
        " AND con.contype IN ('p', 'u')"
        " WHERE i.indrelid = %s::regclass"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = i.indexrelid)"
        " ORDER BY i.indisprimary DESC, c.relname",
        [ACTOR_TABLE],
    )
    statements = []
    for index, constraint, constraint_def, index_def in cursor.fetchall():
        if constraint:
            statements.append(
                (
                    f'ALTER TABLE {ACTOR_TABLE} DROP CONSTRAINT "{constraint}"',
                    f'ALTER TABLE {ACTOR_TABLE} ADD CONSTRAINT "{constraint}" {constraint_def}',
                )
            )
        else:
            statements.append((f'DROP INDEX "{index}"', index_def))
    return statements


def add_actors_of_sites(site_ids: Sequence[str]) -> None:
    """Add the sites' missing actors (site, role, actor) without the table's indexes, then build them.

    After a dominating import most of the table's rows are new: inserted one by one
    into the unique b-tree they cost ~12 µs each on a durable server (1.45 M rows for
    2 M lines), and each also into the primary key's; built after the load, each index
    is one sort. One transaction, so a kill leaves the
    table as it was; workers storing posts meanwhile wait for the actor table until
    it commits (their inserts need the index). Rows already there stay: actors are
    only ever added, so the rows to insert are those of the events not in the table.
    """
    role = f"CASE kind WHEN 'status' THEN '{SiteActor.Role.OPERATOR}' ELSE '{SiteActor.Role.VISITOR}' END"
    chat = "x.family = 'chat' AND x.site_id = ANY(%s)"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")  # the distinct rows hashed in memory, not sorted on disk
        indexes = _actor_indexes(cursor)
        for drop, _ in indexes:
            cursor.execute(drop)
        cursor.execute(
            f"INSERT INTO {ACTOR_TABLE} (site_id, role, actor)"
            f" SELECT site_id, {role}, actor FROM ({_chat_events('x.site_id, x.kind, x.actor', chat)}) e"
            f" EXCEPT SELECT site_id, role, actor FROM {ACTOR_TABLE} WHERE site_id = ANY(%s)",
            [*_twice([list(site_ids)]), list(site_ids)],
        )
        for _, create in indexes:
            cursor.execute(create)
    settle(ACTOR_TABLE)  # each part's count of its actors then reads the unique index alone


def stretches(spans: Sequence[Span]) -> Iterator[tuple[float, float, bool]]:
    """(start, end, inside a span) of the stretches that sorted, disjoint spans cut the
    whole time line into: the spans and the gaps between them, from -inf to inf."""
    last = -math.inf
    for start, end in spans:
        if start > last:
            yield last, start, False
        yield start, end, True
        last = end
    if last < math.inf:
        yield last, math.inf, False


def _count_messages(spans: dict[str, list[Span]]) -> tuple[Counter[str], Counter[str]]:
    """(messages, chats) per site, counted by the database stretch by stretch.

    Each site's time line is cut into its spans and the gaps between them, and one
    index range scan, (site, family, kind, ts), counts the messages of each: every
    message is read once, in the index, and none leaves the database (streaming
    them to bisect here cost the import a few µs each).
    """
    in_stretch = _chat_events(
        "COUNT(*) AS n",
        "x.site_id = v.site AND x.family = 'chat' AND x.kind = 'message' AND x.ts >= v.start AND x.ts < v.stop",
    )
    keys = [
        (site_id, start, end, chat)
        for site_id, site_spans in spans.items()
        for start, end, chat in stretches(site_spans)
    ]
    messages: Counter[str] = Counter()
    chats: Counter[str] = Counter()
    for site_id, chat, count in _values_query(
        f"SELECT v.site, v.chat, (SELECT SUM(b.n) FROM ({in_stretch}) b) FROM v",
        "site, start, stop, chat",
        keys,
        f"(%s, {DOUBLE}, {DOUBLE}, CAST(%s AS INTEGER))",
    ):
        messages[site_id] += int(count or 0)
        if chat:
            chats[site_id] += int(count or 0)
    return messages, chats


def _rebuild_part(site_ids: Sequence[str], *, add_actors: bool = True) -> None:
    _lock_summaries(site_ids)
    marks = ", ".join(["%s"] * len(site_ids))
    spans = {site_id: [] for site_id in site_ids}
    for site_id, group in groupby(
        _stream(
            _chat_events(
                "x.site_id, x.ts, x.uid, x.actor, x.online",
                f"x.family = 'chat' AND x.kind = 'status' AND x.site_id IN ({marks})",
            )
            + " ORDER BY 1",
            _twice(site_ids),
        ),
        key=lambda row: row[0],
    ):
        spans[site_id] = online_spans((row[1:] for row in group), set(), -math.inf)
    OnlineSpan.objects.filter(site_id__in=site_ids).delete()
    OnlineSpan.objects.bulk_create(
        (row for site_id, site_spans in spans.items() for row in _span_rows(site_id, site_spans)), batch_size=1000
    )
    messages, chats = _count_messages(spans)
    in_sites = f"x.family = 'chat' AND x.site_id IN ({marks})"
    with connection.cursor() as cursor:
        if add_actors:
            cursor.execute(
                "INSERT INTO reports_siteactor (site_id, role, actor)"
                " SELECT DISTINCT site_id, CASE kind WHEN 'status' THEN %s ELSE %s END AS role, actor"
                f" FROM ({_chat_events('x.site_id, x.kind, x.actor', in_sites)}) e"
                # In index order: each index page is filled once instead of touched at random.
                " ORDER BY site_id, role, actor ON CONFLICT (site_id, role, actor) DO NOTHING",
                [SiteActor.Role.OPERATOR, SiteActor.Role.VISITOR, *_twice(site_ids)],
            )
        cursor.execute(
            f"SELECT site_id, role, COUNT(*) FROM reports_siteactor WHERE site_id IN ({marks}) GROUP BY site_id, role",
            site_ids,
        )
        actors = {(site_id, role): count for site_id, role, count in cursor.fetchall()}
        counts = [
            (site_id, chats[site_id], total - chats[site_id], actors.get((site_id, SiteActor.Role.OPERATOR), 0),
             actors.get((site_id, SiteActor.Role.VISITOR), 0))
            for site_id, total in messages.items()
        ]  # fmt: skip
        bigint = "CAST(%s AS BIGINT)"
        cursor.execute(
            f"WITH v(site, messages, emails, operators, visitors) AS (VALUES"
            f" {', '.join([f'(%s, {bigint}, {bigint}, {bigint}, {bigint})'] * len(counts))})"
            " UPDATE reports_sitesummary SET messages = v.messages, emails = v.emails, operators = v.operators,"
            " visitors = v.visitors, stale = %s, refreshed_at = %s FROM v WHERE reports_sitesummary.site_id = v.site",
            [*(x for row in counts for x in row), False, timezone.now()],
        )


def stale_site_ids() -> list[str]:
    return list(SiteSummary.objects.filter(stale=True).values_list("site_id", flat=True))


def rebuild_stale_sites(*, bulk: bool = False, actors_added: Collection[str] = ()) -> int:
    """Rebuild every site marked stale; returns how many (`bulk`, `actors_added`: see `rebuild_sites`)."""
    stale = stale_site_ids()
    rebuild_sites(stale, bulk=bulk, actors_added=actors_added)
    return len(stale)


def rebuild_all_sites() -> int:
    """Repair: recompute every site that has chat events, stored or pruned."""
    chat = _chat_events("x.site_id", "x.family = 'chat'")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT site_id FROM ({chat}) e")
        site_ids = [site_id for (site_id,) in cursor.fetchall()]
    rebuild_sites(site_ids)
    return len(site_ids)


def summary_rows(site_id: str | None = None) -> list[SiteRow]:
    """Site rows for every site with an accepted chat event, in classic order."""
    summaries = SiteSummary.objects.all()
    if site_id is not None:
        summaries = summaries.filter(site_id=site_id)
    return ordered_sites(
        SiteRow(s.site_id, s.messages, s.emails, s.operators, s.visitors, s.stale, s.refreshed_at) for s in summaries
    )
