"""Storing the chunks of an imported file: validated in worker processes, written by one.

A chunk is prepared without the database (`prepare`: validation, in-chunk
duplicates, and on PostgreSQL the COPY text of its events), which is what the
worker processes of a pipeline do, and stored in one transaction with its
provenance `RawBatch` and the caller's checkpoint (`store`).
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import fcntl
import functools
import gc
import io
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate, compress
from multiprocessing import get_context
from operator import ne
from typing import NamedTuple, TypeVar

import orjson
from django.db import DataError, IntegrityError, InternalError, connection, transaction
from django.utils import timezone

from events import identity
from events.db import copy_text, insert_ignoring_conflicts, is_postgresql
from events.models import Site, Stanza
from events.privacy.blocks import Blocks, current_blocks, lock_shared
from ingest.collector import COLLECT_EVERY, collector_paused
from ingest.framing import LineBlock, RawRecord, records_of
from ingest.imports import copy_rows
from ingest.imports.seen import SeenIds
from ingest.models import RawBatch, Rejection
from ingest.monitoring import recording
from ingest.records import REFUSED, Chunk, RejectedRecord, event_columns, rejected, validate_columns, validate_into
from reports import event_counts, maintenance

T = TypeVar("T")
NO_BLOCKS = Blocks()
PR_SET_PDEATHSIG = 1

# A chunk of an import (a transaction) is validated in parts of at most this many lines: a
# worker's memory grows with its part, while the database's work per line falls with the
# transaction (`store_parts`).
PART_LINES = 25_000

# The columns a chunk brings; `batch_id` is added when it is stored.
COLUMNS = (
    "uid", "family", "kind", "category", "site_id", "session", "actor", "ts", "online", "client_timestamp", "raw",
    "line",
)  # fmt: skip
_NAMES = ", ".join(COLUMNS)


class StoredEvent(NamedTuple):
    """An event a chunk stored (not a duplicate): what the summaries' upkeep reads of it."""

    id: int | None  # None when it was copied in bulk (known only when it has a detail row)
    uid: str
    family: str
    kind: str
    category: str
    site: str
    session: str
    actor: str
    ts: float
    online: bool | None


@dataclass(slots=True)
class Prepared:
    """A validated chunk, ready to store: its events once each, in id order."""

    first_line: int
    last_line: int
    end_offset: int
    next_line: int  # the line number at `end_offset`, where the next chunk goes on counting
    records: int  # non-blank records read
    events: int  # valid records, duplicates within the chunk included
    uids: list[str]  # distinct, sorted
    copy: bytes = b""  # PostgreSQL: COPY text of the rows, in `uids` order (a row is found by `copy_rows.row_at`)
    # PostgreSQL: the id registry's COPY text of the rows (`uid\tts`, events/identity.py), in `uids` order.
    claims: bytes = b""
    rows: list[tuple] = field(default_factory=list)  # SQLite: the rows, in `uids` order
    rejections: list[RejectedRecord] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    details: dict[str, dict] = field(default_factory=dict)  # uid -> its family's detail row (xmpp stanza)
    # Tallies of the events, for the summaries' upkeep: what they mark stale
    # (`maintenance.stale_marks`) and the dashboard's rollup (`event_counts.tally`).
    marks: Counter[tuple[str, str]] = field(default_factory=Counter)
    counts: Counter[tuple[int, str, str]] = field(default_factory=Counter)

    # Pickled (a worker hands it back) with its ids as one text when none holds a newline: the
    # pickler keeps a memo entry for each of a list's 25,000 strings (3.5 ms a chunk, against
    # 0.4 ms for a join and one string; unpickling and splitting cost what unpickling the list did).
    def __getstate__(self) -> list:
        state = [getattr(self, name) for name in self.__slots__]  # type: ignore[attr-defined]
        joined = "\n".join(self.uids)
        if joined.count("\n") == len(self.uids) - 1:
            state[_UIDS] = joined
        return state

    def __setstate__(self, state: list) -> None:
        for name, value in zip(self.__slots__, state, strict=True):  # type: ignore[attr-defined]
            object.__setattr__(self, name, value)
        if isinstance(self.uids, str):
            self.uids = self.uids.split("\n")


_UIDS = Prepared.__slots__.index("uids")  # type: ignore[attr-defined]


