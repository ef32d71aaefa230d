"""The chat family (SPEC §2.1): `message` and `status` events of a site."""

from __future__ import annotations

import reprlib
from typing import Any

from events.registry import (
    FamilySpec,
    Invalid,
    NormalizedEvent,
    json_type_name,
    register_family,
    require_object,
    require_text,
)

FAMILY = "chat"
STATUSES = {"online": True, "offline": False}


def matches(record: dict[str, Any]) -> bool:
    return record.get("type") in ("message", "status")


def site_code(value: object) -> str:
    # An integer 42 is the site "42"; booleans are ints in Python but not here.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        if len(value) > 255:
            raise Invalid("'site_id' is longer than 255 characters")
        return value
    if isinstance(value, str):
        raise Invalid("'site_id' must not be empty")
    raise Invalid(f"'site_id' must be a string or an integer, got {json_type_name(value)}")


def epoch_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"'timestamp' must be a number of epoch seconds, got {json_type_name(value)}")
    ts = float(value)
    if not ts >= 0:  # also catches NaN
        raise Invalid("'timestamp' must not be negative")
    if ts == float("inf"):
        raise Invalid("'timestamp' must be finite")
    return ts


INFINITY = float("inf")


def normalize(record: dict[str, Any]) -> NormalizedEvent:
    """The record as an event, or `Invalid` with the first rule it fails."""
    get = record.get
    uid, actor, site, ts, data = get("id"), get("from"), get("site_id"), get("timestamp"), get("data")
    # The shape nearly every record has, checked in one expression; anything else (an
    # integer site, a missing field, a rule broken) goes through the checks that name the
    # rule. Both accept exactly the same records and give the same event.
    if (
        type(uid) is str
        and type(actor) is str
        and type(site) is str
        and type(data) is dict
        and 0 < len(uid) <= 255
        and 0 < len(actor) <= 255
        and 0 < len(site) <= 255
        and (type(ts) is float or type(ts) is int)
        and 0 <= ts < INFINITY
    ):
        kind = record["type"]
        if kind == "message":
            if type(data.get("message")) is str:
                return NormalizedEvent(uid, FAMILY, kind, site, float(ts), record, actor=actor)
        elif (status := data.get("status")) == "online" or status == "offline":
            return NormalizedEvent(uid, FAMILY, kind, site, float(ts), record, actor=actor, online=STATUSES[status])
    return _normalize_checked(record)


def _normalize_checked(record: dict[str, Any]) -> NormalizedEvent:
    if "id" not in record:
        raise Invalid("'id' is missing")
    uid = require_text(record, "id")
    kind = record["type"]
    actor = require_text(record, "from")
    site = site_code(record.get("site_id"))
    ts = epoch_seconds(record.get("timestamp"))
    data = require_object(record, "data")
    online = None
    if kind == "message":
        if not isinstance(data.get("message"), str):
            raise Invalid(f"'data.message' must be a string, got {json_type_name(data.get('message'))}")
    else:
        status = data.get("status")
        if not isinstance(status, str):
            raise Invalid(f'\'data.status\' must be "online" or "offline", got {json_type_name(status)}')
        if status not in STATUSES:
            raise Invalid(f'\'data.status\' must be "online" or "offline", got {reprlib.repr(status)}')
        online = STATUSES[status]
    return NormalizedEvent(
        uid=uid, family=FAMILY, kind=kind, site=site, ts=ts, payload=record, actor=actor, online=online
    )


FIELDS = {"uid": "id", "kind": "type", "site": "site_id", "actor": "from"}
SPEC = register_family(FamilySpec(name=FAMILY, matches=matches, normalize=normalize, fields=FIELDS))
