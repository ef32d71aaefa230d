"""The chat family's common record, decoded and validated in one C pass (msgspec).

Nearly every record is a chat message or status with exactly the fields of SPEC §2.1
(`id`, `type`, `from`, `site_id`, `timestamp`, `data`, and maybe `sentAt`/`receivedAt`).
`common_event` decodes such a line straight into a `ChatRecord`, whose types and bounds
msgspec checks as it parses, and gives its event without building the record's dict
(`NormalizedEvent.payload` is decoded from the stored text if anything reads it).

It only ever accepts: anything the Struct does not take (another family, a field it does
not know, a type or bound broken, a rule of chat's own, invalid JSON) gives None, and the
line goes through the general path (orjson and the registry), which alone words the
reasons. So a rejection's reason is the general path's by construction, and an accepted
record's event is the same as the general path's: tests/test_validation_equivalence.py
holds the two to it on hostile lines.

Why nothing else slips through: with unknown fields forbidden, every byte of an accepted
line is JSON syntax, a known key, or a value msgspec decodes in full (its strings'
UTF-8 checked, its numbers parsed); where msgspec is laxer than orjson (invalid UTF-8
and out-of-range numbers in values it skips) is only in fields it would have to skip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

import msgspec

from events import chat
from events.registry import MAX_UID_LENGTH, NormalizedEvent, families

# A required text of chat (`require_text`, `site_code`): not empty, at most 255 characters.
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_UID_LENGTH)]


# gc=False: neither can be part of a reference cycle (texts, numbers and ChatData), so the
# collector need not track the one decoded per line.
class ChatData(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    message: str | msgspec.UnsetType = msgspec.UNSET
    status: str | msgspec.UnsetType = msgspec.UNSET


class ChatRecord(msgspec.Struct, forbid_unknown_fields=True, rename={"actor": "from"}, gc=False):
    id: Text
    type: Literal["message", "status"]
    actor: Text
    site_id: Text  # an integer site takes the general path
    timestamp: Annotated[float, msgspec.Meta(ge=0)]  # JSON has no NaN; out of range fails the parse
    data: ChatData
    sentAt: float | str | None = None  # the record's own (camelCase) field names
    receivedAt: float | str | None = None


_decode = msgspec.json.Decoder(ChatRecord).decode


def applies(max_nesting: int) -> bool:
    """Whether the fast path gives what the registry would: chat is the family tried first
    (a family registered before it could claim a record), and MAX_NESTING allows the record's
    two levels (object and `data`)."""
    found = families()
    return bool(found) and found[0] is chat.SPEC and max_nesting >= 2


def common_event(raw: bytes) -> tuple[NormalizedEvent, ChatRecord] | None:
    """The event of a common chat record and the record (for its send and receive times), or
    None: then the general path decides. Identifiers and time are checked by the caller."""
    try:
        record = _decode(raw)
    except msgspec.MsgspecError:  # not this shape: the general path says why, if anything is wrong
        return None
    data = record.data
    if record.type == "message":
        if data.message is msgspec.UNSET:
            return None
        online = None
    else:
        online = chat.STATUSES.get(data.status)  # type: ignore[call-overload]
        if online is None:
            return None
    event = NormalizedEvent(
        record.id, chat.FAMILY, record.type, record.site_id, record.timestamp, None, actor=record.actor, online=online
    )
    return event, record


def common_columns(numbered: Iterable[tuple[int, object]], latest: float) -> tuple[list[list], list[tuple[int, int]]]:
    """`common_event` over a chunk's records (each with its line number), giving the columns
    (`registry.ROW`, a list each) of the common chat records that need nothing more than
    `common_event`'s caller checks (no send and receive times to place them by, a timestamp
    not after `latest`), and where the others are, for the general path: their places among
    the records, each with the number of rows before it. The caller checks the identifiers
    (`check_identifiers`) and whatever comes before a record is validated (framing, size,
    NUL). A payload is the record as read (not stripped).

    The conditions are `common_event`'s and `place`'s, spelled out inline: this runs once per
    line of a bulk import, and fills a list per column (the columns are what is built next)."""
    uids: list[str] = []
    kinds: list[str] = []
    sites: list[str] = []
    actors: list[str] = []
    times: list[float] = []
    onlines: list[bool | None] = []
    payloads: list[object] = []
    lines: list[int] = []
    others: list[tuple[int, int]] = []
    decode, unset, statuses = _decode, msgspec.UNSET, chat.STATUSES
    add_uid, add_kind, add_site, add_actor = uids.append, kinds.append, sites.append, actors.append
    add_time, add_online, add_payload, add_line = times.append, onlines.append, payloads.append, lines.append
    for place, (line, raw) in enumerate(numbered):
        try:
            record = decode(raw)  # type: ignore[arg-type]  # a Broken record is no buffer: TypeError
        except (msgspec.MsgspecError, TypeError):
            others.append((place, len(uids)))
            continue
        kind, data = record.type, record.data
        if kind == "message":
            online = None
            if data.message is unset:
                others.append((place, len(uids)))
                continue
        elif (online := statuses.get(data.status)) is None:  # type: ignore[call-overload]
            others.append((place, len(uids)))
            continue
        ts = record.timestamp
        if ts > latest or (record.sentAt is not None and record.receivedAt is not None):
            others.append((place, len(uids)))
            continue
        add_uid(record.id)
        add_kind(kind)
        add_site(record.site_id)
        add_actor(record.actor)
        add_time(ts)
        add_online(online)
        add_payload(raw)
        add_line(line)
    count = len(uids)
    columns = [uids, [chat.FAMILY] * count, kinds, [""] * count, sites, [""] * count, actors, times, onlines]
    return [*columns, [None] * count, payloads, lines], others
