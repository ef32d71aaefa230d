"""Hostile values in a request or a command's arguments (issue 22 item 11) that would otherwise end in a 500
or a traceback.

- A NUL character in a path, query or header is refused (400, with the reason) in front of every view,
  the admin's included: no text column can hold one (PostgreSQL refuses NUL in any string
  literal, so a lookup by such a value failed instead of matching nothing), and no identifier
  may contain one (events/registry.py).
- A date hierarchy's year out of range is a bad lookup (the admin's "?e=1"), not a crash.
- A JSON body nested past Python's recursion limit is a parse error (400), not a RecursionError.
- Text holding a lone surrogate is refused with the reason (`lone_surrogate`): it is not Unicode
  text, so no database, JSON encoder or UTF-8 stream takes it, and the write failed with a
  traceback. It comes from bytes that are not UTF-8 (a command's arguments and file names are
  decoded with `surrogateescape`), or from a JSON `\\udXXX` escape in a body DRF decodes.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping

from django.contrib.admin import AdminSite
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import parsers
from rest_framework.exceptions import ParseError

NUL = "\x00"
_SURROGATE = re.compile("[\ud800-\udfff]")
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


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate of `text`, if any (a pair is one character in Python: none is lone)."""
    if text.isprintable():  # the common case, in C: a surrogate is not printable
        return None
    match = _SURROGATE.search(text)
    return match.group() if match else None


def not_text_reason(text: str) -> str | None:
    """Why `text` is not Unicode text, if it is not: the reason every refusal of it gives (without
    the text, which the caller may not want to repeat)."""
    if char := lone_surrogate(text):
        return f"not valid text: it holds the lone surrogate U+{ord(char):04X} (bytes that are not UTF-8)"
    return None


def text_argument(value: str) -> str:
    """The `type` of a management command's text argument: one that is not Unicode text is a usage
    error with the reason (a CommandError when run by call_command), not a traceback at its write."""
    if reason := not_text_reason(value):
        raise argparse.ArgumentTypeError(f"{ascii(value)[:80]} is {reason}")
    return value
