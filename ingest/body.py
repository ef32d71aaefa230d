"""API request bodies: decoding and framing, without validating any event.

The request path uses `count_records` to refuse broken framing and too many
records; the worker uses `frame_body` to get the raw records back; both frame
with `iter_body_records`, so they agree.
"""

from __future__ import annotations

import contextlib
import io
import re
import zlib
from collections.abc import Iterator
from itertools import islice

import orjson
from django.conf import settings

from ingest.framing import ARRAY, BOM, NDJSON, Broken, RawRecord, iter_json_array, iter_ndjson

NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})


class BodyError(Exception):
    """The body cannot be taken as it is; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


MAX_GZIP_MEMBERS = 1000  # concatenated gzip members are valid gzip; this many bounds the work
GZIP_FEED_BYTES = 64 * 1024  # compressed input handed to zlib at a time (bounds its leftover copies)
_NOT_ZERO = re.compile(rb"[^\x00]")
PARSE_TO_COUNT_BYTES = 1 << 20  # arrays up to this size are counted by parsing them


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding; decompression stops past `limit` bytes."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in GZIP_ENCODINGS:
        raise BodyError(f"unsupported Content-Encoding {content_encoding!r}: send gzip or none", 415)
    return gunzip(raw, limit)


def gunzip(raw: bytes, limit: int) -> bytes:
    """Every member of a gzip body, in order (issue 12: a second member was silently dropped).

    Refused: more than `limit` bytes once inflated (413), more than MAX_GZIP_MEMBERS
    members, a truncated member or data after the last one other than zero padding (400).
    """
    view = memoryview(raw)
    parts: list[bytes] = []
    size = pos = members = 0
    while True:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise BodyError(f"the gzip body has more than {MAX_GZIP_MEMBERS} members: compress it as one")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflater.eof:
            if pos >= len(raw):
                raise BodyError("the gzip body is truncated")
            piece = view[pos : pos + GZIP_FEED_BYTES]
            try:
                part = inflater.decompress(piece, limit + 1 - size)
            except zlib.error as error:
                raise BodyError(f"the body is not valid gzip: {error}") from None
            size += len(part)
            if size > limit:
                raise BodyError(f"the decompressed body is over the limit of {limit} bytes", 413)
            parts.append(part)
            pos += len(piece) - len(inflater.unused_data) - len(inflater.unconsumed_tail)
        if not _NOT_ZERO.search(raw, pos):  # the end, or zero padding as gzip(1) allows
            return b"".join(parts)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def body_framing(body: bytes, content_type: str) -> str:
    """NDJSON for NDJSON media types and for bodies of one record per line; else one JSON value.

    A JSON body is one object or an array of them; a multi-line body that is
    not a single JSON value is read as NDJSON, whatever it was labelled.
    """
    if media_type(content_type) in NDJSON_TYPES:
        return NDJSON
    text = body.removeprefix(BOM).strip()
    if text.startswith(b"["):
        return ARRAY
    if b"\n" in text:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            return NDJSON
    return "object"


def iter_body_records(body: bytes, content_type: str, max_record: int) -> Iterator[RawRecord]:
    """The body's raw records, streamed; raises BodyError for broken framing.

    A record's "line" is its line in an NDJSON body and its position in an
    array. A record over `max_record` comes as an oversize `Broken` record (the
    worker rejects it; its neighbours are not disturbed).
    """
    framing = body_framing(body, content_type)
    if framing == "object":
        text = body.removeprefix(BOM).strip()
        if not text:
            raise BodyError("the body is empty")
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise BodyError(f"the body is not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise BodyError("a JSON body must be one event object or an array of them")
        yield 1, text, len(body)
    elif framing == ARRAY:
        elements = iter_json_array(io.BytesIO(body), max_record=max_record)
        for position, (_, raw, end) in enumerate(elements, start=1):
            if type(raw) is Broken and not raw.oversize:
                raise BodyError(f"broken JSON array: {raw.reason}")
            yield position, raw, end
    else:
        for record in iter_ndjson(io.BytesIO(body), max_record=max_record):
            if not _blank(record[1]):
                yield record


def frame_body(body: bytes, content_type: str, max_record: int | None = None) -> list[RawRecord]:
    """All the body's records (see `iter_body_records`); raises BodyError if there are none."""
    if max_record is None:
        max_record = settings.SWITCHBOARD["MAX_RECORD_BYTES"]
    records = list(iter_body_records(body, content_type, max_record))
    if not records:
        raise BodyError("the body holds no records")
    return records


def _blank(raw: bytes | Broken) -> bool:
    return type(raw) is not Broken and (not raw or raw.isspace())


def count_records(body: bytes, content_type: str, max_records: int | None = None) -> int:
    """How many records `frame_body` would give, checking framing the fast way and
    refusing (413) a body of more than `max_records` (MAX_RECORDS_PER_BODY) records
    before it is stored.

    A small array is counted by letting orjson parse it (about twice as fast as
    scanning it); an array that fails to parse is scanned to tell a broken
    element (a rejection later) from a broken array (400 now). Larger arrays
    are scanned: parsing holds ~15x the body's size (and a parse error ~11x),
    the scan a few blocks. Other bodies are counted as they are framed,
    without holding their records.
    """
    if max_records is None:
        max_records = settings.SWITCHBOARD["MAX_RECORDS_PER_BODY"]
    count = None
    if body_framing(body, content_type) == ARRAY and len(body) <= PARSE_TO_COUNT_BYTES:
        with contextlib.suppress(orjson.JSONDecodeError):
            count = len(orjson.loads(body.removeprefix(BOM)))
    if count is None:
        records = iter_body_records(body, content_type, settings.SWITCHBOARD["MAX_RECORD_BYTES"])
        count = sum(1 for _ in islice(records, max_records + 1))
    if not count:
        raise BodyError("the body holds no records")
    if count > max_records:
        raise BodyError(
            f"the body holds more than {max_records} records (MAX_RECORDS_PER_BODY): send them in smaller batches",
            413,
        )
    return count
