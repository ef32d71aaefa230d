"""What the admin dashboard shows, read at a cost bounded by its window, not by the events stored.

* Events over time by family: sums of the (hour, family, site) rollup (reports/event_counts.py)
  over the window's hours; at most MAX_BUCKETS columns.
* Chats vs e-mails per site: the materialized site summary, with each listed site's first and
  last message found by one probe each of the (site, family, kind, ts) index.
* Rejections by reason over time: the rejections stored in the window (by when they were
  refused), grouped by rule; their number is bounded by what the batches stored.
* Backlog and freshness: unfinished and failed batches (partial indexes), the latest event
  and the summaries' refresh times.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import BigIntegerField as BigInt
from django.db.models import Count, ExpressionWrapper, F, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from events.models import Event, Family
from events.timestamps import utc_text
from ingest.batches import backlog
from ingest.models import RawBatch, Rejection
from reports.event_counts import HOUR
from reports.models import EventCount, RoomSummary, SiteSummary

BUCKETS = {"hour": HOUR, "day": 24 * HOUR}
DEFAULT_SPAN = {"hour": 48, "day": 30}  # buckets shown when no range is asked for
MAX_BUCKETS = {"hour": 24 * 7, "day": 366}
TOP_RULES = 7  # reasons drawn in their own colour; the rest are "other"


@dataclass(frozen=True, slots=True)
class Window:
    """Buckets of `bucket` size covering [start, end), epoch seconds aligned to the bucket."""

    bucket: str
    start: int
    end: int

    @property
    def step(self) -> int:
        return BUCKETS[self.bucket]

    @property
    def starts(self) -> list[int]:
        return list(range(self.start, self.end, self.step))

    def label(self, start: int) -> str:
        return utc_text(start, "%Y-%m-%d %H:%M" if self.bucket == "hour" else "%Y-%m-%d")

    def axis_label(self, start: int) -> str:
        """A shorter label for the time axis."""
        return utc_text(start, "%m-%d %H:%M" if self.bucket == "hour" else "%Y-%m-%d")

    def shifted(self, buckets: int) -> Window:
        return Window(self.bucket, self.start + buckets * self.step, self.end + buckets * self.step)


def floor_to(seconds: float, step: int) -> int:
    return int(seconds // step * step)


def make_window(bucket: str, since: float | None, until: float | None, latest: float) -> Window:
    """The buckets covering [since, until), by default the DEFAULT_SPAN buckets up to `latest`;
    cut to the MAX_BUCKETS that end at `until`."""
    step = BUCKETS[bucket]
    end = math.ceil(until / step) * step if until is not None else floor_to(latest, step) + step
    start = floor_to(since, step) if since is not None else end - DEFAULT_SPAN[bucket] * step
    start = max(start, end - MAX_BUCKETS[bucket] * step, 0)
    return Window(bucket, start, max(end, start + step))


# -- events over time ------------------------------------------------------------


def event_counts(site: str = "") -> QuerySet[EventCount]:
    counts = EventCount.objects.all()
    return counts.filter(site=site) if site else counts


def event_range(site: str = "") -> tuple[float, float] | None:
    """The first and the last hour with events (epoch seconds of their starts), or None."""
    bounds = event_counts(site).aggregate(first=Min("hour"), last=Max("hour"))
    if bounds["first"] is None:
        return None
    return bounds["first"] * HOUR, bounds["last"] * HOUR


def events_by_family(window: Window, site: str = "") -> dict[tuple[int, str], int]:
    """(bucket start, family) -> accepted events, from the rollup rows of the window's hours."""
    hours_per_bucket = window.step // HOUR
    bucket = ExpressionWrapper(F("hour") / hours_per_bucket, output_field=BigInt())
    rows = (
        event_counts(site)
        .filter(hour__gte=window.start // HOUR, hour__lt=window.end // HOUR)
        .annotate(bucket=bucket)
        .values_list("bucket", "family")
        .annotate(n=Sum("events"))
        .order_by()
    )
    return {(b * window.step, family): n for b, family, n in rows}


FAMILIES: Sequence[str] = Family.values


# -- rejections over time ----------------------------------------------------------


def rejections_by_rule(window: Window) -> tuple[list[str], dict[tuple[int, str], int]]:
    """The window's rules, most frequent first, and (bucket start, rule) -> rejections."""
    since = datetime.fromtimestamp(window.start, UTC)
    until = datetime.fromtimestamp(window.end, UTC)
    rows = (
        Rejection.objects.filter(created_at__gte=since, created_at__lt=until)
        .annotate(bucket=Trunc("created_at", window.bucket, tzinfo=UTC))
        .values_list("bucket", "rule")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: Counter[tuple[int, str]] = Counter()
    per_rule: Counter[str] = Counter()
    for bucket, rule, n in rows:
        counts[(int(bucket.timestamp()), rule)] += n
        per_rule[rule] += n
    return [rule for rule, _ in per_rule.most_common()], dict(counts)


# -- sites ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteLine:
    site_id: str
    chats: int
    emails: int
    operators: int
    visitors: int
    first_message: float | None
    last_message: float | None


def top_sites(limit: int, by: str) -> list[SiteLine]:
    """The sites with the most e-mails (`by="emails"`) or messages, with their first and last message."""
    messages = Event.objects.filter(site_id=OuterRef("site_id"), family=Family.CHAT, kind="message")
    rank = F("emails") if by == "emails" else F("messages") + F("emails")
    rows = (
        SiteSummary.objects.annotate(
            rank=rank,
            first=Subquery(messages.order_by("ts").values("ts")[:1]),
            last=Subquery(messages.order_by("-ts").values("ts")[:1]),
        )
        .order_by("-rank", "site_id")
        .values_list("site_id", "messages", "emails", "operators", "visitors", "first", "last")[:limit]
    )
    return [SiteLine(*row) for row in rows]


# -- backlog and freshness ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ingestion:
    pending: int
    processing: int
    failed: int
    oldest_unfinished_at: datetime | None
    oldest_failed_at: datetime | None
    latest_processed_at: datetime | None
    latest_event_ts: float | None
    rejections_last_day: int
    stale_sites: int
    sites_refreshed_at: datetime | None
    stale_rooms: int
    rooms_refreshed_at: datetime | None

    @property
    def unfinished(self) -> int:
        return self.pending + self.processing

    def age(self, moment: datetime | None) -> timedelta | None:
        return None if moment is None else timezone.now() - moment


def ingestion() -> Ingestion:
    now = timezone.now()
    unfinished = RawBatch.objects.unfinished().aggregate(
        pending=Count("pk", filter=Q(status=RawBatch.Status.PENDING)),
        processing=Count("pk", filter=Q(status=RawBatch.Status.PROCESSING)),
    )
    failed = RawBatch.objects.filter(status=RawBatch.Status.FAILED).aggregate(n=Count("pk"), oldest=Min("created_at"))
    # The newest batch that is done (ids grow with time): a backward walk of the primary key.
    latest_done = (
        RawBatch.objects.filter(status=RawBatch.Status.DONE).order_by("-pk").values_list("processed_at", flat=True)[:1]
    )
    latest_event = Event.objects.order_by("-ts").values_list("ts", flat=True)[:1]
    sites = SiteSummary.objects.aggregate(stale=Count("pk", filter=Q(stale=True)), refreshed=Max("refreshed_at"))
    rooms = RoomSummary.objects.aggregate(stale=Count("pk", filter=Q(stale=True)), refreshed=Max("refreshed_at"))
    return Ingestion(
        pending=unfinished["pending"],
        processing=unfinished["processing"],
        failed=failed["n"],
        oldest_unfinished_at=backlog().oldest_created_at,
        oldest_failed_at=failed["oldest"],
        latest_processed_at=next(iter(latest_done), None),
        latest_event_ts=next(iter(latest_event), None),
        rejections_last_day=Rejection.objects.filter(created_at__gte=now - timedelta(days=1)).count(),
        stale_sites=sites["stale"],
        sites_refreshed_at=sites["refreshed"],
        stale_rooms=rooms["stale"],
        rooms_refreshed_at=rooms["refreshed"],
    )