@dataclass(slots=True)
class Inserted:
    """What inserting a chunk's events did."""

    count: int = 0  # events stored
    skipped: list[str] = field(default_factory=list)  # ids of the chunk's events it did not store
    ids: list[tuple[int, str]] = field(default_factory=list)  # (event id, uid) where the insert returned them

    def __iadd__(self, other: Inserted) -> Inserted:
        self.count += other.count
        self.skipped += other.skipped
        self.ids += other.ids
        return self


@dataclass(slots=True)
class Stored:
    accepted: int
    duplicates: int
    rejected: int
    batch: RawBatch


def prepare(
    records: list[RawRecord] | LineBlock,
    now: float,
    postgresql: bool,
    array: bool = False,
    withheld: Blocks = NO_BLOCKS,
) -> Prepared:
    """Validate a chunk's records; keep the first of each id (in line order), sorted by id.

    `withheld`: the erasure blocks read when the import started (events/privacy/blocks.py)."""
    chunk = Chunk()
    if withheld:
        records = records.records() if isinstance(records, LineBlock) else records
        withheld.withhold(validate_into(chunk, records, now), now)
        columns, details = event_columns(chunk.events)
    else:
        columns, details = validate_columns(chunk, records, now)
    if array:  # the line at the chunk's end offset: the last element's last line
        _, raw, _ = records[-1]  # type: ignore[index]
        next_line = chunk.last_line + (raw.count(b"\n") if isinstance(raw, bytes) else 0)
    else:  # the line after the last
        next_line = chunk.last_line + 1
    uids = columns[0]
    # The rows in id order, an id's rows in line order (a stable sort), then its first row
    # only: no dict of the ids (hashing each), a sort and C passes.
    kept = sorted(range(len(uids)), key=uids.__getitem__)
    order = list(map(uids.__getitem__, kept))
    first = list(map(ne, order, [None, *order[:-1]]))  # whether a row is its id's first
    if not all(first):
        kept, order = list(compress(kept, first)), list(compress(order, first))
    _, families, _, _, sites, sessions, _, ts, *_ = columns
    # Tallied over every row, less the rows of ids seen before in the chunk (few).
    marks = maintenance.stale_marks_of(families, sites, sessions)
    counts = event_counts.tally_of(ts, families, sites)
    if len(kept) < len(uids):
        repeated = sorted(set(range(len(uids))).difference(kept))
        again = [[column[i] for i in repeated] for column in (families, sites, sessions, ts)]
        marks.subtract(maintenance.stale_marks_of(*again[:3]))
        counts.subtract(event_counts.tally_of(again[3], again[0], again[1]))
        marks, counts = +marks, +counts
    kept_rows = set(kept) if details else set()
    prepared = Prepared(
        first_line=chunk.first_line,
        last_line=chunk.last_line,
        end_offset=chunk.end_offset,
        next_line=next_line,
        records=len(uids) + chunk.rejected,
        events=len(uids),
        uids=order,
        rejections=chunk.rejections,
        sites=sorted({site for _, _, site in counts}),  # of the rows kept: the keys counted (once at least)
        details={uids[i]: detail for i, detail in details.items() if i in kept_rows},
        marks=marks,
        counts=counts,
    )
    if postgresql:  # built for every row in line order, then taken in id order
        rows, claims = copy_rows.row_texts(columns)
        prepared.copy = copy_rows.joined(list(map(rows.__getitem__, kept)))
        prepared.claims = copy_rows.joined(list(map(claims.__getitem__, kept)))
    else:
        columns = [order, *(list(map(column.__getitem__, kept)) for column in columns[1:])]
        texts = map(bytes.decode, map(bytes.strip, columns[10]))
        prepared.rows = list(zip(*columns[:10], texts, columns[11], strict=True))
    return prepared


# -- the pipeline ----------------------------------------------------------------


