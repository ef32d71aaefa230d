"""The write path's endpoints: posting events, batch status, health."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ingest.auth import KEYWORD, AppRateThrottle, IsApp, IsAppOrAnalyst, request_app
from ingest.batches import receive_batch
from ingest.body import BodyError, count_records, decode_body
from ingest.health import health
from ingest.keys import cached_application_for_key
from ingest.models import Application
from ingest.selectors import visible_batches
from ingest.serializers import BatchAcceptedSerializer, BatchSerializer
from reports.views import EventListView

ERROR = OpenApiResponse(description='JSON error: `{"detail": "why"}`')
BATCHES_URL = "/api/batches/"  # + id + "/": the batch-detail route (ingest/urls.py)


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The raw body, refusing (413) anything over `limit` before holding it whole."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BodyError("invalid Content-Length header") from None
    if declared > limit:
        raise BodyError(f"the body is {declared} bytes, over the limit of {limit}", 413)
    raw = request.read(limit + 1)  # the Django request: DRF parsers would decode it
    if len(raw) > limit:
        raise BodyError(f"the body is over the limit of {limit} bytes", 413)
    return raw


def json_response(data: dict, status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def accept_batch(request: HttpRequest, app: Application) -> HttpResponse:
    """Store the body raw (one insert) and answer 202, or say why it cannot be taken."""
    limit = settings.SWITCHBOARD["MAX_BODY_BYTES"]
    content_type = request.META.get("CONTENT_TYPE", "")
    content_encoding = request.META.get("HTTP_CONTENT_ENCODING", "")
    try:
        raw = read_body(request, limit)
        records = count_records(decode_body(raw, content_encoding, limit), content_type)
    except BodyError as error:
        return json_response({"detail": str(error)}, error.status)
    batch = receive_batch(app, raw, content_type, content_encoding, records)
    status_url = f"{BATCHES_URL}{batch.pk}/"
    return json_response(
        {"batch_id": batch.pk, "records": records, "status": batch.status, "status_url": status_url},
        202,
        {"Location": status_url},
    )


def app_post(request: HttpRequest) -> HttpResponse | None:
    """The hot path of `POST /api/events/`, without DRF's machinery: an active app key
    (cached, ingest/keys.py), the app's throttle, the body. None for anything else
    (no key, a bad key, another scheme, a session): DRF answers those as always."""
    scheme, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != KEYWORD.lower() or not key or " " in key.strip():
        return None
    app = cached_application_for_key(key.strip())
    if app is None:
        return None
    throttle = AppRateThrottle()
    request.auth = app  # what request_app() reads
    if not throttle.allow_request(request, None):
        error = exceptions.Throttled(throttle.wait())
        return json_response({"detail": str(error.detail)}, 429, {"Retry-After": str(math.ceil(throttle.wait()))})
    return accept_batch(request, app)


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
    def post(self, request: Request) -> HttpResponse:
        # Reached through DRF only when `app_post` passed (e.g. a session or token: 403).
        return accept_batch(request._request, request_app(request))

    def get_permissions(self) -> list:
        if self.request.method == "POST":
            return [IsApp()]
        return super().get_permissions()


class EventsView(PostEventsMixin, EventListView):
    """`/api/events/`: apps post batches, analysts query stored events."""

    @classmethod
    def as_view(cls, **initkwargs: object) -> Callable:
        drf_view = super().as_view(**initkwargs)

        @functools.wraps(drf_view)  # keeps what the schema generator and CSRF exemption read
        def view(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            if request.method == "POST" and (response := app_post(request)) is not None:
                return response
            return drf_view(request, *args, **kwargs)

        return view


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
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        summary="Service health",
        description="Database, broker, queue depth and the oldest unfinished batch. 503 when the database is down.",
        responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT},
        tags=["operations"],
    )
    def get(self, request: Request) -> Response:
        report, up = health()
        return Response(report, status=status.HTTP_200_OK if up else status.HTTP_503_SERVICE_UNAVAILABLE)
