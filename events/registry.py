"""The registry of event families: how a record is recognised and validated.

A family is recognised by the shape of a record (SPEC §2) and turns a valid
record into a `NormalizedEvent`, the columns the event store indexes. Adding a
family is one `register_family` call; see docs/event-types.md.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_UID_LENGTH = 255
MAX_ERROR_CHARS = 300  # of a failing validator's error message, in the rejection's reason
# The columns that identify an event, a site, an actor or a session. They are printed in
# line-based outputs (the classic summary lines, CSV, logs), so none may hold what a reader
# takes for a line break or a terminal control: C0 controls (NUL, tab, LF, CR, ESC, …), DEL,
# C1 controls (NEL, …) and the Unicode line and paragraph separators. See docs/event-types.md.
IDENTIFIER_COLUMNS = ("uid", "kind", "category", "site", "session", "actor")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Sites and rooms (sessions) key the classic lines, `site_id,messages=N,...` and
# `room_id,events=N,...`: a comma in one would forge the fields of its line.
FIELD_SEPARATOR = ","
KEY_COLUMNS = ("site", "session")
# When the client sent the record and when a server received it (events/clock.py): transport,
# not content, so a resend stamped anew is the same event.
SENT_AT = "sentAt"
RECEIVED_AT = "receivedAt"


class Invalid(ValueError):
    """A record fails a rule; the message is the rejection reason shown to users."""


@dataclass(slots=True)
class NormalizedEvent:
    uid: str
    family: str
    kind: str
    site: str
    ts: float
    # The record as decoded; None when it was validated without building it (events/chat_decoder.py):
    # then decoded from `payload_json` when first read (see `_decoded_when_read`).
    payload: dict[str, Any] | None
    category: str = ""
    session: str = ""
    actor: str = ""
    online: bool | None = None
    # A row for the family's detail table (xmpp stanza fields), if any.
    detail: dict[str, Any] | None = None
    # The record's JSON text as received, stored as the payload without re-encoding.
    payload_json: bytes | None = None
    # The timestamp as the client sent it, when `ts` was corrected for its clock (events/clock.py).
    client_ts: float | None = None


def _decoded_when_read(cls: type[NormalizedEvent]) -> None:
    """Make `payload` a property over its slot that decodes `payload_json` when the slot holds
    None: the fast path stores no dict nothing reads, while the dataclass's init, equality and
    repr (which go through the attribute) see the same record as the general path's."""
    slot = cls.payload  # the slot's member descriptor

    def payload(event: NormalizedEvent) -> dict[str, Any] | None:
        value = slot.__get__(event, cls)
        if value is None and event.payload_json is not None:
            value = orjson.loads(event.payload_json)
            slot.__set__(event, value)
        return value

    cls.payload = property(payload, slot.__set__)  # type: ignore[assignment,method-assign]


_decoded_when_read(NormalizedEvent)

# An event as a row for the event table (`event_row`): these fields, then its record's line number.
ROW = (
    "uid", "family", "kind", "category", "site", "session", "actor", "ts", "online", "client_ts", "payload_json",
    "line",
)  # fmt: skip
Row = tuple  # (str, str, str, str, str, str, str, float, bool | None, float | None, bytes, int)


def event_row(event: NormalizedEvent, line: int) -> Row:
    return (event.uid, event.family, event.kind, event.category, event.site, event.session, event.actor,
            event.ts, event.online, event.client_ts, event.payload_json, line)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FamilySpec:
    name: str
    matches: Callable[[dict[str, Any]], bool]
    normalize: Callable[[dict[str, Any]], NormalizedEvent]
    # The record field each identifier column comes from, to name it in reasons (e.g. site: site_id).
    fields: Mapping[str, str] = field(default_factory=dict)


_FAMILIES: list[FamilySpec] = []


def register_family(spec: FamilySpec) -> FamilySpec:
    _FAMILIES[:] = [f for f in _FAMILIES if f.name != spec.name] + [spec]
    return spec


def families() -> tuple[FamilySpec, ...]:
    return tuple(_FAMILIES)


def normalize(record: object, now: float, future_tolerance: float = 300.0) -> NormalizedEvent:
    """Validate one decoded JSON value, its timestamp taken as given; raise `Invalid` with the reason otherwise."""
    event = recognise(record)
    check_not_future(event, now, future_tolerance)
    return event


def recognise(record: object) -> NormalizedEvent:
    """The family's event of one decoded JSON value (no rule on time); `Invalid` otherwise.

    A family's code that raises anything else (a KeyError of a payload validator, say) rejects
    that record with the error as its reason: a bug in one family must not stop a batch, an
    import or a replay at every retry.
    """
    if not isinstance(record, dict):
        raise Invalid(f"not a JSON object but {json_type_name(record)}")
    for family in _FAMILIES:
        try:
            if not family.matches(record):
                continue
            event = family.normalize(record)
            if problem := malformed(event):  # the store would fail on it, or store a time nothing reads
                raise TypeError(f"it returned {problem}")
            check_identifiers(event, family.fields)
        except Invalid:
            raise
        except Exception as error:  # a bug in the family's code: this record is rejected, not the batch
            raise Invalid(validator_error(family.name, error)) from error
        break
    else:
        raise Invalid(
            "matches no event family: expected chat ('type' message or status), "
            "xmpp ('stanza' and 'room_id') or interaction ('category' and 'name')"
        )
    return event


