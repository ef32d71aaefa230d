"""Admin for analysts: the site summary and its chart (chats vs e-mails per site)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import F, Max
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from events.admin import ReadOnlyMixin
from reports.models import SiteSummary

DEFAULT_TOP = 30
MAX_TOP = 200


@dataclass(frozen=True, slots=True)
class Layout:
    label_width: float = 170
    plot_width: float = 640
    value_width: float = 150
    top: float = 44  # legend and axis labels
    row_height: float = 24
    bar_height: float = 16
    bottom: float = 8
    max_label_chars: int = 24

    @property
    def plot_x(self) -> float:
        return self.label_width

    @property
    def width(self) -> float:
        return self.label_width + self.plot_width + self.value_width

    def height(self, rows: int) -> float:
        return self.top + rows * self.row_height + self.bottom


@dataclass(frozen=True, slots=True)
class Bar:
    """One site's row of the chart, in SVG user units."""

    site_id: str
    label: str
    chats: int
    emails: int
    y: float
    chat_width: float
    email_width: float
    layout: Layout

    @property
    def text_y(self) -> float:
        return self.y + self.layout.bar_height - 4

    @property
    def label_x(self) -> float:
        return self.layout.plot_x - 8

    @property
    def email_x(self) -> float:
        return self.layout.plot_x + self.chat_width

    @property
    def value_x(self) -> float:
        return self.layout.plot_x + self.chat_width + self.email_width + 6


CHART = Layout()


def nice_step(maximum: int, ticks: int = 5) -> int:
    """A round axis step (1, 2 or 5 times a power of ten) giving about `ticks` ticks up to `maximum`."""
    raw = max(maximum, 1) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return max(1, int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw)))


def chart_bars(rows: list[tuple[str, int, int]], layout: Layout = CHART) -> tuple[list[Bar], list[tuple[int, float]]]:
    """Bars (widths proportional to counts, on one scale) and axis ticks for (site, chats, e-mails) rows."""
    top = max((chats + emails for _, chats, emails in rows), default=0)
    step = nice_step(top)
    axis_max = max(step, math.ceil(top / step) * step)
    scale = layout.plot_width / axis_max
    bars = [
        Bar(
            site_id=site,
            label=site if len(site) <= layout.max_label_chars else site[: layout.max_label_chars - 1] + "…",
            chats=chats,
            emails=emails,
            y=layout.top + i * layout.row_height + (layout.row_height - layout.bar_height) / 2,
            chat_width=round(chats * scale, 2),
            email_width=round(emails * scale, 2),
            layout=layout,
        )
        for i, (site, chats, emails) in enumerate(rows)
    ]
    ticks = [(value, round(layout.plot_x + value * scale, 2)) for value in range(0, axis_max + 1, step)]
    return bars, ticks


def top_sites(limit: int) -> list[tuple[str, int, int]]:
    """The `limit` sites with the most messages (chats + e-mails), most first."""
    rows = (
        SiteSummary.objects.annotate(total=F("messages") + F("emails"))
        .order_by("-total", "site_id")
        .values_list("site_id", "messages", "emails")[:limit]
    )
    return list(rows)


@admin.register(SiteSummary)
class SiteSummaryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Read-only: rows are maintained by the workers."""

    list_display = ("site", "messages", "emails", "operators", "visitors", "stale", "refreshed_at")
    list_filter = ("stale",)
    search_fields = ("site__code",)
    ordering = ("site",)
    actions = None
    change_list_template = "admin/reports/sitesummary/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        chart = path("chart/", self.admin_site.admin_view(self.chart_view), name="reports_sitesummary_chart")
        return [chart, *super().get_urls()]

    def chart_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            top = min(max(int(request.GET.get("top", DEFAULT_TOP)), 1), MAX_TOP)
        except ValueError:
            top = DEFAULT_TOP
        bars, ticks = chart_bars(top_sites(top))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Chats vs e-mails per site",
            "bars": bars,
            "ticks": ticks,
            "layout": CHART,
            "height": CHART.height(len(bars)),
            "plot_bottom": CHART.height(len(bars)) - CHART.bottom,
            "tick_top": CHART.top - 6,
            "tick_label_y": CHART.top - 10,
            "top": top,
            "site_count": SiteSummary.objects.count(),
            "stale_count": SiteSummary.objects.filter(stale=True).count(),
            "refreshed_at": SiteSummary.objects.aggregate(at=Max("refreshed_at"))["at"],
        }
        return TemplateResponse(request, "admin/reports/sitesummary/chart.html", context)


from reports import admin_rooms  # noqa: E402,F401
