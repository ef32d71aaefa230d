"""Replaying rejections: records refused under yesterday's rules are stored once today's
rules accept them, exactly once however often (and however concurrently) a replay runs."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from events import registry
from events.models import Event
from events.registry import FamilySpec, NormalizedEvent, require_text
from ingest.analysts import create_analyst
from ingest.batches import process_batch, receive_batch
from ingest.imports import loader
from ingest.keys import create_application
from ingest.models import Application, RawBatch, Rejection
from ingest.rejections import REPLAY_SOURCE, matching, replay, unreplayable_count
from reports import event_counts
from reports.models import EventCount, SiteSummary
from reports.site_summary import rebuild_all_sites, summary_rows
from tests import chat_oracle
from tests.conftest import REPO

NOW = time.time()


def line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def nested(depth: int) -> object:
    value: object = "deep"
    for _ in range(depth):
        value = [value]
    return value


def message(uid: str, site: str = "s1", ts: float = 1_429_026_445.0, **extra: object) -> dict[str, Any]:
    return {
        "id": uid,
        "type": "message",
        "from": "v1",
        "site_id": site,
        "data": {"message": "hi", **extra},
        "timestamp": ts,
    }


PING = {"id": "p-1", "ping": "s2", "at": 1_429_026_500.5}  # matches no family until `ping_family` is registered
DEEP = message("deep-1", extra=nested(150))  # nests deeper than MAX_NESTING (100)
DEEP_AGAIN = message("deep-1", extra=nested(150))  # the same id again: a duplicate once valid
STILL_BAD = {"id": "bad-1", "type": "message", "from": "v1"}  # no site, no data: invalid under any rule
OVERSIZE = b'{"id": "big-1", "pad": "' + b"x" * (1 << 20) + b'"}'  # over MAX_REJECTED_RECORD_BYTES: kept in part
NOT_UTF8 = b'{"id": "u-1", "type": "message", "from": "\xff"}'  # bytes no text holds: kept in part


def import_lines(tmp_path: Path, name: str, lines: list[bytes]) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    call_command("import_jsonl", str(path))
    return path


@pytest.fixture
def ping_family():
    """A family registered after the records were refused: records with a `ping` site."""

    def normalize(record: dict[str, Any]) -> NormalizedEvent:
        site, ts = require_text(record, "ping"), float(record["at"])
        return NormalizedEvent(require_text(record, "id"), "chat", "message", site, ts, record, actor="p")

    before = list(registry._FAMILIES)
    registry.register_family(FamilySpec(name="ping", matches=lambda r: "ping" in r, normalize=normalize))
    yield
    registry._FAMILIES[:] = before


@pytest.fixture
def deeper_nesting(settings):
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_NESTING": 200}


@pytest.fixture
def refused(db: None, tmp_path: Path) -> Path:
    lines = [line(PING), line(DEEP), line(STILL_BAD), OVERSIZE, NOT_UTF8, line(DEEP_AGAIN), line(message("ok-1"))]
    path = import_lines(tmp_path, "refused.jsonl", lines)
    assert Rejection.objects.count() == 6 and Event.objects.count() == 1
    return path


def test_rejections_keep_whole_records_except_what_no_replay_can_restore(refused):
    kept = {r.line: (r.raw, r.complete) for r in Rejection.objects.all()}
    assert kept[1] == (line(PING).decode(), True)
    assert kept[2] == (line(DEEP).decode(), True)
    assert kept[3] == (line(STILL_BAD).decode(), True)
    assert kept[4][1] is False and len(kept[4][0]) == 2000  # the head of an oversize record
    assert kept[5] == ('{"id": "u-1", "type": "message", "from": "\\xff"}', False)
    assert Rejection.objects.get(line=2).rule == "arrays and objects nest deeper than N levels"


def test_replay_stores_what_todays_rules_accept_once(refused, ping_family, deeper_nesting):
    before = Event.objects.count()

    result = replay(matching())

    assert (result.examined, result.accepted, result.duplicates) == (4, 2, 1)
    assert dict(result.still_rejected) == {"'site_id' must be a string or an integer, got null": 1}
    # The records stored are the rejected records exactly as they were received.
    assert dict(Event.objects.filter(uid__in=["p-1", "deep-1"]).values_list("uid", "raw")) == {
        "p-1": line(PING).decode(),
        "deep-1": line(DEEP).decode(),
    }
    assert Event.objects.count() == before + 2
    (batch,) = RawBatch.objects.filter(source=REPLAY_SOURCE)
    assert (batch.status, batch.record_count, batch.accepted, batch.duplicates, batch.rejected) == ("done", 3, 2, 1, 0)
    marked = {
        r.line: (r.replay_outcome, r.event_uid, r.replay_batch_id) for r in Rejection.objects.exclude(replayed_at=None)
    }
    assert marked == {
        1: ("accepted", "p-1", batch.pk),
        2: ("accepted", "deep-1", batch.pk),
        6: ("duplicate", "deep-1", batch.pk),
    }
    # Summaries and the dashboard's counts took the new events in, exactly.
    rows = {r.site_id: r for r in summary_rows()}
    assert (rows["s1"].messages + rows["s1"].emails, rows["s2"].emails) == (2, 1)
    counted = sorted(EventCount.objects.values_list("hour", "family", "site", "events"))
    rebuild_all_sites()
    event_counts.rebuild()
    assert {r.site_id: r for r in summary_rows()} == rows
    assert sorted(EventCount.objects.values_list("hour", "family", "site", "events")) == counted

    # However often it runs again, nothing more is stored or marked.
    again = replay(matching())
    assert (again.examined, again.replayed, again.batches) == (1, 0, [])
    assert Event.objects.count() == before + 2 and RawBatch.objects.filter(source=REPLAY_SOURCE).count() == 1


def test_a_replay_without_a_change_of_rules_changes_nothing(refused):
    result = replay(matching())
    assert (result.examined, result.replayed, sum(result.still_rejected.values())) == (4, 0, 4)
    assert not Rejection.objects.exclude(replayed_at=None).exists()
    assert not RawBatch.objects.filter(source=REPLAY_SOURCE).exists() and Event.objects.count() == 1


def test_the_future_is_judged_against_when_the_record_was_received(db, tmp_path, monkeypatch):
    received = timezone.now() - timedelta(hours=2)
    ahead = message("f-1", ts=received.timestamp() + 600)  # 10 minutes ahead of its receipt, past by now
    monkeypatch.setattr(loader, "time", SimpleNamespace(time=received.timestamp))  # imported two hours ago
    path = import_lines(tmp_path, "future.jsonl", [line(ahead)])
    RawBatch.objects.filter(source=str(path)).update(created_at=received)
    assert "in the future" in Rejection.objects.get().reason

    assert replay(matching()).replayed == 0  # a clock-skewed record does not become valid by waiting
    assert not Event.objects.filter(uid="f-1").exists()


def test_filters_choose_what_is_replayed(refused, request):
    app, _ = create_application("shop")
    posted = receive_batch(app, line(dict(PING, id="p-api")) + b"\n", "application/x-ndjson", "", 1)
    process_batch(posted.pk)
    assert Rejection.objects.filter(batch=posted).exists()
    request.getfixturevalue("ping_family")  # the rule changes after the records were refused

    assert matching(source="api").count() == 1
    assert matching(app="shop").count() == 1 and matching(app="nobody").count() == 0
    assert matching(source="file").count() == 6 and matching(source=str(refused)).count() == 6
    assert matching(reason="NEST DEEPER").count() == 2  # any case
    assert matching(rule="arrays and objects nest deeper than N levels").count() == 2
    assert matching(batch=posted.pk).count() == 1
    assert matching(since=timezone.now()).count() == 0 and matching(until=timezone.now()).count() == 7

    assert replay(matching(app="shop")).accepted == 1
    assert set(Event.objects.filter(uid__startswith="p-").values_list("uid", flat=True)) == {"p-api"}


def test_the_command_reports_and_the_dry_run_changes_nothing(refused, ping_family, deeper_nesting):
    dry = run_command("replay_rejections", "--dry-run")
    assert dry.startswith("4 replayable rejections: 3 valid now, 1 still rejected")
    assert not Rejection.objects.exclude(replayed_at=None).exists()

    out = run_command("replay_rejections", "--reason", "family")
    assert out.startswith("1 replayable rejections: 1 replayed (1 stored, 0 already stored)")
    assert "replay batches: " in out
    assert Event.objects.filter(uid="p-1").exists() and not Event.objects.filter(uid="deep-1").exists()


def run_command(*args: str) -> str:
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue()


def test_two_replays_at_once_store_each_record_once(database_url, tmp_path):
    """Two processes replaying the same 1,200 rejections: every record is stored and marked once."""
    records = [line(message(f"deep-{i}", site=f"s{i % 7}", extra=nested(120))) for i in range(1200)]
    import_lines(tmp_path, "deep.jsonl", records)
    assert Rejection.objects.filter(complete=True).count() == 1200

    env = {**os.environ, "DATABASE_URL": database_url, "MAX_NESTING": "200"}
    command = [sys.executable, str(REPO / "manage.py"), "replay_rejections"]
    runs = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs

    assert Event.objects.filter(uid__startswith="deep-").count() == 1200
    replayed = Rejection.objects.exclude(replayed_at=None)
    assert replayed.count() == 1200 and set(replayed.values_list("replay_outcome", flat=True)) == {"accepted"}
    batches = RawBatch.objects.filter(source=REPLAY_SOURCE)
    assert sum(b.accepted for b in batches) == 1200 and sum(b.duplicates for b in batches) == 0
    assert sum(int(out.split(" replayed")[0].split(": ")[1]) for out, _ in outputs) == 1200
    assert sum(s.messages + s.emails for s in SiteSummary.objects.all()) == 1200


def test_the_admin_action_replays_and_shows_it(client, django_user_model, refused, ping_family, deeper_nesting):
    url = reverse("admin:ingest_rejection_changelist")
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    # Viewing is not replaying: a replay stores events, which takes the change permission
    # (issue 22: the view-only analyst group could replay).
    for user in (viewer, create_analyst("analyst")[0]):
        client.force_login(user)
        assert 'value="replay"' not in client.get(url).content.decode()
        refused_post = {"action": "replay", "select_across": "1", "index": "0", "_selected_action": ["1"]}
        assert client.post(url, refused_post).status_code == 302
        assert not Rejection.objects.exclude(replayed_at=None).exists()
        assert not RawBatch.objects.filter(source=REPLAY_SOURCE).exists()

    viewer.user_permissions.add(Permission.objects.get(codename="change_rejection"))
    client.force_login(django_user_model.objects.get(pk=viewer.pk))  # permissions are cached per user object
    assert 'value="replay"' in client.get(url).content.decode()
    ids = list(Rejection.objects.values_list("pk", flat=True))
    response = client.post(url, {"action": "replay", "index": "0", "_selected_action": ids}, follow=True)
    text = response.content.decode()
    assert "4 replayable rejections: 3 replayed (2 stored, 1 already stored)" in text
    assert "2 selected rejections kept only part of their record and cannot be replayed" in text

    replayed = client.get(url, {"replay": "replayed"})
    assert replayed.context["cl"].result_count == 3
    assert "accepted in" in replayed.content.decode() and "duplicate in" in replayed.content.decode()
    assert client.get(url, {"replay": "partial"}).context["cl"].result_count == 2
    detail = client.get(reverse("admin:ingest_rejection_change", args=[Rejection.objects.get(line=1).pk]))
    assert reverse("admin:events_event_changelist") + "?q=p-1" in detail.content.decode()


# -- issue 22 item 14: a record over MAX_RECORD_BYTES, replayed once the limit is raised ----------


def post_lines(data: bytes, per_body: int = 400) -> None:
    """A file's lines posted by an app (no allow-list) in bodies of `per_body`, each processed."""
    app = Application.objects.get_or_create(name="open", defaults={"key_prefix": "open", "key_hash": "0" * 64})[0]
    lines = data.split(b"\n")
    for start in range(0, len(lines), per_body):
        body = b"\n".join(lines[start : start + per_body])
        if body.strip():
            posted = receive_batch(app, body, "application/x-ndjson", "", per_body)
            assert process_batch(posted.pk).status == "done"


