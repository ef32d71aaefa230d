"""The admin dashboard (`/admin/dashboard/`): four figures, each linking to the list behind it.

Staff only (the admin's login); each figure is shown to users who may view its model.
The data comes from reports/dashboard.py, the drawing from reports/charts.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.http import HttpRequest, HttpResponse, QueryDict
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from events.admin import LATEST_MOMENT, parse_moment
from events.timestamps import utc_text
from reports import dashboard
from reports.charts import CHART, OTHER_COLOUR, PALETTE, Series, TimeChart, chart_bars, time_chart

FAMILY_SERIES = [Series(family, label, PALETTE[i]) for i, (family, label) in enumerate(dashboard.Family.choices)]
OTHER_RULES = "(other reasons)"
DEFAULT_SITES = 15
MAX_SITES = 100
AUTO_HOURS = 72  # data spanning at most this many hours is drawn by the hour


def changelist(name: str, **params: object) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return reverse(f"admin:{name}_changelist") + (f"?{query}" if query else "")


def when(seconds: int) -> str:
    """A bucket bound as the admin's time filters read it (UTC)."""
    return utc_text(seconds, "%Y-%m-%d %H:%M")


def moment(params: QueryDict, name: str) -> float | None:
    text = params.get(name, "").strip()
    return parse_moment(text) if text else None


def with_params(request: HttpRequest, **changes: object) -> str:
    params = request.GET.copy()
    for name, value in changes.items():
        params.pop(name, None)
        if value not in (None, ""):
            params[name] = str(value)
    return "?" + params.urlencode()


def draw(window: dashboard.Window, series: list[Series], counts: dict, url: Callable) -> TimeChart:
    starts = window.starts
    labels = [window.label(s) for s in starts]
    return time_chart(starts, labels, series, counts, url, axis_labels=[window.axis_label(s) for s in starts])


def events_figure(request: HttpRequest) -> dict:
    site = request.GET.get("site", "").strip()
    span = dashboard.event_range(site)
    if span is None:
        return {"site": site, "chart": None}
    # An hour past the times the filters take (an event past 9999 from an old import) would put
    # the default window where no date-time, filter or link can follow it.
    last = min(span[1], LATEST_MOMENT.timestamp())
    first = min(span[0], last)
    bucket = request.GET.get("bucket", "")
    if bucket not in dashboard.BUCKETS:
        bucket = "hour" if last - first <= AUTO_HOURS * dashboard.HOUR else "day"
    window = dashboard.make_window(bucket, moment(request.GET, "since"), moment(request.GET, "until"), last)
    counts = dashboard.events_by_family(window, site)

    def url(start: int, family: str | None) -> str:
        return changelist("events_event", family=family, site=site, since=when(start), until=when(start + window.step))

    chart = draw(window, FAMILY_SERIES, counts, url)
    earlier, later = window.shifted(-len(window.starts)), window.shifted(len(window.starts))
    return {
        "site": site,
        "chart": chart,
        "window": window,
        "start": when(window.start),
        "end": when(window.end),
        "first": when(int(first)),
        "last": when(int(last) + dashboard.HOUR),
        "list_url": changelist("events_event", site=site, since=when(window.start), until=when(window.end)),
        "earlier_url": with_params(request, since=when(earlier.start), until=when(earlier.end)),
        "later_url": with_params(request, since=when(later.start), until=when(later.end)),
        "hour_url": with_params(request, bucket="hour", since=None, until=None),
        "day_url": with_params(request, bucket="day", since=None, until=None),
        "whole_url": with_params(request, bucket="day", since=when(int(first)), until=when(int(last) + dashboard.HOUR)),
    }


