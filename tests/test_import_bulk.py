"""What bulk imports guarantee beyond the shared files (issue 11, issue 12 items 1, 7, 8):

- a file is resumed only when it is proven to be the file its job imported: another
  file with the same first MiB is imported from its start, with a notice (item 7);
- line numbers past 2**31 go through checkpoints, stored rows and file ranges (item 8);
- a number jsonb could not hold is imported with its neighbours, and a record the
  database refuses becomes a rejection with the database's reason instead of
  wedging its chunk (item 1);
- on PostgreSQL a file that dominates the event table is loaded without the
  table's secondary indexes, which are built again at its end (or by the sweeper
  when the import is killed meanwhile).
"""

from __future__ import annotations

import gc
import gzip
import io
import itertools
import math
import multiprocessing
import pickle
import time
from collections import Counter
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import orjson
import pytest
from django.core.management import call_command
from django.db import connection, transaction

from events.db import alongside, copy_text
from events.models import Event
from ingest.imports import bulk, loader, sequential
from ingest.imports.copy_rows import joined, row_at, row_texts
from ingest.imports.identity import FINGERPRINT_BYTES, fingerprint
from ingest.imports.parallel import finish_import
from ingest.imports.ranges import plan_import, process_range
from ingest.imports.seen import SeenIds
from ingest.imports.sequential import import_file, rebuild_abandoned_stale_summaries
from ingest.models import ImportJob, RawBatch, Rejection
from ingest.records import RejectedRecord
from reports import event_counts, site_summary
from reports.models import EventCount, SiteActor, SiteSummary
from tests import chat_oracle
from tests.conftest import REFUSED
from tests.races import against_a_code_point_claimer

pytestmark = pytest.mark.django_db(transaction=True)


def chat_line(uid: str, site: str = "s1", ts: float = 1_500_000_000.0) -> bytes:
    record = {"id": uid, "type": "message", "from": "v1", "site_id": site, "data": {"message": uid}, "timestamp": ts}
    return orjson.dumps(record)


