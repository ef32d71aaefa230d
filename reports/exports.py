"""Getting data out: CSV of the summaries, events and admin lists, and stored records as NDJSON.

Everything streams in bounded memory: rows are read a batch at a time by key (`keyset`), never
with OFFSET, a long transaction or a server-side cursor, and written as they come.

CSV cells are the stored values, except that a text cell starting with `=`, `+`, `-`, `@`,
a tab or a carriage return gets a leading `'`: spreadsheets would run it as a formula (CSV
injection), and nicks, actors and sites are chosen by clients. `export_events` (NDJSON) gives
the records back exactly.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Model, QuerySet
from django.http import StreamingHttpResponse

from events.models import Event
from reports.room_summary import RoomRow
from reports.serializers import iso_utc
from reports.site_summary import SiteRow

FETCH_ROWS = 2000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def keyset(queryset: QuerySet, fields: Sequence[str] = ("ts", "id"), size: int | None = None) -> Iterator[Model]:
    """Every row of `queryset` in ascending `fields` order (unique together, the last one the
    primary key), one indexed range query per `size` rows (default FETCH_ROWS)."""
    size = size or FETCH_ROWS
    *leading, last = fields
    ordered = queryset.order_by(*fields)
    key: tuple | None = None
    while True:
        page = ordered
        if key is not None:
            if leading:  # (a, id) > (ka, kid): a >= ka, and not (a = ka and id <= kid)
                page = page.filter(**{f"{leading[0]}__gte": key[0]}).exclude(
                    **{leading[0]: key[0], f"{last}__lte": key[1]}
                )
            else:
                page = page.filter(**{f"{last}__gt": key[0]})
        rows = list(page[:size])
        yield from rows
        if len(rows) < size:
            return
        key = tuple(getattr(rows[-1], name) for name in fields)


def cell(value: object) -> object:
    """A value as a CSV cell: '' for none, true/false, ISO 8601 for date-times, text made inert."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class _Line:
    """A file-like sink for csv.writer that hands each written row back."""

    def write(self, text: str) -> str:
        return text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([cell(v) for v in row])


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_text(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@dataclass(frozen=True, slots=True)
class Columns:
    """A CSV layout: headers and how to get each from a row object."""

    header: tuple[str, ...]
    values: Callable[[object], Sequence[object]]

    def rows(self, objects: Iterable[object]) -> Iterator[Sequence[object]]:
        return (self.values(o) for o in objects)


# The same fields as the event list's JSON (reports.serializers.EventSerializer); payload as received.
EVENT_HEADER = (
    "id", "family", "type", "category", "site", "session", "actor", "time", "epoch", "client_epoch", "online",
    "payload",
)  # fmt: skip
EVENT_COLUMNS = Columns(
    EVENT_HEADER,
    lambda e: (
        e.uid,
        e.family,
        e.kind,
        e.category,
        e.site_id,
        e.session,
        e.actor,
        iso_utc(e.ts),
        e.ts,
        e.client_timestamp,
        e.online,
        e.raw,
    ),
)
SITE_COLUMNS = Columns(
    ("site_id", "messages", "emails", "operators", "visitors", "stale", "refreshed_at"),
    lambda r: (r.site_id, r.messages, r.emails, r.operators, r.visitors, r.stale, r.refreshed_at),
)
ROOM_COLUMNS = Columns(
    ("room_id", "events", "messages", "typing", "participants", "first", "last", "stale", "refreshed_at"),
    lambda r: (r.room_id, r.events, r.messages, r.typing, r.participants, r.first, r.last, r.stale, r.refreshed_at),
)


def events_csv(events: QuerySet[Event], filename: str = "events.csv") -> StreamingHttpResponse:
    """Every event of `events`, oldest first (by timestamp, then storage order)."""
    return csv_response(filename, EVENT_COLUMNS.header, EVENT_COLUMNS.rows(keyset(events.defer("batch", "line"))))


def sites_csv(rows: Iterable[SiteRow], filename: str = "sites.csv") -> StreamingHttpResponse:
    return csv_response(filename, SITE_COLUMNS.header, SITE_COLUMNS.rows(rows))


def rooms_csv(rows: Iterable[RoomRow], filename: str = "rooms.csv") -> StreamingHttpResponse:
    return csv_response(filename, ROOM_COLUMNS.header, ROOM_COLUMNS.rows(rows))


def one_line(raw: str) -> str:
    """A stored record as one NDJSON line: as received, except that the line breaks of a
    record that spanned lines (a pretty-printed element of a JSON array), which JSON only
    allows between tokens, become spaces."""
    if "\n" in raw or "\r" in raw:
        return raw.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return raw


def records(events: QuerySet[Event]) -> Iterator[str]:
    """The stored records of `events` as NDJSON lines (with their newline), oldest first."""
    for event in keyset(events.only("ts", "raw")):
        yield one_line(event.raw) + "\n"
