"""Errors answered outside DRF's views: JSON for API paths that fail (unknown URLs, crashes),
and 503 with Retry-After whenever the database cannot serve (down, restarting, unreachable),
which a client should retry, never a 500."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from html import escape

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

logger = logging.getLogger(__name__)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def json_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": f"No API endpoint at {request.path}."}, status=404)
    return defaults.page_not_found(request, exception)


def json_server_error(request: HttpRequest) -> HttpResponse:
    """handler500; also what a database outage inside a middleware (a session saved) becomes."""
    error = sys.exc_info()[1]
    if error is not None and database_unavailable(error):
        return database_unavailable_response(request, error)
    if _is_api(request):
        return JsonResponse({"detail": "Internal server error; it has been logged."}, status=500)
    return defaults.server_error(request)


# -- the database is unavailable ------------------------------------------------


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot serve now rather than that the code is wrong:
    refused or lost connections, a server starting or shutting down, a standby that cannot
    write, too many clients, a statement over its timeout, SQLite's lock held too long."""
    # The driver's own classes too: a few calls (COPY) are not wrapped by Django.
    driver = connection.Database
    return isinstance(error, (OperationalError, InterfaceError, driver.OperationalError, driver.InterfaceError))


def database_unavailable_answer(error: BaseException) -> tuple[int, dict, dict[str, str]]:
    """503 with Retry-After, and why (the driver's message is for the logs only)."""
    seconds = settings.SWITCHBOARD["DB_RETRY_AFTER_SECONDS"]
    logger.warning("the database is unavailable: %s", str(error).strip() or type(error).__name__)
    detail = (
        "The database is unavailable (down, restarting or failing over), so the request was not"
        f" completed. Retry after {seconds} seconds."
    )
    return 503, {"detail": detail}, {"Retry-After": str(seconds)}


def database_unavailable_response(request: HttpRequest, error: BaseException) -> HttpResponse:
    """The answer as JSON, or as a short page for a browser outside the API (the admin)."""
    status, data, headers = database_unavailable_answer(error)
    if not _is_api(request) and "text/html" in request.headers.get("Accept", ""):
        title = "<!doctype html><title>Service unavailable</title><h1>Service unavailable</h1>"
        page = title + f"<p>{escape(data['detail'])}</p>"
        return HttpResponse(page, status=status, headers=headers)
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json", headers=headers)


class DatabaseUnavailableMiddleware:
    """A view (DRF's, the admin's) failing on the database answers 503 with Retry-After."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return database_unavailable_response(request, exception) if database_unavailable(exception) else None