def lines_file(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_jsonl", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def stored_uids() -> set[str]:
    return set(Event.objects.values_list("uid", flat=True))


# -- item 7: a file is proven, not guessed -----------------------------------------------


def prefix_lines() -> list[bytes]:
    """Records filling a little more than the fingerprinted first MiB."""
    lines, size = [], 0
    while size <= FINGERPRINT_BYTES:
        lines.append(chat_line(f"p-{len(lines)}", ts=1_500_000_000.0 + len(lines)))
        size += len(lines[-1]) + 1
    return lines


@pytest.mark.parametrize("compressed", [False, True])
def test_another_file_with_the_same_first_mib_is_imported_from_its_start(tmp_path, compressed):
    prefix = prefix_lines()
    first_tail = [chat_line(f"a-{i}") for i in range(50)]
    # The second file: the same first MiB, then other records, and more of them.
    second_tail = [chat_line(f"b-{i}", site="s2") for i in range(400)]

    def write(name: str, lines: list[bytes]) -> Path:
        data = b"".join(line + b"\n" for line in lines)
        path = tmp_path / (name + (".jsonl.gz" if compressed else ".jsonl"))
        path.write_bytes(gzip.compress(data) if compressed else data)
        return path

    first = write("first", prefix + first_tail)
    second = write("second", prefix + second_tail)
    if not compressed:
        assert fingerprint(str(first)) == fingerprint(str(second))

    _, err = run(str(first), "--chunk-lines=1000")
    assert "starts like" not in err
    _, err = run(str(second), "--chunk-lines=1000")

    # Not resumed at the first file's checkpoint: every record of the second file is there.
    assert stored_uids() == {f"p-{i}" for i in range(len(prefix))} | {f"a-{i}" for i in range(50)} | {
        f"b-{i}" for i in range(400)
    }
    if not compressed:  # compressed, the files' first MiB differ: nothing to tell
        assert f"{second}: starts like {first}" in err and "importing it from the start as a new file" in err
    assert f"{second}: accepted=400 duplicates={len(prefix)} rejected=0" in err
    assert ImportJob.objects.count() == 2

    # Each file resumes its own job from then on: nothing is read or counted again.
    batches = RawBatch.objects.count()
    for path, accepted in ((first, len(prefix) + 50), (second, 400)):
        _, err = run(str(path))
        assert "starts like" not in err
        assert f"{path}: accepted={accepted} " in err
    assert RawBatch.objects.count() == batches
    assert ImportJob.objects.count() == 2


def test_a_log_that_grew_resumes_after_what_was_imported(tmp_path):
    lines = prefix_lines()
    path = lines_file(tmp_path / "grows.jsonl", lines)
    run(str(path), "--chunk-lines=2000")
    imported_to = path.stat().st_size

    with open(path, "ab") as f:
        f.write(b"".join(chat_line(f"new-{i}") + b"\n" for i in range(30)))
    _, err = run(str(path))

    assert "starts like" not in err
    assert f"{path}: accepted={len(lines) + 30} duplicates=0" in err
    job = ImportJob.objects.get()
    assert job.next_offset == path.stat().st_size
    new_chunks = RawBatch.objects.filter(byte_start__gte=imported_to)
    assert [(b.byte_start, b.record_count) for b in new_chunks] == [(imported_to, 30)]  # only the new lines read


# -- item 8: line numbers past 2**31 --------------------------------------------------------


def test_line_numbers_past_2_31_go_through_checkpoints_rows_and_ranges(tmp_path):
    prefix = prefix_lines()  # over a MiB: the file keeps its fingerprint when it grows
    start = 2**31 - len(prefix) - 3
    tail = [chat_line(f"l-{i}") for i in range(4)] + [b"not json"] + [chat_line(f"l-{i}") for i in range(4, 8)]
    lines = prefix + tail
    path = lines_file(tmp_path / "long.jsonl", lines)
    # As if the lines before had been imported already (the job is found by the file's first MiB).
    ImportJob.objects.create(fingerprint=fingerprint(str(path)), path=str(path), next_line=start)

    import_file(str(path), chunk_lines=3000)

    first_tail = start + len(prefix)
    assert {uid: line for uid, line in Event.objects.values_list("uid", "line") if uid.startswith("l-")} == {
        **{f"l-{i}": first_tail + i for i in range(4)},
        **{f"l-{i}": first_tail + i + 1 for i in range(4, 8)},
    }
    assert list(Rejection.objects.values_list("line", flat=True)) == [first_tail + 4] == [2**31 + 1]
    job = ImportJob.objects.get()
    assert job.next_line == start + len(lines) > 2**31
    assert max(RawBatch.objects.values_list("last_line", flat=True)) == start + len(lines) - 1

    # A parallel import planned from a checkpoint past 2**31: its ranges count on from there.
    more = [chat_line(f"r-{i}") for i in range(6)]
    with open(path, "ab") as f:
        f.write(b"".join(line + b"\n" for line in more))
    plan = plan_import(str(path), chunk_bytes=len(more[0]) * 2)
    assert len(plan.unfinished) == 3
    for range_id in plan.unfinished:
        process_range(range_id, chunk_lines=1)
    finish_import(plan.job)
    first_new = start + len(lines)
    assert {uid: line for uid, line in Event.objects.values_list("uid", "line") if uid.startswith("r-")} == {
        f"r-{i}": first_new + i for i in range(6)
    }
    assert ImportJob.objects.get().next_line == first_new + 6


# -- item 1: values the database cannot hold, and records it refuses -----------------------


def test_a_number_jsonb_cannot_hold_is_imported_with_its_neighbours(tmp_path):
    tiny = (
        b'{"id":"tiny","type":"message","from":"v1","site_id":"s1",'
        b'"data":{"message":"x","n":1e-16384},"timestamp":1500000000}'
    )
    path = lines_file(tmp_path / "numbers.jsonl", [chat_line("before"), tiny, chat_line("after")])

    out, err = run(str(path), "--summary")

    assert f"{path}: accepted=3 duplicates=0 rejected=0" in err
    assert Event.objects.get(uid="tiny").raw == tiny.decode()  # stored as sent
    assert out == "s1,messages=0,emails=3,operators=0,visitors=1\n"


def test_a_record_the_database_refuses_is_rejected_and_its_chunk_stored(tmp_path, refuse_one_uid):
    lines = [chat_line(f"ok-{i}", ts=1_500_000_000.0 + i) for i in range(40)]
    lines[23] = chat_line(REFUSED)
    path = lines_file(tmp_path / "refused.jsonl", lines)

    _, err = run(str(path), "--chunk-lines=10")

    assert f"{path}: accepted=39 duplicates=0 rejected=1" in err
    assert stored_uids() == {f"ok-{i}" for i in range(40)} - {"ok-23"}
    rejection = Rejection.objects.get()
    assert rejection.line == 24
    assert rejection.reason.startswith("the database refused to store this record: ")
    assert "refused by a test trigger" in rejection.reason
    assert rejection.raw == lines[23].decode()
    # Resumable like any import: a rerun reads nothing again and counts nothing twice.
    _, err = run(str(path))
    assert f"{path}: accepted=39 duplicates=0 rejected=1" in err
    assert Rejection.objects.count() == 1


# -- PostgreSQL: loading a file that dominates the event table -------------------------------


def secondary_indexes() -> set[str]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, Event._meta.db_table)
    return {name for name, info in found.items() if info["index"] and not info["unique"] and not info["primary_key"]}


