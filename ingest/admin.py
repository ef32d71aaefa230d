"""Admin for operators: raw batches and rejections (to monitor errors); client apps, keys
and analysts' tokens are in ingest.admin_access."""

from __future__ import annotations

import os

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from events.admin import EstimatedCountPaginator, ReadOnlyMixin, TimeRangeFilter, csv_action
from ingest import (
    admin_access,  # noqa: F401 - registers the apps' and tokens' admin
    rejections,
)
from ingest.batches import API_SOURCE
from ingest.models import Application, ImportJob, ImportRange, RawBatch, Rejection
from ingest.rejections import REPLAY_SOURCE, unreplayable_count
from reports.exports import Columns

PREVIEW_BYTES = 4000
RAW_PREVIEW_CHARS = 120
MAX_RULE_CHOICES = 100
# Rejections one click of the replay action goes through (a request must end well within
# gunicorn's timeout); `manage.py replay_rejections` has no such bound.
ADMIN_REPLAY_LIMIT = 5000
REJECTION_COLUMNS = Columns(
    (
        "id", "rejected_at", "batch", "source", "app", "line", "reason", "rule", "complete", "replayed_at",
        "replay_batch", "replay_outcome", "event_id", "raw",
    ),
    lambda r: (
        r.pk, r.created_at, r.batch_id, r.batch.source, r.batch.app.name if r.batch.app else "", r.line, r.reason,
        r.rule, r.complete, r.replayed_at, r.replay_batch_id, r.replay_outcome, r.event_uid, r.raw,
    ),
)  # fmt: skip


def short_source(source: str) -> str:
    """ "api", or an imported file's name (its full path in a tooltip)."""
    name = os.path.basename(source)
    return source if name == source else format_html('<span title="{}">{}</span>', source, name)


class SourceFilter(admin.SimpleListFilter):
    """API requests, imported files or replays (a batch's source is "api", the file's path or "replay")."""

    title = "source"
    parameter_name = "source"
    field = "source"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(API_SOURCE, "API"), ("file", "Imported files"), (REPLAY_SOURCE, "Replays")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in (API_SOURCE, REPLAY_SOURCE):
            return queryset.filter(**{self.field: self.value()})
        if self.value() == "file":
            return queryset.exclude(**{f"{self.field}__in": (API_SOURCE, REPLAY_SOURCE)})
        return queryset


class BatchSourceFilter(SourceFilter):
    field = "batch__source"


class AppFilter(admin.SimpleListFilter):
    """The client app that posted the batch (the apps table is small; no scan of rejections)."""

    title = "app"
    parameter_name = "app"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(str(pk), name) for pk, name in Application.objects.order_by("name").values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(batch__app_id=self.value()) if self.value() else queryset


