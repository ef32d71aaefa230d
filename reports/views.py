"""The analysts' read API: site and room summaries, and the event list.

Summaries are read from their materialized tables and never recomputed here;
each answer says how fresh it is (`refreshed_at`, stale counts, and the
`Last-Modified` / `X-Summary-*` headers in both JSON and text form).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils.http import http_date
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.permissions import SAFE_METHODS
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from events.models import Event
from ingest.auth import IsAnalyst
from reports import exports, selectors
from reports.filters import EventFilter
from reports.pagination import EventCursorPagination
from reports.renderers import CSVRenderer, PlainTextRenderer
from reports.serializers import EventSerializer, RoomSummarySerializer, SiteRowSerializer, SiteSummarySerializer

ERROR = OpenApiResponse(description='JSON error: `{"detail": "why"}`')
AUTH_ERRORS = {
    401: OpenApiResponse(description="No or wrong credentials (JSON error)."),
    403: OpenApiResponse(description="Not an analyst, e.g. an app key (JSON error)."),
}
FORMAT = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    enum=["json", "txt", "csv"],
    description="`txt` (or `Accept: text/plain`) gives the classic text lines, `csv` (or `Accept: text/csv`) "
    "a CSV file with a header line.",
)
EVENTS_FORMAT = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    enum=["json", "csv"],
    description="`csv` (or `Accept: text/csv`): every matching event as one streamed CSV file, oldest first, "
    "with the same columns as the JSON (payload: the record as received); no pagination.",
)
BAD_QUERY = OpenApiResponse(description='A bad parameter (JSON): `{"<parameter>": ["why"]}`.')
TEXT = OpenApiTypes.STR


class AnalystMixin:
    """Analysts only (token or admin session); app keys get 403."""

    permission_classes = [IsAnalyst]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]

    def get_authenticate_header(self, request: Request) -> str | None:
        # DRF answers 401 (not 403) when this names a scheme. The default is the
        # first authenticator's, `Api-Key`; an analyst's read should point at tokens.
        if request.method in SAFE_METHODS:
            return "Token"
        return super().get_authenticate_header(request)


class ErrorsAsJsonMixin:
    """Errors are JSON whatever format was asked for."""

    def finalize_response(self, request: Request, response: Response, *args: object, **kwargs: object) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        if getattr(response, "exception", False) and isinstance(
            getattr(response, "accepted_renderer", None), (PlainTextRenderer, CSVRenderer)
        ):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response

    def wants_csv(self, request: Request) -> bool:
        return isinstance(request.accepted_renderer, CSVRenderer)


class TextOrJsonMixin(ErrorsAsJsonMixin, AnalystMixin):
    """JSON, the classic lines with `?format=txt` / `Accept: text/plain`, or CSV with `?format=csv`."""

    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, PlainTextRenderer, CSVRenderer]

    def wants_text(self, request: Request) -> bool:
        return isinstance(request.accepted_renderer, PlainTextRenderer)


def with_headers(response: StreamingHttpResponse, headers: dict[str, str]) -> StreamingHttpResponse:
    for name, value in headers.items():
        response[name] = value
    return response


def freshness_headers(refreshed_at: datetime | None, stale: int, what: str) -> dict[str, str]:
    headers = {f"X-Summary-Stale-{what}": str(stale)}
    if refreshed_at is not None:
        headers["Last-Modified"] = http_date(refreshed_at.timestamp())
        headers["X-Summary-Refreshed-At"] = serializers.DateTimeField().to_representation(refreshed_at)
    return headers


FRESHNESS_DOC = (
    " Freshness: `refreshed_at` is the latest refresh; a `stale` row's counters wait for the rebuild that ends "
    "a bulk import (they are shown as they are, never recomputed on request). The same is in the headers "
    "`Last-Modified`, `X-Summary-Refreshed-At` and `X-Summary-Stale-{what}`."
)


class SiteSummaryListView(TextOrJsonMixin, APIView):
    @extend_schema(
        operation_id="sites_summary",
        summary="Site summary: chats, e-mails, operators, visitors per site",
        description="Every site with an accepted chat event, in code-point order of site_id (SPEC §3). "
        "The text form is one `site_id,messages=N,emails=N,operators=N,visitors=N` line per site."
        + FRESHNESS_DOC.format(what="Sites"),
        parameters=[FORMAT],
        responses={
            (200, "application/json"): SiteSummarySerializer,
            (200, "text/plain"): TEXT,
            (200, "text/csv"): TEXT,
            **AUTH_ERRORS,
        },
        tags=["summaries"],
    )
    def get(self, request: Request) -> Response:
        summary = selectors.site_summaries()
        headers = freshness_headers(summary.refreshed_at, summary.stale_sites, "Sites")
        if self.wants_csv(request):
            return with_headers(exports.sites_csv(summary.sites), headers)
        if self.wants_text(request):
            return Response(summary.classic(), headers=headers)
        return Response(SiteSummarySerializer(summary).data, headers=headers)


class SiteSummaryDetailView(TextOrJsonMixin, APIView):
    @extend_schema(
        operation_id="site_summary",
        summary="One site's summary",
        description="`site_id` is URL-encoded (it may contain any character, `/` included). 404 for a site "
        "with no accepted chat event. The text form is the site's classic line." + FRESHNESS_DOC.format(what="Sites"),
        parameters=[FORMAT],
        responses={
            (200, "application/json"): SiteRowSerializer,
            (200, "text/plain"): TEXT,
            (200, "text/csv"): TEXT,
            404: ERROR,
            **AUTH_ERRORS,
        },
        tags=["summaries"],
    )
    def get(self, request: Request, site_id: str) -> Response:
        summary = selectors.site_summaries(site_id)
        if not summary.sites:
            raise NotFound(f"No chat events for the site {site_id!r}.")
        headers = freshness_headers(summary.refreshed_at, summary.stale_sites, "Sites")
        if self.wants_csv(request):
            return with_headers(exports.sites_csv(summary.sites, "site.csv"), headers)
        if self.wants_text(request):
            return Response(summary.classic(), headers=headers)
        return Response(SiteRowSerializer(summary.sites[0]).data, headers=headers)


class RoomSummaryView(TextOrJsonMixin, APIView):
    @extend_schema(
        operation_id="rooms_summary",
        summary="Room summary of the xmpp logs",
        description="Per room: events, messages (with a body), typing (composing), participants, first/last "
        "epoch seconds (SPEC §4); totals: rooms, events, average events per room. The text form is what "
        "`manage.py room_summary` prints." + FRESHNESS_DOC.format(what="Rooms"),
        parameters=[FORMAT],
        responses={
            (200, "application/json"): RoomSummarySerializer,
            (200, "text/plain"): TEXT,
            (200, "text/csv"): TEXT,
            **AUTH_ERRORS,
        },
        tags=["summaries"],
    )
    def get(self, request: Request) -> Response:
        summary = selectors.room_summaries()
        headers = freshness_headers(summary.totals.refreshed_at, summary.totals.stale_rooms, "Rooms")
        if self.wants_csv(request):
            return with_headers(exports.rooms_csv(summary.rooms), headers)
        if self.wants_text(request):
            return Response(summary.classic(), headers=headers)
        return Response(RoomSummarySerializer(summary).data, headers=headers)


class EventListView(ErrorsAsJsonMixin, AnalystMixin, ListAPIView):
    """`GET /api/events/`; routed by ingest/views.py, whose subclass adds `POST` for apps."""

    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, CSVRenderer]
    serializer_class = EventSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = EventFilter
    pagination_class = EventCursorPagination

    def get_queryset(self) -> QuerySet[Event]:
        return selectors.events()

    def filter_queryset(self, queryset: QuerySet[Event]) -> QuerySet[Event]:
        # A mistyped filter must not silently list every event.
        known = {*EventFilter.base_filters, "cursor", "page_size", "format"}
        unknown = sorted(set(self.request.query_params) - known)
        if unknown:
            message = f"Unknown parameter; known: {', '.join(sorted(known))}."
            raise ValidationError({name: [message] for name in unknown})
        return super().filter_queryset(queryset)

    def list(self, request: Request, *args: object, **kwargs: object) -> Response | StreamingHttpResponse:
        if not self.wants_csv(request):
            return super().list(request, *args, **kwargs)
        paging = sorted({"cursor", "page_size"} & set(request.query_params))
        if paging:
            message = "CSV gives every matching event in one file: leave out cursor and page_size."
            raise ValidationError({name: [message] for name in paging})
        return exports.events_csv(self.filter_queryset(self.get_queryset()))

    @extend_schema(
        operation_id="events_list",
        summary="Query stored events",
        description="Accepted, de-duplicated events of every family, oldest first (by timestamp, then storage "
        "order), with cursor pagination: follow `next` (and `previous`) as given. Filters combine with AND; "
        "an unknown parameter or a bad value is a 400. `since` is inclusive, `until` exclusive. "
        "`?format=csv` streams every matching event as CSV instead.",
        parameters=[EVENTS_FORMAT],
        responses={
            (200, "application/json"): EventSerializer(many=True),
            (200, "text/csv"): TEXT,
            400: BAD_QUERY,
            **AUTH_ERRORS,
        },
        tags=["events"],
    )
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)
