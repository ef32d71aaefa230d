"""The outbox drained in groups (ingest/batches.py), in process on the test database:
group claims and their bounds, exactly-once counts across a group, failures isolated
(a real fault: a trigger in the real database, no mocks), the terminal `failed` status,
`retry_failed`, `process_pending` going past failures, and bounded rejections."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time

import orjson
import pytest
from django.conf import settings
from django.core import signals
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import close_old_connections, connection, transaction
from django.test import override_settings
from rest_framework.test import APIClient

from events.models import Event
from ingest.batches import CANDIDATES, claim_group, drain, process_batch, process_group, receive_batch
from ingest.keys import create_application
from ingest.models import RawBatch, Rejection
from reports.site_summary import summary_rows
from tests.live import REPO

pytestmark = pytest.mark.django_db


def chat(uid: str, kind: str = "message", site: str = "s1", actor: str = "v1", ts: float | None = None) -> dict:
    data = {"message": "hi"} if kind == "message" else {"status": "online"}
    ts = time.time() - 60 if ts is None else ts
    return {"id": uid, "type": kind, "from": actor, "site_id": site, "data": data, "timestamp": ts}


def ndjson(*records: dict | bytes) -> bytes:
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)


def limits(**changes: object) -> override_settings:
    return override_settings(SWITCHBOARD={**settings.SWITCHBOARD, **changes})


@pytest.fixture
def app_and_key(db: None):
    return create_application("outbox-app")


@pytest.fixture
def app(app_and_key):
    return app_and_key[0]


def batch_api(key: str, batch: RawBatch) -> dict:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.get(f"/api/batches/{batch.pk}/")
    assert response.status_code == 200
    return response.json()


def post(app, *records: dict | bytes, content_type: str = "application/x-ndjson") -> RawBatch:
    body = ndjson(*records)
    return receive_batch(app, body, content_type, "", len(records))


def statuses(*batches: RawBatch) -> list[str]:
    return [RawBatch.objects.get(pk=b.pk).status for b in batches]


# -- groups --------------------------------------------------------------------------


def test_one_claim_takes_many_batches_and_stores_them_in_one_group(app):
    first = post(app, chat("a"), chat("b", kind="status", actor="op"))
    second = post(app, chat("a"), chat("c"))  # "a" again: a duplicate of the first batch's
    third = post(app, b"{broken", chat("d", site="s2"))

    result = drain()

    assert (result.groups, result.done, result.failed) == (1, 3, 0)
    rows = {b.pk: b for b in RawBatch.objects.all()}
    assert [(rows[b.pk].accepted, rows[b.pk].duplicates, rows[b.pk].rejected) for b in (first, second, third)] == [
        (2, 0, 0),
        (1, 1, 0),
        (1, 0, 1),
    ]
    assert {rows[b.pk].attempts for b in (first, second, third)} == {1}
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b", "c", "d"]
    assert Event.objects.get(uid="a").batch_id == first.pk
    # One summary upkeep for the group: every new message counted once, and its site's actors.
    rows = {r.site_id: r for r in summary_rows()}
    assert (rows["s1"].messages + rows["s1"].emails, rows["s1"].operators, rows["s1"].visitors) == (2, 1, 1)
    assert (rows["s2"].messages + rows["s2"].emails, rows["s2"].visitors) == (1, 1)


def test_a_claim_is_bounded_by_records_and_bytes(app):
    batches = [post(app, chat(f"e{i:02d}", ts=1_429_000_000.0)) for i in range(12)]  # bodies of one size
    big = post(app, *(chat(f"big{i}") for i in range(8)))

    with limits(GROUP_RECORDS=5):
        assert claim_group() == [b.pk for b in batches[:5]]
    size = len(bytes(batches[0].body))
    with limits(GROUP_BYTES=3 * size):
        assert claim_group() == [b.pk for b in batches[5:8]]
    with limits(GROUP_RECORDS=5):
        claim_group()  # batches[8:12]: 4 records, the 8-record batch would pass the bound
        assert claim_group() == [big.pk]  # a batch over the bound alone is still taken
    assert claim_group() == []


def test_a_claim_that_takes_every_candidate_is_full_so_the_drain_does_not_linger(app):
    # A stream of one-event posts: more waiting than one claim looks at. Before, such a group
    # was not "full", so the drain slept DRAIN_LINGER_SECONDS after each one and fell behind.
    for i in range(CANDIDATES + 1):
        post(app, chat(f"s{i}"))

    first = claim_group()
    second = claim_group()

    assert (len(first), first.full) == (CANDIDATES, True)
    assert (len(second), second.full) == (1, False)  # the rest of the outbox: linger, then look again


def test_a_drain_of_many_one_event_batches_claims_larger_groups_while_claims_take_every_candidate(app):
    waiting = 3 * CANDIDATES + 1
    for i in range(waiting):
        post(app, chat(f"g{i}"))

    result = drain()

    # Groups of CANDIDATES, then twice as many, then the one left (it was 3 groups and a 4th).
    assert (result.groups, result.done, result.failed) == (3, waiting, 0)
    assert RawBatch.objects.filter(status=RawBatch.Status.DONE).count() == waiting
    assert Event.objects.count() == waiting


def test_a_batch_finished_by_another_worker_is_not_stored_again(app):
    batch = post(app, chat("a"))
    assert claim_group() == [batch.pk]
    # Its claim expired (the first worker seemed lost); a second worker claims and finishes it...
    with limits(PROCESSING_TIMEOUT_SECONDS=0):
        assert drain().done == 1
    # ...then the first worker, slow but alive, gets to store it: nothing changes.
    assert process_group([batch.pk]).done == 0
    stored = RawBatch.objects.get(pk=batch.pk)
    assert (stored.status, stored.accepted, stored.duplicates, stored.attempts) == ("done", 1, 0, 2)
    assert Event.objects.count() == 1


# -- faults: a trigger in the real database ------------------------------------------------


def poison_events_trigger() -> None:
    """The database refuses any event whose text holds "poison" (a real fault, not a mock)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.raw LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned record refused'; END IF;"
                " RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON events_event"
                " FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON events_event WHEN NEW.raw LIKE '%poison%'"
                " BEGIN SELECT RAISE(ABORT, 'poisoned record refused'); END"
            )