def test_a_dominating_file_is_loaded_with_its_indexes_built_after(tmp_path, settings, sample_data):
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "IMPORT_DEFER_INDEXES_BYTES": 0}
    wanted = {index.name for index in Event._meta.indexes}
    assert wanted <= secondary_indexes()
    source = sample_data / "chat" / "mixed.jsonl"
    summary = (sample_data / "chat" / "mixed.expected").read_text()
    outcome = chat_oracle.read_ndjson(source.read_bytes(), time.time())

    if connection.vendor == "postgresql":
        assert bulk.dominates(source.stat().st_size)  # an empty table
        # Killed after dropping them: the definitions wait with the job...
        job = ImportJob.objects.create(fingerprint=fingerprint(str(source)), path=str(source))
        bulk.defer_indexes(job)
        assert not wanted & secondary_indexes()
        assert {name for _, name, _ in ImportJob.objects.get().deferred_ddl} >= wanted
        # ...and the sweeper builds them once no import has moved for a while.
        ImportJob.objects.update(finished_at=None)
        assert rebuild_abandoned_stale_summaries(quiet_seconds=0) == 0
        assert wanted <= secondary_indexes()
        assert ImportJob.objects.get().deferred_ddl == []
    else:
        assert not bulk.dominates(source.stat().st_size)  # SQLite keeps its indexes

    vacuumed = manual_vacuums()
    out, err = run(str(source), "--summary", "--chunk-lines=500")

    assert out == summary
    assert f"accepted={len(outcome.accepted)} " in err
    if connection.vendor == "postgresql":
        # The loaded table and the rebuilt actor table were vacuumed before being read (their
        # pages all-visible: the rebuild's counts read the indexes alone).
        after = manual_vacuums()
        assert after.keys() == {"events", SiteActor._meta.db_table}
        assert all(after[table] > vacuumed[table] for table in after)
    assert wanted <= secondary_indexes()
    assert ImportJob.objects.get().deferred_ddl == []
    assert gc.isenabled()  # paused while chunks were handled, not after
    # The actors' unique index, built after the rebuild added them, is back.
    with connection.cursor() as cursor:
        actor_keys = connection.introspection.get_constraints(cursor, SiteActor._meta.db_table)
    assert actor_keys["site_actor_unique"]["unique"]
    # The dashboard's rollup, counted per chunk from the workers' tallies, is what a recount gives.
    counted = rollup_rows()
    assert sum(row[3] for row in counted) == len(outcome.accepted)
    event_counts.rebuild()
    assert rollup_rows() == counted


def manual_vacuums() -> dict[str, int]:
    """PostgreSQL: how many times the event table (all its partitions) and the actor table were VACUUMed by hand."""
    if connection.vendor != "postgresql":
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CASE WHEN relname = %s THEN relname ELSE 'events' END, SUM(vacuum_count) FROM pg_stat_user_tables"
            " WHERE relid IN (SELECT relid FROM pg_partition_tree('events_event')) OR relname = %s GROUP BY 1",
            [SiteActor._meta.db_table, SiteActor._meta.db_table],
        )
        return dict(cursor.fetchall())


def rollup_rows() -> list[tuple]:
    return list(EventCount.objects.order_by("hour", "family", "site").values_list("hour", "family", "site", "events"))


def test_the_filter_of_stored_ids_never_misses_one():
    seen = SeenIds(planned_ids=20_000)
    added = [f"id-{i}" for i in range(20_000)]
    seen.add(added)
    assert seen.maybe(added) == added  # every id it was given: never "certainly not stored"
    others = [f"other-{i}" for i in range(20_000)]
    assert len(seen.maybe(others)) < len(others) * 0.05  # ~0.4 % by design
    assert seen.maybe([]) == []


