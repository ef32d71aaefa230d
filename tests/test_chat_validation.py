"""Chat family validation (SPEC §2.1) and the rules for every family (SPEC §2.4).

Every rejection rule is checked with its exact reason (the text users see), next
to the near miss the spec accepts. Records go through `validate_into`, the
function both the importer and the workers call, so line-level rules (JSON,
UTF-8, BOM, blank lines, size, nesting, NUL, future) are the real ones.
"""

from __future__ import annotations

import io
import time

import orjson
import pytest
from django.conf import settings
from django.db import transaction

from events.chat import epoch_seconds
from events.models import Event, Site
from events.registry import Invalid, NormalizedEvent
from ingest.framing import BOM, detect_framing, iter_records
from ingest.imports.sequential import import_file
from ingest.models import ImportJob, RawBatch, Rejection
from ingest.records import NUL_REASON, Chunk, RejectedRecord, validate_into, validate_values
from ingest.store import StoreResult, store_chunk
from reports.site_summary import summary_rows

NOW = 1_700_000_000.0  # the server clock of the pure tests
NO_FAMILY = (
    "matches no event family: expected chat ('type' message or status), "
    "xmpp ('stanza' and 'room_id') or interaction ('category' and 'name')"
)
NOT_UTF8 = "not valid UTF-8"
MID_BOM = "not valid JSON: a byte order mark (BOM) is accepted only at the start of a file"
TOO_DEEP = "arrays and objects nest deeper than 100 levels"
# A base line with known byte positions, for the reasons that quote a column.
MSG = b'{"id": "c-1", "type": "message", "from": "visitor5", "site_id": "123", "timestamp": 1429026445'
DATA = b', "data": {"message": "hi"}}'


