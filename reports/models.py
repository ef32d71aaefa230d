"""Materialized summaries, maintained by the workers (see reports/site_summary.py)."""

from django.db import models

from events.models import Site


class SiteSummary(models.Model):
    site = models.OneToOneField(Site, on_delete=models.CASCADE, primary_key=True)
    messages = models.BigIntegerField(default=0)
    emails = models.BigIntegerField(default=0)
    operators = models.BigIntegerField(default=0)
    visitors = models.BigIntegerField(default=0)
    # Set when events were stored but the counters not yet brought up to date
    # (bulk imports defer the work to one rebuild at the end).
    stale = models.BooleanField(default=False)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "site summaries"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(messages__gte=0, emails__gte=0, operators__gte=0, visitors__gte=0),
                name="site_summary_counts_not_negative",
            )
        ]

    def __str__(self) -> str:
        return self.site_id


class OnlineSpan(models.Model):
    """A half-open time range [start, end) in which a site had an operator online.

    `end` is NULL while the site is still online. A message inside a span is a chat.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="online_spans")
    start = models.FloatField()
    end = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["site", "start"], name="span_site_start")]

    def __str__(self) -> str:
        return f"{self.site_id} [{self.start}, {self.end})"


class SiteActor(models.Model):
    """The distinct operators and visitors of a site, so counting them is O(1) per event."""

    class Role(models.TextChoices):
        OPERATOR = "operator"
        VISITOR = "visitor"

    # No index of its own: the unique (site, role, actor) index serves lookups by site. No
    # database constraint: rows are derived from stored events of existing sites, and a
    # rebuild after a bulk import inserts a row per distinct visitor, each of which
    # a constraint would check (CASCADE still applies through Django).
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="actors", db_index=False, db_constraint=False)
    role = models.CharField(max_length=16, choices=Role.choices)
    actor = models.CharField(max_length=255)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "role", "actor"], name="site_actor_unique")]

    def __str__(self) -> str:
        return f"{self.site_id} {self.role} {self.actor}"


class RoomSummary(models.Model):
    """Per xmpp room (SPEC §4), recomputed per batch for the rooms it touched (reports/room_summary.py)."""

    room_id = models.CharField(max_length=255, primary_key=True)
    events = models.BigIntegerField(default=0)
    messages = models.BigIntegerField(default=0)
    typing = models.BigIntegerField(default=0)
    participants = models.BigIntegerField(default=0)
    first = models.FloatField(null=True, blank=True)
    last = models.FloatField(null=True, blank=True)
    # Set by bulk imports, which recompute each touched room once at the end.
    stale = models.BooleanField(default=False)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "room summaries"
        indexes = [models.Index(fields=["room_id"], name="room_summary_stale", condition=models.Q(stale=True))]

    def __str__(self) -> str:
        return self.room_id


class EventCount(models.Model):
    """Accepted events per (epoch hour, family, site): what the dashboard counts instead of the
    event table, kept exact by every storing path (reports/event_counts.py)."""

    hour = models.BigIntegerField()  # FLOOR(ts / 3600): hours since 1970-01-01 00:00 UTC
    family = models.CharField(max_length=16)
    site = models.CharField(max_length=255)  # Site.code, without a foreign key: no join, no lock on the site
    events = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "family", "site"], name="event_count_key"),
            models.CheckConstraint(condition=models.Q(events__gt=0), name="event_count_positive"),
        ]
        indexes = [models.Index(fields=["site", "family", "hour"], name="event_count_site")]

    def __str__(self) -> str:
        return f"{self.site} {self.family} hour {self.hour}: {self.events}"
