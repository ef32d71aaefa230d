"""Retention (SPEC §10, issue 19 part 2): `prune_events --before T` removes old events and keeps
their ids and what the site summaries need, so the summaries stay exact for everything ever
ingested, also for records that arrive after the prune (late ones before the cut included)."""

from __future__ import annotations

import gzip
import io
import json
import random
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from events.models import Event, PrunedEvent
from events.retention import prune_events
from events.tasks import prune_old_events_task
from ingest.batches import drain, receive_batch
from ingest.imports import bulk
from ingest.keys import create_application
from ingest.models import ImportJob, RawBatch
from ingest.store import store_chunk
from reports import event_counts, maintenance, room_summary, site_summary
from reports.models import EventCount, SiteActor
from reports.site_summary import summary_rows
from tests import chat_oracle
from tests.test_forget_actor import OPERATOR, is_actors, rows_holding
from tests.test_summary_properties import TIMES, arrivals, validated

NDJSON = "application/x-ndjson"


def chat_lines(sample_data: Path) -> list[bytes]:
    lines = []
    for name in ("mixed.jsonl", "small.jsonl"):
        lines += [line for line in (sample_data / "chat" / name).read_bytes().splitlines() if line.strip()]
    return lines


def oracle_lines(lines: list[bytes]) -> list[str]:
    return chat_oracle.summary_lines(chat_oracle.read_ndjson(b"\n".join(lines), time.time()).accepted)


def classic() -> list[str]:
    return [row.classic() for row in summary_rows()]


def record(line: bytes) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def timestamp(line: bytes) -> float | None:
    value = record(line)
    ts = value.get("timestamp") if value else None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None