def chat(kind: str = "message", **fields: object) -> dict:
    """A valid chat record of SPEC §2.1 with `fields` replaced (`...` removes a field)."""
    record = {
        "id": "c-1",
        "type": kind,
        "from": "visitor5" if kind == "message" else "operator1",
        "site_id": "123",
        "data": {"message": "Hi, how's it going"} if kind == "message" else {"status": "online"},
        "timestamp": 1429026445,
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


def status(**fields: object) -> dict:
    return chat("status", **fields)


def line_of(record: dict | bytes) -> bytes:
    return record if isinstance(record, bytes) else orjson.dumps(record)


def validate(record: dict | bytes, now: float = NOW) -> Chunk:
    raw = line_of(record)
    return validate_into(Chunk(), [(1, raw, len(raw))], now)


def rejection_reason(record: dict | bytes, now: float = NOW) -> str:
    chunk = validate(record, now)
    assert chunk.events == []
    [rejected] = chunk.rejections
    assert rejected.line == 1
    return rejected.reason


def accepted(record: dict | bytes, now: float = NOW) -> NormalizedEvent:
    chunk = validate(record, now)
    assert chunk.rejections == []
    [(line, event)] = chunk.events
    assert line == 1
    return event


def summary(event: NormalizedEvent) -> tuple:
    return (event.family, event.kind, event.uid, event.site, event.actor, event.ts, event.online)


# -- §2.1 field rules: each rejection with its exact reason --------------------

FIELD_REJECTIONS = [
    # id: a non-empty string
    pytest.param(chat(id=...), "'id' is missing", id="id-missing"),
    pytest.param(chat(id=None), "'id' must be a string, got null", id="id-null"),
    pytest.param(chat(id=45094), "'id' must be a string, got a number", id="id-number"),
    pytest.param(chat(id=1.5), "'id' must be a string, got a number", id="id-float"),
    pytest.param(chat(id=True), "'id' must be a string, got a boolean", id="id-boolean"),
    pytest.param(chat(id=["c-1"]), "'id' must be a string, got an array", id="id-array"),
    pytest.param(chat(id={"uuid": "c-1"}), "'id' must be a string, got an object", id="id-object"),
    pytest.param(chat(id=""), "'id' must not be empty", id="id-empty"),
    pytest.param(chat(id="i" * 256), "'id' is longer than 255 characters", id="id-too-long"),
    # from: a non-empty string
    pytest.param(chat(**{"from": ...}), "'from' must be a string, got null", id="from-missing"),
    pytest.param(chat(**{"from": None}), "'from' must be a string, got null", id="from-null"),
    pytest.param(chat(**{"from": 5}), "'from' must be a string, got a number", id="from-number"),
    pytest.param(chat(**{"from": False}), "'from' must be a string, got a boolean", id="from-boolean"),
    pytest.param(chat(**{"from": ["v"]}), "'from' must be a string, got an array", id="from-array"),
    pytest.param(chat(**{"from": {"nick": "v"}}), "'from' must be a string, got an object", id="from-object"),
    pytest.param(chat(**{"from": ""}), "'from' must not be empty", id="from-empty"),
    pytest.param(chat(**{"from": "f" * 256}), "'from' is longer than 255 characters", id="from-too-long"),
    # site_id: a non-empty string or an integer; booleans are not integers
    pytest.param(chat(site_id=...), "'site_id' must be a string or an integer, got null", id="site-missing"),
    pytest.param(chat(site_id=None), "'site_id' must be a string or an integer, got null", id="site-null"),
    pytest.param(chat(site_id=True), "'site_id' must be a string or an integer, got a boolean", id="site-true"),
    pytest.param(chat(site_id=False), "'site_id' must be a string or an integer, got a boolean", id="site-false"),
    pytest.param(chat(site_id=4.2), "'site_id' must be a string or an integer, got a number", id="site-float"),
    # JSON 42.0 is a float: not the integer the spec names.
    pytest.param(chat(site_id=42.0), "'site_id' must be a string or an integer, got a number", id="site-42.0"),
    pytest.param(chat(site_id=["123"]), "'site_id' must be a string or an integer, got an array", id="site-array"),
    pytest.param(chat(site_id={"id": 1}), "'site_id' must be a string or an integer, got an object", id="site-object"),
    pytest.param(chat(site_id=""), "'site_id' must not be empty", id="site-empty"),
    pytest.param(chat(site_id="s" * 256), "'site_id' is longer than 255 characters", id="site-too-long"),
    # timestamp: a JSON number of epoch seconds, >= 0; booleans are not numbers
    pytest.param(
        chat(timestamp=...), "'timestamp' must be a number of epoch seconds, got null", id="timestamp-missing"
    ),
    pytest.param(chat(timestamp=None), "'timestamp' must be a number of epoch seconds, got null", id="timestamp-null"),
    pytest.param(
        chat(timestamp="1429026445"),
        "'timestamp' must be a number of epoch seconds, got a string",
        id="timestamp-numeric-string",
    ),
    pytest.param(
        chat(timestamp="2015-04-14T15:47:25Z"),
        "'timestamp' must be a number of epoch seconds, got a string",
        id="timestamp-iso-string",
    ),
    pytest.param(
        chat(timestamp=True), "'timestamp' must be a number of epoch seconds, got a boolean", id="timestamp-true"
    ),
    pytest.param(
        chat(timestamp=False), "'timestamp' must be a number of epoch seconds, got a boolean", id="timestamp-false"
    ),
    pytest.param(
        chat(timestamp=[1429026445]),
        "'timestamp' must be a number of epoch seconds, got an array",
        id="timestamp-array",
    ),
    pytest.param(
        chat(timestamp={"$date": 1}), "'timestamp' must be a number of epoch seconds, got an object", id="timestamp-obj"
    ),
    pytest.param(chat(timestamp=-1), "'timestamp' must not be negative", id="timestamp-negative-int"),
    pytest.param(chat(timestamp=-0.001), "'timestamp' must not be negative", id="timestamp-negative-float"),
    pytest.param(chat(timestamp=-1e-300), "'timestamp' must not be negative", id="timestamp-tiny-negative"),
    # data: an object
    pytest.param(chat(data=...), "'data' must be an object, got null", id="data-missing"),
    pytest.param(chat(data=None), "'data' must be an object, got null", id="data-null"),
    pytest.param(chat(data="hi"), "'data' must be an object, got a string", id="data-string"),
    pytest.param(chat(data=["hi"]), "'data' must be an object, got an array", id="data-array"),
    pytest.param(chat(data=1), "'data' must be an object, got a number", id="data-number"),
    pytest.param(chat(data=True), "'data' must be an object, got a boolean", id="data-boolean"),
    # message: data.message is a string
    pytest.param(chat(data={}), "'data.message' must be a string, got null", id="message-missing"),
    pytest.param(chat(data={"message": None}), "'data.message' must be a string, got null", id="message-null"),
    pytest.param(chat(data={"message": 5}), "'data.message' must be a string, got a number", id="message-number"),
    pytest.param(chat(data={"message": True}), "'data.message' must be a string, got a boolean", id="message-bool"),
    pytest.param(chat(data={"message": ["hi"]}), "'data.message' must be a string, got an array", id="message-array"),
    pytest.param(
        chat(data={"message": {"text": "hi"}}), "'data.message' must be a string, got an object", id="message-object"
    ),
    # A message carrying a status is still a message: it needs its text.
    pytest.param(
        chat(data={"status": "online"}), "'data.message' must be a string, got null", id="message-with-status-only"
    ),
    # status: data.status is exactly "online" or "offline"
    pytest.param(
        status(data={"status": "away"}), "'data.status' must be \"online\" or \"offline\", got 'away'", id="away"
    ),
    pytest.param(
        status(data={"status": "Online"}), "'data.status' must be \"online\" or \"offline\", got 'Online'", id="Online"
    ),
    pytest.param(
        status(data={"status": "OFFLINE"}), "'data.status' must be \"online\" or \"offline\", got 'OFFLINE'", id="OFF"
    ),
    pytest.param(
        status(data={"status": " online"}), "'data.status' must be \"online\" or \"offline\", got ' online'", id="sp"
    ),
    pytest.param(
        status(data={"status": "offline\n"}),
        "'data.status' must be \"online\" or \"offline\", got 'offline\\n'",
        id="newline",
    ),
    pytest.param(status(data={"status": ""}), "'data.status' must be \"online\" or \"offline\", got ''", id="empty"),
    pytest.param(status(data={}), '\'data.status\' must be "online" or "offline", got null', id="status-missing"),
    pytest.param(
        status(data={"status": None}), '\'data.status\' must be "online" or "offline", got null', id="status-null"
    ),
    pytest.param(
        status(data={"status": True}), '\'data.status\' must be "online" or "offline", got a boolean', id="status-true"
    ),
    pytest.param(
        status(data={"status": 1}), '\'data.status\' must be "online" or "offline", got a number', id="status-1"
    ),
    pytest.param(
        status(data={"status": ["online"]}),
        '\'data.status\' must be "online" or "offline", got an array',
        id="status-array",
    ),
    pytest.param(
        status(data={"message": "online"}), '\'data.status\' must be "online" or "offline", got null', id="status-msg"
    ),
    pytest.param(status(data="online"), "'data' must be an object, got a string", id="status-data-string"),
    # type: exactly "message" or "status", or the record is of no family
    pytest.param(chat(type=...), NO_FAMILY, id="type-missing"),
    pytest.param(chat(type=None), NO_FAMILY, id="type-null"),
    pytest.param(chat(type=""), NO_FAMILY, id="type-empty"),
    pytest.param(chat(type="typing"), NO_FAMILY, id="type-typing"),
    pytest.param(chat(type="Message"), NO_FAMILY, id="type-Message"),
    pytest.param(chat(type="STATUS"), NO_FAMILY, id="type-STATUS"),
    pytest.param(chat(type="messages"), NO_FAMILY, id="type-messages"),
    pytest.param(chat(type=" message"), NO_FAMILY, id="type-space"),
    pytest.param(chat(type=1), NO_FAMILY, id="type-number"),
    pytest.param(chat(type=True), NO_FAMILY, id="type-boolean"),
    pytest.param(chat(type=["message"]), NO_FAMILY, id="type-array"),
    pytest.param(chat(type={"message": 1}), NO_FAMILY, id="type-object"),
    # The first failing rule names the reason: id, from, site_id, timestamp, data, payload.
    pytest.param({"type": "message"}, "'id' is missing", id="only-type"),
    pytest.param(chat(**{"from": "", "site_id": "", "timestamp": -1}), "'from' must not be empty", id="first-fault"),
    pytest.param(
        chat(site_id=True, timestamp="x", data=None), "'site_id' must be a string or an integer, got a boolean"
    ),
    pytest.param(chat(timestamp="x", data=None), "'timestamp' must be a number of epoch seconds, got a string"),
    # A chat-shaped record is judged by the chat rules even if it also has other families' fields.
    pytest.param(
        chat(**{"from": ..., "stanza": "<message/>", "room_id": "r", "category": "c", "name": "n"}),
        "'from' must be a string, got null",
        id="chat-before-other-families",
    ),
]


@pytest.mark.parametrize(("record", "reason"), FIELD_REJECTIONS)
def test_a_record_breaking_a_chat_rule_is_rejected_with_its_reason(record, reason):
    assert rejection_reason(record) == reason


# -- §2.1 field rules: the near misses the spec accepts ------------------------

FIELD_ACCEPTANCES = [
    pytest.param(chat(), ("chat", "message", "c-1", "123", "visitor5", 1429026445.0, None), id="message"),
    pytest.param(status(), ("chat", "status", "c-1", "123", "operator1", 1429026445.0, True), id="status-online"),
    pytest.param(
        status(data={"status": "offline"}),
        ("chat", "status", "c-1", "123", "operator1", 1429026445.0, False),
        id="status-offline",
    ),
    # id: any non-empty string, up to the 255 characters the store holds
    pytest.param(
        chat(id="i" * 255), ("chat", "message", "i" * 255, "123", "visitor5", 1429026445.0, None), id="id-255"
    ),
    pytest.param(chat(id=" "), ("chat", "message", " ", "123", "visitor5", 1429026445.0, None), id="id-blank-string"),
    pytest.param(chat(id="0"), ("chat", "message", "0", "123", "visitor5", 1429026445.0, None), id="id-zero-string"),
    pytest.param(chat(id="идé-😀"), ("chat", "message", "идé-😀", "123", "visitor5", 1429026445.0, None), id="id-utf8"),
    # from
    pytest.param(
        chat(**{"from": "f" * 255}), ("chat", "message", "c-1", "123", "f" * 255, 1429026445.0, None), id="from-255"
    ),
    pytest.param(chat(**{"from": " "}), ("chat", "message", "c-1", "123", " ", 1429026445.0, None), id="from-blank"),
    pytest.param(
        chat(**{"from": "visiteur-é"}), ("chat", "message", "c-1", "123", "visiteur-é", 1429026445.0, None), id="from-u"
    ),
    # site_id: an integer 42 is the site "42"
    pytest.param(chat(site_id=42), ("chat", "message", "c-1", "42", "visitor5", 1429026445.0, None), id="site-int"),
    pytest.param(chat(site_id="42"), ("chat", "message", "c-1", "42", "visitor5", 1429026445.0, None), id="site-str"),
    pytest.param(chat(site_id=0), ("chat", "message", "c-1", "0", "visitor5", 1429026445.0, None), id="site-zero"),
    pytest.param(chat(site_id=-5), ("chat", "message", "c-1", "-5", "visitor5", 1429026445.0, None), id="site-neg"),
    pytest.param(
        chat(site_id=2**64 - 1),
        ("chat", "message", "c-1", "18446744073709551615", "visitor5", 1429026445.0, None),
        id="site-u64-max",
    ),
    pytest.param(
        chat(site_id="s" * 255), ("chat", "message", "c-1", "s" * 255, "visitor5", 1429026445.0, None), id="site-255"
    ),
    pytest.param(chat(site_id=" "), ("chat", "message", "c-1", " ", "visitor5", 1429026445.0, None), id="site-blank"),
    pytest.param(
        chat(site_id="sité-ü"), ("chat", "message", "c-1", "sité-ü", "visitor5", 1429026445.0, None), id="site-utf8"
    ),
    # timestamp: int or float epoch seconds, >= 0, up to 5 minutes ahead of the clock
    pytest.param(
        chat(timestamp=1429026445.25), ("chat", "message", "c-1", "123", "visitor5", 1429026445.25, None), id="ts-float"
    ),
    pytest.param(chat(timestamp=0), ("chat", "message", "c-1", "123", "visitor5", 0.0, None), id="ts-zero"),
    pytest.param(chat(timestamp=0.0), ("chat", "message", "c-1", "123", "visitor5", 0.0, None), id="ts-zero-float"),
    pytest.param(chat(timestamp=-0.0), ("chat", "message", "c-1", "123", "visitor5", 0.0, None), id="ts-minus-zero"),
    pytest.param(chat(timestamp=5e-324), ("chat", "message", "c-1", "123", "visitor5", 5e-324, None), id="ts-tiny"),
    pytest.param(
        MSG.replace(b"1429026445", b"1.429026445e9") + DATA,
        ("chat", "message", "c-1", "123", "visitor5", 1429026445.0, None),
        id="ts-exponent",
    ),
    pytest.param(
        MSG.replace(b"1429026445", b"14290264450E-1") + DATA,
        ("chat", "message", "c-1", "123", "visitor5", 1429026445.0, None),
        id="ts-negative-exponent",
    ),
    pytest.param(
        chat(timestamp=NOW + 300), ("chat", "message", "c-1", "123", "visitor5", NOW + 300, None), id="ts-5-min-ahead"
    ),
    pytest.param(
        chat(timestamp=int(NOW) + 300),
        ("chat", "message", "c-1", "123", "visitor5", NOW + 300, None),
        id="ts-5-min-ahead-int",
    ),
    # data: extra keys are ignored; a message's text may be empty
    pytest.param(
        chat(data={"message": ""}), ("chat", "message", "c-1", "123", "visitor5", 1429026445.0, None), id="msg-empty"
    ),
    pytest.param(
        chat(data={"message": "hi", "status": "away", "x": [1]}),
        ("chat", "message", "c-1", "123", "visitor5", 1429026445.0, None),
        id="message-ignores-status",
    ),
    pytest.param(
        status(data={"status": "offline", "message": 5}),
        ("chat", "status", "c-1", "123", "operator1", 1429026445.0, False),
        id="status-ignores-message",
    ),
    # unknown extra fields, even other families' fields, are kept and ignored
    pytest.param(
        chat(session_id="s-1", category="c", name="n", stanza=None, room_id="r", extra={"deep": [1, {"a": None}]}),
        ("chat", "message", "c-1", "123", "visitor5", 1429026445.0, None),
        id="extra-fields",
    ),
]


@pytest.mark.parametrize(("record", "expected"), FIELD_ACCEPTANCES)
def test_the_near_miss_of_each_chat_rule_is_accepted(record, expected):
    event = accepted(record)
    assert summary(event) == expected
    assert type(event.ts) is float
    assert (event.session, event.category, event.detail) == ("", "", None)
    # The payload is the line as received, extra fields and all.
    assert event.payload_json == line_of(record)


def test_an_integer_site_and_its_string_are_the_same_site():
    assert accepted(chat(site_id=42)).site == accepted(chat(site_id="42")).site == "42"
    # Only the integer's decimal text is its code: "042" is another site.
    assert accepted(chat(site_id="042")).site == "042"


def test_a_repeated_key_takes_its_last_value():
    # The spec is silent; orjson (like JavaScript's JSON.parse) keeps the last value.
    event = accepted(
        b'{"id": "first", "type": "typing", "id": "c-1", "type": "status"' + MSG[31:] + b', "data": {}, '
        b'"data": {"status": "offline"}}'
    )
    assert summary(event) == ("chat", "status", "c-1", "123", "visitor5", 1429026445.0, False)
    assert rejection_reason(MSG + b', "id": "", "data": {"message": "hi"}}') == "'id' must not be empty"


# -- future timestamps (§2.4) --------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (NOW + 300.001, "timestamp 1700000300.001 is more than 300s in the future"),
        (NOW + 301, "timestamp 1700000301.000 is more than 300s in the future"),
        (int(NOW) + 86400, "timestamp 1700086400.000 is more than 300s in the future"),
        (2**63, "timestamp 9223372036854775808.000 is more than 300s in the future"),
        (1.7976931348623157e308, f"timestamp {1.7976931348623157e308:.3f} is more than 300s in the future"),
    ],
)
def test_a_timestamp_more_than_five_minutes_ahead_is_rejected(timestamp, reason):
    assert rejection_reason(chat(timestamp=timestamp)) == reason
    assert rejection_reason(status(timestamp=timestamp)) == reason


