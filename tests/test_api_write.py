"""POST /api/events/ and GET /api/batches/{id}/: every status code, and what is (not)
stored for each (/api/health/: tests/test_health.py)."""

from __future__ import annotations

import gzip
import time

import orjson
import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from events.models import Event
from ingest.batches import process_batch
from ingest.keys import create_application
from ingest.models import RawBatch, Rejection

pytestmark = pytest.mark.django_db


def chat(uid: str, kind: str = "message", ts: float | None = None, **extra: object) -> dict:
    data = {"message": "hi"} if kind == "message" else {"status": "online"}
    ts = time.time() - 60 if ts is None else ts
    return {"id": uid, "type": kind, "from": "v1", "site_id": "s1", "data": data, "timestamp": ts, **extra}


def ndjson(*records: dict) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.fixture
def client() -> APIClient:
    cache.clear()  # throttle history
    return APIClient()


def post(client: APIClient, key: str | None, body: bytes, content_type: str = "application/json", **headers: str):
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Api-Key {key}"
    return client.generic("POST", "/api/events/", body, content_type=content_type, **headers)


def limits(**changes: int) -> override_settings:
    return override_settings(SWITCHBOARD={**settings.SWITCHBOARD, **changes})


# -- 202 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "records"),
    [
        (orjson.dumps(chat("a")), "application/json", 1),
        (orjson.dumps([chat("a"), chat("b"), chat("c")]), "application/json", 3),
        (b"[\n  " + orjson.dumps(chat("a"), option=orjson.OPT_INDENT_2) + b"\n]\n", "application/json", 1),
        (ndjson(chat("a"), chat("b")) + b"\n  \n", "application/x-ndjson", 2),
        (ndjson(chat("a"), chat("b")), "application/json", 2),  # NDJSON mislabelled as JSON
        (b"\xef\xbb\xbf" + ndjson(chat("a")), "application/x-ndjson", 1),
    ],
    ids=["object", "array", "pretty-array", "ndjson", "ndjson-as-json", "bom"],
)
def test_post_stores_the_raw_body_and_answers_202(client, app_key, body, content_type, records):
    response = post(client, app_key, body, content_type)

    assert response.status_code == 202, response.content
    payload = response.json()
    batch = RawBatch.objects.get()
    assert payload == {
        "batch_id": batch.pk,
        "records": records,
        "status": "pending",
        "status_url": f"/api/batches/{batch.pk}/",
    }
    assert response["Location"] == payload["status_url"]
    assert bytes(batch.body) == body
    assert (batch.status, batch.record_count, batch.source) == ("pending", records, "api")
    assert not Event.objects.exists()  # processing is the worker's job


def test_gzip_body_is_stored_compressed_and_counted_decompressed(client, app_key):
    body = gzip.compress(ndjson(chat("a"), chat("b"), chat("c")))

    response = post(client, app_key, body, "application/x-ndjson", HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 202, response.content
    assert response.json()["records"] == 3
    batch = RawBatch.objects.get()
    assert (bytes(batch.body), batch.content_encoding) == (body, "gzip")
    process_batch(batch.pk)
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b", "c"]


def test_request_path_does_not_validate_events(client, app_key):
    body = ndjson({"type": "bogus"}, chat("ok")) + b"not json at all\n"

    response = post(client, app_key, body, "application/x-ndjson")

    assert response.status_code == 202
    assert response.json()["records"] == 3
    assert not Rejection.objects.exists() and not Event.objects.exists()


# -- 400 / 413 / 415: refused before anything is stored ------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "status", "reason"),
    [
        (b"", "application/json", "", 400, "empty"),
        (b"   \n", "application/x-ndjson", "", 400, "no records"),
        (b"[]", "application/json", "", 400, "no records"),
        (b'{"id": "a", ', "application/json", "", 400, "not valid JSON"),
        (b'"just a string"', "application/json", "", 400, "one event object or an array"),
        (b'[{"id": "a"}, {"id": "b"', "application/json", "", 400, "not closed"),
        (b'[{"id": "a"}] trailing', "application/json", "", 400, "after the JSON array"),
        (b"not gzip at all", "application/json", "gzip", 400, "not valid gzip"),
        (gzip.compress(b'{"id": "a"}')[:-8], "application/json", "gzip", 400, "truncated"),
        (b'{"id": "a"}', "application/json", "br", 415, "Content-Encoding"),
        (b"[" * 100_000, "application/json", "", 400, "not closed"),  # deep nesting
    ],
    ids=[
        "empty", "blank-ndjson", "empty-array", "bad-json", "not-object", "unclosed-array", "trailing-data",
        "bad-gzip", "truncated-gzip", "unknown-encoding", "deep-nesting",
    ],
)  # fmt: skip
def test_broken_bodies_are_refused_with_a_reason(client, app_key, body, content_type, encoding, status, reason):
    headers = {"HTTP_CONTENT_ENCODING": encoding} if encoding else {}

    response = post(client, app_key, body, content_type, **headers)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert reason in response.json()["detail"]
    assert not RawBatch.objects.exists()