def test_the_filter_of_stored_ids_takes_16_bits_an_id_and_keeps_its_rate():
    """Sized as planned, not rounded up to a power of two (10 M lines: 35 MB, not 64 MiB)."""
    seen = SeenIds(planned_ids=100_000)
    assert len(seen.words) == 100_000 * 16 // 64
    seen.add(f"id-{i}" for i in range(100_000))
    others = [f"other-{i}" for i in range(100_000)]
    assert len(seen.maybe(others)) < len(others) * 0.007  # 0.48 % measured


def test_the_validating_workers_are_forked_before_the_first_chunk_is_read():
    """A forked worker keeps for good what the command held when it forked (the first
    chunk's buffers, were it read before)."""
    before = len(multiprocessing.active_children())
    workers_at_first_read = []

    def chunks():
        workers_at_first_read.append(len(multiprocessing.active_children()) - before)
        yield [(1, chat_line("a"), 0)], "first"

    prepared = [(p.uids, extra) for p, extra in loader.prepared_chunks(chunks(), workers=1)]

    assert workers_at_first_read == [1]
    assert prepared == [(["a"], "first")]


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_dominating_import_builds_its_filter_after_forking_its_workers(tmp_path, settings, monkeypatch, sample_data):
    """Forked after, the workers do not hold the filter's pages (which the command then writes)."""
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "IMPORT_DEFER_INDEXES_BYTES": 0}
    workers_when_built, built = [], sequential.seen_ids_of_table

    def seen_ids_of_table(planned: int) -> SeenIds:  # the real one, noting when it runs
        workers_when_built.append(len(multiprocessing.active_children()))
        return built(planned)

    monkeypatch.setattr(sequential, "seen_ids_of_table", seen_ids_of_table)

    job = import_file(str(sample_data / "chat" / "mixed.jsonl"), workers=1)

    assert workers_when_built == [1]
    assert job.accepted == Event.objects.count() > 0


def test_an_id_stored_behind_the_filters_back_is_counted_a_duplicate(tmp_path):
    """Another writer may store an id after the import read the stored ids into its filter:
    the unique index still catches it, and the chunk's counts leave it out."""
    run(str(lines_file(tmp_path / "first.jsonl", [chat_line("taken", site="s2")])))
    records = [(i + 1, chat_line(uid, site=f"s{i % 3}"), 0) for i, uid in enumerate(["a", "taken", "b", "c"])]
    prepared = loader.prepare(records, time.time(), connection.vendor == "postgresql")

    with transaction.atomic():
        stored = loader.store(prepared, source="test", job_id=None, byte_start=0, seen=SeenIds(planned_ids=10))

    assert (stored.accepted, stored.duplicates, stored.rejected) == (3, 1, 0)
    assert stored_uids() == {"a", "taken", "b", "c"}
    # "taken" was stored for s2 by the first file; the chunk's copy (for s1) is not counted.
    assert sorted(EventCount.objects.values_list("site", "events")) == [("s0", 2), ("s2", 2)]


def test_a_bulk_rebuild_of_actors_keeps_the_ones_there_and_adds_the_rest(tmp_path, sample_data):
    source = sample_data / "chat" / "mixed.jsonl"
    run(str(source))
    actors = sorted(SiteActor.objects.values_list("site_id", "role", "actor"))
    summary = [row.classic() for row in site_summary.summary_rows()]
    # Some actors lost (as if not added yet), every site rebuilt the bulk way.
    SiteActor.objects.filter(pk__in=SiteActor.objects.order_by("pk").values_list("pk", flat=True)[::2]).delete()

    indexes = actor_indexes()

    site_summary.rebuild_sites(SiteSummary.objects.values_list("site_id", flat=True), bulk=True)

    assert sorted(SiteActor.objects.values_list("site_id", "role", "actor")) == actors
    assert [row.classic() for row in site_summary.summary_rows()] == summary
    # Every index of the actor table (PostgreSQL drops them all for the insert) is back as it was.
    assert actor_indexes() == indexes
    assert indexes["site_actor_unique"]["unique"] and any(i["primary_key"] for i in indexes.values())


