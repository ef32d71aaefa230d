"""Keeping the materialized summaries up to date as events are stored."""

from __future__ import annotations

from collections.abc import Sequence

from events.registry import NormalizedEvent
from reports import site_summary


def events_stored(new_events: Sequence[NormalizedEvent], *, defer: bool) -> None:
    """Called in the storing transaction with the events that were new.

    Workers fold each batch in at once; bulk imports (`defer`) only mark the
    sites stale and rebuild each once at the end, which keeps them linear.
    """
    if defer:
        site_summary.mark_stale(e.site for e in new_events if e.family == "chat")
    else:
        site_summary.apply_new_events(new_events)


def rebuild_stale() -> int:
    return site_summary.rebuild_stale_sites()