def test_body_over_the_limit_is_413_before_it_is_stored(client, app_key):
    body = ndjson(*(chat(f"id-{i}") for i in range(20)))
    with limits(MAX_BODY_BYTES=len(body) - 1):
        response = post(client, app_key, body, "application/x-ndjson")
    assert response.status_code == 413
    assert "over the limit" in response.json()["detail"]
    assert not RawBatch.objects.exists()


def test_gzip_bomb_is_413(client, app_key):
    bomb = gzip.compress(b" " * (2 * 1024 * 1024))  # ~2 KB that inflates to 2 MiB
    with limits(MAX_BODY_BYTES=1024 * 1024):
        response = post(client, app_key, bomb, "application/x-ndjson", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert "decompressed body is over the limit" in response.json()["detail"]
    assert not RawBatch.objects.exists()


def test_a_record_over_the_limit_is_rejected_alone(client, app_key):
    big = chat("big", data={"message": "x" * 5000})
    body = ndjson(chat("a"), big, chat("b"))
    with limits(MAX_RECORD_BYTES=1000):
        assert post(client, app_key, body, "application/x-ndjson").status_code == 202
        process_batch(RawBatch.objects.get().pk)
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b"]
    rejection = Rejection.objects.get()
    assert rejection.line == 2 and "over the limit of 1000" in rejection.reason


# -- 401 / 403 / 429 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "credentials were not provided"),
        ("Api-Key sb_00000000_nope", "Unknown or revoked API key"),
        ("Api-Key not-even-shaped", "Unknown or revoked API key"),
        ("Api-Key two parts", "Malformed Authorization header"),
        ("Token not-a-token", "Invalid token"),
    ],
)
def test_wrong_credentials_are_401(client, authorization, detail):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = post(client, None, orjson.dumps(chat("a")), **headers)
    assert response.status_code == 401
    assert detail in response.json()["detail"]
    assert not RawBatch.objects.exists()


def test_revoked_key_is_401(client, app_key):
    from ingest.models import Application

    Application.objects.update(revoked_at=timezone.now())
    response = post(client, app_key, orjson.dumps(chat("a")))
    assert response.status_code == 401
    assert not RawBatch.objects.exists()


def test_analysts_cannot_post_events(client, analyst_token):
    response = post(client, None, orjson.dumps(chat("a")), HTTP_AUTHORIZATION=f"Token {analyst_token}")
    assert response.status_code == 403
    assert "client apps" in response.json()["detail"]


def test_each_app_is_throttled_on_its_own(client, app_key):
    other_key = create_application("other-app")[1]
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "app": "2/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        statuses = [post(client, app_key, orjson.dumps(chat(f"a{i}"))).status_code for i in range(3)]
        limited = post(client, app_key, orjson.dumps(chat("a9")))
        other = post(client, other_key, orjson.dumps(chat("b")))
    cache.clear()
    assert statuses == [202, 202, 429]
    assert limited.status_code == 429 and "throttled" in limited.json()["detail"]
    assert int(limited["Retry-After"]) > 0
    assert other.status_code == 202
    assert RawBatch.objects.count() == 3


# -- batch status ------------------------------------------------------------------


