"""An independent model of the chat family: validation (SPEC §2.1, §2.4) and the
site summary (SPEC §3), written from the spec text alone.

It deliberately shares no code with the application (no events/, ingest/ or
reports/ imports; the standard `json` module instead of orjson) and is as
plain as possible: sort each site's events by (timestamp, status before
message, id) and replay the operators' states. Tests compare the application
against it.

Beyond the spec text it knows three house rules the project documents: a record
over the configured size is rejected, and so is a record holding a NUL
character (PostgreSQL cannot store one), or an identifier holding a control
character or line separator, or a site holding a comma (docs/event-types.md). It only knows the chat family: a
record of another family is "rejected" here, so feed it chat files only.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

FUTURE_TOLERANCE = 300.0  # "more than 5 minutes ahead of the server clock"
CLOCK_AHEAD_LIMIT = 23 * 3600.0  # SPEC §10: "a timestamp more than 23 h in the future is refused"
# House rule (docs/event-types.md): a send time this close to the receive time is mostly transit.
SKEW_TOLERANCE = 10.0
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ChatEvent:
    uid: str
    kind: str  # "message" or "status"
    site: str
    actor: str
    ts: float
    online: bool = False  # statuses only


class Rejected(ValueError):
    pass


@dataclass
class Outcome:
    """What reading a stream of records gives: accepted events in arrival order and counts."""

    accepted: list[ChatEvent] = field(default_factory=list)
    duplicates: int = 0
    rejected: int = 0
    rejected_lines: list[int] = field(default_factory=list)
    skipped_blank: int = 0

    @property
    def ids(self) -> set[str]:
        return {e.uid for e in self.accepted}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def check(record: object, now: float) -> ChatEvent:
    """The §2.1 rules, one by one; raise Rejected if any fails."""
    if not isinstance(record, dict):
        raise Rejected("not an object")
    kind = record.get("type")
    if kind not in ("message", "status"):
        raise Rejected("matches no family")
    uid = record.get("id")
    if not isinstance(uid, str) or uid == "":
        raise Rejected("id")
    actor = record.get("from")
    if not isinstance(actor, str) or actor == "":
        raise Rejected("from")
    site = record.get("site_id")
    if isinstance(site, bool):
        raise Rejected("site_id is a boolean")
    if isinstance(site, int) and not -(2**63) <= site < 2**64:
        # Decision (docs/reliability.md): JSON integers past 64 bits are read as numbers, not integers.
        raise Rejected("site_id integer beyond 64 bits")
    if isinstance(site, int):
        site = str(site)
    if not isinstance(site, str) or site == "":
        raise Rejected("site_id")
    ts = record.get("timestamp")
    if not _is_number(ts) or not ts >= 0 or ts == math.inf:
        raise Rejected("timestamp")
    if ts > now + FUTURE_TOLERANCE:
        raise Rejected("future")
    data = record.get("data")
    if not isinstance(data, dict):
        raise Rejected("data")
    online = False
    if kind == "message":
        if not isinstance(data.get("message"), str):
            raise Rejected("data.message")
    else:
        status = data.get("status")
        if not isinstance(status, str) or status not in ("online", "offline"):
            raise Rejected("data.status")
        online = status == "online"
    if _has_nul(record):
        raise Rejected("NUL")
    for name, value in (("id", uid), ("from", actor), ("site_id", site)):
        # Unicode's "Cc" is exactly C0, DEL and C1; "Zl" and "Zp" are the line and paragraph separators.
        if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in value):
            raise Rejected(f"{name} holds a control character")
    if "," in site:
        raise Rejected("site_id holds a comma")
    return ChatEvent(uid=uid, kind=kind, site=site, actor=actor, ts=ts, online=online)


def placed(record: dict, received_at: float, batch_sent_at: float | None = None) -> dict:
    """SPEC §10 for a chat record received at `received_at`: with a send time (its own
    `sentAt`, epoch seconds here, else the batch's) a copy placed at
    `received_at - (sentAt - timestamp)`; without one, or one within SKEW_TOLERANCE of the
    receipt, the record as it is. A client clock more than 23 h ahead is refused; the future
    rule is then `check`'s, on the placed time."""
    sent = record.get("sentAt", batch_sent_at)
    if sent is None:
        return record
    ts = record.get("timestamp")
    if not _is_number(sent) or sent < 0 or not _is_number(ts):
        raise Rejected("sentAt or timestamp")
    if abs(sent - received_at) <= SKEW_TOLERANCE:
        return record
    if sent - received_at > CLOCK_AHEAD_LIMIT or ts - received_at > CLOCK_AHEAD_LIMIT:
        raise Rejected("more than 23 h ahead")
    return {**record, "timestamp": received_at - (sent - ts)}


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_line(line: bytes, now: float, max_record: int) -> ChatEvent:
    if len(line) > max_record:
        raise Rejected("too big")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejected("not UTF-8") from error
    try:
        record = json.loads(text, parse_constant=_no_constants)
    except ValueError as error:
        raise Rejected("not JSON") from error
    return check(record, now)


def accept(outcome: Outcome, seen: set[str], line: int, make_event) -> None:
    try:
        event = make_event()
    except Rejected:
        outcome.rejected += 1
        outcome.rejected_lines.append(line)
        return
    if event.uid in seen:  # validation first: only valid records claim an id
        outcome.duplicates += 1
    else:
        seen.add(event.uid)
        outcome.accepted.append(event)


def read_ndjson(data: bytes, now: float, max_record: int = 64 * 1024) -> Outcome:
    """An NDJSON file: a BOM at the start is dropped, blank lines are skipped, CR is whitespace."""
    outcome, seen = Outcome(), set()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if line.strip() == b"":
            outcome.skipped_blank += 1
            continue
        accept(outcome, seen, number, lambda line=line: parse_line(line, now, max_record))
    return outcome


def read_values(values: Iterable[object], now: float) -> Outcome:
    """Already decoded records, in arrival order."""
    outcome, seen = Outcome(), set()
    for number, value in enumerate(values, start=1):
        accept(outcome, seen, number, lambda value=value: check(value, now))
    return outcome


def summary_lines(events: Iterable[ChatEvent]) -> list[str]:
    """SPEC §3, literally."""
    by_site: dict[str, list[ChatEvent]] = {}
    for event in events:
        by_site.setdefault(event.site, []).append(event)
    lines = []
    for site in sorted(by_site):  # code-point order
        ordered = sorted(by_site[site], key=lambda e: (e.ts, 0 if e.kind == "status" else 1, e.uid))
        state: dict[str, bool] = {}  # operator -> online; absent = offline
        chats = emails = 0
        for event in ordered:
            if event.kind == "status":
                state[event.actor] = event.online
            elif any(state.values()):
                chats += 1
            else:
                emails += 1
        operators = {e.actor for e in ordered if e.kind == "status"}
        visitors = {e.actor for e in ordered if e.kind == "message"}
        lines.append(f"{site},messages={chats},emails={emails},operators={len(operators)},visitors={len(visitors)}")
    return lines
