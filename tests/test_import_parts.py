"""An import's chunk (one transaction, one checkpoint) validated in parts and stored together
(issue 21): `loader.store_parts` registers the parts' new ids in one COPY and adds their
tallies once, and stores exactly what storing the parts one by one stores.

- ids repeated inside a part, across the parts of a chunk and across chunks: the first
  valid record of each id is stored, the others counted duplicates (SPEC §2.4);
- each part keeps its own provenance batch, lines and counts;
- what makes the parts go one by one (an id another writer stored meanwhile, a record the
  database refuses) loses nothing and counts nothing twice.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import orjson
import pytest
from django.core.management import call_command
from django.db import connection, transaction

from events import identity
from events.models import Event
from ingest.imports import loader
from ingest.imports.parallel import finish_import
from ingest.imports.ranges import plan_import, process_range
from ingest.imports.seen import SeenIds
from ingest.models import ImportJob, RawBatch, Rejection
from reports import event_counts, site_summary
from reports.models import EventCount
from tests import chat_oracle
from tests.conftest import REFUSED
from tests.races import against_a_code_point_claimer

pytestmark = pytest.mark.django_db(transaction=True)
T0 = 1_500_000_000.0


def record(uid: str, number: int) -> bytes:
    site = f"s{number % 4}"
    if number % 7 == 0:  # operators going on and off line, so that chats and e-mails both count
        return orjson.dumps(
            {"id": uid, "type": "status", "from": f"op{number % 2}", "site_id": site,
             "data": {"status": "online" if number % 14 else "offline"}, "timestamp": T0 + number * 600}
        )  # fmt: skip
    return orjson.dumps(
        {"id": uid, "type": "message", "from": f"v{number % 9}", "site_id": site, "data": {"message": "hi"},
         "timestamp": T0 + number * 600}
    )  # fmt: skip


def repeating_file(path: Path, lines: int = 120) -> Path:
    """Ids repeated at every distance (the same part, the next part, the next chunk), and
    invalid records between them, some of them with an id stored elsewhere."""
    out = []
    for n in range(lines):
        uid = f"id-{n % 41}" if n % 3 else f"id-{n}"  # 41: repeats land in other parts and chunks
        out.append(b"{not json" if n % 17 == 5 else record(uid, n))
        if n % 23 == 11:
            out.append(orjson.dumps({"id": f"id-{n}", "type": "message"}))  # invalid: no site
    path.write_bytes(b"".join(line + b"\n" for line in out))
    return path


@pytest.fixture
def registry_copies(monkeypatch) -> list[int]:
    """The rows of each COPY into the id registry (PostgreSQL), and whether it went in."""
    copies, copy_claims = [], identity.copy_claims

    def counted(cursor, text: bytes) -> bool:  # noqa: ANN001 - the real COPY, counted
        went_in = copy_claims(cursor, text)
        copies.append(text.count(b"\n") if went_in else -1)
        return went_in

    monkeypatch.setattr(identity, "copy_claims", counted)
    return copies


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_jsonl", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def first_lines(data: bytes) -> dict[str, int]:
    """uid -> the line of its first valid record."""
    firsts: dict[str, int] = {}
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            event = chat_oracle.parse_line(line, time.time(), 64 * 1024)
        except chat_oracle.Rejected:
            continue
        firsts.setdefault(event.uid, number)
    return firsts


@pytest.mark.parametrize(
    ("chunk_lines", "part_lines", "workers", "dominating"),
    [(12, 4, 0, False), (12, 4, 1, True), (10, 3, 1, False), (7, 7, 0, True), (200, 25, 0, True)],
)
def test_a_chunk_stored_in_parts_stores_the_first_of_each_id_with_its_counts(
    tmp_path, monkeypatch, settings, registry_copies, chunk_lines, part_lines, workers, dominating
):
    monkeypatch.setattr(loader, "PART_LINES", part_lines)
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "IMPORT_DEFER_INDEXES_BYTES": 0 if dominating else 1 << 40}
    path = repeating_file(tmp_path / "repeating.jsonl")
    data = path.read_bytes()
    outcome = chat_oracle.read_ndjson(data, time.time())
    assert outcome.duplicates > 10 and outcome.rejected > 5  # the file is what it says

    out, err = run(str(path), "--summary", f"--chunk-lines={chunk_lines}", f"--workers={workers}")

    accepted = len(outcome.accepted)
    assert f"accepted={accepted} duplicates={outcome.duplicates} rejected={outcome.rejected}" in err
    if connection.vendor == "postgresql":  # the ids of a chunk's parts registered in one COPY
        lines_per_chunk = -(-chunk_lines // -(-chunk_lines // part_lines)) * -(-chunk_lines // part_lines)
        assert len(registry_copies) == -(-(accepted + outcome.duplicates + outcome.rejected) // lines_per_chunk)
        assert sum(registry_copies) == accepted
    assert out.splitlines() == chat_oracle.summary_lines(outcome.accepted)
    assert dict(Event.objects.values_list("uid", "line")) == first_lines(data)
    assert sorted(Rejection.objects.values_list("line", flat=True)) == outcome.rejected_lines
    # One batch per part, back to back over the whole file, each with its own counts.
    batches = list(RawBatch.objects.order_by("byte_start"))
    per_chunk = -(-chunk_lines // part_lines)
    assert len(batches) == -(-(accepted + outcome.duplicates + outcome.rejected) // -(-chunk_lines // per_chunk))
    assert [b.byte_start for b in batches] == [0, *(b.byte_end for b in batches[:-1])]
    assert batches[-1].byte_end == len(data)
    for batch in batches:
        assert batch.accepted == Event.objects.filter(batch=batch).count()
        assert batch.rejected == Rejection.objects.filter(batch=batch).count()
        assert batch.accepted + batch.duplicates + batch.rejected == batch.record_count
    job = ImportJob.objects.get()
    assert (job.accepted, job.duplicates, job.rejected, job.next_offset) == (
        accepted, outcome.duplicates, outcome.rejected, len(data)
    )  # fmt: skip
    # The rollup, added once per chunk, is what a recount gives; a rerun adds nothing.
    counted = sorted(EventCount.objects.values_list("hour", "family", "site", "events"))
    event_counts.rebuild()
    assert sorted(EventCount.objects.values_list("hour", "family", "site", "events")) == counted
    assert sum(row[3] for row in counted) == accepted
    out, err = run(str(path), "--summary", f"--chunk-lines={chunk_lines}")
    assert out.splitlines() == chat_oracle.summary_lines(outcome.accepted)
    assert Event.objects.count() == accepted and RawBatch.objects.count() == len(batches)


def prepared_parts(uids: list[list[str]]) -> list[loader.Prepared]:
    parts, number = [], 1
    for part in uids:
        records = [(number + i, record(uid, number + i), 0) for i, uid in enumerate(part)]
        parts.append(loader.prepare(records, time.time(), connection.vendor == "postgresql"))
        number += len(part)
    return parts


def test_parts_sharing_an_id_another_writer_stored_meanwhile_are_stored_one_by_one(registry_copies):
    """The filter of stored ids does not know an id another writer stored after it was built:
    the parts' one COPY of ids is refused, and each part is stored by itself instead."""
    with transaction.atomic():
        identity.claim([("taken", T0)])
    parts = prepared_parts([["a", "taken", "b"], ["b", "c", "taken"], ["d", "a"]])

    with transaction.atomic():
        stored = loader.store_parts(parts, source="test", job_id=None, byte_start=0, seen=SeenIds(planned_ids=10))

    if connection.vendor == "postgresql":  # refused together, then part by part
        assert registry_copies == [-1, 2, 1, 1]
    assert [(s.accepted, s.duplicates, s.rejected) for s in stored] == [(2, 1, 0), (1, 2, 0), (1, 1, 0)]
    assert sorted(Event.objects.values_list("uid", "line")) == [("a", 1), ("b", 3), ("c", 5), ("d", 7)]
    assert [b.accepted for b in RawBatch.objects.order_by("pk")] == [2, 1, 1]
    assert sum(EventCount.objects.values_list("events", flat=True)) == 4
    assert {s.batch.byte_start for s in stored} == {0, parts[0].end_offset, parts[1].end_offset}


