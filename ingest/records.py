"""Turning raw records into validated events or rejections (no database)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import count
from operator import itemgetter

import orjson
from django.conf import settings

from events import chat_decoder
from events.chat import FIELDS as CHAT_FIELDS
from events.clock import Receipt, normalize, place, send_times
from events.registry import ROW, Invalid, NormalizedEvent, check_identifiers, event_row, identifiers_clean
from ingest.framing import Broken, LineBlock, RawRecord, oversize_reason

# PostgreSQL text and jsonb cannot hold NUL, so such a record could never be stored.
NUL_ESCAPE = b"\\u0000"
_REAL_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")  # not an escaped backslash + "u0000"
NUL_REASON = "contains a NUL character (\\u0000), which cannot be stored"
# A record that passed every rule but the database would not store (one statement isolates it).
REFUSED = "the database refused to store this record: "


@dataclass(slots=True)
class RejectedRecord:
    line: int
    reason: str
    raw: str
    # `raw` is the whole record exactly as received, so a replay can restore it.
    complete: bool = False


@dataclass(slots=True)
class Chunk:
    """Validated records of one batch, with the stream range they came from.

    With `max_rejections` set, only the first rejections are kept (text and
    reason) and the rest only counted, so a body of many tiny bad records
    costs bounded memory and rows.
    """

    events: list[tuple[int, NormalizedEvent]] = field(default_factory=list)
    rejections: list[RejectedRecord] = field(default_factory=list)
    first_line: int = 0
    last_line: int = 0
    end_offset: int = 0
    max_rejections: int | None = None
    omitted_rejections: int = 0  # rejected beyond `max_rejections`: counted, not kept
    # Bytes its rejections may still keep as whole records (MAX_REJECTED_BYTES_PER_BATCH): a
    # record over MAX_RECORD_BYTES is kept whole only within them (see `rejected`).
    whole_bytes_left: int = field(default_factory=lambda: settings.SWITCHBOARD["MAX_REJECTED_BYTES_PER_BATCH"])
    withheld: int = 0  # records of erased actors moved to the rejections (events/privacy/blocks.py)
    omitted_rules: Counter[str] = field(default_factory=Counter)  # their `rejection_rule`s (metrics)

    @property
    def rejected(self) -> int:
        return len(self.rejections) + self.omitted_rejections

    @property
    def record_count(self) -> int:
        return len(self.events) + self.rejected

    def reject(self, line: int, reason: str, raw: bytes, *, whole: bool = True) -> None:
        if self.max_rejections is not None and len(self.rejections) >= self.max_rejections:
            self.omitted_rejections += 1
            self.omitted_rules[rejection_rule(reason)] += 1
            return
        record = rejected(line, reason, raw, whole=whole, over_limit=len(raw) <= self.whole_bytes_left)
        if record.complete:
            self.whole_bytes_left -= len(raw)
        self.rejections.append(record)


def raw_text(raw: bytes) -> str:
    """A record's head as kept when it cannot be kept whole: bounded, undecodable bytes and NUL
    escaped (PostgreSQL text holds neither)."""
    limit = settings.SWITCHBOARD["MAX_REJECTED_RAW_CHARS"]
    text = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
    return text.replace("\x00", "\\x00")[:limit]


def whole_record_limit() -> int:
    """The longest record a rejection can keep whole, which framing therefore holds whole: a
    record over MAX_RECORD_BYTES is rejected, but kept for a replay once the limit is raised."""
    limits = settings.SWITCHBOARD
    return max(limits["MAX_RECORD_BYTES"], limits["MAX_REJECTED_RECORD_BYTES"])


def rejected(line: int, reason: str, raw: bytes, *, whole: bool = True, over_limit: bool = True) -> RejectedRecord:
    """A rejection keeping the whole record, so that a replay under later rules can restore it,
    while it is storable text (valid UTF-8 without NUL) and within MAX_RECORD_BYTES, or within
    MAX_REJECTED_RECORD_BYTES when `over_limit` allows (its batch's total has room); otherwise
    only its head (`whole=False`: `raw` is already only a part, e.g. of an endless line)."""
    limits = settings.SWITCHBOARD
    size = len(raw)
    fits = size <= limits["MAX_RECORD_BYTES"] or (over_limit and size <= limits["MAX_REJECTED_RECORD_BYTES"])
    if whole and fits and b"\x00" not in raw:
        try:
            return RejectedRecord(line, reason, raw.decode("utf-8"), complete=True)
        except UnicodeDecodeError:
            pass
    return RejectedRecord(line, reason, raw_text(raw))


RULE_PATTERNS = (
    # A quoted value after "got" or a colon, or right after the quoted field it belongs to.
    (re.compile(r"""(got |: |^'[\w.]+' )('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|<[^>]*>)"""), r"\1…"),
    # Numbers, but not those of names such as UTF-8 or ISO 8601.
    (re.compile(r"(?<![\w.-])(?<!ISO )\d+(?:\.\d+)?"), "N"),
)


def reason_rule(reason: str) -> str:
    """A reason with its particulars (numbers, quoted values) left out, so that rejections
    for the same rule group together: "record is N bytes, over the limit of N"."""
    for pattern, replacement in RULE_PATTERNS:
        reason = pattern.sub(replacement, reason)
    return reason


INVALID_JSON_STARTS = ("not valid JSON", "not valid UTF-8", "the stream is not", "unexpected data", "the JSON array")
# The bounded set of rules a rejection reason falls under, for metrics labels and alerts
# (`switchboard_records_rejected_total{rule}`): the first whose test matches, else "other".
REJECTION_RULES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("database_refused", lambda r: r.startswith(REFUSED)),
    ("too_large", lambda r: r.startswith("record is ") and "over the limit" in r),
    ("nul_character", lambda r: r == NUL_REASON),
    ("invalid_json", lambda r: r.startswith(INVALID_JSON_STARTS)),
    ("not_an_object", lambda r: r.startswith("not a JSON object")),
    ("too_deep", lambda r: r.startswith("arrays and objects nest deeper")),
    ("unknown_family", lambda r: r.startswith("matches no event family")),
    ("future_timestamp", lambda r: r.startswith("timestamp ") and r.endswith("in the future")),
    ("site_not_allowed", lambda r: r.startswith("site ") and "is not among the sites" in r),
    ("invalid_stanza", lambda r: r.startswith(("'stanza'", "stanza "))),
    ("invalid_field", lambda r: r.startswith("'")),
)  # fmt: skip
RULE_LABELS = (*(name for name, _ in REJECTION_RULES), "other")