def check_not_future(event: NormalizedEvent, now: float, future_tolerance: float) -> None:
    if event.ts > now + future_tolerance:
        raise Invalid(f"timestamp {event.ts:.3f} is more than {future_tolerance:.0f}s in the future")


def malformed(event: object) -> str | None:
    """What makes a family's `event` unstorable, if anything: not an event, a text column that
    is not text, or a time that is not a finite number."""
    if type(event) is not NormalizedEvent:
        return f"{type(event).__name__}, not a NormalizedEvent"
    for column in IDENTIFIER_COLUMNS:
        if type(getattr(event, column)) is not str:
            return f"an event whose {column} is {type(getattr(event, column)).__name__}, not str"
    ts = event.ts
    if type(ts) not in (float, int) or not math.isfinite(ts):
        return f"an event whose ts is {ts!r}, not a finite number"
    return None


def validator_error(family: str, error: Exception) -> str:
    """The reason for a record whose family's validator raised something other than `Invalid`:
    the error's type and message, as text any database column holds (no NUL, no lone surrogate)."""
    try:
        message = str(error)[:MAX_ERROR_CHARS]
    except Exception:  # an exception whose message itself fails
        message = "(its message cannot be shown)"
    message = message.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
    return f"the {family} family's validator failed: {type(error).__name__}" + (f": {message}" if message else "")


def control_character(text: str) -> str | None:
    """The first character of `text` that identifiers may not hold, if any."""
    if text.isprintable():  # the common case, in C: no control, no separator
        return None
    match = _CONTROL.search(text)
    return match.group() if match else None


def check_identifiers(event: NormalizedEvent, fields: Mapping[str, str]) -> None:
    """Raise `Invalid` when an identifier holds a control character, or a site or room a comma.
    The one rule for every family and every path (API, worker, import, replay).
    """
    site, session = event.site, event.session
    if (  # the common case, in C: printable identifiers (no control character), no comma
        event.uid.isprintable()
        and site.isprintable()
        and event.actor.isprintable()
        and session.isprintable()
        and event.kind.isprintable()
        and event.category.isprintable()
        and FIELD_SEPARATOR not in site
        and FIELD_SEPARATOR not in session
    ):
        return
    for column in IDENTIFIER_COLUMNS:
        if char := control_character(getattr(event, column)):
            raise Invalid(
                f"'{fields.get(column, column)}' contains the control character U+{ord(char):04X}: "
                "identifiers may not hold control characters or line breaks"
            )
    for column in KEY_COLUMNS:
        if FIELD_SEPARATOR in getattr(event, column):
            raise Invalid(
                f"'{fields.get(column, column)}' contains a comma, which separates the fields of the classic lines"
            )


def identifiers_clean(
    uids: Iterable[str], sites: Iterable[str], actors: Iterable[str], sessions: Iterable[str] = ()
) -> bool:
    """Whether `check_identifiers` passes every event of these columns (kinds and categories
    known printable), over each column's joined text in C; when False, `check_identifiers`
    names the rule. Unprintable is not yet a control character (a no-break space, the joiner
    of an emoji sequence): such a text is searched for one, so that one nickname does not send
    its chunk of an import through the general path (3x its CPU)."""
    sites, sessions = "".join(sites), "".join(sessions)
    return (
        control_character("".join(uids)) is None
        and control_character(sites) is None
        and control_character("".join(actors)) is None
        and control_character(sessions) is None
        and FIELD_SEPARATOR not in sites
        and FIELD_SEPARATOR not in sessions
    )


def printable(text: str, also: str = "", keep: str = "") -> str:
    """`text` for a line-based output: each control character but those of `keep` (and each
    character of `also`) written as a backslash escape, e.g. `\\n` or `\\x2c`, so that a value
    stored before the rule (or by another writer) can never print a line of its own."""
    if text.isprintable() and not any(char in text for char in also):
        return text
    return "".join(
        _escaped(char) if (_CONTROL.match(char) and char not in keep) or char in also else char for char in text
    )


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def require_text(record: dict[str, Any], field: str, max_length: int = 255) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        raise Invalid(f"'{field}' must be a string, got {json_type_name(value)}")
    if not value:
        raise Invalid(f"'{field}' must not be empty")
    if len(value) > max_length:
        raise Invalid(f"'{field}' is longer than {max_length} characters")
    return value


def require_object(record: dict[str, Any], field: str) -> dict[str, Any]:
    value = record.get(field)
    if not isinstance(value, dict):
        raise Invalid(f"'{field}' must be an object, got {json_type_name(value)}")
    return value


def identity(record: dict[str, Any]) -> str:
    """The record's `id`, or a hash of its canonical content so a resend is a duplicate."""
    if "id" in record:
        return require_text(record, "id", MAX_UID_LENGTH)
    if SENT_AT in record or RECEIVED_AT in record:
        record = {key: value for key, value in record.items() if key != SENT_AT and key != RECEIVED_AT}
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()