@pytest.mark.parametrize(("name", "path"), [("mixed", "import"), ("small", "import"), ("small", "api")])
def test_raising_the_record_limit_and_replaying_gives_the_exact_summary(db, name, path, sample_data, settings):
    """Half the records of a sample are over a low MAX_RECORD_BYTES and refused; once it is
    raised, a replay stores them, and the summary and counts are those of the whole file."""
    source = sample_data / "chat" / f"{name}.jsonl"
    data = source.read_bytes()
    oracle = chat_oracle.read_ndjson(data, time.time())
    limits = settings.SWITCHBOARD
    settings.SWITCHBOARD = {**limits, "MAX_RECORD_BYTES": 160}
    if path == "import":
        call_command("import_jsonl", str(source), stderr=StringIO())
    else:
        post_lines(data)
    over = Rejection.objects.filter(rule="record is N bytes, over the limit of N")
    assert over.count() > len(oracle.accepted) // 4 and not over.filter(complete=False).exists()
    assert [row.classic() for row in summary_rows()] != chat_oracle.summary_lines(oracle.accepted)

    settings.SWITCHBOARD = limits
    result = replay(matching())

    summary = [row.classic() for row in summary_rows()]
    assert summary == chat_oracle.summary_lines(oracle.accepted)
    assert "".join(f"{row}\n" for row in summary) == source.with_suffix(".expected").read_text()
    assert Event.objects.count() == len(oracle.accepted) and result.accepted > len(oracle.accepted) // 4
    assert sum(RawBatch.objects.values_list("duplicates", flat=True)) == oracle.duplicates
    assert Rejection.objects.filter(replayed_at=None).count() == oracle.rejected  # the records no limit lets in
    # The events stored are the records as received, byte for byte.
    stored = dict(Event.objects.values_list("uid", "raw"))
    for uid, raw in over.filter(replay_outcome="accepted").values_list("event_uid", "raw"):
        assert stored[uid] == raw.strip()


