"""Getting data out: CSV of the summaries, events and admin lists, and stored records as NDJSON.

Everything streams in bounded memory: rows are read a batch at a time by key (`keyset`), never
with OFFSET, a long transaction or a server-side cursor, and written as they come.

CSV cells are the stored values, except that a text cell starting with `=`, `+`, `-`, `@`,
a tab or a carriage return gets a leading `'`: spreadsheets would run it as a formula (CSV
injection), and nicks, actors and sites are chosen by clients; control characters (line breaks
above all) are written as escapes (`events.registry.printable`), and the payload as one line of
JSON (`one_line`), so that no cell starts a line of its own. `export_events` (NDJSON) gives the
records back exactly, but for `one_line`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.db.models import Model, QuerySet
from django.http import StreamingHttpResponse

from events.models import Event
from events.registry import RECEIVED_AT, SENT_AT, printable
from ingest.batches import API_SOURCE
from ingest.models import RawBatch
from reports.room_summary import RoomRow
from reports.serializers import iso_utc
from reports.site_summary import SiteRow

FETCH_ROWS = 2000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_JSON_STRING_CONTROLS = re.compile("[\x7f-\x9f\u2028\u2029]")


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
    if isinstance(value, str):
        # A line break in a quoted cell is valid CSV, yet forges a line for any line-based reader.
        value = printable(value, keep="\t")
        if value.startswith(FORMULA_START):
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
        one_line(e.raw),
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
    """A stored record as one line of JSON: as received, except that the line breaks of a
    record that spanned lines (a pretty-printed element of a JSON array), which JSON only
    allows between tokens, become spaces, and the characters other readers take for line
    breaks or terminal controls (DEL, C1, U+2028, U+2029), which JSON only allows in strings,
    are written as `\\uXXXX` escapes: the same JSON value, on one line whoever reads it."""
    if raw.isprintable():
        return raw
    if "\n" in raw or "\r" in raw:
        raw = raw.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return _JSON_STRING_CONTROLS.sub(lambda match: f"\\u{ord(match.group()):04x}", raw)


def records(events: QuerySet[Event]) -> Iterator[str]:
    """The stored records of `events` as NDJSON lines (with their newline), oldest first.

    A record placed by its API batch's receive time (`client_timestamp` set) also gets the
    times it was placed by, `receivedAt` (and its batch's `sentAt` when it had none of its
    own), so that `import_jsonl` places it at the same time (events/clock.py)."""
    page: list[Event] = []
    for event in keyset(events.only("ts", "raw", "client_timestamp", "batch_id")):
        page.append(event)
        if len(page) == FETCH_ROWS:
            yield from _lines(page)
            page = []
    yield from _lines(page)


def _lines(events: list[Event]) -> Iterator[str]:
    placed = {e.batch_id for e in events if e.client_timestamp is not None}
    receipts = {
        pk: (created.timestamp(), None if sent is None else sent.timestamp())
        for pk, created, sent in RawBatch.objects.filter(pk__in=placed, source=API_SOURCE).values_list(
            "pk", "created_at", "sent_at"
        )
    }
    for event in events:
        raw = event.raw
        if event.client_timestamp is not None and event.batch_id in receipts:
            raw = with_receipt(raw, *receipts[event.batch_id])
        yield one_line(raw) + "\n"


def with_receipt(raw: str, received_at: float, batch_sent_at: float | None) -> str:
    """The record's text with the receive time (and the batch's send time, if the record has
    none) added as its last members; the rest of the text as received."""
    record = orjson.loads(raw)
    if record.get(RECEIVED_AT) is not None:
        return raw
    added = f'"{RECEIVED_AT}":{received_at!r}'
    if record.get(SENT_AT) is None and batch_sent_at is not None:
        added += f',"{SENT_AT}":{batch_sent_at!r}'
    text = raw.rstrip()
    return f"{text[:-1]},{added}}}"  # a stored record is a non-empty JSON object: it ends with "}"