def rejection_rule(reason: str) -> str:
    """Which of RULE_LABELS a rejection reason falls under (a bounded set, unlike `reason_rule`)."""
    return next((name for name, test in REJECTION_RULES if test(reason)), "other")


def json_error_reason(error: orjson.JSONDecodeError) -> str:
    message = str(error)
    if "byte order mark" in message:
        return "not valid JSON: a byte order mark (BOM) is accepted only at the start of a file"
    if "UTF-8" in message:
        return "not valid UTF-8"
    return f"not valid JSON: {message}"


def nesting_depth(value: object) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in item)
    return deepest


def too_deep(raw: bytes, value: object, limit: int | None = None) -> str | None:
    """Why a record nests too deeply to be stored and read back (Django decodes JSON recursively).

    `limit`: MAX_NESTING, read once by callers that validate many records (settings are a lazy object).
    """
    if limit is None:
        limit = settings.SWITCHBOARD["MAX_NESTING"]
    # Only a record with more brackets than the limit can exceed it: most are never walked.
    if raw.count(b"[") + raw.count(b"{") > limit and nesting_depth(value) > limit:
        return f"arrays and objects nest deeper than {limit} levels"
    return None


def validate_into(
    chunk: Chunk, records: Iterable[RawRecord], now: float, receipt: Receipt | None = None, *, one_pass: bool = True
) -> Chunk:
    """Validate raw records into `chunk`; blank lines are skipped, not rejected.

    `receipt`: an API batch's receive time (and send time), by which records with a send
    time are placed (events/clock.py); without it (imports), timestamps are taken as given.
    A common chat record is decoded and validated in one pass (events/chat_decoder.py); any
    other, or one it does not accept, by orjson and the registry (alone with `one_pass=False`,
    the oracle the one pass is tested against)."""
    limits = settings.SWITCHBOARD
    max_record = limits["MAX_RECORD_BYTES"]
    tolerance = limits["FUTURE_TOLERANCE_SECONDS"]
    skew_tolerance = limits["CLOCK_SKEW_TOLERANCE_SECONDS"]
    nesting = limits["MAX_NESTING"]
    events, reject = chunk.events, chunk.reject
    common_event = chat_decoder.common_event if one_pass and chat_decoder.applies(nesting) else None
    for line, raw, end in records:
        if not chunk.first_line:
            chunk.first_line = line
        chunk.last_line, chunk.end_offset = line, end
        if type(raw) is Broken:
            # Framed with `whole_record_limit()`: an oversize record is judged by MAX_RECORD_BYTES.
            reason = oversize_reason(raw.size, max_record) if raw.oversize else raw.reason
            reject(line, reason, raw.head, whole=False)
            continue
        if not raw or raw.isspace():
            continue
        if len(raw) > max_record:
            reject(line, oversize_reason(len(raw), max_record), raw)
            continue
        if NUL_ESCAPE in raw and _REAL_NUL_ESCAPE.search(raw):
            reject(line, NUL_REASON, raw)
            continue
        if common_event is not None and (found := common_event(raw)) is not None:
            event, record = found
            try:
                check_identifiers(event, CHAT_FIELDS)
                place(event, send_times(record.sentAt, record.receivedAt, receipt), now, tolerance, skew_tolerance)
            except Invalid:
                pass  # the general path below gives the reason
            else:
                event.payload_json = raw.strip()
                events.append((line, event))
                continue
        try:
            value = orjson.loads(raw)
            if reason := too_deep(raw, value, nesting):
                raise Invalid(reason)
            event = normalize(value, now, tolerance, receipt, skew_tolerance)
        except orjson.JSONDecodeError as error:
            reject(line, json_error_reason(error), raw)
        except Invalid as error:
            reject(line, str(error), raw)
        else:
            event.payload_json = raw.strip()  # the record without its line's CR or padding
            events.append((line, event))
    return chunk