class RuleFilter(admin.SimpleListFilter):
    """The reason's rule (the reason without its particulars): one choice per kind of error."""

    title = "reason"
    parameter_name = "rule"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        rules = Rejection.objects.order_by().values_list("rule", flat=True).distinct()[:MAX_RULE_CHOICES]
        return [(rule, rule) for rule in sorted(rules)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(rule=self.value()) if self.value() is not None else queryset


class RejectedAtFilter(TimeRangeFilter):
    title = "time rejected"
    field = "created_at"
    epoch = False


class ReplayFilter(admin.SimpleListFilter):
    title = "replay"
    parameter_name = "replay"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("replayable", "Not replayed (whole record kept)"),
            ("replayed", "Replayed"),
            ("partial", "Cannot be replayed (kept in part)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "replayable":
            return rejections.replayable(queryset)
        if self.value() == "replayed":
            return queryset.filter(replayed_at__isnull=False)
        if self.value() == "partial":
            return queryset.filter(complete=False)
        return queryset


@admin.register(RawBatch)
class RawBatchAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id", "status", "source_name", "app", "record_count", "accepted", "duplicates", "rejected_link", "attempts",
        "created_at", "processed_at", "error",
    )  # fmt: skip
    list_filter = ("status", SourceFilter, "app")
    search_fields = ("=id",)
    ordering = ("-id",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_select_related = ("app",)
    actions = None
    fields = (
        "id", "status", "source", "app", "import_job", "first_line", "last_line", "byte_start", "byte_end",
        "content_type", "content_encoding", "record_count", "accepted", "duplicates", "rejected_link", "attempts",
        "created_at", "sent_at", "processed_at", "last_error", "replayed_link", "body_preview",
    )  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # A body can be megabytes: only the detail page loads it (lazily).
        return super().get_queryset(request).defer("body")

    @admin.display(description="source")
    def source_name(self, obj: RawBatch) -> str:
        return short_source(obj.source)

    @admin.display(description="rejected", ordering="rejected")
    def rejected_link(self, obj: RawBatch) -> str:
        if not obj.rejected:
            return "0"
        url = reverse("admin:ingest_rejection_changelist") + "?" + urlencode({"batch__id__exact": obj.pk})
        return format_html('<a href="{}">{}</a>', url, obj.rejected)

    @admin.display(description="last error")
    def error(self, obj: RawBatch) -> str:
        return obj.last_error if len(obj.last_error) <= 80 else obj.last_error[:80] + "…"

    @admin.display(description="replayed rejections")
    def replayed_link(self, obj: RawBatch) -> str:
        if obj.source != REPLAY_SOURCE:
            return "(not a replay)"
        url = reverse("admin:ingest_rejection_changelist") + "?" + urlencode({"replay_batch__id__exact": obj.pk})
        return format_html('<a href="{}">the rejections this replay stored</a>', url)

    @admin.display(description="body")
    def body_preview(self, obj: RawBatch) -> str:
        body = bytes(obj.body)
        if not body:
            return "(none: file chunks are read from the file)"
        text = body[:PREVIEW_BYTES].decode("utf-8", errors="replace")
        more = f"\n… ({len(body):,} bytes in all)" if len(body) > PREVIEW_BYTES else ""
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}{}</pre>', text, more)


@admin.register(Rejection)
class RejectionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Rejected records: why, from where, and whether a replay under today's rules stored them."""

    list_display = (
        "id", "created_at", "batch_link", "source_name", "app_name", "line", "reason", "raw_preview", "replay_state",
    )  # fmt: skip
    list_filter = (RuleFilter, BatchSourceFilter, AppFilter, RejectedAtFilter, ReplayFilter)
    search_fields = ("reason",)
    search_help_text = "Words of the reason (any case)."
    ordering = ("-id",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_select_related = ("batch", "batch__app")
    actions = ["replay", csv_action(REJECTION_COLUMNS, "rejections.csv")]
    fields = (
        "batch_link", "source", "app_name", "line", "reason", "rule", "raw", "complete", "created_at",
        "replay_state", "replayed_at", "replay_batch_link", "replay_line", "event_link",
    )  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("batch", "batch__app").defer("batch__body")

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Linked from a batch's "rejected" count and from a replay batch.
        return lookup in ("batch__id__exact", "replay_batch__id__exact") or super().lookup_allowed(
            lookup, value, request
        )

    def has_replay_permission(self, request: HttpRequest) -> bool:
        # A replay stores events and marks rejections: a change, so the change permission
        # (which the view-only analyst group does not have), although no form edits a rejection.
        return request.user.has_perm("ingest.change_rejection")

    @admin.action(description="Replay selected rejections under today's rules", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet) -> None:
        result = rejections.replay(queryset, limit=ADMIN_REPLAY_LIMIT)
        level = messages.SUCCESS if result.replayed else messages.WARNING
        self.message_user(request, result.describe(), level)
        if result.batches:
            url = reverse("admin:ingest_rejection_changelist") + "?" + urlencode({"replay": "replayed"})
            self.message_user(request, format_html('See <a href="{}">the replayed rejections</a>.', url))
        if rejections.replayable(queryset).exists() and result.examined >= ADMIN_REPLAY_LIMIT:
            self.message_user(
                request,
                f"Replayed the first {ADMIN_REPLAY_LIMIT} only; run the action again, or"
                " `manage.py replay_rejections` for large sets.",
                messages.WARNING,
            )
        if partial := unreplayable_count(queryset):
            self.message_user(
                request, f"{partial} selected rejections kept only part of their record and cannot be replayed."
            )

    @admin.display(description="batch", ordering="batch_id")
    def batch_link(self, obj: Rejection) -> str:
        url = reverse("admin:ingest_rawbatch_change", args=[obj.batch_id])
        return format_html('<a href="{}">{}</a>', url, obj.batch_id)

    @admin.display(description="source")
    def source(self, obj: Rejection) -> str:
        return obj.batch.source

    @admin.display(description="source")
    def source_name(self, obj: Rejection) -> str:
        return short_source(obj.batch.source)

    @admin.display(description="app")
    def app_name(self, obj: Rejection) -> str:
        return obj.batch.app.name if obj.batch.app else ""

    @admin.display(description="raw")
    def raw_preview(self, obj: Rejection) -> str:
        raw = obj.raw
        return raw if len(raw) <= RAW_PREVIEW_CHARS else raw[:RAW_PREVIEW_CHARS] + "…"

    @admin.display(description="replay")
    def replay_state(self, obj: Rejection) -> str:
        if obj.replayed_at:
            url = reverse("admin:ingest_rawbatch_change", args=[obj.replay_batch_id])
            return format_html('{} in <a href="{}">batch {}</a>', obj.get_replay_outcome_display(), url,
                               obj.replay_batch_id)  # fmt: skip
        return "" if obj.complete else "cannot be replayed (kept in part)"

    @admin.display(description="replay batch")
    def replay_batch_link(self, obj: Rejection) -> str:
        if not obj.replay_batch_id:
            return ""
        url = reverse("admin:ingest_rawbatch_change", args=[obj.replay_batch_id])
        return format_html('<a href="{}">{}</a>', url, obj.replay_batch_id)

    @admin.display(description="event")
    def event_link(self, obj: Rejection) -> str:
        if not obj.event_uid:
            return ""
        url = reverse("admin:events_event_changelist") + "?" + urlencode({"q": obj.event_uid})
        return format_html('<a href="{}">{}</a>', url, obj.event_uid)


@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "path",
        "accepted",
        "duplicates",
        "rejected",
        "next_line",
        "started_at",
        "updated_at",
        "finished_at",
    )
    ordering = ("-started_at",)
    actions = None


@admin.register(ImportRange)
class ImportRangeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The byte ranges of parallel imports, to watch their workers."""

    list_display = (
        "id", "job", "status", "byte_start", "byte_end", "next_offset", "accepted", "duplicates", "rejected",
        "attempts", "claimed_at", "processed_at",
    )  # fmt: skip
    list_filter = ("status",)
    list_select_related = ("job",)
    ordering = ("job", "byte_start")
    actions = None
