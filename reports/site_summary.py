"""The site summary of SPEC §3: the one module that holds its semantics.

A site's chat events are ordered by (timestamp, status before message, id).
Each operator's state is its latest status (initially offline); the site is
online while any operator is. We keep, per site, the *online spans*: half-open
ranges [start, end) of time in which the site was online. Because a status
applies before a message with the same timestamp, a message is a chat exactly
when its timestamp falls inside a span, and an e-mail otherwise.

Every path uses the same two operations:

* `apply_new_events` (workers, per batch): classify the batch's new messages
  against the stored spans and, when new statuses arrived, recompute the spans
  from the earliest new status on and move the messages whose side changed.
  The work is bounded by the events after that timestamp, not by the site.
* `rebuild_site` (bulk import, repair): recompute a site from its events in one
  ordered pass over its statuses and one over its message timestamps.

Both are exact after any arrival order, batching, duplication or retry.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby

from django.db import connection, transaction
from django.utils import timezone

from events.db import insert_ignoring_conflicts
from events.models import Site
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
            f"{self.site_id},messages={self.messages},emails={self.emails},"
            f"operators={self.operators},visitors={self.visitors}"
        )


# -- the semantics, free of the database ---------------------------------


def online_spans(statuses: Iterable[Status], seed_online: set[str], since: float) -> list[Span]:
    """Spans of time >= `since` in which at least one operator is online.

    `statuses` are the site's statuses with ts >= since, in any order;
    `seed_online` the operators online just before `since`.
    """
    online = set(seed_online)
    spans: list[Span] = []
    start = since if online else None
    for ts, group in groupby(sorted(statuses), key=lambda s: s[0]):
        for _ts, _uid, operator, is_online in group:  # ties in id order
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


def _stream(sql: str, params: Sequence[object]) -> Iterator[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(FETCH_SIZE):
            yield from rows


def _statuses_since(site_id: str, since: float) -> Iterator[Status]:
    return _stream(
        "SELECT ts, uid, actor, online FROM events_event"
        " WHERE site_id = %s AND family = 'chat' AND kind = 'status' AND ts >= %s",
        [site_id, since],
    )


def _message_ts_since(site_id: str, since: float) -> Iterator[float]:
    rows = _stream(
        "SELECT ts FROM events_event"
        " WHERE site_id = %s AND family = 'chat' AND kind = 'message' AND ts >= %s ORDER BY ts",
        [site_id, since],
    )
    return (row[0] for row in rows)


def _online_before(site_id: str, since: float) -> set[str]:
    """Operators whose latest status before `since` is online (one index probe each)."""
    operators = SiteActor.objects.filter(site_id=site_id, role=SiteActor.Role.OPERATOR)
    online = set()
    with connection.cursor() as cursor:
        for operator in operators.values_list("actor", flat=True):
            cursor.execute(
                "SELECT ts, uid, online FROM events_event WHERE site_id = %s AND actor = %s"
                " AND family = 'chat' AND kind = 'status' AND ts < %s"
                " AND ts = (SELECT MAX(ts) FROM events_event WHERE site_id = %s AND actor = %s"
                " AND family = 'chat' AND kind = 'status' AND ts < %s)",
                [site_id, operator, since] * 2,
            )
            latest = max(cursor.fetchall(), default=None)  # ties at one ts: highest id wins
            if latest and latest[2]:
                online.add(operator)
    return online


def _stored_spans(site_id: str, since: float) -> list[Span]:
    """Stored spans clipped to [since, inf), ascending."""
    rows = OnlineSpan.objects.filter(site_id=site_id).exclude(end__lte=since).order_by("start")
    return [(max(s, since), math.inf if e is None else e) for s, e in rows.values_list("start", "end")]


def _replace_spans(site_id: str, since: float, spans: list[Span]) -> None:
    """Store `spans` as the site's spans from `since` on, merging at the seam."""
    OnlineSpan.objects.filter(site_id=site_id, start__gte=since).delete()
    OnlineSpan.objects.filter(site_id=site_id, start__lt=since, end__isnull=True).update(end=since)
    OnlineSpan.objects.filter(site_id=site_id, start__lt=since, end__gt=since).update(end=since)
    if spans and spans[0][0] == since:
        seam = OnlineSpan.objects.filter(site_id=site_id, end=since).first()
        if seam:
            end = spans[0][1]
            seam.end = None if end == math.inf else end
            seam.save(update_fields=["end"])
            spans = spans[1:]
    OnlineSpan.objects.bulk_create(
        OnlineSpan(site_id=site_id, start=s, end=None if e == math.inf else e) for s, e in spans
    )


# -- maintaining the materialized summary ---------------------------------


def _lock_summaries(site_ids: Iterable[str]) -> dict[str, SiteSummary]:
    """Lock the sites' summary rows in a fixed order, creating missing ones."""
    ids = sorted(set(site_ids))
    SiteSummary.objects.bulk_create([SiteSummary(site_id=s) for s in ids], ignore_conflicts=True, batch_size=1000)
    locked = SiteSummary.objects.select_for_update().filter(site_id__in=ids).order_by("site_id")
    return {s.site_id: s for s in locked}