def validate_columns(
    chunk: Chunk, records: Sequence[RawRecord] | LineBlock, now: float
) -> tuple[list[list], dict[int, dict]]:
    """`validate_into` for an import's chunk, whose valid records are wanted by column
    (`registry.ROW`, a list each, in line order; `chunk` gets the rejections), with the detail
    rows of their families by row: the same outcome for a fraction of the work.

    The common chat records give their columns without an event (`chat_decoder.common_columns`)
    once the chunk is known to need none of the checks before validation; the others go
    through `validate_into` together, in order. A chunk where a common record breaks an
    identifier rule goes through `validate_into` whole, which words the reason."""
    limits = settings.SWITCHBOARD
    if isinstance(records, LineBlock):
        raws = records.data.split(b"\n")
        raws.pop()  # after the last newline: nothing
        numbered: Iterable[tuple[int, object]] = zip(count(records.line), raws)
        first, last, end = records.line, records.line + records.count - 1, records.end
        plain = max(map(len, raws)) <= limits["MAX_RECORD_BYTES"] and _no_nul_escape(records.data)
    elif records:
        raws = list(map(itemgetter(1), records))
        numbered = zip(map(itemgetter(0), records), raws, strict=True)
        (first, _, _), (last, _, end) = records[0], records[-1]
        plain = _plain(raws, limits["MAX_RECORD_BYTES"])
    else:
        return [[] for _ in ROW], {}
    if not (plain and chat_decoder.applies(limits["MAX_NESTING"])):
        return event_columns(validate_into(chunk, _records(records), now).events)
    columns, others = chat_decoder.common_columns(numbered, now + limits["FUTURE_TOLERANCE_SECONDS"])
    uids, _, _, _, sites, _, actors, *_ = columns
    if not identifiers_clean(uids, sites, actors):
        return event_columns(validate_into(chunk, _records(records), now).events)
    details: dict[int, dict] = {}
    if others:
        # In one pass, each numbered by its place in `others` (as its line: put back after).
        validate_into(chunk, [(k, raws[place], 0) for k, (place, _) in enumerate(others)], now)
        lines = [first + place for place, _ in others] if isinstance(records, LineBlock) else None
        for rejection in chunk.rejections:
            place = others[rejection.line][0]
            rejection.line = lines[rejection.line] if lines else records[place][0]  # type: ignore[index]
        if chunk.events:
            numbers = lines or [records[place][0] for place, _ in others]  # type: ignore[index]
            columns, details = _merged(columns, [at for _, at in others], numbers, chunk.events)
            chunk.events = []
    chunk.first_line, chunk.last_line, chunk.end_offset = first, last, end
    return columns, details