def prepared_chunks(
    chunks: Iterable[tuple[list[LineBlock | RawRecord], T]], workers: int, *, array: bool = False, ahead: int = 1
) -> Iterator[tuple[Prepared, T]]:
    """Prepare chunks (records, or blocks of lines: `framing.ndjson_blocks`) in `workers`
    processes (in this one if 0), in order, a few ahead at most; each comes back with what
    the caller gave with it.

    "Future" timestamps are judged against the clock when a chunk is handed out.
    Memory stays bounded: at most `workers + ahead` chunks wait to be stored (`ahead`: as
    many as the caller stores at once, so that the workers go on while it does).
    """
    postgresql = is_postgresql()
    withheld = current_blocks()
    with collector_paused() as collect:
        if workers <= 0:
            for pieces, extra in chunks:
                yield prepare(_handed(pieces, array), time.time(), postgresql, array, withheld), extra
                collect()
            return
        # Forked workers inherit this process's settings, and its database connections, which
        # they never touch: a forked worker leaves with os._exit, closing none of them.
        with ProcessPoolExecutor(
            workers, mp_context=get_context("fork"), initializer=_start_worker, initargs=(os.getpid(),)
        ) as pool:
            _widen_pipes(pool)
            # A fork pool starts its workers at its first task: a trivial one starts them now,
            # before this process reads the first chunk (its buffers, ~25 MiB, would stay in
            # each worker for good: the frames holding them are never resumed there).
            pool.submit(int).result()
            pending: deque[tuple[Future[Prepared], T]] = deque()
            for pieces, extra in chunks:
                chunk = _handed(pieces, array)
                submitted = pool.submit(_prepare_collected, chunk, time.time(), postgresql, array, withheld)
                pending.append((submitted, extra))
                if len(pending) >= workers + ahead:
                    future, extra = pending.popleft()
                    yield future.result(), extra
                    collect()
            while pending:
                future, extra = pending.popleft()
                yield future.result(), extra
                collect()


def _handed(pieces: list[LineBlock | RawRecord], array: bool) -> list[RawRecord] | LineBlock:
    """What `prepare` gets of a chunk: an NDJSON chunk of whole lines as one block (joined
    from the framing's blocks without touching a line), any other as its records."""
    if not array and pieces and all(isinstance(piece, LineBlock) for piece in pieces):
        return LineBlock.joined(pieces)  # type: ignore[arg-type]
    return records_of(pieces)


F_SETPIPE_SZ = 1031  # Linux
PIPE_BYTES = 1 << 20  # the most an unprivileged process may ask (/proc/sys/fs/pipe-max-size)


def _widen_pipes(pool: ProcessPoolExecutor) -> None:
    """A chunk goes to a worker and comes back through pipes of 64 KiB: its megabytes
    cross in a hundred writes, each waking the reader. Pipes of 1 MiB take a few."""
    for queue in (pool._call_queue, pool._result_queue):  # type: ignore[attr-defined]
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(queue._reader.fileno(), F_SETPIPE_SZ, PIPE_BYTES)


_prepared_here = 0  # chunks this worker process prepared


def _prepare_collected(
    chunk: list[RawRecord] | LineBlock, now: float, postgresql: bool, array: bool, withheld: Blocks
) -> Prepared:
    """`prepare` in a worker process, whose collector is paused (ingest/collector.py)."""
    global _prepared_here  # noqa: PLW0603 - per worker process
    _prepared_here += 1
    if _prepared_here % COLLECT_EVERY == 0:
        gc.collect()
    return prepare(chunk, now, postgresql, array, withheld)


def _start_worker(parent: int) -> None:
    """A worker ends when the import does, even killed with SIGKILL: an orphan would keep
    the import's stdout open and wait forever on a queue nobody reads. What it inherited
    (Django, the settings) lives as long as it does: kept out of the collector's passes."""
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere an orphan stays
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
    gc.freeze()
    gc.disable()  # for the worker's lifetime: `_prepare_collected` collects every few chunks
    _keep_freed_memory()


# glibc's mallopt parameters: a chunk's buffers (its records, its COPY text, the pickles) are
# megabytes each; by default each is mapped anew and its pages faulted in, then unmapped when
# freed (joining a chunk's rows: 4.0 ms with 2,163 page faults, 0.6 ms kept in the heap).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems
TRIM_THRESHOLD = 256 * 1024 * 1024