def failing_batches_trigger() -> None:
    """The database refuses to mark done a batch posted as `application/x-failing` (a batch-level fault)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_batch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.status = 'done' AND NEW.content_type = 'application/x-failing' THEN"
                " RAISE EXCEPTION 'this batch cannot be finished'; END IF; RETURN NEW; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_batch BEFORE UPDATE ON ingest_rawbatch"
                " FOR EACH ROW EXECUTE FUNCTION refuse_batch()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_batch BEFORE UPDATE ON ingest_rawbatch"
                " WHEN NEW.status = 'done' AND NEW.content_type = 'application/x-failing'"
                " BEGIN SELECT RAISE(ABORT, 'this batch cannot be finished'); END"
            )


def drop_trigger(name: str, table: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {name}" + (f" ON {table}" if connection.vendor == "postgresql" else ""))


def test_a_record_the_database_refuses_is_rejected_alone(app):
    poison_events_trigger()
    before = post(app, chat("a"))
    batch = post(app, chat("b"), {**chat("poison-1"), "note": "poison"}, chat("c", kind="status", actor="op"))
    after = post(app, chat("d"))

    result = drain()

    assert (result.done, result.failed) == (3, 0)
    assert statuses(before, batch, after) == ["done", "done", "done"]
    stored = RawBatch.objects.get(pk=batch.pk)
    assert (stored.accepted, stored.duplicates, stored.rejected) == (2, 0, 1)
    rejection = Rejection.objects.get(batch=batch)
    assert rejection.line == 2
    assert rejection.reason.startswith("the database refused to store this record: ")
    assert "poisoned record refused" in rejection.reason
    assert orjson.loads(rejection.raw)["note"] == "poison"
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b", "c", "d"]


def test_a_large_group_copies_its_new_events_once_and_isolates_a_refused_one(app):
    """Groups of COPY_THRESHOLD events and more are copied (PostgreSQL: straight into the table,
    after reading which ids are stored); a stored id is a duplicate, a refused record is
    rejected alone and its neighbours stored, on both databases."""
    from ingest.store import COPY_THRESHOLD

    poison_events_trigger()
    post(app, chat("l-0005"))
    drain()
    records = [chat(f"l-{i:04d}") for i in range(COPY_THRESHOLD + 100)]
    records[1000] = {**chat("poison-l"), "note": "poison"}
    big = post(app, *records)

    assert drain().done == 1

    stored = RawBatch.objects.get(pk=big.pk)
    assert (stored.status, stored.accepted, stored.duplicates, stored.rejected) == ("done", len(records) - 2, 1, 1)
    assert "poisoned record refused" in Rejection.objects.get(batch=big).reason
    assert Event.objects.count() == len(records) - 1
    assert Event.objects.get(uid="l-0005").batch_id != big.pk
    row = next(r for r in summary_rows() if r.site_id == "s1")
    assert (row.messages + row.emails, row.visitors) == (len(records) - 1, 1)
    drop_trigger("refuse_poison", "events_event")


@pytest.mark.django_db(transaction=True)
def test_an_id_another_writer_claims_while_a_large_group_is_stored_counts_once():
    """Another writer has claimed one of a large group's ids (events/identity.py) and not
    committed yet: the group's claim waits for it, then leaves that id out and copies the
    rest. PostgreSQL; SQLite's writers take turns. Every id counts once."""
    import threading

    from ingest.store import COPY_THRESHOLD
    from tests.races import backend_pid, start_writer, waits_for_a_lock

    app, _ = create_application("copy-race")
    process_batch(post(app, chat("early")).pk)  # the site exists, committed
    big = post(app, *(chat(f"race-{i:04d}") for i in range(COPY_THRESHOLD + 100)))
    small = post(app, chat("race-0017"))
    copier = backend_pid() if connection.vendor == "postgresql" else 0
    holding = threading.Event()
    errors: list[Exception] = []

    def other_writer() -> None:
        with transaction.atomic():
            process_batch(small.pk)  # stored, not yet committed
            holding.set()
            # Until the claim waits for this transaction (PostgreSQL; elsewhere, a moment).
            if connection.vendor != "postgresql" or not waits_for_a_lock(copier, 20):
                time.sleep(0.3)

    writer = start_writer(other_writer, errors)
    try:
        assert holding.wait(20)
        assert process_batch(big.pk).status == "done"
    finally:
        writer.join()
    assert not errors

    done = {b.pk: b for b in RawBatch.objects.filter(pk__in=[big.pk, small.pk])}
    assert (done[small.pk].accepted, done[small.pk].duplicates) == (1, 0)
    assert (done[big.pk].accepted, done[big.pk].duplicates) == (COPY_THRESHOLD + 99, 1)
    assert Event.objects.count() == COPY_THRESHOLD + 101
    row = next(r for r in summary_rows() if r.site_id == "s1")
    assert (row.messages + row.emails, row.visitors) == (COPY_THRESHOLD + 101, 1)


