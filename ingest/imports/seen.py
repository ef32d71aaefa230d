"""Which event ids an import may have stored already: a Bloom filter, so that the database
is asked only about those.

Before copying a chunk's new events into the table, the import looks up which of the
chunk's ids are stored already. For a file that dominates the table, nearly every id is
new, and that look-up (one probe of the uid index per id) costs a durable PostgreSQL
about as much as storing the row. A Bloom filter of every id in the table (those there
when the import started, then those it stores) answers "certainly not stored" for
nearly all of them without a query; the few "maybe" ids are looked up as before.

It only ever errs towards "maybe": an id the filter never saw (another writer stored it
meanwhile) is still caught by the uid's unique index, whose violation makes the chunk
insert its events with `ON CONFLICT DO NOTHING` instead. So it changes what the import
asks the database, never what it stores. Memory is fixed at creation (`MAX_BYTES` at
most); past its planned number of ids the filter only says "maybe" more often.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction

from events.identity import TABLE

BITS_PER_ID = 16  # with two probes: ~1.4 % false "maybe" at the planned number of ids
MIN_BYTES = 1 << 16
MAX_BYTES = 64 << 20  # 512 M bits: 32 M ids at ~1.4 %, 64 M at ~5 %
FETCH_IDS = 50_000


class SeenIds:
    """A Bloom filter of event ids with two probes taken from one 64-bit string hash.

    Python's string hash is fixed for a process's lifetime (and cached on each string),
    which is as long as the filter lives: it is never stored or shared.
    """

    def __init__(self, planned_ids: int) -> None:
        size = min(MAX_BYTES, max(MIN_BYTES, planned_ids * BITS_PER_ID // 8))
        size = 1 << (size - 1).bit_length()  # a power of two: positions are masked, not divided
        self.bits = bytearray(size)
        self.mask = size * 8 - 1

    def add(self, uids: Iterable[str]) -> None:
        bits, mask = self.bits, self.mask
        for uid in uids:
            h = hash(uid)
            a, b = h & mask, (h >> 32) & mask
            bits[a >> 3] |= 1 << (a & 7)
            bits[b >> 3] |= 1 << (b & 7)

    def add_returning_seen(self, uids: Iterable[str]) -> list[str]:
        """Add distinct ids; return those that may have been added before (one pass for both)."""
        bits, mask = self.bits, self.mask
        found = []
        for uid in uids:
            h = hash(uid)
            a, b = h & mask, (h >> 32) & mask
            byte_a, bit_a, byte_b, bit_b = a >> 3, 1 << (a & 7), b >> 3, 1 << (b & 7)
            if bits[byte_a] & bit_a and bits[byte_b] & bit_b:
                found.append(uid)
            bits[byte_a] |= bit_a
            bits[byte_b] |= bit_b
        return found

    def maybe(self, uids: Iterable[str]) -> list[str]:
        """The ids that may have been added (all that were, and a few that were not)."""
        bits, mask = self.bits, self.mask
        found = []
        for uid in uids:
            h = hash(uid)
            a, b = h & mask, (h >> 32) & mask
            if bits[a >> 3] >> (a & 7) & 1 and bits[b >> 3] >> (b & 7) & 1:
                found.append(uid)
        return found


def seen_ids_of_table(planned_new_ids: int) -> SeenIds:
    """A filter holding every id registered now (stored or pruned: events/identity.py),
    sized for `planned_new_ids` more."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT GREATEST(reltuples::bigint, 0) FROM pg_class WHERE oid = '{TABLE}'::regclass")
        estimate = int(cursor.fetchone()[0] or 0)
    seen = SeenIds(estimate + planned_new_ids)
    # A server-side cursor (it lives in a transaction): the ids stream in bounded memory.
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(f"SELECT uid FROM {TABLE}")
        while rows := cursor.fetchmany(FETCH_IDS):
            seen.add(uid for (uid,) in rows)
    return seen