def add_actors(actors: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str], int]:
    """Record (site, role, actor) triples; return how many were new per (site, role)."""
    rows = sorted(set(actors))
    new: dict[tuple[str, str], int] = {}
    for site_id, role in insert_ignoring_conflicts(
        "reports_siteactor", ("site_id", "role", "actor"), rows, "site_id, role, actor", "site_id, role"
    ):
        new[(site_id, role)] = new.get((site_id, role), 0) + 1
    return new


def actor_triples(events: Iterable[object]) -> set[tuple[str, str, str]]:
    """The (site, role, actor) of chat events: statuses name operators, messages visitors."""
    return {
        (e.site, SiteActor.Role.OPERATOR if e.kind == "status" else SiteActor.Role.VISITOR, e.actor)
        for e in events
        if e.family == "chat"
    }


def mark_stale(site_ids: Iterable[str]) -> None:
    """Bulk path: counters will be rebuilt once at the end instead of per chunk."""
    ids = sorted(set(site_ids))
    if ids:
        _lock_summaries(ids)
        SiteSummary.objects.filter(site_id__in=ids).update(stale=True)


def apply_new_events(events: Sequence[object]) -> None:
    """Fold a batch's newly stored chat events into the summaries (inside its transaction).

    `events` are NormalizedEvents that were inserted by this batch (not duplicates).
    """
    chat = [e for e in events if e.family == "chat"]
    if not chat:
        return
    new_actors = add_actors(actor_triples(chat))
    by_site: dict[str, list] = {}
    for e in chat:
        by_site.setdefault(e.site, []).append(e)
    summaries = _lock_summaries(by_site)
    now = timezone.now()
    for site_id, site_events in by_site.items():
        summary = summaries[site_id]
        if summary.stale:
            continue  # a rebuild is due and will count these events too
        message_ts = sorted(e.ts for e in site_events if e.kind == "message")
        if message_ts:
            spans = _stored_spans(site_id, message_ts[0])
            chats, total = count_chats(message_ts, spans)
            summary.messages += chats
            summary.emails += total - chats
        status_ts = [e.ts for e in site_events if e.kind == "status"]
        if status_ts:
            since = min(status_ts)
            old = _stored_spans(site_id, since)
            new = online_spans(_statuses_since(site_id, since), _online_before(site_id, since), since)
            if new != old:
                moved = (
                    count_chats(_message_ts_since(site_id, since), new)[0]
                    - count_chats(_message_ts_since(site_id, since), old)[0]
                )
                summary.messages += moved
                summary.emails -= moved
                _replace_spans(site_id, since, new)
        summary.operators += new_actors.get((site_id, SiteActor.Role.OPERATOR), 0)
        summary.visitors += new_actors.get((site_id, SiteActor.Role.VISITOR), 0)
        summary.refreshed_at = now
        summary.save()


def rebuild_site(site_id: str) -> None:
    """Recompute one site from its stored events, in its own transaction."""
    with transaction.atomic():
        summary = _lock_summaries([site_id])[site_id]
        spans = online_spans(_statuses_since(site_id, -math.inf), set(), -math.inf)
        chats, total = count_chats(_message_ts_since(site_id, -math.inf), spans)
        OnlineSpan.objects.filter(site_id=site_id).delete()
        _replace_spans(site_id, -math.inf, spans)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO reports_siteactor (site_id, role, actor)"
                " SELECT DISTINCT site_id, CASE kind WHEN 'status' THEN %s ELSE %s END, actor"
                " FROM events_event WHERE site_id = %s AND family = 'chat'"
                " ON CONFLICT (site_id, role, actor) DO NOTHING",
                [SiteActor.Role.OPERATOR, SiteActor.Role.VISITOR, site_id],
            )
        roles = SiteActor.objects.filter(site_id=site_id)
        summary.messages = chats
        summary.emails = total - chats
        summary.operators = roles.filter(role=SiteActor.Role.OPERATOR).count()
        summary.visitors = roles.filter(role=SiteActor.Role.VISITOR).count()
        summary.stale = False
        summary.refreshed_at = timezone.now()
        summary.save()


def rebuild_stale_sites() -> int:
    """Rebuild every site marked stale; returns how many."""
    stale = list(SiteSummary.objects.filter(stale=True).values_list("site_id", flat=True))
    for site_id in stale:
        rebuild_site(site_id)
    return len(stale)


def rebuild_all_sites() -> int:
    """Repair: recompute every site that has chat events."""
    site_ids = list(Site.objects.filter(events__family="chat").distinct().values_list("code", flat=True))
    for site_id in site_ids:
        rebuild_site(site_id)
    return len(site_ids)


def summary_rows(site_id: str | None = None) -> list[SiteRow]:
    """Site rows for every site with an accepted chat event, in classic order."""
    summaries = SiteSummary.objects.all()
    if site_id is not None:
        summaries = summaries.filter(site_id=site_id)
    return ordered_sites(
        SiteRow(s.site_id, s.messages, s.emails, s.operators, s.visitors, s.stale, s.refreshed_at) for s in summaries
    )