def _keep_freed_memory() -> None:
    """Keep freed memory in this process's heap for the next chunk (glibc; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


# -- storing -----------------------------------------------------------------------


def store(
    prepared: Prepared,
    *,
    source: str,
    job_id: int | None,
    byte_start: int,
    seen: SeenIds | None = None,
    range_id: int | None = None,
) -> Stored:
    """Store a prepared chunk under a new provenance batch (call inside the checkpoint's transaction).

    `seen` (PostgreSQL): the ids possibly stored already; only those are looked up.
    """
    return store_parts([prepared], source=source, job_id=job_id, byte_start=byte_start, seen=seen, range_id=range_id)[0]


def store_parts(
    parts: list[Prepared],
    *,
    source: str,
    job_id: int | None,
    byte_start: int,
    seen: SeenIds | None = None,
    range_id: int | None = None,
) -> list[Stored]:
    """Store consecutive prepared parts of a source, each under a provenance batch of its own,
    in the caller's transaction (the checkpoint's, after the last part).

    On PostgreSQL their new ids are registered in one `COPY`, then their events copied
    (`_insert_together`), and the summaries' tallies added once: the registry's
    unique index is swept once per transaction instead of once per part, and the rollup
    upserted once (docs/benchmarks.md, the import's seventh round). Parts that need
    care (detail rows, an id another writer stored meanwhile, a value the database refuses)
    are stored one by one instead, as a single part always is.
    """
    lock_shared()  # as every storing transaction: no prune moves ids between its look-up and its insert
    starts = [byte_start, *(part.end_offset for part in parts[:-1])]
    batches = [_new_batch(part, source, job_id, start) for part, start in zip(parts, starts, strict=True)]
    _add_sites(sorted(set().union(*(part.sites for part in parts))))
    together = _insert_together(parts, [batch.pk for batch in batches], seen) if len(parts) > 1 else None
    if together is None:
        results = [_insert_isolating(part, batch.pk, seen) for part, batch in zip(parts, batches, strict=True)]
    else:
        results = [(inserted, []) for inserted in together]
    marks: Counter[tuple[str, str]] = Counter()
    counts: Counter[tuple[int, str, str]] = Counter()
    stored = []
    for part, batch, start, (inserted, refused) in zip(parts, batches, starts, results, strict=True):
        Stanza.objects.bulk_create(
            [Stanza(event_id=pk, **part.details[uid]) for pk, uid in inserted.ids if uid in part.details],
            batch_size=1000,
        )
        part_marks, part_counts = _tallies_of_new(part, inserted.skipped)
        marks.update(part_marks)
        counts.update(part_counts)
        stored.append(_finish_batch(part, batch, start, inserted, refused, part_counts, job_id, range_id))
    maintenance.deferred_events_stored(marks, counts)
    return stored


def _new_batch(prepared: Prepared, source: str, job_id: int | None, byte_start: int) -> RawBatch:
    return RawBatch.objects.create(
        source=source,
        import_job_id=job_id,
        byte_start=byte_start,
        byte_end=prepared.end_offset,
        first_line=prepared.first_line,
        last_line=prepared.last_line,
        record_count=prepared.records,
        status=RawBatch.Status.DONE,
        processed_at=timezone.now(),
    )


def _finish_batch(
    prepared: Prepared,
    batch: RawBatch,
    byte_start: int,
    inserted: Inserted,
    refused: list[RejectedRecord],
    counts: Counter[tuple[int, str, str]],
    job_id: int | None,
    range_id: int | None,
) -> Stored:
    """A part's rejections and counts, and its line in the metrics once the transaction commits
    (`counts`: the tally of the events it stored)."""
    rejections = prepared.rejections + refused
    _add_rejections(batch, rejections)
    result = Stored(inserted.count, prepared.events - inserted.count - len(refused), len(rejections), batch)
    batch.accepted, batch.duplicates, batch.rejected = result.accepted, result.duplicates, result.rejected
    batch.save(update_fields=["accepted", "duplicates", "rejected"])
    families: Counter[str] = Counter()
    for (_, family, _), n in counts.items():
        families[family] += n
    transaction.on_commit(  # with the checkpoint: a chunk rolled back counts nothing
        functools.partial(
            recording.import_chunk_stored, job_id=job_id, range_id=range_id, batch_id=batch.pk,
            lines=prepared.records, byte_start=byte_start, byte_end=prepared.end_offset,
            next_line=prepared.next_line, families=families, duplicates=result.duplicates,
            rejection_reasons=[r.reason for r in rejections],
        )
    )  # fmt: skip
    return result


def _add_sites(codes: list[str]) -> None:
    """Create the sites not there yet (a chunk names most of a file's sites, every time)."""
    if not is_postgresql():
        Site.objects.bulk_create([Site(code=code) for code in codes], ignore_conflicts=True, batch_size=1000)
        return
    with connection.cursor() as cursor:  # one statement and parameter (JSON: no adapting a value each)
        cursor.execute(
            "INSERT INTO events_site (code, first_seen) SELECT code, now() FROM json_array_elements_text(%s::json)"
            " AS code ON CONFLICT (code) DO NOTHING",
            [orjson.dumps(codes).decode()],
        )


REJECTION_COLUMNS = "batch_id, line, reason, rule, raw, complete, created_at, replay_outcome, event_uid"


def _add_rejections(batch: RawBatch, rejections: list[RejectedRecord]) -> None:
    """The chunk's rejections; on PostgreSQL one COPY (model instances cost ~50 µs a row)."""
    if not rejections:
        return
    if not is_postgresql():
        Rejection.objects.bulk_create([Rejection.from_record(batch, r) for r in rejections], batch_size=1000)
        return
    head, created = f"{batch.pk}\t", f"\t{timezone.now().isoformat()}\t\t\n"  # replay_outcome, event_uid: ""
    text = "".join(
        f"{head}{line}\t{copy_text(reason)}\t{copy_text(rule)}\t{copy_text(raw)}\t{copy_text(complete)}{created}"
        for line, reason, rule, raw, complete in map(Rejection.values_of, rejections)
    )
    with connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.cursor.copy_expert(
            f"COPY {Rejection._meta.db_table} ({REJECTION_COLUMNS}) FROM STDIN", io.BytesIO(text.encode())
        )


def _tallies_of_new(
    prepared: Prepared, skipped: list[str]
) -> tuple[Counter[tuple[str, str]], Counter[tuple[int, str, str]]]:
    """The tallies of the events stored: the chunk's, less those of the few it skipped
    (stored already, or refused)."""
    if not skipped:
        return prepared.marks, prepared.counts
    events = _events_of(prepared, skipped)
    marks, counts = prepared.marks.copy(), prepared.counts.copy()
    marks.subtract(maintenance.stale_marks(events))
    counts.subtract(event_counts.tally(events))
    return marks, counts


def _events_of(prepared: Prepared, uids: list[str]) -> list[StoredEvent]:
    """The chunk's events with these ids, read back from its rows (SQLite) or COPY text."""
    if not prepared.copy:
        return [StoredEvent(None, *prepared.rows[bisect.bisect_left(prepared.uids, uid)][:9]) for uid in uids]
    events = []
    for start, end in _rows_of(prepared.copy, prepared.uids, sorted(uids)):
        line = prepared.copy[start:end].decode()
        uid, family, kind, category, site, session, actor, ts = map(copy_rows.unescaped, line.split("\t")[:8])
        events.append(StoredEvent(None, uid, family, kind, category, site, session, actor, float(ts), None))
    return events


# Rows looked for by halving (~6 µs each) at most, per row of the text (a split costs ~0.25 µs a row).
SOUGHT_ROWS_PER_ROW = 1 / 32


def _rows_of(text: bytes, uids: list[str], sought: list[str]) -> list[tuple[int, int]]:
    """Where the rows of the (sorted) `sought` ids are in a chunk's COPY text (of `uids`, sorted):
    few, each found by halving the text; many (a chunk stored before, in part), by splitting it."""
    if len(sought) <= len(uids) * SOUGHT_ROWS_PER_ROW:
        spans, start = [], 0
        for uid in sought:
            spans.append(span := copy_rows.row_at(text, uid, start))
            start = span[1]
        return spans
    ends = list(accumulate(map((1).__add__, map(len, text.split(b"\n")[:-1]))))
    return [(ends[i - 1] if i else 0, ends[i]) for i in (bisect.bisect_left(uids, uid) for uid in sought)]


def _insert(prepared: Prepared, batch_id: int, seen: SeenIds | None) -> Inserted:
    if not prepared.uids:
        return Inserted()
    if not is_postgresql():
        new = identity.claim([(row[0], row[7]) for row in prepared.rows])  # rows in uid order
        rows = [(*row, batch_id) for row in prepared.rows if row[0] in new]
        returned = insert_ignoring_conflicts(
            "events_event", (*COLUMNS, "batch_id"), rows, conflict="", returning="id, uid"
        )
        return _inserted(prepared, returned)
    return _insert_postgresql(prepared, batch_id, seen)


def _inserted(prepared: Prepared, returned: list[tuple]) -> Inserted:
    """What an insert that returned (id, uid) of the rows it stored did."""
    stored = {uid for _, uid in returned}
    return Inserted(len(returned), [uid for uid in prepared.uids if uid not in stored], [tuple(r) for r in returned])


def _insert_postgresql(prepared: Prepared, batch_id: int, seen: SeenIds | None) -> Inserted:
    # The ids that may be registered already: all of them, unless a filter knows better.
    asked = prepared.uids if seen is None else seen.add_returning_seen(prepared.uids)
    with connection.cursor() as cursor:
        if not prepared.details and (stored := _copy_new(cursor, prepared, batch_id, asked)) is not None:
            return stored
        # A temporary table lives as long as the session: created once per import.
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS import_staging ON COMMIT DELETE ROWS"
            f" AS SELECT {_NAMES} FROM events_event WITH NO DATA"
        )
        with connection.wrap_database_errors:
            cursor.cursor.copy_expert(f"COPY import_staging ({_NAMES}) FROM STDIN", io.BytesIO(prepared.copy))
        # The ids claimed in the registry in code-point order, the order of every other writer's
        # claims (Python's), whatever the column's collation: two writers sharing ids wait on each
        # other instead of deadlocking. Then the events of those ids only.
        cursor.execute(
            f"WITH claimed AS (INSERT INTO {identity.TABLE} (uid, ts) SELECT uid, ts FROM import_staging"
            ' ORDER BY uid COLLATE "C" ON CONFLICT (uid) DO NOTHING RETURNING uid)'
            f" INSERT INTO events_event ({_NAMES}, batch_id) SELECT {_NAMES}, %s FROM import_staging s"
            " WHERE s.uid IN (SELECT uid FROM claimed) RETURNING id, uid",
            [batch_id],
        )
        inserted = _inserted(prepared, cursor.fetchall())
        cursor.execute("TRUNCATE import_staging")
    return inserted


def _copy_new(cursor, prepared: Prepared, batch_id: int, asked: list[str]) -> Inserted | None:  # noqa: ANN001
    """Register the ids not registered yet and COPY their events straight into the table
    (rows are written in batches, unlike INSERT's one by one); None if another writer
    registered one of them meanwhile (the registry's key says so), then the caller claims
    ON CONFLICT.

    Only the `asked` ids are looked up: the others are known not to be registered.
    """
    stored = identity.claimed(asked) if asked else set()
    if len(stored) == len(prepared.uids):
        return Inserted(0, sorted(stored))
    left_out = sorted(stored)  # the rows left out of the COPY
    claims = _kept_text(prepared.claims, _rows_of(prepared.claims, prepared.uids, left_out))
    if not identity.copy_claims(cursor, claims):
        return None
    _copy_events(cursor, prepared, left_out, batch_id)
    return Inserted(len(prepared.uids) - len(stored), sorted(stored))


def _insert_together(parts: list[Prepared], batch_ids: list[int], seen: SeenIds | None) -> list[Inserted] | None:
    """PostgreSQL: the parts' new ids registered in one COPY, in id order, then their new
    events copied part by part, under one savepoint; None, having stored nothing, when the parts are
    to be stored one by one: on SQLite, with detail rows, when another writer registered one
    of the ids meanwhile, or when the database refuses a value (`_insert_isolating` sets it aside).

    An id of an earlier part of the same call is not registered yet: the later part's
    event of it is a duplicate, found among the ids the filter says may be stored.
    """
    if not is_postgresql() or any(part.details for part in parts):
        return None
    asked = [part.uids if seen is None else seen.add_returning_seen(part.uids) for part in parts]
    stored = identity.claimed(sorted(set().union(*asked)))
    left_out = [
        [uid for uid in ids if uid in stored or any(_holds(earlier.uids, uid) for earlier in parts[:i])]
        for i, ids in enumerate(asked)
    ]
    # One id order for the claims of every writer (events/identity.py): a COPY row starts with
    # its id, escaped in a way that keeps the order of ids (a backslash doubled; no id holds
    # a control character), and ends it with a tab, which sorts before any character of an id.
    claims = b"".join(
        sorted(
            row
            for part, out in zip(parts, left_out, strict=True)
            for row in _kept_text(part.claims, _rows_of(part.claims, part.uids, out)).splitlines(keepends=True)
        )
    )
    with connection.cursor() as cursor:
        try:
            with transaction.atomic():
                if not identity.copy_claims(cursor, claims):
                    return None
                for part, out, batch_id in zip(parts, left_out, batch_ids, strict=True):
                    _copy_events(cursor, part, out, batch_id)  # one part's text at a time in memory
        except (DataError, IntegrityError, InternalError):
            if not connection.is_usable():
                raise
            return None
    return [Inserted(len(part.uids) - len(out), out) for part, out in zip(parts, left_out, strict=True)]


def _copy_events(cursor, prepared: Prepared, left_out: list[str], batch_id: int) -> None:  # noqa: ANN001
    """COPY the chunk's events but those of the (sorted) ids `left_out` into the event table."""
    data = _kept_text(prepared.copy, _rows_of(prepared.copy, prepared.uids, left_out))
    with connection.wrap_database_errors:  # a refused value: the caller's savepoint gives the claims back
        cursor.cursor.copy_expert(
            f"COPY events_event ({_NAMES}, batch_id) FROM STDIN",
            io.BytesIO(data.replace(b"\n", b"\t%d\n" % batch_id)),
        )


def _holds(uids: list[str], uid: str) -> bool:
    """Whether the sorted `uids` hold `uid`."""
    i = bisect.bisect_left(uids, uid)
    return i < len(uids) and uids[i] == uid


def _insert_isolating(
    prepared: Prepared, batch_id: int, seen: SeenIds | None = None
) -> tuple[Inserted, list[RejectedRecord]]:
    """Insert the chunk's events; a record the database refuses (a value it cannot hold, a
    constraint) becomes a rejection with the database's reason instead of failing its chunk.

    The events are tried together first, under a savepoint; only when that fails
    are they halved until the refused ones are found.
    """
    try:
        with transaction.atomic():
            return _insert(prepared, batch_id, seen), []
    except (DataError, IntegrityError, InternalError) as error:
        if not connection.is_usable():
            raise  # the connection is gone: the import stops with a resumable error
        if len(prepared.uids) == 1:
            line, raw = _line_and_raw(prepared)
            return Inserted(0, list(prepared.uids)), [rejected(line, REFUSED + _first_line(error), raw.encode())]
    middle = len(prepared.uids) // 2
    inserted = Inserted()
    refused: list[RejectedRecord] = []
    for half in (_subset(prepared, slice(None, middle)), _subset(prepared, slice(middle, None))):
        half_inserted, half_refused = _insert_isolating(half, batch_id)
        inserted += half_inserted
        refused += half_refused
    return inserted, refused


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _kept_text(text: bytes, left_out: list[tuple[int, int]]) -> bytes:
    """The COPY text but the rows at the (ascending) spans `left_out`: the text between them
    is taken in whole slices (they are few: ids stored already), copied once."""
    if not left_out:
        return text
    view, pieces, start = memoryview(text), [], 0
    for row_start, row_end in left_out:
        pieces.append(view[start:row_start])
        start = row_end
    pieces.append(view[start:])
    return b"".join(pieces)


def _subset(prepared: Prepared, part: slice) -> Prepared:
    lines = prepared.copy.splitlines(keepends=True) if prepared.copy else []
    claims = prepared.claims.splitlines(keepends=True) if prepared.claims else []
    return Prepared(
        first_line=prepared.first_line,
        last_line=prepared.last_line,
        end_offset=prepared.end_offset,
        next_line=prepared.next_line,
        records=0,
        events=0,
        uids=prepared.uids[part],
        copy=b"".join(lines[part]),
        claims=b"".join(claims[part]),
        rows=prepared.rows[part],
        details=prepared.details,
    )


def _line_and_raw(prepared: Prepared) -> tuple[int, str]:
    """The line number and record text of a one-event chunk."""
    if not prepared.copy:  # SQLite: the row itself
        row = prepared.rows[0]
        return row[-1], row[-2]
    fields = prepared.copy.decode().rstrip("\n").split("\t")
    return int(fields[-1]), copy_rows.unescaped(fields[-2])
