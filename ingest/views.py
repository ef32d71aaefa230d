"""The write path's endpoints: posting events, batch status, health."""

from __future__ import annotations

import functools
from collections.abc import Callable

import orjson
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import database_unavailable
from ingest import fastpath
from ingest.auth import IsApp, IsAppOrAnalyst, request_app
from ingest.health import current_health
from ingest.selectors import visible_batches
from ingest.serializers import BatchAcceptedSerializer, BatchSerializer, HealthSerializer
from reports.views import EventListView

ERROR = OpenApiResponse(description='JSON error: `{"detail": "why"}`')


def json_response(answer: fastpath.Answer) -> HttpResponse:
    status, data, headers = answer
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def app_post(request: HttpRequest) -> HttpResponse | None:
    """`fastpath.app_post` for requests that reached Django (tests, a server without the
    WSGI wrapper); None for anything but an active app key: DRF answers those as always."""
    answer = fastpath.app_post(request.META, request.read)
    return None if answer is None else json_response(answer)


class PostEventsMixin:
    """`POST /api/events/` for client apps: store the body raw, answer 202."""

    parser_classes: list = []  # the body is read raw, never parsed on the request path

    @extend_schema(
        summary="Post a batch of events (client apps)",
        description=(
            "Body: one event object, a JSON array of them, or NDJSON (`Content-Type: application/x-ndjson`), "
            "optionally with `Content-Encoding: gzip`, with a Content-Length or chunked (`Transfer-Encoding: chunked`, "
            "on a server that de-chunks: gunicorn). Only the framing is checked here; events are validated "
            "by a worker. Poll `status_url` for the outcome."
        ),
        parameters=[
            OpenApiParameter(
                "X-Sent-At",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="When the client sent this request, by the clock that stamped its events (epoch "
                "seconds or ISO 8601): records without their own `sentAt` are placed at "
                "`received_at - (X-Sent-At - timestamp)`. Unreadable: 400.",
            )
        ],
        request={
            "application/json": OpenApiTypes.OBJECT,
            "application/x-ndjson": OpenApiTypes.STR,
        },
        responses={
            202: BatchAcceptedSerializer,
            400: ERROR,
            401: ERROR,
            403: ERROR,
            411: ERROR,
            413: ERROR,
            415: ERROR,
            429: ERROR,
        },
        tags=["events"],
    )
    def post(self, request: Request) -> HttpResponse:
        # Reached through DRF only when `app_post` passed (e.g. a session or token: 403).
        return json_response(fastpath.accept(request.META, request._request.read, request_app(request)))

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
    permission_classes = [AllowAny]  # throttled per address for strangers (ANON_THROTTLE_RATE)

    def perform_authentication(self, request: Request) -> None:
        """While the database is down no credential can be checked: the caller gets the status only."""
        try:
            request.user  # noqa: B018 - authenticates
        except Exception as error:
            if not database_unavailable(error):
                raise
            request.user, request.auth = AnonymousUser(), None

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
