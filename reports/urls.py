"""Analysts' read API. `GET /api/events/` (reports.views.EventListView) is routed by
ingest/urls.py together with the apps' `POST` on the same path."""

from django.urls import path, register_converter

from reports import views


class AnyTextConverter:
    """Any non-empty text, `/` and newlines included (site ids are free-form strings)."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(AnyTextConverter, "anytext")

urlpatterns = [
    path("sites/summary/", views.SiteSummaryListView.as_view(), name="site-summary"),
    path("sites/<anytext:site_id>/summary/", views.SiteSummaryDetailView.as_view(), name="site-summary-detail"),
    path("rooms/summary/", views.RoomSummaryView.as_view(), name="room-summary"),
]
