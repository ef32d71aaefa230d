"""Counts and times every request Django answers, and gives its log lines a request id.

(The app posts served in front of Django are counted by ingest/fastpath.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from ingest.monitoring import logs, recording

UNMATCHED = "unmatched"  # no URL pattern: 404s, and static files answered before URL resolution


def request_metrics(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        logs.bind_request_id(logs.request_id(request.META))  # cleared when the request finishes
        response = get_response(request)
        match = request.resolver_match
        route = match.route if match is not None and match.route else UNMATCHED
        recording.request_answered(route, response.status_code, time.perf_counter() - started)
        return response

    return middleware
