"""Queries over the event store that both the read API and the admin use."""

from __future__ import annotations

from django.db.models import QuerySet

from events.models import Event, Family, PrunedEvent, Site


def through_site_indexes(events: QuerySet[Event]) -> QuerySet[Event]:
    """`events` with conditions that every event meets, so that an actor, type or category
    filter without a site can still use the site-led indexes.

    Without them PostgreSQL can only walk the (ts, id) index and test every row: fine for a
    common actor, a full scan of the table (26 s at 10 M events) for a rare one. With them
    it probes each site's (and family's) range: 250 sites, ~30 ms. Same rows either way.
    """
    return events.filter(site_id__in=Site.objects.values("code"), family__in=Family.values)


def any_pruned() -> bool:
    """Whether any event was ever pruned (events/retention.py): one index probe. Readers of the
    pruned baseline skip it while it is empty, so a store that never prunes pays nothing for it."""
    return PrunedEvent.objects.exists()