def test_future_is_judged_against_the_clock_given():
    record = chat(timestamp=NOW + 3600)
    assert rejection_reason(record) == "timestamp 1700003600.000 is more than 300s in the future"
    assert accepted(record, now=NOW + 3300).ts == NOW + 3600


def test_an_integer_beyond_64_bits_is_parsed_as_a_number():
    line = MSG.replace(b"1429026445", b"100000000000000000000") + DATA
    assert rejection_reason(line) == "timestamp 100000000000000000000.000 is more than 300s in the future"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("inf"), "'timestamp' must be finite"),
        (float("-inf"), "'timestamp' must not be negative"),
        # JSON has no NaN (orjson refuses it), but a decoded value could be one.
        (float("nan"), "'timestamp' must not be negative"),
    ],
)
def test_timestamps_json_cannot_spell_are_refused_too(value, reason):
    with pytest.raises(Invalid) as error:
        epoch_seconds(value)
    assert str(error.value) == reason


# -- line-level rules: JSON, objects, UTF-8, BOM, NUL, nesting, size ---------------

LINE_REJECTIONS = [
    # malformed JSON
    pytest.param(MSG, "not valid JSON: unexpected end of data: line 1 column 95 (char 94)", id="truncated"),
    pytest.param(b"{", "not valid JSON: unexpected end of data: line 1 column 2 (char 1)", id="open-brace"),
    pytest.param(
        b"}", "not valid JSON: unexpected character, expected a JSON value: line 1 column 1 (char 0)", id="close-brace"
    ),
    pytest.param(
        MSG + b', "data": {"message": "hi"},}',
        "not valid JSON: trailing comma is not allowed: line 1 column 122 (char 121)",
        id="trailing-comma",
    ),
    pytest.param(
        MSG.replace(b'"', b"'") + DATA,
        "not valid JSON: unexpected character, expected a string key: line 1 column 2 (char 1)",
        id="single-quotes",
    ),
    pytest.param(
        MSG + b', data: {"message": "hi"}}',
        "not valid JSON: unexpected character, expected a string key: line 1 column 97 (char 96)",
        id="unquoted-key",
    ),
    pytest.param(
        MSG + DATA + b' {"id": "c-2"}',
        "not valid JSON: unexpected content after document: line 1 column 124 (char 123)",
        id="two-objects-on-a-line",
    ),
    pytest.param(
        MSG + DATA + b" // note",
        "not valid JSON: unexpected content after document: line 1 column 124 (char 123)",
        id="comment",
    ),
    pytest.param(
        MSG + DATA + b"\x00",
        "not valid JSON: unexpected content after document: line 1 column 123 (char 122)",
        id="nul-byte-after",
    ),
    pytest.param(
        MSG.replace(b"1429026445", b"NaN") + DATA,
        "not valid JSON: unexpected character, expected a JSON value: line 1 column 85 (char 84)",
        id="NaN",
    ),
    pytest.param(
        MSG.replace(b"1429026445", b"Infinity") + DATA,
        "not valid JSON: unexpected character, expected a JSON value: line 1 column 85 (char 84)",
        id="Infinity",
    ),
    pytest.param(
        MSG.replace(b"1429026445", b"1e400") + DATA,
        "not valid JSON: number is infinity when parsed as double: line 1 column 85 (char 84)",
        id="overflowing-number",
    ),
    pytest.param(
        MSG.replace(b"1429026445", b"01429026445") + DATA,
        "not valid JSON: number with leading zero is not allowed: line 1 column 85 (char 84)",
        id="leading-zero",
    ),
    pytest.param(
        MSG.replace(b"1429026445", b"0x10") + DATA,
        "not valid JSON: unexpected character, expected ',' or '}': line 1 column 86 (char 85)",
        id="hex-number",
    ),
    pytest.param(
        MSG + b', "data": {"message": "x\x00y"}}',
        "not valid JSON: unexpected control character in string: line 1 column 119 (char 118)",
        id="raw-nul-in-string",
    ),
    pytest.param(
        MSG + b', "data": {"message": "a\tb"}}',
        "not valid JSON: unexpected control character in string: line 1 column 119 (char 118)",
        id="raw-tab-in-string",
    ),
    pytest.param(
        MSG + b', "data": {"message": "\\ud800"}}',
        "not valid JSON: no low surrogate in string: line 1 column 118 (char 117)",
        id="escaped-lone-surrogate",
    ),
    pytest.param(
        b"\x0c" + MSG + DATA,
        "not valid JSON: unexpected character, expected a JSON value: line 1 column 1 (char 0)",
        id="form-feed-is-not-json-space",
    ),
    # not an object
    pytest.param(b"[]", "not a JSON object but an array", id="empty-array"),
    pytest.param(b"[" + MSG + DATA + b"]", "not a JSON object but an array", id="array-of-a-record"),
    pytest.param(b'"just a string"', "not a JSON object but a string", id="string"),
    pytest.param(b'""', "not a JSON object but a string", id="empty-string"),
    pytest.param(b"42", "not a JSON object but a number", id="integer"),
    pytest.param(b"-1.5e3", "not a JSON object but a number", id="float"),
    pytest.param(b"null", "not a JSON object but null", id="null"),
    pytest.param(b"true", "not a JSON object but a boolean", id="true"),
    pytest.param(b"false", "not a JSON object but a boolean", id="false"),
    pytest.param(b"{}", NO_FAMILY, id="empty-object"),
    # bytes that are not UTF-8
    pytest.param(b"\xff\xfe not utf-8", NOT_UTF8, id="utf16-bom-bytes"),
    pytest.param(MSG.replace(b"visitor5", b"caf\xe9") + DATA, NOT_UTF8, id="latin-1"),
    pytest.param(MSG.replace(b"visitor5", b"\xc3") + DATA, NOT_UTF8, id="truncated-sequence"),
    pytest.param(MSG.replace(b"visitor5", b"\xc0\xaf") + DATA, NOT_UTF8, id="overlong"),
    pytest.param(MSG.replace(b"visitor5", b"\xed\xa0\x80") + DATA, NOT_UTF8, id="encoded-surrogate"),
    pytest.param(MSG.replace(b"visitor5", b"\xf4\x90\x80\x80") + DATA, NOT_UTF8, id="beyond-U+10FFFF"),
    pytest.param(MSG.replace(b"visitor5", b"\x80") + DATA, NOT_UTF8, id="lone-continuation"),
    # A BOM is accepted at the start of a file only (the framing drops it there);
    # anywhere else it stays in the line, and the reason says so.
    pytest.param(BOM + MSG + DATA, MID_BOM, id="bom-not-at-file-start"),
    # NUL cannot be stored by PostgreSQL: rejected wherever it is escaped in the record.
    pytest.param(MSG + b', "data": {"message": "a\\u0000"}}', NUL_REASON, id="nul-in-message"),
    pytest.param(MSG.replace(b"visitor5", b"v\\u0000") + DATA, NUL_REASON, id="nul-in-from"),
    pytest.param(MSG.replace(b'"site_id"', b'"\\u0000"') + DATA, NUL_REASON, id="nul-in-a-key"),
    pytest.param(MSG.replace(b"visitor5", b"\\\\\\u0000") + DATA, NUL_REASON, id="nul-after-escaped-backslash"),
    # deep nesting: beyond orjson's own limit (1024) the parse fails; beyond MAX_NESTING
    # (100) the record could not be read back by Django's recursive JSON decoder.
    pytest.param(
        MSG + b', "data": {"message": "hi", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}}",
        "not valid JSON: depth limit exceeded: line 1 column 1151 (char 1150)",
        id="nested-2000-deep",
    ),
    pytest.param(
        MSG + b', "data": {"message": "hi", "x": ' + b"[" * 1022 + b"]" * 1022 + b"}}", TOO_DEEP, id="nested-1024-deep"
    ),
    pytest.param(
        MSG + b', "data": {"message": "hi", "x": ' + b"[" * 99 + b"]" * 99 + b"}}", TOO_DEEP, id="nested-101-deep"
    ),
    pytest.param(b"[" * 150 + b"]" * 150, TOO_DEEP, id="nested-array-not-an-object"),
]


