"""Read-only admin for browsing events (SPEC §5 Admin).

The event table may hold tens of millions of rows, so nothing here scans it:
no full COUNT(*) (see `EstimatedCountPaginator`), no facet counts, no filter
that lists DISTINCT values; filters are exact matches the indexes serve.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.html import format_html
from django.utils.http import urlencode

from events import identity
from events.models import Event, Site, Stanza
from events.selectors import through_site_indexes
from events.timestamps import OUT_OF_RANGE, utc_moment, utc_text
from reports.exports import EVENT_COLUMNS, Columns, csv_response, keyset

SUMMARY_FIELDS = ("messages", "emails", "operators", "visitors")


class EstimatedCountPaginator(Paginator):
    """Counts exactly up to `EXACT_UP_TO` rows, then estimates.

    A bounded count is `SELECT COUNT(*) FROM (... LIMIT n)`; past it PostgreSQL's
    planner estimate is used (cheap, roughly right), and on other backends the
    count stays at the bound: the admin then pages through the first rows only,
    and filters narrow the rest.
    """

    EXACT_UP_TO = 10_000
    is_estimate = False

    @cached_property
    def count(self) -> int:
        exact = self.object_list[: self.EXACT_UP_TO + 1].count()
        self.is_estimate = exact > self.EXACT_UP_TO
        if not self.is_estimate:
            return exact
        return max(self.EXACT_UP_TO, planner_estimate(self.object_list) or 0)

    @property
    def count_label(self) -> str:
        """The count as the admin shows it: "42", "about 12345678" or "more than 10000"."""
        count = self.count
        if not self.is_estimate:
            return str(count)
        return f"more than {count}" if count == self.EXACT_UP_TO else f"about {count}"


def planner_estimate(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of a query's row count; None elsewhere."""
    if connection.vendor != "postgresql":
        return None
    plan = json.loads(queryset.explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def utc(ts: float | None) -> str:
    """Milliseconds and the zone; a time no date-time holds says so, with its epoch seconds."""
    text = utc_text(ts, "%Y-%m-%d %H:%M:%S.%f")
    if text == OUT_OF_RANGE:
        return f"{OUT_OF_RANGE} ({ts!r} epoch seconds)"
    return text and text[:-3] + " UTC"


def shortened(text: str, limit: int = 14) -> str:
    """Long ids (UUIDs, content hashes) cut to keep the list readable; the full text in a tooltip."""
    if len(text) <= limit:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: limit - 1])


class InputFilter(admin.SimpleListFilter):
    """A free-text exact-match filter (a DISTINCT list over millions of rows would be too slow)."""

    template = "admin/events/input_filter.html"
    field: str = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> tuple:
        return ()

    def has_output(self) -> bool:
        return True

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        return queryset.filter(**{self.field: value}) if value else queryset

    def choices(self, changelist: object) -> list[dict]:
        # The other active parameters, kept as hidden inputs so filters combine.
        others = [(k, v) for k, v in changelist.params.items() if k != self.parameter_name]  # type: ignore[attr-defined]
        clear = changelist.get_query_string(remove=[self.parameter_name])  # type: ignore[attr-defined]
        return [{"others": others, "clear_url": clear, "value": self.value() or ""}]


class SiteFilter(InputFilter):
    title = "site"
    parameter_name = "site"
    field = "site_id"


class SessionFilter(InputFilter):
    title = "session / room"
    parameter_name = "session"
    field = "session"


class SiteLedFilter(InputFilter):
    """A filter on a column that is indexed after the site (see `through_site_indexes`)."""

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        filtered = super().queryset(request, queryset)
        if (
            filtered is queryset
            or request.GET.get(SiteFilter.parameter_name)
            or request.GET.get(SessionFilter.parameter_name)
        ):
            return filtered
        return through_site_indexes(filtered)


class KindFilter(SiteLedFilter):
    title = "type"
    parameter_name = "kind"
    field = "kind"


class ActorFilter(SiteLedFilter):
    title = "actor"
    parameter_name = "actor"
    field = "actor"


# Times a filter or the dashboard takes: wide, yet far enough from datetime's limits (years 1
# and 9999) that a window of buckets around them, or a date-time of them, never overflows.
EARLIEST_MOMENT = datetime(1000, 1, 1, tzinfo=UTC)
LATEST_MOMENT = datetime(9000, 1, 1, tzinfo=UTC)