def test_events_keep_their_sites_without_a_database_constraint(app):
    """Event.site has no database constraint (its check cost a lookup per event): every writer
    inserts the sites first, and a site with events cannot be deleted (Django's PROTECT)."""
    from django.db.models import ProtectedError

    from events.models import Site

    post(app, chat("a", site="new-site"), chat("b", site="s9", kind="status", actor="op"))
    drain()
    assert set(Event.objects.values_list("site_id", flat=True)) <= set(Site.objects.values_list("code", flat=True))
    with pytest.raises(ProtectedError):
        Site.objects.get(code="new-site").delete()


def test_a_batch_that_keeps_failing_is_isolated_ends_failed_and_can_be_retried(app_and_key, capsys):
    app, key = app_and_key
    failing_batches_trigger()
    before = post(app, chat("a"))
    bad = receive_batch(app, ndjson(chat("b"), chat("c")), "application/x-failing", "", 2)
    after = [post(app, chat(f"after-{i}")) for i in range(3)]

    with limits(RETRY_DELAY_SECONDS=0, MAX_ATTEMPTS=3):
        result = drain()

    # The others were stored in the first round; the failing one was retried alone until it gave up.
    assert statuses(before, bad, *after) == ["done", "failed", "done", "done", "done"]
    failed = RawBatch.objects.get(pk=bad.pk)
    assert failed.attempts == 3
    assert failed.last_error.startswith("gave up after 3 attempts; last: ")
    assert "this batch cannot be finished" in failed.last_error
    assert result.done == 4 and result.failed == 3
    assert not Event.objects.filter(uid__in=["b", "c"]).exists()  # its transaction left nothing

    # Visible in the batch API (the app that posted it)...
    shown = batch_api(key, bad)
    assert shown["status"] == "failed" and "this batch cannot be finished" in shown["last_error"]

    # ...and retried by the command once the cause is fixed.
    drop_trigger("refuse_batch", "ingest_rawbatch")
    call_command("retry_failed", str(bad.pk), "--here")
    assert "1 failed batches set back to pending" in capsys.readouterr().err
    retried = RawBatch.objects.get(pk=bad.pk)
    assert (retried.status, retried.accepted, retried.attempts, retried.last_error) == ("done", 2, 1, "")