def test_a_bulk_rebuild_adds_the_actors_of_the_sites_not_said_to_have_them(tmp_path, sample_data):
    """`finish_load` adds the stale sites' actors alongside the index builds and tells the
    rebuild which sites those were: any other site stale by then gets its actors added."""
    run(str(sample_data / "chat" / "mixed.jsonl"))
    actors = sorted(SiteActor.objects.values_list("site_id", "role", "actor"))
    summary = [row.classic() for row in site_summary.summary_rows()]
    sites = sorted({site for site, _, _ in actors})
    said, other = sites[: len(sites) // 2], sites[len(sites) // 2 :]
    assert said and other
    SiteActor.objects.filter(site_id__in=other).delete()  # as if stored after the actors were added

    site_summary.rebuild_sites(sites, bulk=True, actors_added=said)

    assert sorted(SiteActor.objects.values_list("site_id", "role", "actor")) == actors
    assert [row.classic() for row in site_summary.summary_rows()] == summary


def test_work_alongside_runs_on_its_own_connection_and_its_error_is_raised_after():
    def work() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        ran.append(connection.connection is not main)  # its own connection
        raise ValueError("from the thread")

    ran: list[bool] = []
    connection.ensure_connection()
    main = connection.connection
    steps = []
    with pytest.raises(ValueError, match="from the thread"), alongside(work, name="test"):
        steps.append("block")
    assert steps == ["block"] and ran == [True]
    assert connection.connection is main  # this thread's is untouched


def actor_indexes() -> dict[str, dict]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, SiteActor._meta.db_table)
    return {name: c for name, c in found.items() if c["index"] or c["primary_key"] or c["unique"]}


def status_line(uid: str, ts: float, status: str, site: str = "s1") -> bytes:
    record = {"id": uid, "type": "status", "from": "op1", "site_id": site, "data": {"status": status}, "timestamp": ts}
    return orjson.dumps(record)


def test_a_rebuild_counts_messages_on_a_spans_edges_as_the_semantics_say(tmp_path):
    """The rebuild counts messages stretch by stretch in the database (issue 21): a message
    at a span's start is a chat (statuses apply first), at its end an e-mail, before the
    first span and after the last closed one e-mails, in a span left open a chat."""
    lines = [
        status_line("st-1", 100.0, "online"),
        status_line("st-2", 200.0, "offline"),
        status_line("st-3", 300.0, "online"),
        *(chat_line(f"m-{ts:g}", ts=ts) for ts in (50.0, 100.0, 150.0, 199.999, 200.0, 250.0, 300.0, 1e9)),
        chat_line("t-1", site="t1", ts=120.0),  # a site without statuses: all e-mails
    ]
    run(str(lines_file(tmp_path / "edges.jsonl", lines)))
    site_summary.rebuild_sites(["s1", "t1"])

    rows = {row.site_id: (row.messages, row.emails, row.operators, row.visitors) for row in site_summary.summary_rows()}
    assert rows == {"s1": (5, 3, 1, 1), "t1": (0, 1, 0, 1)}
    assert list(site_summary.stretches([(100.0, 200.0), (300.0, math.inf)])) == [
        (-math.inf, 100.0, False), (100.0, 200.0, True), (200.0, 300.0, False), (300.0, math.inf, True),
    ]  # fmt: skip
    assert list(site_summary.stretches([])) == [(-math.inf, math.inf, False)]


