"""Admin for the room summary (imported by reports/admin.py)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from events.timestamps import utc_text
from reports.models import RoomSummary
from reports.room_summary import RoomRow


@admin.register(RoomSummary)
class RoomSummaryAdmin(admin.ModelAdmin):
    """Read-only: rows are maintained by the workers."""

    list_display = (
        "room_id", "events", "messages", "typing", "participants", "first_seen", "last_seen", "stale",
        "refreshed_at", "room_events",
    )  # fmt: skip
    list_filter = ("stale",)
    search_fields = ("room_id",)
    ordering = ("room_id",)
    readonly_fields = [f.name for f in RoomSummary._meta.fields] + ["classic"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RoomSummary | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RoomSummary | None = None) -> bool:
        return False

    @admin.display(description="first", ordering="first")
    def first_seen(self, obj: RoomSummary) -> str:
        return _utc(obj.first)

    @admin.display(description="last", ordering="last")
    def last_seen(self, obj: RoomSummary) -> str:
        return _utc(obj.last)

    @admin.display(description="events of the room")
    def room_events(self, obj: RoomSummary) -> str:
        try:
            url = reverse("admin:events_event_changelist")
        except NoReverseMatch:  # the event admin is not registered
            return ""
        return format_html('<a href="{}?session={}">browse</a>', url, obj.room_id)

    @admin.display(description="classic line")
    def classic(self, obj: RoomSummary) -> str:
        return RoomRow(
            obj.room_id, obj.events, obj.messages, obj.typing, obj.participants, obj.first, obj.last
        ).classic()


def _utc(ts: float | None) -> str:
    return utc_text(ts, "%Y-%m-%d %H:%M:%S UTC")
