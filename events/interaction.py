"""The interaction family (SPEC §2.3): page and form interactions of a session.

site = `data.host`, session = `session_id` (canonical lowercase UUID),
kind = `name`, category = `category`. Each type (category, name) may register
a payload validator with `register_interaction_type`; a well-formed event of
an unregistered type is accepted as a generic event. See docs/event-types.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from events.clock import iso_epoch_micros
from events.registry import (
    FamilySpec,
    Invalid,
    NormalizedEvent,
    identity,
    json_type_name,
    register_family,
    require_object,
    require_text,
)
from events.timestamps import utc_text

FAMILY = "interaction"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Validates an event's `data` object; raises `Invalid` with the reason.
PayloadValidator = Callable[[dict[str, Any]], None]
_VALIDATORS: dict[tuple[str, str], PayloadValidator] = {}


def register_interaction_type(category: str, name: str, validator: PayloadValidator) -> PayloadValidator:
    """Give the type (category, name) a payload validator; a later registration replaces it."""
    _VALIDATORS[(category, name)] = validator
    return validator


def unregister_interaction_type(category: str, name: str) -> None:
    _VALIDATORS.pop((category, name), None)


def registered_types() -> tuple[tuple[str, str], ...]:
    return tuple(sorted(_VALIDATORS))


# -- field rules ------------------------------------------------------------


def _missing(data: dict[str, Any], field: str) -> None:
    if field not in data:
        raise Invalid(f"'data.{field}' is missing")


def require_data_text(data: dict[str, Any], field: str) -> str:
    _missing(data, field)
    value = data.get(field)
    if not isinstance(value, str):
        raise Invalid(f"'data.{field}' must be a string, got {json_type_name(value)}")
    return value


def require_data_object(data: dict[str, Any], field: str) -> dict[str, Any]:
    _missing(data, field)
    value = data.get(field)
    if not isinstance(value, dict):
        raise Invalid(f"'data.{field}' must be an object, got {json_type_name(value)}")
    return value


def require_data_number(data: dict[str, Any], field: str) -> float:
    _missing(data, field)
    value = data.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"'data.{field}' must be a number, got {json_type_name(value)}")
    return value


def session_uuid(value: object) -> str:
    """The canonical (lowercase, hyphenated) form of a UUID string."""
    if not isinstance(value, str):
        raise Invalid(f"'session_id' must be a UUID string, got {json_type_name(value)}")
    if not _UUID.fullmatch(value):
        raise Invalid(f"'session_id' is not a UUID: {value[:64]!r}")
    return value.lower()


def parse_timestamp(value: object) -> float:
    """Epoch seconds of "YYYY-MM-DD HH:MM:SS[.ffffff]" (UTC) or ISO 8601 (naive means UTC).

    Computed from whole microseconds so that `format_timestamp` gives the text back exactly.
    """
    if not isinstance(value, str):
        raise Invalid(
            f"'timestamp' must be a string 'YYYY-MM-DD HH:MM:SS[.ffffff]' or ISO 8601, got {json_type_name(value)}"
        )
    try:
        micros = iso_epoch_micros(value)
    except ValueError:
        raise Invalid(f"'timestamp' {value[:64]!r} is neither 'YYYY-MM-DD HH:MM:SS[.ffffff]' nor ISO 8601") from None
    if micros < 0:
        raise Invalid("'timestamp' is before 1970-01-01")
    return micros / 1_000_000


def format_timestamp(ts: float) -> str:
    """The classic "YYYY-MM-DD HH:MM:SS.ffffff" (UTC) form of stored epoch seconds."""
    return utc_text(ts, "%Y-%m-%d %H:%M:%S.%f")


# -- built-in types (SPEC §2.3) ---------------------------------------------


def validate_pageview(data: dict[str, Any]) -> None:
    require_data_text(data, "host")
    require_data_text(data, "path")


def validate_cta_click(data: dict[str, Any]) -> None:
    validate_pageview(data)
    require_data_text(data, "element")


def validate_form_submit(data: dict[str, Any]) -> None:
    validate_pageview(data)
    require_data_object(data, "form")


register_interaction_type("page interaction", "pageview", validate_pageview)
register_interaction_type("page interaction", "cta click", validate_cta_click)
register_interaction_type("form interaction", "submit", validate_form_submit)


# -- the family -------------------------------------------------------------


def matches(record: dict[str, Any]) -> bool:
    return "category" in record and "name" in record


def normalize(record: dict[str, Any]) -> NormalizedEvent:
    uid = identity(record)
    category = require_text(record, "category")
    name = require_text(record, "name")
    session = session_uuid(record.get("session_id"))
    data = require_object(record, "data")
    ts = parse_timestamp(record.get("timestamp"))
    validator = _VALIDATORS.get((category, name))
    if validator is not None:
        validator(data)
    # Every interaction names its site: the store files events by site.
    host = require_data_text(data, "host")
    if not host:
        raise Invalid("'data.host' must not be empty")
    if len(host) > 255:
        raise Invalid("'data.host' is longer than 255 characters")
    return NormalizedEvent(
        uid=uid, family=FAMILY, kind=name, category=category, site=host, ts=ts, payload=record, session=session
    )


FIELDS = {"uid": "id", "kind": "name", "site": "data.host", "session": "session_id"}
SPEC = register_family(FamilySpec(name=FAMILY, matches=matches, normalize=normalize, fields=FIELDS))
