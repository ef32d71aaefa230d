"""The registry of event families: how a record is recognised and validated.

A family is recognised by the shape of a record (SPEC §2) and turns a valid
record into a `NormalizedEvent`, the columns the event store indexes. Adding a
family is one `register_family` call; see docs/event-types.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

MAX_UID_LENGTH = 255
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
    payload: dict[str, Any]
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


@dataclass(frozen=True, slots=True)
class FamilySpec:
    name: str
    matches: Callable[[dict[str, Any]], bool]
    normalize: Callable[[dict[str, Any]], NormalizedEvent]


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
    """The family's event of one decoded JSON value (no rule on time); `Invalid` otherwise."""
    if not isinstance(record, dict):
        raise Invalid(f"not a JSON object but {json_type_name(record)}")
    for family in _FAMILIES:
        if family.matches(record):
            event = family.normalize(record)
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