def median_time(lines: list[bytes]) -> float:
    times = sorted(ts for line in lines if (ts := timestamp(line)) is not None)
    return times[len(times) // 2]


def import_lines(path: Path, lines: list[bytes]) -> ImportJob:
    path.write_bytes(b"\n".join(lines) + b"\n")
    call_command("import_jsonl", str(path), stderr=io.StringIO())
    return ImportJob.objects.filter(path=str(path)).latest("pk")


def post_lines(lines: list[bytes]) -> RawBatch:
    app, _ = create_application(f"app-{len(lines)}-{time.monotonic_ns()}")
    body = b"\n".join(lines)
    batch = receive_batch(app, gzip.compress(body), NDJSON, "gzip", len(lines))
    drain()
    batch.refresh_from_db()
    assert batch.status == RawBatch.Status.DONE
    return batch


def split(lines: list[bytes], seed: int) -> tuple[list[bytes], list[bytes]]:
    shuffled = list(lines)
    random.Random(seed).shuffle(shuffled)
    cut = len(shuffled) * 3 // 5
    return shuffled[:cut], shuffled[cut:]


@pytest.mark.django_db(transaction=True)
def test_prune_then_late_records_on_both_paths_equal_the_oracle_on_the_whole_file(sample_data, tmp_path):
    lines = chat_lines(sample_data)
    first, rest = split(lines, seed=19)
    cut = median_time(lines)
    late = [line for line in rest if (ts := timestamp(line)) is not None and ts < cut]
    # What makes this a test of the baseline: records older than the cut arrive after the prune,
    # statuses among them, which re-classify messages that were pruned.
    assert sum(b'"status"' in line for line in late) > 50 and len(late) > 1000

    import_lines(tmp_path / "first.jsonl", first)
    assert classic() == oracle_lines(first)
    call_command("prune_events", "--before", str(cut), "--rows", "1000", stderr=io.StringIO())

    assert PrunedEvent.objects.filter(family="chat").count() > 5000
    assert not Event.objects.filter(family="chat", ts__lt=cut).exists()
    assert classic() == oracle_lines(first)  # pruning changes no line
    half = len(rest) // 2
    import_lines(tmp_path / "rest.jsonl", rest[:half])  # bulk path: stale sites rebuilt from both tables
    post_lines(rest[half:])  # worker path: windows read pruned statuses and messages

    assert classic() == oracle_lines(lines)
    call_command("site_summary", "--rebuild", stdout=io.StringIO())
    assert classic() == oracle_lines(lines)


@pytest.mark.django_db(transaction=True)
def test_a_late_status_before_the_cut_reclassifies_pruned_messages():
    site = "retention-site"
    base = 1_600_000_000
    messages = [
        {"id": f"m{i}", "type": "message", "from": f"visitor{i}", "site_id": site, "data": {"message": "hi"},
         "timestamp": base + 100 * i}
        for i in range(1, 4)
    ]  # fmt: skip
    post_lines([json.dumps(m).encode() for m in messages])
    assert classic() == [f"{site},messages=0,emails=3,operators=0,visitors=3"]
    call_command("prune_events", "--before", str(base + 1000), stderr=io.StringIO())
    assert Event.objects.count() == 0 and PrunedEvent.objects.count() == 3

    def status(uid: str, value: str, ts: int) -> bytes:
        return json.dumps(
            {"id": uid, "type": "status", "from": "op", "site_id": site, "data": {"status": value}, "timestamp": ts}
        ).encode()

    # Online from before the first message until between the second and the third: both pruned.
    post_lines([status("s1", "online", base + 50)])
    assert classic() == [f"{site},messages=3,emails=0,operators=1,visitors=3"]
    post_lines([status("s2", "offline", base + 250)])
    assert classic() == [f"{site},messages=2,emails=1,operators=1,visitors=3"]
    call_command("prune_events", "--before", str(base + 1000), stderr=io.StringIO())
    # A status whose window crosses the cut: online before it, the message after it.
    post_lines([status("s3", "online", base + 900)])
    post_lines([json.dumps({**messages[0], "id": "m9", "timestamp": base + 1100}).encode()])
    assert classic() == [f"{site},messages=3,emails=1,operators=1,visitors=3"]
    call_command("site_summary", "--rebuild", stdout=io.StringIO())
    assert classic() == [f"{site},messages=3,emails=1,operators=1,visitors=3"]


@pytest.mark.django_db(transaction=True)
def test_a_resend_of_a_pruned_id_is_a_duplicate_on_every_path(sample_data, tmp_path, settings):
    lines = chat_lines(sample_data)[:3000]
    first = import_lines(tmp_path / "first.jsonl", lines)
    stored = Event.objects.count()
    valid = first.accepted + first.duplicates  # the file repeats some ids itself
    call_command("prune_events", "--before", "2100-01-01T00:00:00Z", stderr=io.StringIO())
    assert Event.objects.count() == 0 and PrunedEvent.objects.count() == stored
    expected = classic()

    batch = post_lines(lines)
    assert (batch.accepted, batch.duplicates) == (0, valid)
    # The bulk path, in another order (another file), as a dominating load on PostgreSQL: the
    # filter of stored ids holds the pruned ones.
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "IMPORT_DEFER_INDEXES_BYTES": 0}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM events_event")  # its pages given back: the file dominates the table
        assert bulk.dominates(len(lines))
    job = import_lines(tmp_path / "again.jsonl", lines[::-1])
    assert (job.accepted, job.duplicates) == (0, valid)
    assert Event.objects.count() == 0
    assert classic() == expected == oracle_lines(lines)


@pytest.mark.django_db(transaction=True)
def test_forgetting_an_actor_erases_what_is_kept_of_its_pruned_events(sample_data, tmp_path):
    lines = chat_lines(sample_data)
    cut = median_time(lines)
    import_lines(tmp_path / "all.jsonl", lines)
    call_command("prune_events", "--before", str(cut), stderr=io.StringIO())
    assert PrunedEvent.objects.filter(actor=OPERATOR).exists() and Event.objects.filter(actor=OPERATOR).exists()

    call_command("forget_actor", OPERATOR, stderr=io.StringIO())

    assert classic() == oracle_lines([line for line in lines if not is_actors(line, OPERATOR)])
    assert rows_holding(OPERATOR) == []
    assert not SiteActor.objects.filter(actor=OPERATOR).exists()
    counted = sorted(EventCount.objects.values_list("hour", "family", "site", "events"))
    event_counts.rebuild()  # from the stored and the pruned events
    assert counted == sorted(EventCount.objects.values_list("hour", "family", "site", "events"))


