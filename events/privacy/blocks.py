"""Withholding the records of erased actors on every storing path.

An erasure first records a block (events/privacy/models.py `ActorBlock`): a fence for the records
received before it and not stored yet, and, with `--suppress`, a suppression for every
record after it. Each storing transaction (workers, replays: `ingest.store.store_group`)
takes the erasure lock in shared mode and then reads the blocks; the erasure takes it
exclusively to add its block. So a group either committed before the block (and its rows
are then seen and deleted by the erasure) or reads the block and withholds the records,
and cuts them out of its stored request body: nothing of the actor is stored after its
erasure. Imports read the blocks when they start (their chunks are validated ahead in
other processes): docs/operations.md says what that means.

The actor id is never stored: only an HMAC-SHA256 of it with `SUPPRESSION_KEY` (default:
`SECRET_KEY`). Changing that key voids the blocks made with the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.conf import settings
from django.db import connection

from events.privacy.matching import CUT_TYPE, actors_of, cut_records, parse, sites_of
from events.privacy.models import ActorBlock
from events.registry import NormalizedEvent
from ingest.body import decode_body
from ingest.models import RawBatch
from ingest.records import Chunk, RejectedRecord

# The advisory lock erasures take exclusively and storing transactions in shared mode (PostgreSQL).
# SQLite needs none: its transactions are IMMEDIATE, so writers already run one at a time.
ERASURE_LOCK = 0x53424552  # "SBER"
WITHHELD = "(withheld: the record names an actor whose data was erased)"
SUPPRESSED = "its actor's records are refused (erasure request)"
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def actor_key(actor: str) -> str:
    """The keyed hash that stands for an actor id in stored rows."""
    key = (settings.SUPPRESSION_KEY or settings.SECRET_KEY).encode()
    return hmac.new(key, actor.encode(), hashlib.sha256).hexdigest()


def lock_shared() -> None:
    """Inside a storing transaction: wait for a running erasure to record its block."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [ERASURE_LOCK])


def lock_exclusive() -> None:
    """Inside an erasure's transaction: no storing transaction runs until it commits."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ERASURE_LOCK])


@dataclass(frozen=True, slots=True)
class Block:
    actor_key: str
    site: str  # "" for every site
    received_before: float | None  # epoch seconds; None: a suppression (every record)
    reason: str


@dataclass(frozen=True, slots=True)
class Blocks:
    """The blocks in force, read once per storing transaction (picklable: import workers get it)."""

    blocks: tuple[Block, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def verdict(self, actor: object, site: str | None, received_at: float, keys: dict[str, str]) -> Block | None:
        """The block that withholds a record of `actor` on `site` (None: a site that cannot be
        read, which every block of the actor covers) received at `received_at`, if any."""
        if not actor or not isinstance(actor, str):
            return None  # interaction events have no actor
        key = keys.get(actor)
        if key is None:
            key = keys[actor] = actor_key(actor)
        for block in self.blocks:
            in_force = block.received_before is None or received_at < block.received_before
            if block.actor_key == key and (site is None or block.site in ("", site)) and in_force:
                return block
        return None

    def raw_verdict(self, raw: bytes | str, received_at: float, keys: dict[str, str]) -> Block | None:
        """`verdict` for a raw record, by the rule of events/privacy/matching.py: a readable object by
        its actor and site fields, anything else by every JSON string its text holds."""
        record = parse(raw)
        if record is None:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            for literal in JSON_STRING.findall(text):
                with contextlib.suppress(orjson.JSONDecodeError):
                    if block := self.verdict(orjson.loads(literal), None, received_at, keys):
                        return block
            return None
        sites = sites_of(record) or {""}
        for actor in actors_of(record):
            for site in sites:
                if block := self.verdict(actor, site, received_at, keys):
                    return block
        return None

    def withhold(self, chunk: Chunk, received_at: float) -> int:
        """Move the chunk's blocked records to its rejections, keeping no text of them: a
        suppressed record is rejected with the suppression's reason, a fenced one (received
        before its erasure) only counted; rejected records of a blocked actor lose their text
        the same way. Run before storing: a withheld record claims no id. Returns how many."""
        if not self.blocks:
            return 0
        keys: dict[str, str] = {}
        kept: list[tuple[int, NormalizedEvent]] = []
        rejections: list[tuple[int, RejectedRecord | Block]] = []
        for line, event in chunk.events:
            block = self.verdict(event.actor, event.site, received_at, keys)
            if block is None:
                kept.append((line, event))
            else:
                rejections.append((line, block))
        for record in chunk.rejections:
            rejections.append((record.line, self.raw_verdict(record.raw, received_at, keys) or record))
        withheld = sum(isinstance(item, Block) for _, item in rejections)
        if not withheld:
            return 0
        chunk.withheld += withheld
        chunk.events, chunk.rejections = kept, []
        for line, item in sorted(rejections, key=lambda pair: pair[0]):
            if isinstance(item, RejectedRecord):
                chunk.rejections.append(item)
            elif item.received_before is not None or (
                chunk.max_rejections is not None and len(chunk.rejections) >= chunk.max_rejections
            ):
                chunk.omitted_rejections += 1
            else:
                reason = f"{SUPPRESSED}: {item.reason}" if item.reason else SUPPRESSED
                chunk.rejections.append(RejectedRecord(line, reason, WITHHELD))
        return withheld

    def cut_body(self, batch: RawBatch, received_at: float) -> None:
        """Cut the blocked records out of a batch's stored request body (events/privacy/matching.py)."""
        keys: dict[str, str] = {}
        limits = settings.SWITCHBOARD
        body = decode_body(bytes(batch.body), batch.content_encoding, limits["MAX_BODY_BYTES"])
        kept = cut_records(
            body,
            batch.content_type,
            lambda raw: self.raw_verdict(raw, received_at, keys) is not None,
            limits["MAX_RECORD_BYTES"],
        )
        if kept is not None:
            RawBatch.objects.filter(pk=batch.pk).update(body=kept, content_type=CUT_TYPE, content_encoding="")


def current_blocks() -> Blocks:
    """The blocks in force now (one query of a small table)."""
    rows = ActorBlock.objects.values_list("actor_key", "site", "received_before", "reason")
    return Blocks(tuple(Block(key, site, _epoch(before), reason) for key, site, before, reason in rows))


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
