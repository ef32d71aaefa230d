"""Metrics and structured logs in one process (issue 20): who may scrape, what the
counters and the database gauges say, the bounded rejection rules, the JSON log lines.
(End to end across processes: tests/test_metrics_e2e.py.)"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from datetime import timedelta

import orjson
import pytest
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from ingest.batches import process_batch, receive_batch
from ingest.imports.sequential import import_file
from ingest.keys import create_application
from ingest.models import ImportJob, RawBatch
from ingest.monitoring.logs import JsonFormatter, RequestIdFilter
from ingest.records import RULE_LABELS, rejection_rule
from tests.live import REPO
from tests.metrics_text import total
from tests.test_outbox import chat, limits, ndjson

pytestmark = pytest.mark.django_db


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client: Client, **extra: str) -> tuple[int, str]:
    response = client.get("/metrics", **{"REMOTE_ADDR": "127.0.0.1", **extra})
    return response.status_code, response.content.decode()


@pytest.fixture
def app(db: None):
    return create_application("metrics-app")[0]


# -- access -------------------------------------------------------------------------------


def test_without_a_token_only_this_machine_may_scrape(client):
    assert scrape(client)[0] == 200
    assert scrape(client, REMOTE_ADDR="::1")[0] == 200
    assert scrape(client, REMOTE_ADDR="10.1.2.3")[0] == 404
    # Through a proxy on this machine: the proxy adds the client's address.
    assert scrape(client, HTTP_X_FORWARDED_FOR="203.0.113.9")[0] == 404
    assert scrape(client, HTTP_AUTHORIZATION="Bearer anything", REMOTE_ADDR="10.1.2.3")[0] == 404


# What proxies on this machine add (nginx's X-Real-IP alone among them): the client is elsewhere.
# Empty values count: the header says a proxy passed the request on.
THROUGH_A_PROXY = [
    ("HTTP_X_REAL_IP", "203.0.113.9"), ("HTTP_X_FORWARDED_FOR", "203.0.113.9"), ("HTTP_FORWARDED", "for=203.0.113.9"),
    ("HTTP_X_FORWARDED_HOST", "switchboard.example.com"), ("HTTP_X_FORWARDED_PROTO", "https"),
    ("HTTP_X_FORWARDED_SERVER", "proxy"), ("HTTP_VIA", "1.1 proxy"), ("HTTP_TRUE_CLIENT_IP", "203.0.113.9"),
    ("HTTP_X_CLIENT_IP", "203.0.113.9"), ("HTTP_CF_CONNECTING_IP", "203.0.113.9"), ("HTTP_X_REAL_IP", ""),
    ("HTTP_X_FORWARDED_FOR", ""),
]  # fmt: skip


@pytest.mark.parametrize(("header", "value"), THROUGH_A_PROXY)
def test_without_a_token_a_request_through_a_proxy_on_this_machine_is_refused(client, header, value):
    """Hostile review 3: a proxy on this machine that sets only X-Real-IP opened /metrics to its clients."""
    assert scrape(client)[0] == 200  # the same request, straight from loopback
    assert scrape(client, **{header: value})[0] == 404


def test_without_a_token_a_declared_proxy_closes_the_web_tier(client, settings):
    """Behind a declared proxy (NUM_PROXIES, 1 in production) a loopback request may be the proxy's,
    which may add no header at all (nginx's bare `proxy_pass`): only a token opens /metrics then."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert scrape(client)[0] == 404
    settings.METRICS_TOKEN = "the-right-token"
    assert scrape(client, HTTP_AUTHORIZATION="Bearer the-right-token", HTTP_X_REAL_IP="10.0.0.5")[0] == 200


@override_settings(METRICS_TOKEN="the-right-token")
def test_with_a_token_only_its_bearer_may_scrape_from_anywhere(client):
    assert scrape(client)[0] == 401  # loopback is not enough once a token is set
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1")["WWW-Authenticate"].startswith("Bearer")
    assert scrape(client, HTTP_AUTHORIZATION="Bearer the-wrong-token")[0] == 403
    assert scrape(client, HTTP_AUTHORIZATION="Token the-right-token")[0] == 401
    status, text = scrape(client, HTTP_AUTHORIZATION="Bearer the-right-token", REMOTE_ADDR="10.1.2.3")
    assert status == 200
    assert "switchboard_outbox_backlog_batches" in text


# -- the database gauges ------------------------------------------------------------------


def test_outbox_gauges_are_read_from_the_database_at_scrape_time(client, app):
    _, before = scrape(client)
    assert total(before, "switchboard_outbox_backlog_batches") == 0
    assert total(before, "switchboard_outbox_oldest_pending_seconds") == 0
    assert total(before, "switchboard_database_up") == 1
    batches = [receive_batch(app, ndjson(chat(f"g{i}")), "application/x-ndjson", "", 1) for i in range(3)]
    RawBatch.objects.filter(pk=batches[0].pk).update(created_at=timezone.now() - timedelta(seconds=90))
    RawBatch.objects.filter(pk=batches[2].pk).update(status=RawBatch.Status.FAILED)

    _, text = scrape(client)
    assert total(text, "switchboard_outbox_backlog_batches") == 2
    assert 90 <= total(text, "switchboard_outbox_oldest_pending_seconds") < 120
    assert total(text, "switchboard_outbox_failed_batches") == 1


def test_import_gauges_show_running_imports_only(client):
    now = timezone.now()
    ImportJob.objects.create(fingerprint="a", path="/data/a.jsonl", next_offset=5000, next_line=41)
    old = ImportJob.objects.create(fingerprint="b", path="/data/b.jsonl", next_offset=70, next_line=3)
    ImportJob.objects.filter(pk=old.pk).update(updated_at=now - timedelta(hours=2))  # abandoned
    ImportJob.objects.create(fingerprint="c", path="/data/c.jsonl", next_offset=9, next_line=2, finished_at=now)

    _, text = scrape(client)
    assert total(text, "switchboard_imports_running") == 1
    assert total(text, "switchboard_import_bytes_done") == 5000
    assert total(text, "switchboard_import_lines_done") == 40


# -- counters -----------------------------------------------------------------------------


def test_a_processed_batch_counts_stored_duplicates_rejections_and_its_lag(app):
    before = {
        "chat": counter("switchboard_events_stored_total", family="chat"),
        "dup": counter("switchboard_events_duplicate_total"),
        "json": counter("switchboard_records_rejected_total", rule="invalid_json"),
        "object": counter("switchboard_records_rejected_total", rule="not_an_object"),
        "lag": counter("switchboard_processing_lag_seconds_count"),
        "done": counter("switchboard_batches_processed_total"),
        "le5": counter("switchboard_processing_lag_seconds_bucket", le="5.0"),
        "le10": counter("switchboard_processing_lag_seconds_bucket", le="10.0"),
    }
    body = ndjson(chat("c1"), chat("c2"), chat("c1"), b"{broken", *([b"1"] * 30))
    batch = receive_batch(app, body, "application/x-ndjson", "", 34)
    RawBatch.objects.filter(pk=batch.pk).update(created_at=timezone.now() - timedelta(seconds=7))

    with limits(MAX_STORED_REJECTIONS=5):  # 26 of the 31 rejections are only counted, not kept
        process_batch(batch.pk)

    assert counter("switchboard_events_stored_total", family="chat") - before["chat"] == 2
    assert counter("switchboard_events_duplicate_total") - before["dup"] == 1
    assert counter("switchboard_records_rejected_total", rule="invalid_json") - before["json"] == 1
    assert counter("switchboard_records_rejected_total", rule="not_an_object") - before["object"] == 30
    assert counter("switchboard_batches_processed_total") - before["done"] == 1
    assert counter("switchboard_processing_lag_seconds_count") - before["lag"] == 1
    # Received 7 s before it was stored: counted in the 10 s bucket, not in the 5 s one.
    assert counter("switchboard_processing_lag_seconds_bucket", le="5.0") - before["le5"] == 0
    assert counter("switchboard_processing_lag_seconds_bucket", le="10.0") - before["le10"] == 1


def test_posts_count_per_app_and_per_route_and_status(client, app):
    key = create_application("counted-app")[1]
    received = counter("switchboard_events_received_total", app="counted-app")
    accepted = counter("switchboard_http_requests_total", route="api/events/", status="202")
    refused = counter("switchboard_http_requests_total", route="api/events/", status="400")
    headers = {"HTTP_AUTHORIZATION": f"Api-Key {key}", "content_type": "application/x-ndjson"}

    assert client.post("/api/events/", ndjson(chat("p1"), chat("p2")), **headers).status_code == 202
    assert client.post("/api/events/", b"\n\n", **headers).status_code == 400
    assert client.get("/api/batches/424242/", HTTP_AUTHORIZATION=f"Api-Key {key}").status_code == 404

    assert counter("switchboard_events_received_total", app="counted-app") - received == 2
    assert counter("switchboard_http_requests_total", route="api/events/", status="202") - accepted == 1
    assert counter("switchboard_http_requests_total", route="api/events/", status="400") - refused == 1
    assert counter("switchboard_http_requests_total", route="api/batches/<int:batch_id>/", status="404") >= 1


def test_an_import_counts_its_lines_bytes_and_events(transactional_db, sample_data):
    path = sample_data / "chat" / "small.jsonl"
    lines, stored = counter("switchboard_import_lines_total"), counter("switchboard_events_stored_total", family="chat")
    size = counter("switchboard_import_bytes_total")

    job = import_file(str(path), workers=0)

    assert counter("switchboard_import_lines_total") - lines == job.accepted + job.duplicates + job.rejected
    assert counter("switchboard_events_stored_total", family="chat") - stored == job.accepted
    assert counter("switchboard_import_bytes_total") - size == job.next_offset


# -- rejection rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "rule"),
    [
        ("the database refused to store this record: value too long", "database_refused"),
        ("record is 70000 bytes, over the limit of 65536", "too_large"),
        ("contains a NUL character (\\u0000), which cannot be stored", "nul_character"),
        ("not valid JSON: unexpected character: line 1 column 2 (char 1)", "invalid_json"),
        ("not valid UTF-8", "invalid_json"),
        ("unexpected data after the JSON array", "invalid_json"),
        ("not a JSON object but a number", "not_an_object"),
        ("arrays and objects nest deeper than 100 levels", "too_deep"),
        ("matches no event family: expected chat ...", "unknown_family"),
        ("timestamp 99999999999.000 is more than 300s in the future", "future_timestamp"),
        ("site 'x' is not among the sites app 'a' may write to", "site_not_allowed"),
        ("'stanza' is not well-formed XML: mismatched tag", "invalid_stanza"),
        ("stanza root must be <message>, <presence> or <iq>, got <foo>", "invalid_stanza"),
        ("'site_id' must not be empty", "invalid_field"),
        ("'data.message' must be a string, got a number", "invalid_field"),
        ("something nobody wrote yet", "other"),
    ],
)
def test_each_reason_falls_under_one_of_a_bounded_set_of_rules(reason, rule):
    assert rejection_rule(reason) == rule
    assert rule in RULE_LABELS