@pytest.mark.parametrize(("line", "reason"), LINE_REJECTIONS)
def test_a_bad_line_is_rejected_with_its_reason(line, reason):
    assert rejection_reason(line) == reason


LINE_ACCEPTANCES = [
    pytest.param(MSG + DATA, "hi", id="plain"),
    pytest.param(MSG + DATA + b"\r", "hi", id="crlf"),
    pytest.param(b" \t" + MSG + DATA + b" \t \r", "hi", id="json-whitespace-around"),
    pytest.param(MSG.replace(b", ", b",\t ").replace(b": ", b" :  ") + DATA, "hi", id="json-whitespace-inside"),
    pytest.param(MSG + b', "data": {"message": "a\\\\u0000"}}', "a\\u0000", id="escaped-backslash-then-u0000"),
    pytest.param(MSG + b', "data": {"message": "a\\u0001\\t\\n"}}', "a\x01\t\n", id="escaped-control-chars"),
    pytest.param(MSG + b', "data": {"message": "\\ud83d\\ude00"}}', "😀", id="escaped-surrogate-pair"),
    pytest.param(
        MSG + b', "data": {"message": "h\xc3\xa9llo \xe4\xbd\xa0 \xf0\x9f\x99\x82"}}', "héllo 你 🙂", id="utf8"
    ),
    pytest.param(MSG + b', "data": {"message": "\\ufeff"}}', "\ufeff", id="escaped-bom-inside-a-string"),
    pytest.param(MSG + b', "data": {"message": "\xef\xbb\xbf"}}', "\ufeff", id="bom-bytes-inside-a-string"),
    # 1 (record) + 1 (data) + 98 = 100 levels: the deepest kept (MAX_NESTING).
    pytest.param(
        MSG + b', "data": {"message": "hi", "x": ' + b"[" * 98 + b"]" * 98 + b"}}", "hi", id="nested-100-deep"
    ),
    # Many brackets, little depth: counted, walked, accepted.
    pytest.param(MSG + b', "data": {"message": "hi", "x": [' + b"[]," * 200 + b"[]]}}", "hi", id="wide-not-deep"),
]


