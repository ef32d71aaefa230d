"""Keyset cursor pagination over (ts, id) for the event list.

DRF's CursorPagination keeps only the first ordering field in the cursor and
skips ties with an offset capped at 1,000: chat timestamps are whole seconds,
so a busy second would break it. Here the cursor holds the whole key (ts, id),
which is unique, and the next page is `(ts, id) > key`: no offsets, stable
under concurrent inserts, and each page is one index range scan.
"""

from __future__ import annotations

import math

from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

from reports.selectors import EVENT_ORDER

Key = tuple[float, int]


class EventCursorPagination(CursorPagination):
    ordering = EVENT_ORDER
    page_size = 100
    page_size_query_param = "page_size"
    page_size_query_description = "Events per page (default 100, at most 1000)."
    max_page_size = 1000
    template = None  # no HTML page controls

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: object = None) -> list:
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.cursor = self.decode_cursor(request)
        key = self.cursor.position if self.cursor else None
        reverse = bool(self.cursor and self.cursor.reverse)
        if reverse:
            queryset = queryset.order_by("-ts", "-id")
            if key:
                queryset = queryset.filter(ts__lte=key[0]).exclude(ts=key[0], id__gte=key[1])
        else:
            queryset = queryset.order_by("ts", "id")
            if key:
                queryset = queryset.filter(ts__gte=key[0]).exclude(ts=key[0], id__lte=key[1])
        rows = list(queryset[: self.page_size + 1])
        more = len(rows) > self.page_size
        self.page = rows[: self.page_size]
        if reverse:
            self.page.reverse()
            self.has_next, self.has_previous = key is not None, more
        else:
            self.has_next, self.has_previous = more, key is not None
        return self.page

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param, "")
        if raw == "":
            return self.page_size
        if not raw.isdigit() or int(raw) < 1:
            raise ValidationError({self.page_size_query_param: [f"Must be a positive integer, got {raw!r}."]})
        return min(int(raw), self.max_page_size)

    def get_next_link(self) -> str | None:
        if not (self.has_next and self.page):
            return None
        return self._link(self.page[-1], reverse=False)

    def get_previous_link(self) -> str | None:
        if not (self.has_previous and self.page):
            return None
        return self._link(self.page[0], reverse=True)

    def _link(self, event: object, reverse: bool) -> str:
        return self.encode_cursor(Cursor(offset=0, reverse=reverse, position=f"{event.ts!r}_{event.id}"))

    def decode_cursor(self, request: Request) -> Cursor | None:
        """The cursor with its position parsed into a key; 400 for anything not made by `_link`."""
        if self.cursor_query_param not in request.query_params:
            return None
        try:
            cursor = super().decode_cursor(request)
            ts, _, pk = (cursor.position or "").partition("_")
            key = (float(ts), int(pk))
        except Exception:  # DRF raises NotFound; any malformed input lands here too
            raise ValidationError({self.cursor_query_param: ["Invalid cursor: use the next/previous links."]}) from None
        # An infinite time is a key `_link` makes (a row an old import stored); NaN is none.
        if math.isnan(key[0]) or cursor.offset:
            raise ValidationError({self.cursor_query_param: ["Invalid cursor: use the next/previous links."]})
        return Cursor(offset=0, reverse=cursor.reverse, position=key)