def test_batch_status_before_and_after_processing(client, app_key):
    future = time.time() + 3600
    body = ndjson(chat("a"), chat("a"), chat("f", ts=future)) + b"{broken\n"
    batch_id = post(client, app_key, body, "application/x-ndjson").json()["batch_id"]
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {app_key}")

    pending = client.get(f"/api/batches/{batch_id}/").json()
    assert (pending["status"], pending["record_count"], pending["accepted"]) == ("pending", 4, 0)

    process_batch(batch_id)
    done = client.get(f"/api/batches/{batch_id}/").json()
    assert (done["status"], done["accepted"], done["duplicates"], done["rejected"]) == ("done", 1, 1, 2)
    assert [r["line"] for r in done["rejections"]] == [3, 4]
    assert "future" in done["rejections"][0]["reason"]
    assert "not valid JSON" in done["rejections"][1]["reason"]
    assert done["rejections"][1]["raw"] == "{broken"


def test_apps_see_only_their_own_batches_and_analysts_see_all(client, app_key, analyst_token):
    batch_id = post(client, app_key, orjson.dumps(chat("a"))).json()["batch_id"]
    other_key = create_application("other-app")[1]

    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    assert client.get(f"/api/batches/{batch_id}/").status_code == 404
    client.credentials(HTTP_AUTHORIZATION=f"Token {analyst_token}")
    assert client.get(f"/api/batches/{batch_id}/").json()["id"] == batch_id
    client.credentials()
    assert client.get(f"/api/batches/{batch_id}/").status_code == 401


def test_processing_a_batch_twice_counts_once(client, app_key):
    batch_id = post(client, app_key, ndjson(chat("a"), chat("b"))).json()["batch_id"]

    first = process_batch(batch_id)
    second = process_batch(batch_id)

    assert first is not None and second is None
    batch = RawBatch.objects.get(pk=batch_id)
    assert (batch.accepted, batch.duplicates, batch.attempts) == (2, 0, 1)
    assert Event.objects.count() == 2


def test_future_is_judged_against_the_time_the_batch_arrived(client, app_key):
    soon = time.time() + 200  # within the 5-minute tolerance at arrival
    batch_id = post(client, app_key, orjson.dumps(chat("a", ts=soon))).json()["batch_id"]
    # Processed "later": the batch arrived 10 minutes ago, when `soon` was 13 minutes ahead.
    RawBatch.objects.filter(pk=batch_id).update(created_at=timezone.now() - timezone.timedelta(minutes=10))

    process_batch(batch_id)

    assert Rejection.objects.get().reason.startswith("timestamp")
    assert "future" in Rejection.objects.get().reason


# -- health and commands ---------------------------------------------------------------


def test_create_app_prints_a_working_key_once(client, capsys):
    call_command("create_app", "site-a")
    key = capsys.readouterr().out.strip()

    assert key.startswith("sb_")
    assert post(client, key, orjson.dumps(chat("a"))).status_code == 202
    from ingest.models import Application

    assert key not in Application.objects.get().key_hash  # only the hash is kept
    with pytest.raises(Exception, match="exists already"):
        call_command("create_app", "site-a")


def test_process_pending_processes_what_the_broker_never_delivered(client, app_key, capsys):
    ids = [post(client, app_key, orjson.dumps(chat(f"id-{i}"))).json()["batch_id"] for i in range(3)]
    RawBatch.objects.filter(pk=ids[0]).update(status=RawBatch.Status.DONE)  # one already done

    call_command("process_pending")

    assert "2 of 2 unfinished batches processed" in capsys.readouterr().err
    assert set(RawBatch.objects.values_list("status", flat=True)) == {"done"}
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["id-1", "id-2"]


def test_stale_summaries_of_an_abandoned_import_are_rebuilt_once_it_is_quiet(tmp_path):
    from ingest.imports.sequential import import_file, rebuild_abandoned_stale_summaries
    from ingest.models import ImportJob
    from reports.models import SiteSummary

    path = tmp_path / "events.jsonl"
    path.write_bytes(ndjson(chat("a"), chat("b", kind="status")))
    import_file(str(path))
    SiteSummary.objects.update(stale=True, messages=0)  # as if the import died before its rebuild
    ImportJob.objects.update(finished_at=None)

    assert rebuild_abandoned_stale_summaries(quiet_seconds=600) == 0  # the import may still be running
    assert SiteSummary.objects.get().stale

    ImportJob.objects.update(updated_at=timezone.now() - timezone.timedelta(hours=1))
    assert rebuild_abandoned_stale_summaries(quiet_seconds=600) == 1
    summary = SiteSummary.objects.get()
    assert (summary.stale, summary.messages + summary.emails) == (False, 1)
