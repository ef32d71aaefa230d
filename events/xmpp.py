"""The xmpp log family (SPEC §2.2): events of a multi-user chat server's log.

site = `channel`, session = `room_id`, actor = `nick`, kind = `event`.
The stanza is parsed (events/stanza.py) into a `Stanza` detail row; the raw
stanza stays in the stored payload.
"""

from __future__ import annotations

from typing import Any

from events.chat import epoch_seconds
from events.registry import (
    FamilySpec,
    Invalid,
    NormalizedEvent,
    json_type_name,
    register_family,
    require_object,
    require_text,
)
from events.stanza import stanza_fields

FAMILY = "xmpp"
# Some events (e.g. muc-occupant-joined) log no stanza: JSON null or the string "nil".
NO_STANZA = (None, "nil")


def matches(record: dict[str, Any]) -> bool:
    return "stanza" in record and "room_id" in record


def optional_text(record: dict[str, Any], field: str, max_length: int = 1024) -> str:
    """A field that may be absent or null; if present it must be a string."""
    value = record.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"'{field}' must be a string, got {json_type_name(value)}")
    if len(value) > max_length:
        raise Invalid(f"'{field}' is longer than {max_length} characters")
    return value


def normalize(record: dict[str, Any]) -> NormalizedEvent:
    if "id" not in record:
        raise Invalid("'id' is missing")
    uid = require_text(record, "id")
    room = require_text(record, "room_id")
    site = require_text(record, "channel")
    kind = require_text(record, "event")
    ts = epoch_seconds(record.get("timestamp"))
    if "meta" in record and record["meta"] is not None:
        require_object(record, "meta")
    nick = optional_text(record, "nick", 255)
    optional_text(record, "jid")
    optional_text(record, "sender")
    stanza = record["stanza"]
    if stanza in NO_STANZA:
        detail = None
    elif isinstance(stanza, str):
        detail = stanza_fields(stanza)
    else:
        raise Invalid(f"'stanza' must be XML text, null or \"nil\", got {json_type_name(stanza)}")
    return NormalizedEvent(
        uid=uid, family=FAMILY, kind=kind, site=site, ts=ts, payload=record, session=room, actor=nick, detail=detail
    )


FIELDS = {"uid": "id", "kind": "event", "site": "channel", "session": "room_id", "actor": "nick"}
SPEC = register_family(FamilySpec(name=FAMILY, matches=matches, normalize=normalize, fields=FIELDS))
