"""Admin for operators: raw batches and rejections (to monitor errors); client apps, keys
and analysts' tokens are in ingest.admin_access."""

from __future__ import annotations

import os

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from events.admin import EstimatedCountPaginator, ReadOnlyMixin
from ingest import admin_access  # noqa: F401 - registers the apps' and tokens' admin
from ingest.models import ImportJob, ImportRange, RawBatch, Rejection

PREVIEW_BYTES = 4000
RAW_PREVIEW_CHARS = 120


def short_source(source: str) -> str:
    """ "api", or an imported file's name (its full path in a tooltip)."""
    name = os.path.basename(source)
    return source if name == source else format_html('<span title="{}">{}</span>', source, name)


class SourceFilter(admin.SimpleListFilter):
    """API requests vs imported files (a batch's source is "api" or the file's path)."""

    title = "source"
    parameter_name = "source"
    field = "source"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("api", "API"), ("file", "Imported files")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "api":
            return queryset.filter(**{self.field: "api"})
        if self.value() == "file":
            return queryset.exclude(**{self.field: "api"})
        return queryset


class BatchSourceFilter(SourceFilter):
    field = "batch__source"


@admin.register(RawBatch)
class RawBatchAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id", "status", "source_name", "app", "record_count", "accepted", "duplicates", "rejected_link", "attempts",
        "created_at", "processed_at",
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
        "created_at", "processed_at", "body_preview",
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
    list_display = ("id", "batch_link", "source_name", "line", "reason", "raw_preview", "created_at")
    list_filter = (BatchSourceFilter,)
    search_fields = ("reason",)
    ordering = ("-id",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_select_related = ("batch",)
    actions = None
    fields = ("batch_link", "source", "line", "reason", "raw", "created_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("batch").defer("batch__body")

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Linked from a batch's "rejected" count.
        return lookup == "batch__id__exact" or super().lookup_allowed(lookup, value, request)

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

    @admin.display(description="raw")
    def raw_preview(self, obj: Rejection) -> str:
        raw = obj.raw
        return raw if len(raw) <= RAW_PREVIEW_CHARS else raw[:RAW_PREVIEW_CHARS] + "…"


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