def test_a_batch_keeps_whole_records_over_the_limit_within_its_total_only(db, settings):
    """A hostile body (a tiny gzip of records of ~1 MB) cannot make the server keep more than
    MAX_REJECTED_BYTES_PER_BATCH (8 MiB) of them whole: the rest keep their head, marked incomplete."""
    limits = settings.SWITCHBOARD
    big = [line(message(f"big-{i}", pad="x" * 1_000_000)) for i in range(9)]  # ~1 MB each
    body = b"\n".join([line(message("ok-1")), *big, b'{"id": "broken"', line(message("ok-2"))])
    compressed = gzip.compress(body)
    assert len(compressed) < len(body) // 500
    app = Application.objects.create(name="hostile", key_prefix="hostile", key_hash="0" * 64)
    posted = receive_batch(app, compressed, "application/x-ndjson", "gzip", 12)

    batch = process_batch(posted.pk)

    assert (batch.status, batch.accepted, batch.rejected) == ("done", 2, 10)
    kept = list(Rejection.objects.order_by("line"))
    whole = [r for r in kept if r.complete]
    assert sum(len(r.raw.encode()) for r in whole) <= limits["MAX_REJECTED_BYTES_PER_BATCH"] + len('{"id": "broken"')
    # 8 of ~1 MB fit in 8 MiB; a record within MAX_RECORD_BYTES is always kept whole.
    assert [r.line for r in whole] == [2, 3, 4, 5, 6, 7, 8, 9, 11]
    (cut,) = [r for r in kept if not r.complete]  # the last big one: its head only, not replayable
    assert (cut.line, cut.raw) == (10, big[8][: limits["MAX_REJECTED_RAW_CHARS"]].decode())
    assert cut.reason == f"record is {len(big[8])} bytes, over the limit of {limits['MAX_RECORD_BYTES']}"

    settings.SWITCHBOARD = {**limits, "MAX_RECORD_BYTES": 2 << 20}
    result = replay(matching())
    assert (result.examined, result.accepted) == (9, 8)  # the broken one stays rejected
    assert unreplayable_count(matching()) == 1


@pytest.mark.parametrize("framing", ["ndjson", "array"])
def test_a_record_over_the_kept_size_is_rejected_by_the_record_limit_and_kept_in_part(db, framing, settings, tmp_path):
    """Framing holds records whole up to MAX_REJECTED_RECORD_BYTES; a longer one is cut short
    there, and its reason still names MAX_RECORD_BYTES (not the framing bound)."""
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_RECORD_BYTES": 1000, "MAX_REJECTED_RECORD_BYTES": 5000}
    records = [line(message("a")), line(message("b", pad="x" * 3000)), line(message("c", pad="x" * 9000))]
    path = tmp_path / f"records.{framing}"
    path.write_bytes(b"\n".join(records) if framing == "ndjson" else b"[" + b",\n".join(records) + b"]")
    call_command("import_jsonl", str(path), stderr=StringIO())

    kept = {r.line: (r.reason, r.complete, len(r.raw)) for r in Rejection.objects.all()}
    assert kept == {
        2: (f"record is {len(records[1])} bytes, over the limit of 1000", True, len(records[1])),
        3: (f"record is {len(records[2])} bytes, over the limit of 1000", False, 2000),
    }
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_RECORD_BYTES": 64 * 1024}
    assert replay(matching()).accepted == 1
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b"]