def site_foreign_keys(cursor) -> dict[str, str]:  # noqa: ANN001 - a database cursor
    """name -> definition of the event table's foreign keys to the site table (PostgreSQL)."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'events_event'::regclass"
        " AND contype = 'f' AND confrelid = 'events_site'::regclass"
    )
    return dict(cursor.fetchall())


def test_a_dominating_file_loads_when_events_have_no_site_foreign_key(tmp_path, settings, sample_data):
    """Events name their site without a database constraint (events 0005): the loader
    defers only the indexes, and adds back nothing that was not there."""
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "IMPORT_DEFER_INDEXES_BYTES": 0}
    wanted = {index.name for index in Event._meta.indexes}
    source = sample_data / "chat" / "mixed.jsonl"
    summary = (sample_data / "chat" / "mixed.expected").read_text()
    if connection.vendor != "postgresql":  # no constraints to drop: the plain import
        assert run(str(source), "--summary")[0] == summary
        return
    with connection.cursor() as cursor:
        assert site_foreign_keys(cursor) == {}  # the schema as migrated has none
    assert bulk.dominates(source.stat().st_size)
    out, _ = run(str(source), "--summary", "--chunk-lines=500")

    assert out == summary
    assert wanted <= secondary_indexes()
    assert ImportJob.objects.get().deferred_ddl == []
    with connection.cursor() as cursor:
        assert site_foreign_keys(cursor) == {}


def test_a_site_foreign_key_saved_before_it_was_dropped_is_not_built_again():
    """An import killed before events 0005 kept the site foreign key's definition to build
    later; the schema no longer declares it, so restoring the deferred DDL leaves it out."""
    ImportJob.objects.create(
        path="/killed.jsonl", fingerprint="0" * 64,
        deferred_ddl=[["constraint", "events_event_site_id_fk", "FOREIGN KEY (site_id) REFERENCES events_site(id)"]],
    )  # fmt: skip

    assert bulk.restore_deferred() == 0
    if connection.vendor != "postgresql":  # nothing is deferred on SQLite
        return
    assert ImportJob.objects.get().deferred_ddl == []
    with connection.cursor() as cursor:
        assert site_foreign_keys(cursor) == {}


@pytest.mark.parametrize("client_ts", [None, 0.25, 1e16])  # a timestamp corrected for its client's clock
@pytest.mark.parametrize("online", [None, True, False])
@pytest.mark.parametrize(
    ("actor", "message"),
    [("v1", "plain"), ("v1", 'a "quote", a \\ and a\ttab'), ("v\\1", "plain"), ("v\t1", "plain"), ("v1", "line\r\n")],
)
def test_a_copy_row_is_each_field_as_copy_text_writes_it(online, actor, message, client_ts):
    """The COPY rows, built by column, are the escaped rows field by field; a number is written
    as JSON writes it, which reads back as the same float (repr's text but for exponents)."""
    record = {"id": "m1", "from": actor, "site_id": "s1", "data": {"message": message}, "timestamp": 1.5}
    payload = orjson.dumps(record)
    rows = [
        ("m1", "chat", "message", "", "s1", "", actor, 1.5, online, client_ts, payload, 7),
        ("m2", "chat", "status", "", "s,2", "r", "v2", 1e-7, True, None, b' {"id":"m2"}\r', 8),  # padding cut
    ]

    texts, claim_texts = row_texts([list(column) for column in zip(*rows, strict=True)])
    copy, claims = joined(texts), joined(claim_texts)

    expected = [
        ("m1", "chat", "message", "", "s1", "", actor, 1.5, online, client_ts, payload.decode(), 7),
        ("m2", "chat", "status", "", "s,2", "r", "v2", 1e-7, True, None, '{"id":"m2"}', 8),
    ]
    lines = copy.decode().splitlines(keepends=True)
    first = len(lines[0].encode())
    assert [row_at(copy, "m1"), row_at(copy, "m2")] == [(0, first), (first, len(copy))]
    for line, row in zip(lines, expected, strict=True):
        fields = line.removesuffix("\n").split("\t")
        assert [float(f) if isinstance(v, float) else f for f, v in zip(fields, row, strict=True)] == [
            v if isinstance(v, float) else copy_text(v) for v in row
        ]
    assert claims.decode().splitlines() == ["m1\t1.5", "m2\t1e-7"]
    assert row_at(claims, "m2") == (len("m1\t1.5\n"), len(claims))


def test_an_import_and_a_worker_claiming_the_same_ids_wait_on_each_other_whatever_the_collation():
    """Every writer claims its ids in the registry in one order, code-point order (Python's), so
    that two writers sharing ids wait on each other instead of deadlocking. The import's
    claim through its staging table (a chunk with stanzas, or one that raced) sorted by the
    collation of the event table's column, which on a server of a language's collation (the
    Docker image's en_US.utf8) is another order: "a" before "B", where a worker claims "B" first."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    from events import identity

    def xmpp_line(uid: str) -> bytes:
        record = {"id": uid, "timestamp": 1_500_000_000.0, "room_id": "r1", "channel": "c1", "event": "muc-x",
                  "nick": "n1", "stanza": "<message type='groupchat'><body>hi</body></message>"}  # fmt: skip
        return orjson.dumps(record)

    prepared = loader.prepare([(1, xmpp_line("a"), 0), (2, xmpp_line("B"), 0)], time.time(), True)
    assert prepared.uids == ["B", "a"] and prepared.details  # stanzas: claimed through the staging table
    tables = (identity.TABLE, "events_event")

    def collate(collation: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS pg_temp.import_staging")  # made LIKE the event table
            for table in tables:
                cursor.execute(f'ALTER TABLE {table} ALTER COLUMN uid TYPE varchar(255) COLLATE "{collation}"')

    collate("und-x-icu")
    try:
        stored, worker_claimed, errors = against_a_code_point_claimer(
            lambda: loader.store(prepared, source="test", job_id=None, byte_start=0)
        )
        assert not errors
        assert worker_claimed == [{"B", "a"}] and stored.accepted == 0 and stored.duplicates == 2
    finally:
        collate("default")


def test_a_chunks_rejections_are_stored_as_the_model_would_store_them():
    """Rejections go in with one COPY on PostgreSQL: their text is escaped, the reason cut
    to its column, the rule taken from the cut reason, as `Rejection.from_record` does."""
    long_reason = "not valid JSON: " + "x\t\\y\n" * 200
    raws = [b'{"id": "a\tb", "x": "back\\\\slash"}', b"line\rwith a carriage return", b"\xff\xfe not UTF-8"]
    records = [(i + 1, raw, 0) for i, raw in enumerate(raws)] + [(4, chat_line("ok"), 0)]
    prepared = loader.prepare(records, time.time(), connection.vendor == "postgresql")
    prepared.rejections.append(RejectedRecord(9, long_reason, "whole\ttext\\n\n", complete=True))

    with transaction.atomic():
        stored = loader.store(prepared, source="test", job_id=None, byte_start=0)

    assert (stored.accepted, stored.rejected) == (1, 4)
    fields = ("line", "reason", "rule", "raw", "complete", "replay_outcome", "event_uid", "replayed_at")
    got = list(Rejection.objects.order_by("line").values_list(*fields))
    want = [Rejection.from_record(stored.batch, r) for r in sorted(prepared.rejections, key=lambda r: r.line)]
    assert got == [tuple(getattr(r, f) for f in fields) for r in want]
    assert len(got[-1][1]) == Rejection._meta.get_field("reason").max_length
    assert all(r.batch_id == stored.batch.pk and r.created_at for r in Rejection.objects.all())


@pytest.mark.parametrize("left_out", [[], [0], [4], [0, 1], [2], [0, 2, 4], [0, 1, 2, 3, 4]])
def test_the_copy_text_without_some_rows_is_the_other_rows(left_out):
    rows = [f"row {i}\t{'x' * i}\n".encode() for i in range(5)]
    ends = list(itertools.accumulate(map(len, rows)))

    kept = loader._kept_text(b"".join(rows), [(ends[i - 1] if i else 0, ends[i]) for i in left_out])

    assert kept == b"".join(row for i, row in enumerate(rows) if i not in left_out)


@pytest.mark.parametrize("sought", [[], ["a"], ["é\\x"], ["a", "b\tc", "z"], ["a\\", "b\tc", "b\nd", "é\\x", "z"]])
def test_rows_are_found_by_id_whether_few_or_many_are_sought(sought):
    """A row of the COPY text (sorted by id, escaped as copy_text writes it) is found by
    halving the text when few are sought and by splitting it when many are: the same rows."""
    uids, sought = sorted(["a", "a\\", "b\tc", "b\nd", "é\\x", "z"]), sorted(sought)  # code-point order
    texts = [f"{copy_text(uid)}\t{'x' * len(uid)}\n".encode() for uid in uids]
    text, ends = b"".join(texts), list(itertools.accumulate(map(len, texts)))
    want = [(ends[i - 1] if i else 0, ends[i]) for i in map(uids.index, sought)]

    assert [row_at(text, uid) for uid in sought] == want
    assert loader._rows_of(text, uids, sought) == want  # many for a text of 6 rows: split
    assert loader._rows_of(text, uids * 200, sought) == want  # few for a text of 1,200: halved
    with pytest.raises(KeyError):
        row_at(text, "b")


@pytest.mark.parametrize("uids", [[], [""], ["a"], ["a", "b"], ["a\nb", "c"], ["é", "z\\"]])
def test_a_prepared_chunk_pickles_back_as_it_was(uids):
    """A worker hands a chunk back pickled, its ids as one text unless one holds a newline."""
    prepared = loader.Prepared(1, 2, 3, 4, 5, 6, uids, b"copy\n", b"claims\n", sites=["s"], counts=Counter(a=1))

    back = pickle.loads(ForkingPickler.dumps(prepared))

    assert back == prepared
    assert type(back.uids) is list