def test_a_record_the_database_refuses_in_one_part_leaves_the_other_parts_stored(refuse_one_uid):
    parts = prepared_parts([["a", "b"], ["c", REFUSED, "a"], ["d"]])

    with transaction.atomic():
        stored = loader.store_parts(parts, source="test", job_id=None, byte_start=0, seen=SeenIds(planned_ids=10))

    assert [(s.accepted, s.duplicates, s.rejected) for s in stored] == [(2, 0, 0), (1, 1, 1), (1, 0, 0)]
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b", "c", "d"]
    rejection = Rejection.objects.get()
    assert (rejection.line, rejection.batch_id) == (4, stored[1].batch.pk)
    assert "refused by a test trigger" in rejection.reason
    assert identity.claimed(["a", "b", "c", "d", REFUSED]) == {"a", "b", "c", "d"}  # its claim given back
    assert sum(EventCount.objects.values_list("events", flat=True)) == 4


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_the_parts_ids_are_registered_in_the_order_every_writer_claims_them():
    """A writer claiming ["B", "a"] (code-point order, events/identity.py), caught between the
    two while the parts' COPY of ids waits for its "B": were the parts' ids registered part
    by part ("a" of the first part, then "B"), each would wait for the other."""
    parts = prepared_parts([["a"], ["B"]])

    stored, worker_claimed, errors = against_a_code_point_claimer(
        lambda: loader.store_parts(parts, source="test", job_id=None, byte_start=0)
    )

    assert not errors
    assert worker_claimed == [{"B", "a"}]
    assert [(s.accepted, s.duplicates) for s in stored] == [(0, 1), (0, 1)]


def test_a_ranges_sub_chunks_are_stored_in_parts_as_the_commands_chunks_are(tmp_path, monkeypatch, registry_copies):
    """`import_jsonl --parallel`: a worker's sub-chunk of a range is validated in parts too."""
    monkeypatch.setattr(loader, "PART_LINES", 4)
    path = repeating_file(tmp_path / "repeating.jsonl")
    data = path.read_bytes()
    outcome = chat_oracle.read_ndjson(data, time.time())
    plan = plan_import(str(path), chunk_bytes=len(data) // 3)

    for part in plan.unfinished:
        process_range(part, chunk_lines=12)
    finish_import(ImportJob.objects.get())

    assert dict(Event.objects.values_list("uid", "line")) == first_lines(data)
    assert sorted(Rejection.objects.values_list("line", flat=True)) == outcome.rejected_lines
    job = ImportJob.objects.get()
    assert (job.accepted, job.duplicates, job.rejected) == (len(outcome.accepted), outcome.duplicates, outcome.rejected)
    assert all(batch.record_count <= 4 for batch in RawBatch.objects.all())
    assert [row.classic() for row in site_summary.summary_rows()] == chat_oracle.summary_lines(outcome.accepted)
    if connection.vendor == "postgresql":
        assert sum(registry_copies) == len(outcome.accepted)
        assert len(registry_copies) < RawBatch.objects.count()  # a COPY per sub-chunk, not per part
