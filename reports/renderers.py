"""The read API's other formats: the classic text lines (`?format=txt` or `Accept: text/plain`)
and CSV (`?format=csv` or `Accept: text/csv`). Views format the data themselves (CSV streams,
see reports/exports.py); errors are always JSON."""

from __future__ import annotations

from django.http import Http404
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer


class PlainTextRenderer(BaseRenderer):
    """Renders text the view has already formatted; views fall back to JSON for errors."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: object, accepted_media_type: str | None = None, renderer_context: dict | None = None) -> str:
        if not isinstance(data, str):
            raise TypeError("PlainTextRenderer renders text only; the view formats it")
        return data


class CSVRenderer(BaseRenderer):
    """Selects CSV in content negotiation; the view answers with a streaming response itself."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: object, accepted_media_type: str | None = None, renderer_context: dict | None = None) -> str:
        raise TypeError("CSV is streamed by the view (reports.exports), not rendered from data")


class FormatNegotiation(DefaultContentNegotiation):
    """DRF answers an unknown `?format=` with a bare 404 "Not found."; say what went wrong."""

    def filter_renderers(self, renderers: list[BaseRenderer], format: str) -> list[BaseRenderer]:  # noqa: A002
        try:
            return super().filter_renderers(renderers, format)
        except Http404:
            known = ", ".join(dict.fromkeys(r.format for r in renderers if r.format != "api"))
            raise ParseError(f"unknown format {format!r}: this endpoint answers {known}") from None