@pytest.mark.parametrize(("line", "message"), LINE_ACCEPTANCES)
def test_the_near_miss_of_each_line_rule_is_accepted(line, message):
    event = accepted(line)
    assert (event.uid, event.site, event.ts, event.payload["data"]["message"]) == (
        "c-1",
        "123",
        1429026445.0,
        message,
    )
    assert event.payload_json == line.strip()  # the record as received, without its line's CR or padding


@pytest.mark.parametrize("line", [b"", b" ", b"\t", b"\r", b" \t \r", b"\x0b\x0c"])
def test_blank_lines_are_skipped_not_rejected(line):
    chunk = validate_into(Chunk(), [(7, line, 10)], NOW)
    assert (chunk.events, chunk.rejections) == ([], [])
    # A skipped line still moves the chunk's range, so a checkpoint passes it.
    assert (chunk.first_line, chunk.last_line, chunk.end_offset, chunk.record_count) == (7, 7, 10, 0)


def padded(size: int) -> bytes:
    """A valid chat line of exactly `size` bytes."""
    head = MSG + b', "data": {"message": "'
    line = head + b"x" * (size - len(head) - 3) + b'"}}'
    assert len(line) == size
    return line


def test_a_record_over_the_size_limit_is_rejected_and_one_at_the_limit_accepted():
    limit = settings.SWITCHBOARD["MAX_RECORD_BYTES"]
    assert len(accepted(padded(limit)).payload["data"]["message"]) == limit - len(MSG) - 26
    reason = rejection_reason(padded(limit + 1))
    assert reason == f"record is {limit + 1} bytes, over the limit of {limit}"