@pytest.mark.django_db(transaction=True)
def test_the_command_takes_epoch_or_iso_and_refuses_what_it_cannot_read(settings):
    post_lines(
        [
            json.dumps({"id": f"e{ts}", "type": "message", "from": "v", "site_id": "s", "data": {"message": ""},
                        "timestamp": ts}).encode()
            for ts in (100, 200, 86_400 * 2)
        ]
    )  # fmt: skip
    call_command("prune_events", "--before", "150", stderr=io.StringIO())
    assert sorted(PrunedEvent.objects.values_list("ts", flat=True)) == [100]
    call_command("prune_events", "--before", "1970-01-02T00:00:00+00:00", stderr=io.StringIO())
    assert sorted(PrunedEvent.objects.values_list("ts", flat=True)) == [100, 200]
    with pytest.raises(CommandError, match="neither epoch seconds nor an ISO 8601"):
        call_command("prune_events", "--before", "yesterday", stderr=io.StringIO())
    for rows in ("0", "99999999999999999999"):  # the second overflowed the database's LIMIT: a traceback
        with pytest.raises(CommandError, match="--rows must be between 1 and"):
            call_command("prune_events", "--before", "150", "--rows", rows, stderr=io.StringIO())
    running = ImportJob.objects.create(fingerprint="f" * 64, path="big.jsonl")  # unfinished, just updated
    with pytest.raises(CommandError, match="an import is running"):
        call_command("prune_events", "--before", "300", stderr=io.StringIO())
    assert PrunedEvent.objects.count() == 2
    running.delete()
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "RETENTION_DAYS": 0}
    with pytest.raises(CommandError, match="RETENTION_DAYS"):
        call_command("prune_events", stderr=io.StringIO())
    assert prune_old_events_task() == 0  # keeps everything
    assert Event.objects.count() == 1
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "RETENTION_DAYS": 1}
    assert prune_old_events_task() == 1  # 1970-01-03 is more than a day ago
    assert Event.objects.count() == 0
    assert classic() == ["s,messages=0,emails=3,operators=0,visitors=1"]


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["worker", "mixed"])
@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(arrival=arrivals(), data=st.data())
def test_prunes_at_any_moment_and_cut_keep_the_oracles_summary(mode, arrival, data, monkeypatch):
    """Generated arrivals (ties, resends, invalid records reusing ids: tests/test_summary_properties.py)
    with prunes at random cuts between batches, in transactions of a few rows."""
    monkeypatch.setattr(site_summary, "VALUES_PER_QUERY", 3)
    events, invalid, batches = arrival
    want = chat_oracle.summary_lines(chat_oracle.read_values(events, time.time()).accepted)
    sent_valid = sum(1 for batch in batches for record in batch if record not in invalid)

    with transaction.atomic():  # each example starts from an empty database
        accepted = duplicates = 0
        for batch in batches:
            defer = mode == "mixed" and data.draw(st.booleans(), label="defer")
            raw_batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
            with transaction.atomic():
                result = store_chunk(raw_batch, validated(batch, as_lines=True), defer_summaries=defer)
            accepted, duplicates = accepted + result.accepted, duplicates + result.duplicates
            if data.draw(st.booleans(), label="prune here"):
                prune_events(data.draw(st.sampled_from([*TIMES, 10])), rows=data.draw(st.integers(1, 4)))
            if mode == "mixed" and data.draw(st.booleans(), label="an import ends here"):
                maintenance.rebuild_stale()
        maintenance.rebuild_stale()

        assert (accepted, duplicates) == (len(events), sent_valid - len(events))
        assert Event.objects.count() + PrunedEvent.objects.count() == len(events)
        assert classic() == want
        site_summary.rebuild_all_sites()
        assert classic() == want
        transaction.set_rollback(True)


@pytest.mark.django_db(transaction=True)
def test_interaction_events_are_pruned_by_their_identity_and_xmpp_events_are_kept(sample_data, tmp_path):
    eye = sample_data / "interactions" / "eye_sample.jsonl"
    call_command("import_jsonl", str(eye), str(sample_data / "xmpp" / "chatid_sample.json"), stderr=io.StringIO())
    interactions = Event.objects.filter(family="interaction").count()
    xmpp = Event.objects.filter(family="xmpp").count()
    rooms = room_summary.room_rows()
    assert interactions > 0 and xmpp == 340

    call_command("prune_events", "--before", "2100-01-01", stderr=io.StringIO())

    assert not Event.objects.filter(family="interaction").exists()
    assert PrunedEvent.objects.filter(family="interaction").count() == interactions
    assert Event.objects.filter(family="xmpp").count() == xmpp and room_summary.room_rows() == rooms
    # Identities derived from content (records without `id`) stay duplicates too.
    job = import_lines(tmp_path / "eye-again.jsonl", eye.read_bytes().splitlines()[::-1])
    assert job.accepted == 0 and job.duplicates > 0
    assert not Event.objects.filter(family="interaction").exists()
