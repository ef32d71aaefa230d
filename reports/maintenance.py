"""Keeping the materialized summaries up to date as events are stored."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import NamedTuple

from events.registry import NormalizedEvent
from reports import event_counts, room_summary, site_summary

SITE, ROOM = "site", "room"
CHAT = "chat"  # the family whose events mark their site stale


def events_stored(new_events: Sequence[NormalizedEvent], *, defer: bool) -> None:
    """Called in the storing transaction with the events that were new.

    Workers fold each batch in at once; bulk imports (`defer`) only mark the
    sites stale and rebuild each once at the end, which keeps them linear.
    The dashboard's event counts are added at once on both paths (a few rows
    per chunk), after the summaries so that every path takes locks in one order.
    """
    if defer:
        deferred_events_stored(stale_marks(new_events), event_counts.tally(new_events))
    else:
        site_summary.apply_new_events(new_events)
        room_summary.apply_new_events(new_events)
        event_counts.add_new_events(new_events)


def stale_marks(events: Iterable[object]) -> Counter[tuple[str, str]]:
    """What storing these events marks stale on the bulk path, with how many events each:
    (SITE, site id) for chat events, (ROOM, room id) for xmpp events in a room.

    Counted, so that a caller that tallied a chunk ahead can take out the events that
    turned out not to be new.
    """
    marks: Counter[tuple[str, str]] = Counter()
    for e in events:
        if e.family == CHAT:
            marks[SITE, e.site] += 1
        elif room := room_summary.room_of(e):
            marks[ROOM, room] += 1
    return marks


class _Marked(NamedTuple):
    family: str
    site: str
    session: str


def stale_marks_of(families: Sequence[str], sites: Sequence[str], sessions: Sequence[str]) -> Counter[tuple[str, str]]:
    """`stale_marks` of events given by column (an import's rows); chat events only, the
    common case, are counted in C."""
    if families.count(CHAT) == len(families):
        return Counter({(SITE, site): n for site, n in Counter(sites).items()})
    return stale_marks(map(_Marked._make, zip(families, sites, sessions, strict=True)))


def deferred_events_stored(marks: Mapping[tuple[str, str], int], counts: Mapping[tuple[int, str, str], int]) -> None:
    """`events_stored(..., defer=True)` from tallies (`stale_marks`, `event_counts.tally`)
    of the new events: the sites and rooms marked stale, the events counted."""
    site_summary.mark_stale(key for (kind, key), n in marks.items() if kind == SITE and n > 0)
    room_summary.mark_stale({key for (kind, key), n in marks.items() if kind == ROOM and n > 0})
    event_counts.add_counts(counts)


def rebuild_stale(*, bulk: bool = False, actors_added: Collection[str] = ()) -> int:
    """Rebuild every stale site and room; returns how many summaries were rebuilt.

    `bulk`: after an import that dominated the event table (its indexes were deferred),
    when most of what the rebuild adds is new; `actors_added`: sites whose actors were
    added since they were marked stale (`site_summary.rebuild_sites`).
    """
    return site_summary.rebuild_stale_sites(bulk=bulk, actors_added=actors_added) + room_summary.rebuild_stale_rooms()
