"""Admin for analysts: the site summary and its chart (chats vs e-mails per site)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import F, Max
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from events.admin import ReadOnlyMixin, csv_action
from reports.charts import CHART, chart_bars
from reports.exports import SITE_COLUMNS
from reports.models import SiteSummary

DEFAULT_TOP = 30
MAX_TOP = 200

admin.site.site_header = "Switchboard"
admin.site.site_title = "Switchboard"
admin.site.index_title = "Events, summaries and ingestion"
admin.site.index_template = "admin/switchboard_index.html"


def top_sites(limit: int, by: str = "messages") -> list[tuple[str, int, int]]:
    """The `limit` sites with the most messages (chats + e-mails), or the most e-mails, most first."""
    order = F("emails") if by == "emails" else F("messages") + F("emails")
    rows = (
        SiteSummary.objects.annotate(rank=order)
        .order_by("-rank", "site_id")
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
    actions = [csv_action(SITE_COLUMNS, "site-summaries.csv", ("site_id",))]
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
