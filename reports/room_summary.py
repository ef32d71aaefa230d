"""The room summary of SPEC §4: the one module that holds its semantics.

Per xmpp `room_id`: `events` (distinct ids), `messages` (muc-broadcast-message
events whose stanza has a non-empty <body>), `typing` (muc-broadcast-message
events with a `composing` chat state), `participants` (distinct non-empty
nicks), `first`/`last` timestamps. Overall: rooms, events, average per room.

Rooms are small, so a room's row is simply recomputed with one set-based
statement whenever a batch stores events of it. The row is locked before the
statement runs, so concurrent batches of one room serialize and the later one
sees the earlier one's events: the result is exact after any interleaving.
Bulk imports only mark rooms stale and recompute each once at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from events.db import chunked
from events.registry import FIELD_SEPARATOR, printable
from reports.models import RoomSummary

FAMILY = "xmpp"
MESSAGE_EVENT = "muc-broadcast-message"
TYPING_STATE = "composing"
ROOMS_PER_STATEMENT = 500

_RECOMPUTE = """
INSERT INTO reports_roomsummary
    (room_id, events, messages, typing, participants, "first", "last", stale, refreshed_at)
SELECT e.session,
       COUNT(*),
       SUM(CASE WHEN e.kind = %s AND s.body <> '' THEN 1 ELSE 0 END),
       SUM(CASE WHEN e.kind = %s AND s.chat_state = %s THEN 1 ELSE 0 END),
       COUNT(DISTINCT NULLIF(e.actor, '')),
       MIN(e.ts),
       MAX(e.ts),
       %s,
       %s
FROM events_event e LEFT JOIN events_stanza s ON s.event_id = e.id
WHERE e.family = %s AND e.session <> '' AND e.session IN ({rooms})
GROUP BY e.session
ON CONFLICT (room_id) DO UPDATE SET
    events = excluded.events, messages = excluded.messages, typing = excluded.typing,
    participants = excluded.participants, "first" = excluded."first", "last" = excluded."last",
    stale = excluded.stale, refreshed_at = excluded.refreshed_at
"""


COMMENT = "#"  # starts the totals line, after the room lines


@dataclass(frozen=True, slots=True)
class RoomRow:
    room_id: str
    events: int
    messages: int
    typing: int
    participants: int
    first: float | None
    last: float | None
    stale: bool = field(default=False, compare=False)
    refreshed_at: datetime | None = field(default=None, compare=False)

    def classic(self) -> str:
        name = printable(self.room_id, also=FIELD_SEPARATOR)
        if name.startswith(COMMENT):  # a room named "# rooms=…" would print a second totals line
            name = "\\x23" + name[1:]
        return (
            f"{name},events={self.events},messages={self.messages},"
            f"typing={self.typing},"
            f"participants={self.participants},first={_ts(self.first)},last={_ts(self.last)}"
        )


@dataclass(frozen=True, slots=True)
class RoomTotals:
    rooms: int
    events: int
    avg_events_per_room: float
    # Freshness: rooms waiting for a rebuild, and the latest refresh.
    stale_rooms: int = field(default=0, compare=False)
    refreshed_at: datetime | None = field(default=None, compare=False)

    def classic(self) -> str:
        return f"{COMMENT} rooms={self.rooms} events={self.events} avg_events_per_room={self.avg_events_per_room:.2f}"


def _ts(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# -- maintaining the materialized summary ---------------------------------


def _lock_rooms(room_ids: Sequence[str]) -> None:
    """Create missing rows and lock them in a fixed order (no deadlocks between batches)."""
    RoomSummary.objects.bulk_create(
        [RoomSummary(room_id=r) for r in room_ids], ignore_conflicts=True, batch_size=ROOMS_PER_STATEMENT
    )
    for chunk in chunked(room_ids, ROOMS_PER_STATEMENT):
        list(RoomSummary.objects.select_for_update().filter(room_id__in=chunk).order_by("room_id").values_list("pk"))


def recompute_rooms(room_ids: Iterable[str]) -> None:
    """Recompute the rooms' rows from their stored events (call inside a transaction)."""
    ids = sorted(set(room_ids))
    if not ids:
        return
    _lock_rooms(ids)
    now = timezone.now()
    with connection.cursor() as cursor:
        for chunk in chunked(ids, ROOMS_PER_STATEMENT):
            cursor.execute(
                _RECOMPUTE.format(rooms=", ".join(["%s"] * len(chunk))),
                [MESSAGE_EVENT, MESSAGE_EVENT, TYPING_STATE, False, now, FAMILY, *chunk],
            )


def room_of(event: object) -> str:
    """The room whose summary this event counts in ("" for none)."""
    return event.session if event.family == FAMILY else ""


def room_ids_of(events: Iterable[object]) -> set[str]:
    return {room for e in events if (room := room_of(e))}


def apply_new_events(events: Sequence[object]) -> None:
    """Workers: bring the rooms a batch's new events touched up to date (inside its transaction)."""
    recompute_rooms(room_ids_of(events))


def mark_stale(room_ids: Iterable[str]) -> None:
    """Bulk path: the rooms will be recomputed once at the end instead of per chunk."""
    ids = sorted(set(room_ids))
    if ids:
        _lock_rooms(ids)
        RoomSummary.objects.filter(room_id__in=ids).update(stale=True)


def rebuild_stale_rooms() -> int:
    """Recompute every room marked stale, a few hundred per transaction; returns how many."""
    stale = sorted(RoomSummary.objects.filter(stale=True).values_list("room_id", flat=True))
    for chunk in chunked(stale, ROOMS_PER_STATEMENT):
        with transaction.atomic():
            recompute_rooms(chunk)
    return len(stale)


def rebuild_all_rooms() -> int:
    """Repair: recompute every room that has xmpp events."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT session FROM events_event WHERE family = %s AND session <> ''", [FAMILY])
        room_ids = sorted(row[0] for row in cursor.fetchall())
    for chunk in chunked(room_ids, ROOMS_PER_STATEMENT):
        with transaction.atomic():
            recompute_rooms(chunk)
    return len(room_ids)


# -- reading ----------------------------------------------------------------


def room_rows(room_id: str | None = None) -> list[RoomRow]:
    """Room rows in ascending code-point order of room_id (not the database's collation)."""
    summaries = RoomSummary.objects.all()
    if room_id is not None:
        summaries = summaries.filter(room_id=room_id)
    rows = (
        RoomRow(s.room_id, s.events, s.messages, s.typing, s.participants, s.first, s.last, s.stale, s.refreshed_at)
        for s in summaries
    )
    return sorted(rows, key=lambda r: r.room_id)


def room_totals() -> RoomTotals:
    totals = RoomSummary.objects.aggregate(
        rooms=Count("pk"), events=Sum("events"), stale=Count("pk", filter=Q(stale=True)), refreshed=Max("refreshed_at")
    )
    rooms, events = totals["rooms"], totals["events"] or 0
    return RoomTotals(
        rooms=rooms,
        events=events,
        avg_events_per_room=events / rooms if rooms else 0.0,
        stale_rooms=totals["stale"],
        refreshed_at=totals["refreshed"],
    )