def test_retry_failed_refuses_batches_that_did_not_fail(app):
    batch = post(app, chat("a"))
    with pytest.raises(CommandError, match=f"not failed \\(or unknown\\): {batch.pk}"):
        call_command("retry_failed", str(batch.pk))
    with pytest.raises(CommandError, match="--all"):
        call_command("retry_failed")


def test_process_pending_goes_past_a_failing_batch(app, capsys):
    failing_batches_trigger()
    first = post(app, chat("a"))
    bad = receive_batch(app, ndjson(chat("b")), "application/x-failing", "", 1)
    last = post(app, chat("c"))

    call_command("process_pending")

    assert "2 of 3 unfinished batches processed; 1 failed" in capsys.readouterr().err
    assert statuses(first, bad, last) == ["done", "pending", "done"]
    assert "this batch cannot be finished" in RawBatch.objects.get(pk=bad.pk).last_error
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "c"]


def test_a_number_jsonb_could_not_hold_is_stored_as_sent_with_its_neighbours(app):
    """Issue 12 item 1's trigger: a number past jsonb's range once failed the whole batch."""
    odd = (
        b'{"id":"tiny","type":"message","from":"v1","site_id":"s1","data":{"message":"hi"},"timestamp":%d,"x":1e-16384}'
    )
    odd %= int(time.time() - 60)
    batch = post(app, chat("a"), odd, chat("b"))

    assert process_batch(batch.pk).status == "done"

    stored = RawBatch.objects.get(pk=batch.pk)
    assert (stored.accepted, stored.rejected) == (3, 0)
    assert Event.objects.get(uid="tiny").raw.encode() == odd
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b", "tiny"]


# -- bounded rejections ------------------------------------------------------------------


def test_a_batch_keeps_its_first_rejections_and_counts_the_rest(app_and_key):
    app, key = app_and_key
    body = ndjson(chat("ok"), *([b"1"] * 30))
    batch = receive_batch(app, body, "application/x-ndjson", "", 31)

    with limits(MAX_STORED_REJECTIONS=10):
        process_batch(batch.pk)

    stored = RawBatch.objects.get(pk=batch.pk)
    assert (stored.accepted, stored.rejected, stored.record_count) == (1, 30, 31)
    assert list(Rejection.objects.filter(batch=batch).values_list("line", flat=True)) == list(range(2, 12))
    shown = batch_api(key, batch)
    assert (shown["rejected"], len(shown["rejections"]), shown["rejections_not_kept"]) == (30, 10, 20)


