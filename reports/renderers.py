"""The classic text form of the summaries (`?format=txt` or `Accept: text/plain`)."""

from __future__ import annotations

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
