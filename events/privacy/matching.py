"""Which stored raw records are an actor's: the rule erasure applies to rejected records
and to stored request bodies, where no indexed column says whose a record is.

A record is the actor's when it is a JSON object whose actor field (chat `from`, xmpp
`nick`, SPEC §2) is the actor id and, within a site, whose site field (chat `site_id`,
an integer being its decimal text; xmpp `channel`) is that site. A record that is not
readable JSON (a broken line, cut text) is the actor's when its text holds the id as a
JSON string, quotes included, whatever the site (its site cannot be read): so no row
keeps the id. Mentions in free text (a message body naming someone) are not records of
that actor and are kept.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from ingest.body import iter_body_records
from ingest.framing import Broken

ACTOR_FIELDS = ("from", "nick")
SITE_FIELDS = ("site_id", "channel")
CUT_TYPE = "application/x-ndjson"  # a body with records cut out is stored as NDJSON


def parse(raw: bytes | str) -> dict | None:
    """The record as a JSON object, or None if it is not one."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def actors_of(record: dict) -> list[str]:
    return [value for field in ACTOR_FIELDS if isinstance(value := record.get(field), str) and value]


def sites_of(record: dict) -> set[str]:
    sites = set()
    for field in SITE_FIELDS:
        value = record.get(field)
        if isinstance(value, str):
            sites.add(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            sites.add(str(value))
    return sites


class ActorRecords:
    """Tells whether raw records are `actor`'s (on `site`, when given)."""

    def __init__(self, actor: str, site: str | None = None) -> None:
        self.actor = actor
        self.site = site
        self.quoted = orjson.dumps(actor)  # the id as a JSON string, as it appears in raw text
        self.quoted_text = self.quoted.decode()

    def matches(self, raw: bytes | str) -> bool:
        record = parse(raw)
        if record is None:
            return (self.quoted_text in raw) if isinstance(raw, str) else (self.quoted in raw)
        if self.actor not in actors_of(record):
            return False
        return self.site is None or self.site in sites_of(record)


def cut_records(body: bytes, content_type: str, is_theirs: Callable[[bytes], bool], max_record: int) -> bytes | None:
    """The body as NDJSON without the records `is_theirs` (blank lines in their place), or
    None if it holds none. Line n holds the record that was at line (NDJSON) or position
    (array) n, so the other records keep their numbers in rejections and on reprocessing."""
    lines: dict[int, bytes] = {}
    found = False
    for line, raw, _ in iter_body_records(body, content_type, max_record):
        text = raw.head if type(raw) is Broken else raw
        if is_theirs(text):
            found = True
        else:
            lines[line] = text.replace(b"\r\n", b" ").replace(b"\n", b" ").replace(b"\r", b" ")
    if not found:
        return None
    last = max(lines, default=0)
    return b"\n".join(lines.get(n, b"") for n in range(1, last + 1))