PEAK_RSS = """
import resource, sys
import django
django.setup()
from ingest.batches import drain
result = drain()
print(result.done, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def worker_peak_mib(env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_a_tiny_gzip_body_of_500k_lines_costs_the_worker_bounded_memory(transactional_db, database_url):
    """Issue 12 item 4: 500 k one-byte records in ~1 KB of gzip once grew the worker by ~350 MB."""
    app = create_application("amplifier")[0]
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    baseline_done, baseline = worker_peak_mib(env)  # a worker with nothing to do
    body = gzip.compress(b"1\n" * 500_000, 9)
    assert len(body) < 2048
    batch = receive_batch(app, body, "application/x-ndjson", "gzip", 500_000)

    done, peak = worker_peak_mib(env)

    stored = RawBatch.objects.get(pk=batch.pk)
    assert (baseline_done, done, stored.status, stored.rejected) == ("0", "1", "done", 500_000)
    assert Rejection.objects.filter(batch=batch).count() == settings.SWITCHBOARD["MAX_STORED_REJECTIONS"]
    assert peak - baseline < 40, f"worker grew by {peak - baseline} MiB"


def test_a_failed_batch_shows_its_error_in_the_admin(app, client, django_user_model):
    batch = post(app, chat("a"))
    RawBatch.objects.filter(pk=batch.pk).update(status="failed", last_error="gave up after 3 attempts; last: boom")
    client.force_login(django_user_model.objects.create_superuser("ops", password="ops-password"))

    listing = client.get("/admin/ingest/rawbatch/?status__exact=failed")
    detail = client.get(f"/admin/ingest/rawbatch/{batch.pk}/change/")

    assert listing.status_code == 200 and f">{batch.pk}<" in listing.content.decode()
    assert detail.status_code == 200 and "gave up after 3 attempts; last: boom" in detail.content.decode()


# -- the WSGI fast path (ingest/fastpath.py) -----------------------------------------------


def wsgi_post(
    body: bytes, authorization: str | None, host: str = "localhost", extra: dict | None = None, application=None
) -> tuple[str, dict, bytes]:
    import io

    if application is None:
        from config.wsgi import application

    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/api/events/", "SERVER_NAME": host, "SERVER_PORT": "80",
        "HTTP_HOST": host, "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "SCRIPT_NAME": "", "QUERY_STRING": "",
        "wsgi.errors": io.StringIO(),
    }  # fmt: skip
    if authorization:
        environ["HTTP_AUTHORIZATION"] = authorization
    environ.update(extra or {})
    answer: list = []
    # As Django's test client does: the test's transaction must outlive the request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        chunks = application(environ, lambda status, headers: answer.extend([status, dict(headers)]))
        data = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    return answer[0], answer[1], data


def test_the_wsgi_fast_path_answers_as_the_view_and_leaves_the_rest_to_django(app_and_key):
    app, key = app_and_key
    body = orjson.dumps(chat("fast"))

    status, headers, data = wsgi_post(body, f"Api-Key {key}")
    batch = RawBatch.objects.get()
    assert status == "202 Accepted"
    assert orjson.loads(data) == {
        "batch_id": batch.pk, "records": 1, "status": "pending", "status_url": f"/api/batches/{batch.pk}/",
    }  # fmt: skip
    assert headers["Location"] == f"/api/batches/{batch.pk}/"
    assert headers["Content-Type"] == "application/json" and headers["X-Content-Type-Options"] == "nosniff"
    assert (bytes(batch.body), batch.app_id) == (body, app.pk)

    assert wsgi_post(b'{"id": ', f"Api-Key {key}")[0] == "400 Bad Request"  # the view's body checks
    unknown = wsgi_post(body, "Api-Key sb_00000000_nope")  # Django and DRF answer the rest
    assert unknown[0].startswith("401") and b"Unknown or revoked API key" in unknown[2]
    assert wsgi_post(body, None)[0].startswith("401")
    assert wsgi_post(body, f"Api-Key {key}", host="evil.example")[0].startswith("400")  # not an allowed host
    assert RawBatch.objects.count() == 1


def test_the_fast_path_serves_production_posts_the_tls_proxy_marks_as_https(app_and_key):
    """Production mode redirects plain HTTP; a post the proxy marks as HTTPS is served in front
    of Django, with the HSTS header Django's security middleware adds."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import Client

    from ingest.fastpath import _served_here, wsgi

    _, key = app_and_key
    body = orjson.dumps(chat("tls"))
    https = {"HTTP_X_FORWARDED_PROTO": "https"}
    production = {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    }
    with override_settings(**production):
        production_app = wsgi(WSGIHandler())  # Django's middleware reads these settings when built
        plain_status, plain_headers, _ = wsgi_post(body, f"Api-Key {key}", application=production_app)
        status, headers, data = wsgi_post(body, f"Api-Key {key}", extra=https, application=production_app)
        django_answer = Client().post(
            "/api/events/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Api-Key {key}", **https
        )
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/events/", "HTTP_HOST": "localhost",
                   "HTTP_AUTHORIZATION": f"Api-Key {key}", "wsgi.url_scheme": "http"}  # fmt: skip
        assert _served_here({**environ, **https}) and not _served_here(environ)
        assert not _served_here({**environ, "HTTP_X_FORWARDED_PROTO": "http"})
    assert plain_status.startswith("301") and plain_headers["Location"] == "https://localhost/api/events/"
    assert status == "202 Accepted" and orjson.loads(data)["records"] == 1
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert django_answer.status_code == 202
    assert django_answer.headers["Strict-Transport-Security"] == headers["Strict-Transport-Security"]
    assert RawBatch.objects.count() == 2  # the fast path's and Django's; the redirected post stored nothing
    assert "Strict-Transport-Security" not in wsgi_post(body, f"Api-Key {key}")[1]  # plain HTTP, embedded mode


def test_the_app_throttle_counts_in_batches_yet_lets_exactly_the_rate_through_one_process(app):
    from django.core.cache import cache

    from ingest.auth import AppRateThrottle

    cache.clear()
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "app": "500/hour"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        throttle = AppRateThrottle()
        decisions = [throttle.allow_ident(f"batched-{app.pk}") for _ in range(520)]
    assert decisions == [True] * 500 + [False] * 20
    assert throttle.wait() >= 1
    cache.clear()
