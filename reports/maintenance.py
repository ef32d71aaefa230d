"""Keeping the materialized summaries up to date as events are stored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from events.registry import NormalizedEvent
from reports import event_counts, room_summary, site_summary


def events_stored(
    new_events: Sequence[NormalizedEvent],
    *,
    defer: bool,
    counts: Mapping[tuple[int, str, str], int] | None = None,
) -> None:
    """Called in the storing transaction with the events that were new.

    Workers fold each batch in at once; bulk imports (`defer`) only mark the
    sites stale and rebuild each once at the end, which keeps them linear.
    The dashboard's event counts are added at once on both paths (a few rows
    per chunk), after the summaries so that every path takes locks in one order;
    `counts` is their `event_counts.tally`, when the caller has it already.
    """
    if defer:
        site_summary.mark_stale(e.site for e in new_events if e.family == "chat")
        room_summary.mark_stale(room_summary.room_ids_of(new_events))
    else:
        site_summary.apply_new_events(new_events)
        room_summary.apply_new_events(new_events)
    if counts is None:
        event_counts.add_new_events(new_events)
    else:
        event_counts.add_counts(counts)


def rebuild_stale(*, bulk: bool = False) -> int:
    """Rebuild every stale site and room; returns how many summaries were rebuilt.

    `bulk`: after an import that dominated the event table (its indexes were deferred),
    when most of what the rebuild adds is new (`site_summary.rebuild_sites`).
    """
    return site_summary.rebuild_stale_sites(bulk=bulk) + room_summary.rebuild_stale_rooms()