def test_every_sample_rejection_has_a_named_rule(transactional_db, sample_data):
    """The sample files' rejections (hostile and broken records of every kind) are all named: none is 'other'."""
    from ingest.models import Rejection

    for name in ("mixed", "edge", "external_bad"):
        import_file(str(sample_data / "chat" / f"{name}.jsonl"), workers=0)
    reasons = set(Rejection.objects.values_list("reason", flat=True))
    assert len(reasons) > 5
    assert [r for r in reasons if rejection_rule(r) == "other"] == []


# -- structured logs ----------------------------------------------------------------------


def manage_with(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env={**os.environ, "DATABASE_URL": database_url, **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def json_lines(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_tie_a_posted_batch_to_its_processing(database_url, app):
    batch = receive_batch(app, ndjson(chat("j1"), b"[1]"), "application/x-ndjson", "", 2)
    done = manage_with(database_url, "process_pending", LOG_FORMAT="json", LOG_LEVEL="INFO")
    assert done.returncode == 0, done.stderr

    lines = json_lines(done.stderr)
    processed = [line for line in lines if line.get("event") == "batch_processed"]
    assert len(processed) == 1, done.stderr
    line = processed[0]
    assert (line["batch_id"], line["accepted"], line["rejected"]) == (batch.pk, 1, 1)
    assert line["rejections"] == {"not_an_object": 1}
    assert line["level"] == "INFO" and line["logger"] == "switchboard.batches" and line["time"].endswith("+00:00")
    assert line["lag_seconds"] >= 0


def test_json_logs_have_one_line_per_import_checkpoint_and_text_stays_the_default(database_url, sample_data):
    path = str(sample_data / "chat" / "small.jsonl")
    done = manage_with(database_url, "import_jsonl", path, "--chunk-lines", "500", LOG_FORMAT="json", LOG_LEVEL="INFO")
    assert done.returncode == 0, done.stderr
    checkpoints = [line for line in json_lines(done.stderr) if line.get("event") == "import_checkpoint"]
    assert len(checkpoints) == 4  # 1,999 records in chunks of 500
    assert len({line["import_job_id"] for line in checkpoints}) == 1
    assert [line["next_line"] for line in checkpoints] == sorted(line["next_line"] for line in checkpoints)

    plain = manage_with(database_url, "import_jsonl", path, LOG_LEVEL="INFO", LOG_FORMAT="")
    assert plain.returncode == 0, plain.stderr
    assert json_lines(plain.stderr) == []


def test_a_refused_fast_path_post_logs_one_json_line_with_the_proxys_request_id(transactional_db):
    from config.wsgi import application

    key = create_application("logged-app")[1]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/api/events/", "SERVER_NAME": "testserver", "SERVER_PORT": "80",
        "HTTP_HOST": "testserver", "HTTP_AUTHORIZATION": f"Api-Key {key}", "CONTENT_TYPE": "application/x-ndjson",
        "CONTENT_LENGTH": "2", "wsgi.input": io.BytesIO(b"\n\n"), "wsgi.url_scheme": "http",
        "HTTP_X_REQUEST_ID": "req-4711",
    }  # fmt: skip
    statuses = []
    try:
        application(environ, lambda status, headers: statuses.append(status))
    finally:
        logger.removeHandler(handler)

    assert statuses == ["400 Bad Request"]
    (line,) = json_lines(stream.getvalue())
    assert (line["request_id"], line["status_code"], line["path"], line["level"]) == (
        "req-4711", 400, "/api/events/", "WARNING",
    )  # fmt: skip


def test_the_log_format_is_checked():
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env={**os.environ, "LOG_FORMAT": "xml"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0
    assert "LOG_FORMAT must be 'text' (the default) or 'json', not 'xml'" in done.stderr


def test_the_outbox_gauges_read_partial_indexes_not_the_batch_table(client, app):
    """Each gauge query on the batch table can be answered from the partial index on unfinished or
    failed batches (the planner is told to avoid table scans where it can, to prove the index fits)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    receive_batch(app, ndjson(chat("i1")), "application/x-ndjson", "", 1)
    with CaptureQueriesContext(connection) as queries:
        assert scrape(client)[0] == 200
    on_batches = [q["sql"] for q in queries.captured_queries if '"ingest_rawbatch"' in q["sql"]]
    assert len(on_batches) == 2
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in on_batches:
            explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
            cursor.execute(explain + sql)
            plan = " ".join(str(row) for row in cursor.fetchall())
            assert "rawbatch_pending" in plan or "rawbatch_failed" in plan, plan
            assert "Seq Scan" not in plan, plan


def test_a_request_django_answers_with_an_error_logs_its_request_id(client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        assert client.get("/api/nothing-here/", HTTP_X_REQUEST_ID="req-0815").status_code == 404
        assert client.get("/api/nothing-either/").status_code == 404
    finally:
        logger.removeHandler(handler)

    first, second = json_lines(stream.getvalue())
    assert (first["request_id"], first["status_code"], first["path"]) == ("req-0815", 404, "/api/nothing-here/")
    assert re.fullmatch(r"[0-9a-f]{32}", second["request_id"])  # none given: a new one
