"""API request bodies: decoding and framing, without validating any event.

The request path uses `frame_body` to refuse broken framing and count records;
the worker uses the same function to get the raw records back, so both agree.
"""

from __future__ import annotations

import io
import zlib

import orjson

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


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding; decompression stops past `limit` bytes."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in GZIP_ENCODINGS:
        raise BodyError(f"unsupported Content-Encoding {content_encoding!r}: send gzip or none", 415)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise BodyError(f"the body is not valid gzip: {error}") from None
    if len(body) > limit:
        raise BodyError(f"the decompressed body is over the limit of {limit} bytes", 413)
    if not inflater.eof:
        raise BodyError("the gzip body is truncated")
    return body


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


def frame_body(body: bytes, content_type: str) -> list[RawRecord]:
    """The body's raw records; raises BodyError for broken framing.

    A record's "line" is its line in an NDJSON body and its position in an
    array. No record limit applies here: the body is bounded already, and the
    worker rejects an oversize record on its own without losing the others.
    """
    unbounded = len(body) + 1
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
        records: list[RawRecord] = [(1, text, len(body))]
    elif framing == ARRAY:
        records = list(iter_json_array(io.BytesIO(body), max_record=unbounded))
        for _, raw, _ in records:
            if type(raw) is Broken:  # with no record limit, only the array itself can be broken
                raise BodyError(f"broken JSON array: {raw.reason}")
        records = [(position, raw, end) for position, (_, raw, end) in enumerate(records, start=1)]
    else:
        records = [r for r in iter_ndjson(io.BytesIO(body), max_record=unbounded) if not _blank(r[1])]
    if not records:
        raise BodyError("the body holds no records")
    return records


def _blank(raw: bytes | Broken) -> bool:
    return type(raw) is not Broken and (not raw or raw.isspace())


def count_records(body: bytes, content_type: str) -> int:
    """How many records `frame_body` would give, checking framing the fast way.

    Scanning a large array element by element is ~10x slower than letting
    orjson parse it whole, so a well-formed array is counted by parsing; only
    an array that fails to parse is scanned to tell a broken element (a
    rejection later) from a broken array (400 now).
    """
    if body_framing(body, content_type) == ARRAY:
        try:
            values = orjson.loads(body.removeprefix(BOM))
        except orjson.JSONDecodeError:
            pass
        else:
            if not values:
                raise BodyError("the body holds no records")
            return len(values)
    return len(frame_body(body, content_type))