def parse_moment(text: str) -> float:
    """Epoch seconds from `YYYY-MM-DD`, an ISO 8601 date-time (UTC unless it says otherwise) or a number,
    between EARLIEST_MOMENT and LATEST_MOMENT."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = _moment_of_date(text)
    if not EARLIEST_MOMENT.timestamp() <= seconds <= LATEST_MOMENT.timestamp():  # NaN included
        raise IncorrectLookupParameters(
            f"out of range: {text!r} (times go from {EARLIEST_MOMENT:%Y-%m-%d} to {LATEST_MOMENT:%Y-%m-%d})"
        )
    return seconds


def _moment_of_date(text: str) -> float:
    try:
        moment = parse_datetime(text.replace("T", " ", 1))
        day = parse_date(text) if moment is None else None
    except ValueError:  # well formed, yet no day of the calendar (2021-02-30, 25:00)
        day = moment = None
    if moment is None:
        if day is None:
            raise IncorrectLookupParameters(f"not a date or time: {text!r}")
        moment = datetime(day.year, day.month, day.day)
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class TimeRangeFilter(admin.SimpleListFilter):
    """Last hour/day/week/30 days (from now), or `since`/`until` (UTC, inclusive/exclusive).

    On `field`: the events' epoch seconds by default; subclasses name a date-time column
    (`epoch = False`), e.g. when a rejection was stored.
    """

    title = "time range"
    parameter_name = "period"
    template = "admin/events/time_range_filter.html"
    field = "ts"
    epoch = True
    PERIODS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
    PERIODS["30days"] = timedelta(days=30)
    BOUNDS = ("since", "until")

    def __init__(self, request: HttpRequest, params: dict, model: type, model_admin: admin.ModelAdmin) -> None:
        super().__init__(request, params, model, model_admin)
        for name in self.BOUNDS:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]

    def expected_parameters(self) -> list[str]:
        return [self.parameter_name, *self.BOUNDS]

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("hour", "Last hour"), ("day", "Last 24 hours"), ("week", "Last 7 days"), ("30days", "Last 30 days")]

    def bound(self, seconds: float) -> float | datetime:
        if self.epoch:
            return seconds
        moment = utc_moment(seconds)
        if moment is None:
            raise IncorrectLookupParameters(f"out of range: {seconds}")
        return moment

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        period = self.value()
        if period in self.PERIODS:
            queryset = queryset.filter(
                **{f"{self.field}__gte": self.bound((timezone.now() - self.PERIODS[period]).timestamp())}
            )
        elif period:
            raise IncorrectLookupParameters(f"unknown period {period!r}")
        if since := self.used_parameters.get("since", "").strip():
            queryset = queryset.filter(**{f"{self.field}__gte": self.bound(parse_moment(since))})
        if until := self.used_parameters.get("until", "").strip():
            queryset = queryset.filter(**{f"{self.field}__lt": self.bound(parse_moment(until))})
        return queryset

    def choices(self, changelist: object) -> list[dict]:
        cl = changelist
        remove = self.expected_parameters()
        links = [{"selected": not any(self.used_parameters.values()), "display": "Any time",
                  "query_string": cl.get_query_string(remove=remove)}]  # type: ignore[attr-defined]  # fmt: skip
        for value, label in self.lookup_choices:
            links.append({
                "selected": self.value() == value,
                "display": label,
                "query_string": cl.get_query_string({self.parameter_name: value}, remove),  # type: ignore[attr-defined]
            })  # fmt: skip
        others = [(k, v) for k, v in cl.params.items() if k not in remove]  # type: ignore[attr-defined]
        since, until = (self.used_parameters.get(name, "") for name in self.BOUNDS)
        return [{"links": links, "others": others, "since": since, "until": until}]


def csv_action(columns: Columns, filename: str, key: Sequence[str] = ("id",)) -> Callable:
    """An admin action streaming the selected rows (or all that match the filters, with "select
    all") as CSV, in ascending `key` order; for anyone who may view them."""

    @admin.action(description="Export selected %(verbose_name_plural)s as CSV", permissions=["view"])
    def export_csv(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        return csv_response(filename, columns.header, columns.rows(keyset(queryset, key)))

    return export_csv


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class StanzaInline(ReadOnlyMixin, admin.StackedInline):
    model = Stanza
    fields = ("element", "type", "from_jid", "to_jid", "body", "chat_state", "unavailable")
    readonly_fields = fields
    can_delete = False
    extra = 0


@admin.register(Event)
class EventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("when", "family", "kind", "category", "site_link", "short_session", "actor", "short_uid")
    list_display_links = ("when",)
    list_filter = ("family", TimeRangeFilter, KindFilter, SiteFilter, SessionFilter, ActorFilter)
    search_fields = ("uid", "session")
    search_help_text = "Exact match on the event id or session/room (site, type and actor have filters)."
    # Newest first, served by the (ts, id) index.
    ordering = ("-ts", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    # The site's code is its primary key, so showing it needs no join.
    list_select_related = ()
    actions = [csv_action(EVENT_COLUMNS, "events.csv", ("ts", "id"))]
    fields = (
        "uid", "family", "kind", "category", "site", "session", "actor", "when", "ts", "client_time",
        "client_timestamp", "online", "batch", "line",
        "pretty_payload",
    )  # fmt: skip
    readonly_fields = fields

    def get_inlines(self, request: HttpRequest, obj: Event | None) -> list:
        return [StanzaInline] if obj is not None and obj.family == "xmpp" else []

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        # Exact, case-sensitive matches on two selective, indexed lookups, which PostgreSQL
        # combines (BitmapOr): an id at its registered time (events/identity.py), a session.
        # An OR with site or actor would scan the whole table instead.
        term = search_term.strip()
        if not term:
            return queryset, False
        at = identity.located([term]).get(term)
        by_id = Q(uid=term, ts=at) if at is not None else Q(pk__in=[])
        return queryset.filter(by_id | Q(session=term)), False

    @admin.display(description="time (UTC)", ordering="ts")
    def when(self, obj: Event) -> str:
        return format_html('<span style="white-space: nowrap">{}</span>', utc(obj.ts))

    @admin.display(description="time as the client sent it (UTC)")
    def client_time(self, obj: Event) -> str:
        # Shown only for a timestamp corrected for its client's clock (events/clock.py).
        return utc(obj.client_timestamp)

    @admin.display(description="session / room")
    def short_session(self, obj: Event) -> str:
        return shortened(obj.session)

    @admin.display(description="id")
    def short_uid(self, obj: Event) -> str:
        return shortened(obj.uid)

    @admin.display(description="site", ordering="site_id")
    def site_link(self, obj: Event) -> str:
        return format_html('<a href="?{}">{}</a>', urlencode({"site": obj.site_id}), obj.site_id)

    @admin.display(description="payload")
    def pretty_payload(self, obj: Event) -> str:
        text = json.dumps(obj.payload, indent=2, ensure_ascii=False, sort_keys=True)
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


@admin.register(Site)
class SiteAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Sites with their chat summary (SPEC §3); sites of other families have none."""

    list_display = ("code", "messages", "emails", "operators", "visitors", "first_seen", "events")
    search_fields = ("code",)
    list_select_related = ("sitesummary",)
    ordering = ("code",)
    show_facets = admin.ShowFacets.NEVER
    actions = [
        csv_action(
            Columns(
                ("site", "first_seen", "messages", "emails", "operators", "visitors"),
                lambda s: (s.code, s.first_seen, *(SiteAdmin._summary_value(s, n) for n in SUMMARY_FIELDS)),
            ),
            "sites.csv",
            ("code",),
        )
    ]
    fields = ("code", "first_seen", "messages", "emails", "operators", "visitors", "events")
    readonly_fields = fields

    @staticmethod
    def _summary_value(obj: Site, name: str) -> int | None:
        summary = getattr(obj, "sitesummary", None)
        return None if summary is None else getattr(summary, name)

    @admin.display(ordering="sitesummary__messages", description="chats")
    def messages(self, obj: Site) -> int | None:
        return self._summary_value(obj, "messages")

    @admin.display(ordering="sitesummary__emails", description="e-mails")
    def emails(self, obj: Site) -> int | None:
        return self._summary_value(obj, "emails")

    @admin.display(ordering="sitesummary__operators")
    def operators(self, obj: Site) -> int | None:
        return self._summary_value(obj, "operators")

    @admin.display(ordering="sitesummary__visitors")
    def visitors(self, obj: Site) -> int | None:
        return self._summary_value(obj, "visitors")

    @admin.display(description="events")
    def events(self, obj: Site) -> str:
        url = reverse("admin:events_event_changelist")
        return format_html('<a href="{}?{}">browse</a>', url, urlencode({"site": obj.code}))