def sites_figure(request: HttpRequest) -> dict:
    by = "messages" if request.GET.get("by") == "messages" else "emails"
    try:
        top = min(max(int(request.GET.get("top", DEFAULT_SITES)), 1), MAX_SITES)
    except ValueError:
        top = DEFAULT_SITES
    lines = dashboard.top_sites(top, by)
    bars, ticks = chart_bars([(line.site_id, line.chats, line.emails) for line in lines])
    messages = {
        line.site_id: changelist("events_event", site=line.site_id, family="chat", kind="message") for line in lines
    }
    return {
        "by": by,
        "top": top,
        "lines": [
            {
                "line": line,
                "first": utc(line.first_message),
                "last": utc(line.last_message),
                "events_url": messages[line.site_id],
                "summary_url": changelist("reports_sitesummary", q=line.site_id),
            }
            for line in lines
        ],
        "bars": [{"bar": bar, "url": messages[bar.site_id]} for bar in bars],
        "ticks": ticks,
        "layout": CHART,
        "height": CHART.height(len(bars)),
        "plot_bottom": CHART.height(len(bars)) - CHART.bottom,
        "tick_top": CHART.top - 6,
        "tick_label_y": CHART.top - 10,
        # The summary list sorted by e-mails (or messages), most first: the list behind the figure.
        "list_url": changelist("reports_sitesummary", o="-3" if by == "emails" else "-2"),
        "by_emails_url": with_params(request, by="emails"),
        "by_messages_url": with_params(request, by="messages"),
    }


def rejections_figure(request: HttpRequest) -> dict:
    bucket = "hour" if request.GET.get("rbucket") == "hour" else "day"
    window = dashboard.make_window(bucket, None, None, datetime.now(UTC).timestamp())
    rules, counts = dashboard.rejections_by_rule(window)
    shown = rules[: dashboard.TOP_RULES]
    series = [Series(rule, rule, PALETTE[i % len(PALETTE)]) for i, rule in enumerate(shown)]
    if len(rules) > len(shown):
        series.append(Series(OTHER_RULES, OTHER_RULES, OTHER_COLOUR))
        named = set(shown)
        for (start, rule), n in list(counts.items()):
            if rule not in named:
                counts[(start, OTHER_RULES)] = counts.get((start, OTHER_RULES), 0) + n

    def url(start: int, rule: str | None) -> str:
        return changelist(
            "ingest_rejection",
            rule=rule if rule not in (None, OTHER_RULES) else None,
            since=when(start),
            until=when(start + window.step),
        )

    chart = draw(window, series, counts, url)
    return {
        "chart": chart,
        "window": window,
        "rules": [
            {
                "series": s,
                "total": chart.totals[s.key],
                "url": changelist(
                    "ingest_rejection", rule=None if s.key == OTHER_RULES else s.key, since=when(window.start)
                ),
            }
            for s in series
        ],
        "list_url": changelist("ingest_rejection", since=when(window.start)),
        "replayable_url": changelist("ingest_rejection", replay="replayable"),
        "hour_url": with_params(request, rbucket="hour"),
        "day_url": with_params(request, rbucket="day"),
    }


def ingestion_figure(request: HttpRequest) -> dict:
    state = dashboard.ingestion()
    return {
        "state": state,
        "unfinished_age": state.age(state.oldest_unfinished_at),
        "failed_age": state.age(state.oldest_failed_at),
        "latest_event": utc(state.latest_event_ts),
        "unfinished_url": changelist("ingest_rawbatch", status__in="pending,processing"),
        "pending_url": changelist("ingest_rawbatch", status__exact="pending"),
        "processing_url": changelist("ingest_rawbatch", status__exact="processing"),
        "failed_url": changelist("ingest_rawbatch", status__exact="failed"),
        "batches_url": changelist("ingest_rawbatch"),
        "rejections_url": changelist("ingest_rejection", period="day"),
        "stale_sites_url": changelist("reports_sitesummary", stale__exact=1),
        "stale_rooms_url": changelist("reports_roomsummary", stale__exact=1),
        "events_url": changelist("events_event"),
    }


def utc(ts: float | None) -> str:
    return utc_text(ts, "%Y-%m-%d %H:%M:%S UTC")


FIGURES: list[tuple[str, str, Callable[[HttpRequest], dict]]] = [
    ("events", "events.view_event", events_figure),
    ("sites", "reports.view_sitesummary", sites_figure),
    ("rejections", "ingest.view_rejection", rejections_figure),
    ("ingestion", "ingest.view_rawbatch", ingestion_figure),
]


def dashboard_view(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": "Dashboard", "errors": []}
    for name, permission, figure in FIGURES:
        if not request.user.has_perm(permission):
            continue
        try:
            context[name] = figure(request)
        except IncorrectLookupParameters as error:
            context["errors"].append(f"{name}: {error}")
    return TemplateResponse(request, "admin/reports/dashboard.html", context)