def test_the_size_limit_is_the_configured_one(settings):
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_RECORD_BYTES": 200}
    assert accepted(padded(200)).uid == "c-1"
    assert rejection_reason(padded(201)) == "record is 201 bytes, over the limit of 200"


def test_a_rejection_keeps_the_whole_record_within_the_size_limit_else_its_readable_head():
    limit = settings.SWITCHBOARD["MAX_REJECTED_RAW_CHARS"]
    max_record = settings.SWITCHBOARD["MAX_RECORD_BYTES"]
    bad_utf8 = b'{"id": "r", "from": "\xff\xfe"}'
    long_bad = b'{"id": "r", "type": "typing", "data": "' + "é".encode() * (limit * 3) + b'"}'
    max_kept = settings.SWITCHBOARD["MAX_REJECTED_RECORD_BYTES"]
    oversize = b'{"id": "r", "type": "typing", "data": "' + b"x" * max_record + b'"}\r'
    too_long = f"record is {len(oversize)} bytes, over the limit of {max_record}"
    huge = b'{"id": "r", "type": "typing", "data": "' + b"x" * max_kept + b'"}'
    too_huge = f"record is {len(huge)} bytes, over the limit of {max_record}"
    records = [(1, bad_utf8, 0), (2, long_bad, 0), (3, oversize, 0), (4, huge, 0)]
    chunk = validate_into(Chunk(), records, NOW)
    kept = [(r.line, r.reason, r.raw, r.complete) for r in chunk.rejections]
    # Bytes no text can hold, and a record over MAX_REJECTED_RECORD_BYTES, are kept in part; the
    # rest whole, for replays (one over MAX_RECORD_BYTES too, for a replay once it is raised).
    expected = [
        (1, NOT_UTF8, '{"id": "r", "from": "\\xff\\xfe"}', False),
        (2, NO_FAMILY, long_bad.decode(), True),
        (3, too_long, oversize.decode(), True),
        (4, too_huge, huge.decode()[:limit], False),
    ]
    assert kept == expected


# -- the shared file with every rejection kind ---------------------------------


def test_every_rejection_of_edge_jsonl_has_its_line_and_reason(sample_data):
    with (sample_data / "chat" / "edge.jsonl").open("rb") as stream:
        chunk = validate_into(Chunk(), iter_records(stream, "ndjson"), time.time())
    assert [(r.line, r.reason) for r in chunk.rejections] == [
        (21, "not valid JSON: unexpected end of data: line 1 column 78 (char 77)"),
        (22, NOT_UTF8),
        (23, "not a JSON object but a string"),
        (24, NO_FAMILY),
        (25, "'data.status' must be \"online\" or \"offline\", got 'away'"),
        (26, "'timestamp' must not be negative"),
        (27, "'timestamp' must be a number of epoch seconds, got a string"),
        (28, "'from' must not be empty"),
        (29, "'site_id' must not be empty"),
        (30, "'data.message' must be a string, got null"),
        (31, "'id' is missing"),
        (32, "'site_id' must be a string or an integer, got a boolean"),
        (33, "'timestamp' must be a number of epoch seconds, got a string"),
    ]
    # Lines 19-20 are blank; 14-15 resend a-6 and a-2 (duplicates are the store's business).
    assert [line for line, _ in chunk.events] == [*range(1, 19), 34]
    assert (chunk.first_line, chunk.last_line) == (1, 34)


def test_decoded_values_get_the_same_reasons_as_lines():
    """The JSON-body path (`validate_values`) applies the same rules with the same words."""
    values = [chat(), chat(site_id=True), status(data={"status": "away"}), [chat()], chat(timestamp=NOW + 301)]
    chunk = validate_values(values, NOW)
    lines = validate_into(Chunk(), [(i, orjson.dumps(v), 0) for i, v in enumerate(values, start=1)], NOW)
    assert (
        [(r.line, r.reason) for r in chunk.rejections]
        == [(r.line, r.reason) for r in lines.rejections]
        == [
            (2, "'site_id' must be a string or an integer, got a boolean"),
            (3, "'data.status' must be \"online\" or \"offline\", got 'away'"),
            (4, "not a JSON object but an array"),
            (5, "timestamp 1700000301.000 is more than 300s in the future"),
        ]
    )
    assert [line for line, _ in chunk.events] == [line for line, _ in lines.events] == [1]


# -- identity and duplicates (§2.4), through the store ---------------------------


def store_lines(lines: list[bytes | dict]) -> StoreResult:
    """The worker path for one batch: validate, then store in one transaction."""
    raws = [line_of(line) for line in lines]
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    with transaction.atomic():
        return store_chunk(batch, validate_into(Chunk(), [(i, r, 0) for i, r in enumerate(raws, 1)], time.time()))


def counts(result: StoreResult) -> tuple[int, int, int]:
    return result.accepted, result.duplicates, result.rejected


def stored() -> list[tuple]:
    return list(Event.objects.order_by("uid").values_list("uid", "kind", "site_id", "actor", "ts", "line"))


def classic() -> list[str]:
    return [row.classic() for row in summary_rows()]


@pytest.mark.django_db
def test_the_same_id_twice_in_a_batch_is_one_event_and_a_duplicate():
    first = chat(id="m-1", timestamp=10, data={"message": "first"})
    reformatted = b'{ "data" : {"message": "first"}, "timestamp": 10.0, "site_id": "123",\t"from": "visitor5",'
    reformatted += b' "type": "message", "id": "m-1" }\r'
    other_content = status(id="m-1", timestamp=5)  # same identity, even as another kind
    assert counts(store_lines([first, reformatted, other_content])) == (1, 2, 0)
    assert stored() == [("m-1", "message", "123", "visitor5", 10.0, 1)]  # the first of the batch wins
    assert Event.objects.get().payload["data"]["message"] == "first"
    assert classic() == ["123,messages=0,emails=1,operators=0,visitors=1"]