def _records(records: Sequence[RawRecord] | LineBlock) -> Sequence[RawRecord]:
    return records.records() if isinstance(records, LineBlock) else records


def _plain(raws: list[object], max_record: int) -> bool:
    """Whether no record needs a check made before validation: none broken by framing, none
    over MAX_RECORD_BYTES, no NUL escape."""
    return set(map(type, raws)) == {bytes} and max(map(len, raws)) <= max_record and _no_nul_escape(b"\n".join(raws))


def _no_nul_escape(text: bytes) -> bool:
    return b"\\" not in text or NUL_ESCAPE not in text  # a backslash first: found at memchr's pace


def _merged(
    columns: list[list], at: list[int], lines: list[int], events: list[tuple[int, NormalizedEvent]]
) -> tuple[list[list], dict[int, dict]]:
    """The common records' columns with the events of the others (the k-th of which comes
    after `at[k]` rows, from line `lines[k]`) put in their places."""
    merged: list[list] = [[] for _ in columns]
    details: dict[int, dict] = {}
    start = 0
    for k, event in events:
        if event.detail:
            details[at[k] + len(merged[0]) - start] = event.detail
        for into, column, value in zip(merged, columns, event_row(event, lines[k]), strict=True):
            into += column[start : at[k]]
            into.append(value)
        start = at[k]
    for into, column in zip(merged, columns, strict=True):
        into += column[start:]
    return merged, details


def event_columns(events: list[tuple[int, NormalizedEvent]]) -> tuple[list[list], dict[int, dict]]:
    """Events (with their lines) by column, and their detail rows by row."""
    rows = [event_row(event, line) for line, event in events]
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in ROW]
    return columns, {i: event.detail for i, (_, event) in enumerate(events) if event.detail}


def validate_values(values: list[object], now: float, receipt: Receipt | None = None) -> Chunk:
    """Validate already-decoded JSON values (a JSON request body); line = position."""
    chunk = Chunk(first_line=1 if values else 0, last_line=len(values))
    tolerance = settings.SWITCHBOARD["FUTURE_TOLERANCE_SECONDS"]
    skew_tolerance = settings.SWITCHBOARD["CLOCK_SKEW_TOLERANCE_SECONDS"]
    for line, value in enumerate(values, start=1):
        raw = orjson.dumps(value)
        if NUL_ESCAPE in raw and _REAL_NUL_ESCAPE.search(raw):
            chunk.reject(line, NUL_REASON, raw)
            continue
        try:
            if reason := too_deep(raw, value):
                raise Invalid(reason)
            event = normalize(value, now, tolerance, receipt, skew_tolerance)
        except Invalid as error:
            chunk.reject(line, str(error), raw)
        else:
            event.payload_json = raw
            chunk.events.append((line, event))
    return chunk
