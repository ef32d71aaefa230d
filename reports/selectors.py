"""Queries of the analysts' read API.

The summaries are read from their materialized tables only (O(sites), O(rooms)):
the request path never recomputes them, it shows how fresh they are instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from events.models import Event
from reports.room_summary import RoomRow, RoomTotals, room_rows, room_totals
from reports.site_summary import SiteRow, summary_rows

# Cursor pagination walks this order; `id` makes it unique, so cursors are stable.
EVENT_ORDER = ("ts", "id")


@dataclass(frozen=True, slots=True)
class SiteSummaries:
    sites: list[SiteRow]
    refreshed_at: datetime | None  # the latest refresh of any listed site
    stale_sites: int  # listed sites whose counters wait for a rebuild

    def classic(self) -> str:
        return "".join(row.classic() + "\n" for row in self.sites)


@dataclass(frozen=True, slots=True)
class RoomSummaries:
    rooms: list[RoomRow]
    totals: RoomTotals

    def classic(self) -> str:
        """The same text as `manage.py room_summary`."""
        return "".join(row.classic() + "\n" for row in self.rooms) + self.totals.classic() + "\n"


def site_summaries(site_id: str | None = None) -> SiteSummaries:
    """Every site (or one) in §3 order, with freshness taken from the same rows."""
    rows = summary_rows(site_id)
    return SiteSummaries(
        sites=rows,
        refreshed_at=max((r.refreshed_at for r in rows if r.refreshed_at), default=None),
        stale_sites=sum(r.stale for r in rows),
    )


def room_summaries() -> RoomSummaries:
    return RoomSummaries(rooms=room_rows(), totals=room_totals())


def events() -> QuerySet[Event]:
    """All stored events in cursor order; filters narrow it (reports/filters.py)."""
    return Event.objects.defer("batch", "line").order_by(*EVENT_ORDER)