@pytest.mark.django_db
def test_the_same_id_in_a_later_batch_is_a_duplicate_whatever_its_content():
    assert counts(store_lines([chat(id="m-1", timestamp=10)])) == (1, 0, 0)
    assert counts(store_lines([chat(id="m-1", timestamp=10)])) == (0, 1, 0)  # an identical resend
    assert counts(store_lines([chat(id="m-1", timestamp=99, site_id=7, **{"from": "x"})])) == (0, 1, 0)
    assert stored() == [("m-1", "message", "123", "visitor5", 10.0, 1)]
    assert classic() == ["123,messages=0,emails=1,operators=0,visitors=1"]


@pytest.mark.django_db
def test_a_rejected_record_never_claims_its_id():
    invalid = chat(id="d-1", site_id="D", timestamp="bad")
    valid = chat(id="d-1", site_id="D", timestamp=7)
    assert counts(store_lines([invalid, valid])) == (1, 0, 1)  # in one batch
    assert counts(store_lines([chat(id="d-2", site_id="D", data={})])) == (0, 0, 1)
    assert counts(store_lines([chat(id="d-2", site_id="D", timestamp=8)])) == (1, 0, 0)  # across batches
    assert stored() == [("d-1", "message", "D", "visitor5", 7.0, 2), ("d-2", "message", "D", "visitor5", 8.0, 1)]
    assert list(Rejection.objects.values_list("line", "reason")) == [
        (1, "'timestamp' must be a number of epoch seconds, got a string"),
        (1, "'data.message' must be a string, got null"),
    ]


@pytest.mark.django_db
def test_an_invalid_resend_of_a_stored_id_is_rejected_not_a_duplicate():
    assert counts(store_lines([chat(id="m-1")])) == (1, 0, 0)
    assert counts(store_lines([chat(id="m-1", **{"from": ""}), chat(id="m-1")])) == (0, 1, 1)
    assert Rejection.objects.get().reason == "'from' must not be empty"


@pytest.mark.django_db
def test_identity_is_the_exact_id_and_nothing_else():
    # (A tab or other control character is refused in ids: tests/test_hostile_identifiers.py.)
    same_content = [chat(id=uid, timestamp=10) for uid in ("m-1", "M-1", "m-1 ", " m-1", "m-1\u00a0")]
    assert counts(store_lines(same_content)) == (5, 0, 0)
    assert Event.objects.count() == 5
    assert classic() == ["123,messages=0,emails=5,operators=0,visitors=1"]


@pytest.mark.django_db
def test_records_of_an_integer_site_and_its_string_count_for_one_site():
    lines = [status(id="s-1", site_id=42, timestamp=1), chat(id="m-1", site_id="42", timestamp=2)]
    assert counts(store_lines(lines)) == (2, 0, 0)
    assert list(Site.objects.values_list("code", flat=True)) == ["42"]
    assert classic() == ["42,messages=1,emails=0,operators=1,visitors=1"]


@pytest.mark.django_db
def test_rejected_records_are_counted_nowhere():
    bad = [
        chat(id="r-1", site_id="R", timestamp=-1),
        status(id="r-2", site_id="R", data={"status": "away"}),
        chat(id="r-3", site_id=True),
        chat(id="r-4", site_id="R", timestamp=time.time() + 3600),
    ]
    assert counts(store_lines([*bad, chat(id="ok", site_id="S")])) == (1, 0, 4)
    assert list(Site.objects.values_list("code", flat=True)) == ["S"]
    assert stored() == [("ok", "message", "S", "visitor5", 1429026445.0, 5)]
    assert classic() == ["S,messages=0,emails=1,operators=0,visitors=1"]
    assert list(Rejection.objects.values_list("line", flat=True)) == [1, 2, 3, 4]


@pytest.mark.django_db
def test_nested_and_unusual_accepted_records_are_stored_and_read_back():
    nested = {"message": "hi", "x": [[[[{"y": [1.5, None, True, "é"]}]]]] * 3}
    lines = [chat(id="n-1", data=nested), chat(id="n-2", data={"message": "a\\u0000 \ufeff 🙂"}, site_id=2**64 - 1)]
    assert counts(store_lines(lines)) == (2, 0, 0)
    payloads = {e.uid: e.payload for e in Event.objects.all()}
    assert payloads["n-1"]["data"] == nested
    assert payloads["n-2"]["data"]["message"] == "a\\u0000 \ufeff 🙂"
    assert Event.objects.get(uid="n-2").site_id == "18446744073709551615"


# -- one NDJSON stream of good and bad lines, on the importer's path ---------------

FUTURE = 4102444800  # 2100-01-01


def good(uid: str, kind: str, site: str, actor: str, ts: float, value: str) -> bytes:
    data = {"message": value} if kind == "message" else {"status": value}
    return orjson.dumps({"id": uid, "type": kind, "from": actor, "site_id": site, "timestamp": ts, "data": data})


