"""Hostile values in a request (issue 22 item 11) that would otherwise end in a 500.

- A NUL character in a path, query or header is refused (400, with the reason) in front of every view,
  the admin's included: no text column can hold one (PostgreSQL refuses NUL in any string
  literal, so a lookup by such a value failed instead of matching nothing), and no identifier
  may contain one (events/registry.py).
- A date hierarchy's year out of range is a bad lookup (the admin's "?e=1"), not a crash.
- A JSON body nested past Python's recursion limit is a parse error (400), not a RecursionError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.contrib.admin import AdminSite
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import parsers
from rest_framework.exceptions import ParseError

NUL = "\x00"
REASON = "The request's URL or a header contains a NUL character (%00), which no stored value can hold."


def has_nul_header(meta: Mapping[str, object]) -> bool:
    """A NUL in a header of a WSGI environ: gunicorn refuses one, other servers may pass one on
    (e.g. in a token). Content-Type and Content-Length are headers without the HTTP_ prefix."""
    return any(
        NUL in value
        for name, value in meta.items()
        if type(value) is str and (name.startswith("HTTP_") or name in ("CONTENT_TYPE", "CONTENT_LENGTH"))
    )


def _has_nul(request: HttpRequest) -> bool:
    if NUL in request.path_info or has_nul_header(request.META):
        return True
    if "%00" not in request.META.get("QUERY_STRING", ""):  # the only way a query carries one
        return False
    return any(NUL in name or any(NUL in value for value in values) for name, values in request.GET.lists())


def refuse_nul_characters(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    def middleware(request: HttpRequest) -> HttpResponse:
        if _has_nul(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": REASON}, status=400)
            return HttpResponse(REASON, status=400, content_type="text/plain; charset=utf-8")
        return get_response(request)

    return middleware


class BoundedDateChangeList(ChangeList):
    """Django's date hierarchy builds its range from `<field>__year=` (`__month`, `__day`) outside
    its own error handling for a year past datetime's range (OverflowError) or at its end (the next
    year is 10000: ValueError), a 500; here both are a bad lookup, as a bad month is."""

    def get_filters(self, request: HttpRequest) -> tuple:
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as error:
            raise IncorrectLookupParameters(error) from error


def bound_date_hierarchies(site: AdminSite) -> None:
    """Give every registered admin with a date hierarchy (django-axes' logs) the bounded changelist."""
    for model_admin in site._registry.values():
        if model_admin.date_hierarchy:
            model_admin.get_changelist = lambda request, **kwargs: BoundedDateChangeList


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser (request bodies DRF decodes: the erasure endpoint's), deep nesting a 400."""

    def parse(self, stream: object, media_type: str | None = None, parser_context: dict | None = None) -> object:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - arrays and objects are nested too deeply") from None
