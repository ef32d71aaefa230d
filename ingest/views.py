"""The write path's endpoints: posting events, batch status, health."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ingest.auth import IsApp, IsAppOrAnalyst, request_app
from ingest.batches import receive_batch
from ingest.body import BodyError, count_records, decode_body
from ingest.health import current_health
from ingest.selectors import visible_batches
from ingest.serializers import BatchAcceptedSerializer, BatchSerializer, HealthSerializer
from reports.views import EventListView

ERROR = OpenApiResponse(description='JSON error: `{"detail": "why"}`')


def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` before holding it whole."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BodyError("invalid Content-Length header") from None
    if declared > limit:
        raise BodyError(f"the body is {declared} bytes, over the limit of {limit}", 413)
    raw = request._request.read(limit + 1)  # the Django request: DRF parsers would decode it
    if len(raw) > limit:
        raise BodyError(f"the body is over the limit of {limit} bytes", 413)
    return raw


class PostEventsMixin:
    """`POST /api/events/` for client apps: store the body raw, answer 202."""

    parser_classes: list = []  # the body is read raw, never parsed on the request path

    @extend_schema(
        summary="Post a batch of events (client apps)",
        description=(
            "Body: one event object, a JSON array of them, or NDJSON (`Content-Type: application/x-ndjson`), "
            "optionally with `Content-Encoding: gzip`. Only the framing is checked here; events are validated "
            "by a worker. Poll `status_url` for the outcome."
        ),
        request={
            "application/json": OpenApiTypes.OBJECT,
            "application/x-ndjson": OpenApiTypes.STR,
        },
        responses={
            202: BatchAcceptedSerializer,
            400: ERROR,
            401: ERROR,
            403: ERROR,
            413: ERROR,
            415: ERROR,
            429: ERROR,
        },
        tags=["events"],
    )
    def post(self, request: Request) -> Response:
        limit = settings.SWITCHBOARD["MAX_BODY_BYTES"]
        content_type = request.META.get("CONTENT_TYPE", "")
        content_encoding = request.META.get("HTTP_CONTENT_ENCODING", "")
        try:
            raw = read_body(request, limit)
            records = count_records(decode_body(raw, content_encoding, limit), content_type)
        except BodyError as error:
            return Response({"detail": str(error)}, status=error.status)
        batch = receive_batch(request_app(request), raw, content_type, content_encoding, records)
        status_url = reverse("batch-detail", args=[batch.pk])
        return Response(
            {"batch_id": batch.pk, "records": records, "status": batch.status, "status_url": status_url},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": status_url},
        )

    def get_permissions(self) -> list:
        if self.request.method == "POST":
            return [IsApp()]
        return super().get_permissions()


class EventsView(PostEventsMixin, EventListView):
    """`/api/events/`: apps post batches, analysts query stored events."""


class BatchDetailView(APIView):
    permission_classes = [IsAppOrAnalyst]

    @extend_schema(
        summary="A batch's status and outcome",
        description="An app sees its own batches only (others are 404); analysts see all.",
        responses={200: BatchSerializer, 401: ERROR, 403: ERROR, 404: ERROR},
        tags=["events"],
    )
    def get(self, request: Request, batch_id: int) -> Response:
        batch = get_object_or_404(visible_batches(request_app(request)), pk=batch_id)
        return Response(BatchSerializer(batch).data)


class HealthView(APIView):
    permission_classes = [AllowAny]  # throttled per address for strangers (ANON_THROTTLE_RATE)

    @extend_schema(
        summary="Service health",
        description=(
            "`status`: ok, degraded (the broker is down: posts are still stored) or down (the database is; 503). "
            "Staff also see the database, broker, queue depth and the oldest unfinished batch. "
            "Reports are reused for a few seconds."
        ),
        responses={200: HealthSerializer, 503: HealthSerializer, 429: ERROR},
        tags=["operations"],
    )
    def get(self, request: Request) -> Response:
        report, up = current_health(details=bool(request.user and request.user.is_staff))
        return Response(report, status=status.HTTP_200_OK if up else status.HTTP_503_SERVICE_UNAVAILABLE)