def mixed_stream(max_record: int) -> tuple[bytes, list[tuple[int, str]], list[tuple[str, int]]]:
    """An NDJSON file of every kind of line: the body, the expected (line, reason) rejections
    and the expected (uid, line) events."""
    oversize = padded(max_record + 1)
    lines = [
        (BOM + good("m-1", "message", "S", "v1", 100, "hello") + b"\r", None),  # 1: BOM at the file start
        (good("s-1", "status", "S", "op1", 50, "online"), None),
        (b"", None),  # 3: blank
        (b"   \t\r", None),  # 4: whitespace only
        (MSG, "not valid JSON: unexpected end of data: line 1 column 95 (char 94)"),
        (b"\xff\xfe not utf-8", NOT_UTF8),
        (BOM + good("m-9", "message", "R", "v9", 1, "mid-file BOM"), MID_BOM),
        (b"[]", "not a JSON object but an array"),
        (b'"just a string"\r', "not a JSON object but a string"),
        (b"42", "not a JSON object but a number"),  # 10
        (b"null", "not a JSON object but null"),
        (good("m-2", "message", "42", "v3", 200, "integer site below").replace(b'"42"', b"42"), None),
        (
            b'{"data": {"message": "hello"}, "timestamp": 100.0, "site_id": "S", "from": "v1", "id": "m-1",'
            b' "type": "message"}',
            None,
        ),  # 13: a reformatted resend of line 1
        (good("r-1", "message", "R", "v", 1, "nul \\u0000").replace(b"\\\\u0000", b"\\u0000"), NUL_REASON),
        (good("r-2", "message", "F", "v", FUTURE, "future"), f"timestamp {FUTURE}.000 is more than 300s in the future"),
        (oversize, f"record is {max_record + 1} bytes, over the limit of {max_record}"),
        (
            b'{"x": ' + b"[" * 1100 + b"]" * 1100 + b"}",
            "not valid JSON: depth limit exceeded: line 1 column 1031 (char 1030)",
        ),
        (good("r-3", "typing", "R", "v", 1, "?"), NO_FAMILY),
        (good("r-4", "status", "R", "op", 1, "away"), "'data.status' must be \"online\" or \"offline\", got 'away'"),
        (
            b'{"type": "message", "from": "v", "site_id": "R", "timestamp": 1, "data": {"message": "no id"}}',
            "'id' is missing",
        ),
        (
            b'{"id": "d-1", "type": "message", "from": "v9", "site_id": "D", "timestamp": "bad", "data": {}}',
            "'timestamp' must be a number of epoch seconds, got a string",
        ),
        (good("d-1", "message", "D", "v9", 7, "valid after an invalid d-1"), None),
        (good("s-2", "status", "S", "op1", 300, "offline") + b"\r", None),
        (good("m-3", "message", "S", "v2", 400, "after hours"), None),  # 24: no final newline
    ]
    body = b"\n".join(line for line, _ in lines)
    rejections = [(n, reason) for n, (_, reason) in enumerate(lines, start=1) if reason]
    events = [("m-1", 1), ("s-1", 2), ("m-2", 12), ("d-1", 22), ("s-2", 23), ("m-3", 24)]
    return body, rejections, events


EXPECTED_SITES = [
    "42,messages=0,emails=1,operators=0,visitors=1",
    "D,messages=0,emails=1,operators=0,visitors=1",
    "S,messages=1,emails=1,operators=1,visitors=2",
]


@pytest.fixture
def small_records(settings) -> int:
    """A small record limit, so an oversize line is cheap; framing and validation both read it."""
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_RECORD_BYTES": 4096}
    return 4096


@pytest.mark.django_db
def test_a_mixed_ndjson_stream_rejects_each_bad_line_alone(small_records):
    body, rejections, events = mixed_stream(small_records)
    stream = io.BytesIO(body)
    # The importer's steps: detect the framing, frame the stream, validate, store.
    framing = detect_framing(stream.read(64 * 1024))
    stream.seek(0)
    records = iter_records(stream, framing, max_record=settings.SWITCHBOARD["MAX_RECORD_BYTES"])
    chunk = validate_into(Chunk(), records, time.time())
    batch = RawBatch.objects.create(source="memory.jsonl", status=RawBatch.Status.PROCESSING)
    with transaction.atomic():
        result = store_chunk(batch, chunk)

    assert framing == "ndjson"
    assert list(Rejection.objects.values_list("line", "reason")) == rejections
    assert list(Event.objects.order_by("line").values_list("uid", "line")) == events
    assert counts(result) == (6, 1, 15)
    # Every line is accounted for: accepted, duplicate, rejected or blank.
    assert 6 + 1 + 15 + 2 == body.count(b"\n") + 1 == 24
    batch.refresh_from_db()
    assert (batch.first_line, batch.last_line, batch.record_count, batch.status) == (1, 24, 22, "done")
    assert chunk.end_offset == len(body)
    # A rejected line is kept as received (bad bytes escaped), so it can be fixed and resent; one
    # over MAX_RECORD_BYTES whole too, for a replay once the limit is raised.
    raws = dict(Rejection.objects.values_list("line", "raw"))
    assert raws[6] == "\\xff\\xfe not utf-8"
    assert raws[9] == '"just a string"\r'
    assert len(raws[16]) == settings.SWITCHBOARD["MAX_RECORD_BYTES"] + 1
    assert classic() == EXPECTED_SITES


@pytest.mark.django_db
def test_the_import_command_path_gives_the_same_lines_across_chunks(small_records, tmp_path):
    body, rejections, events = mixed_stream(small_records)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(body)

    job = import_file(str(path), chunk_lines=4)  # chunk boundaries fall on good, bad and blank lines

    assert (job.accepted, job.duplicates, job.rejected) == (6, 1, 15)
    assert (job.next_offset, job.next_line) == (len(body), 25)
    assert list(Rejection.objects.order_by("line").values_list("line", "reason")) == rejections
    assert set(Rejection.objects.values_list("batch__source", flat=True)) == {str(path)}
    assert list(Event.objects.order_by("line").values_list("uid", "line")) == events
    assert ImportJob.objects.count() == 1
    assert classic() == EXPECTED_SITES


@pytest.mark.django_db
def test_rejections_that_postgresql_text_could_not_hold_are_stored_readably():
    """A raw NUL byte and a reason quoting a huge value are kept, bounded, and the
    batch's good record is stored beside them (PostgreSQL refuses NUL in text and
    reasons over the column's length)."""
    long_status = "x" * 600
    lines = [b'{"a": 1}\x00', b'{"a": "\x00"}', status(id="s-1", data={"status": long_status}), chat(id="ok")]
    assert counts(store_lines(lines)) == (1, 0, 3)
    rejections = list(Rejection.objects.order_by("line").values_list("line", "reason", "raw"))
    assert [line for line, _, _ in rejections] == [1, 2, 3]
    assert rejections[0][2] == '{"a": 1}\\x00' and rejections[1][2] == '{"a": "\\x00"}'
    assert all(reason.startswith("not valid JSON") for _, reason, _ in rejections[:2])
    reason = rejections[2][1]
    assert reason.startswith('\'data.status\' must be "online" or "offline", got \'xxx') and "..." in reason
    assert len(reason) < 100
    assert stored()[0][0] == "ok"


@pytest.mark.django_db
def test_a_reason_longer_than_its_column_is_cut_not_fatal():
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    chunk = Chunk(rejections=[RejectedRecord(1, "r" * 900, "raw")], first_line=1, last_line=1)
    with transaction.atomic():
        store_chunk(batch, chunk)
    assert Rejection.objects.get().reason == "r" * Rejection._meta.get_field("reason").max_length
