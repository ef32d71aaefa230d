"""The Python client (contrib/client, installed in the venv as `switchboard_client`).

First its pure parts (backoff, Retry-After, batching); then against a live
server (gunicorn + a Celery worker, tests/live.py): every event of
samples/chat/small.jsonl goes through `Client.enqueue` from many threads,
through throttling (429) and a server restart mid-stream, and through an
interpreter exit without flush, and the result is always exactly the
expected summary, each event stored once, nothing lost.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from switchboard_client import Client, QueueFull, Rejected, RetriesExhausted
from switchboard_client.batching import bodies, encode
from switchboard_client.transport import backoff_delay, is_retryable, retry_after_seconds

from events.models import Event
from ingest.models import RawBatch
from tests.live import LiveStack, free_port, wait_for
from tests.test_worker_e2e import summary_text

# -- pure parts ----------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_with_half_of_it_random():
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (20, 30.0)]:
        delays = [backoff_delay(attempt, base=0.5, cap=30.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not fixed


def test_backoff_never_comes_back_before_retry_after():
    delays = [backoff_delay(0, base=0.5, cap=30.0, retry_after=7.0) for _ in range(200)]
    assert all(7.0 <= d <= 7.5 for d in delays)


def test_retry_after_in_seconds_or_as_an_http_date():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=42), usegmt=True), now) == 42.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=42), usegmt=True), now) == 0.0
    assert [retry_after_seconds(v) for v in (None, "", "soon")] == [None, None, None]


def test_which_answers_are_retried():
    assert [s for s in (400, 401, 403, 404, 408, 413, 415, 429, 500, 502, 503, 504) if is_retryable(s)] == [
        408, 429, 500, 502, 503, 504,
    ]  # fmt: skip


def test_batches_are_cut_by_count_and_by_bytes():
    lines = [b"x" * n for n in (10, 10, 10, 50, 10, 200, 10)]
    # by count
    assert [len(g) for g in bodies(lines, max_events=3, max_bytes=10_000)] == [3, 3, 1]
    # by bytes, newlines counted: 11+11+11 <= 40 < 44; a line over the limit goes alone
    assert [[len(x) for x in g] for g in bodies(lines, max_events=100, max_bytes=40)] == [
        [10, 10, 10], [50], [10], [200], [10],
    ]  # fmt: skip


def test_events_are_checked_when_enqueued_not_when_sent():
    client = Client("http://127.0.0.1:9", "sb_unused", sync_mode=True)
    with pytest.raises(TypeError):
        client.enqueue({"id": "x", "when": object()})
    with pytest.raises(ValueError):
        client.enqueue({"id": "x", "timestamp": float("nan")})
    assert encode({"b": "é", "a": [1, 2.5]}) == '{"b":"é","a":[1,2.5]}'.encode()


# -- against a live server -------------------------------------------------------


@pytest.fixture
def small(sample_data: Path) -> tuple[list[dict], list[str]]:
    """samples/chat/small.jsonl as dicts (1,999 lines: 1,941 events, 58 resent), and its summary."""
    events = [json.loads(line) for line in (sample_data / "chat" / "small.jsonl").read_bytes().splitlines()]
    return events, (sample_data / "chat" / "small.expected").read_text().splitlines()


def wait_until_processed(records: int, timeout: float = 90) -> dict[str, int]:
    """Wait until batches holding `records` records are all processed; their totals."""

    def done() -> bool:
        batches = RawBatch.objects.filter(source="api")
        return sum(b.record_count for b in batches) >= records and not batches.exclude(status="done").exists()

    wait_for(done, timeout, f"{records} records processed")
    batches = RawBatch.objects.filter(source="api")
    totals = {key: sum(getattr(b, key) for b in batches) for key in ("record_count", "accepted", "duplicates")}
    totals["rejected"] = sum(b.rejected for b in batches)
    return totals


def assert_exactly_small(stack: LiveStack, token: str, expected: list[str], totals: dict, resent: int = 0) -> None:
    assert summary_text(stack, token).splitlines() == expected
    assert Event.objects.count() == 1941  # each event stored once, none lost
    assert (totals["accepted"], totals["rejected"]) == (1941, 0)
    assert totals["duplicates"] == 58 + resent
    assert totals["record_count"] == 1999 + resent


def test_concurrent_enqueuers_deliver_every_event_once(live_stack, app_key, analyst_token, small):
    events, expected = small
    random.Random(7).shuffle(events)
    live_stack.start_web()
    live_stack.start_worker()
    errors: list = []
    client = Client(
        live_stack.base_url, app_key, flush_at=100, flush_interval=0.05, on_error=lambda *a: errors.append(a)
    )

    threads = [threading.Thread(target=lambda part=events[i::8]: [client.enqueue(e) for e in part]) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=60)

    assert (client.sent, client.failed, client.dropped, errors) == (1999, 0, 0, [])
    batches = RawBatch.objects.filter(source="api")
    assert max(b.record_count for b in batches) <= 100
    assert_exactly_small(live_stack, analyst_token, expected, wait_until_processed(1999))
    assert client.shutdown(10)


def test_throttling_and_a_server_restart_mid_stream_lose_nothing(live_stack, app_key, analyst_token, small):
    events, expected = small
    live_stack.env["APP_THROTTLE_RATE"] = "1/s"  # per gunicorn process without Redis: a post takes far less
    live_stack.start_web()
    live_stack.start_worker()
    errors: list = []
    client = Client(
        live_stack.base_url, app_key, flush_at=200, flush_interval=0.05, backoff=0.1, max_backoff=1.0,
        max_retries=40, on_error=lambda *e: errors.append(e),
    )  # fmt: skip

    for event in events:
        client.enqueue(event)
    wait_for(lambda: client.sent >= 500, 30, "a quarter of the stream delivered")
    os.killpg(live_stack.web.pid, signal.SIGTERM)  # the server goes away mid-stream...
    live_stack.web.wait(timeout=30)
    time.sleep(1)  # ...for long enough that posts are refused...
    assert client.sent < 1999
    live_stack.start_web()  # ...and comes back on the same port
    assert client.flush(timeout=90)

    assert client.shutdown(10)
    assert (client.sent, client.failed, errors) == (1999, 0, [])
    assert (live_stack.tmp_path / "web.log").read_text().count("Too Many Requests") >= 1
    totals = wait_until_processed(1999)
    # A post stored just as the server stopped, whose answer was lost, is sent again:
    # its events come back as duplicates, never as second copies.
    assert_exactly_small(live_stack, analyst_token, expected, totals, resent=totals["record_count"] - 1999)


CHILD = """
import json, sys
from switchboard_client import Client

url, key, path = sys.argv[1:]
client = Client(url, key, flush_at=10**6, flush_interval=3600, max_batch_bytes=10**7)
for line in open(path, "rb"):
    client.enqueue(json.loads(line))
print(client.pending, client.sent)
# no flush, no shutdown: the interpreter ends here
"""


def test_what_is_queued_is_delivered_when_the_interpreter_exits(live_stack, app_key, analyst_token, small, sample_data):
    _, expected = small
    live_stack.start_web()
    live_stack.start_worker()

    child = subprocess.run(
        [sys.executable, "-c", CHILD, live_stack.base_url, app_key, str(sample_data / "chat" / "small.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["1999", "0"]  # all still queued as the program ended
    assert RawBatch.objects.filter(source="api").count() == 1  # sent at exit, in one batch
    assert_exactly_small(live_stack, analyst_token, expected, wait_until_processed(1999))


def test_a_full_queue_blocks_or_drops_and_reports(live_stack, app_key):
    events = [
        {"id": f"q{n}", "type": "message", "from": "v", "site_id": "q", "data": {"message": "m"},
         "timestamp": time.time() - 60}
        for n in range(1, 5)
    ]  # fmt: skip
    reported: list = []
    options = {"flush_at": 1, "max_queue_size": 2, "backoff": 0.1, "max_backoff": 0.3, "max_retries": 200}
    blocking = Client(live_stack.base_url, app_key, **options)
    dropping = Client(live_stack.base_url, app_key, when_full="drop", on_error=lambda *e: reported.append(e), **options)
    for client in (blocking, dropping):  # the server is not up yet: the first event is being retried
        client.enqueue(events[0])
        wait_for(lambda c=client: c.queue_size == 0, 10, "the first event taken")
        assert client.enqueue(events[1]) and client.enqueue(events[2])  # the queue is now full

    assert dropping.enqueue(events[3]) is False
    assert dropping.dropped == 1
    assert [(type(e), ev) for e, ev in reported] == [(QueueFull, [events[3]])]
    fourth = threading.Thread(target=blocking.enqueue, args=(events[3],))
    fourth.start()
    fourth.join(0.5)
    assert fourth.is_alive()  # backpressure: the caller waits for room

    live_stack.start_web()
    fourth.join(30)
    assert not fourth.is_alive()
    assert blocking.shutdown(30) and dropping.shutdown(30)
    assert (blocking.sent, dropping.sent, len(reported)) == (4, 3, 1)
    bodies = [gzip.decompress(bytes(b.body)) for b in RawBatch.objects.filter(source="api")]
    assert sorted(json.loads(body)["id"] for body in bodies) == ["q1", "q1", "q2", "q2", "q3", "q3", "q4"]


def test_sync_calls_send_at_once_and_a_4xx_is_final(live_stack, app_key):
    live_stack.start_web()
    event = {"id": "s1", "type": "message", "from": "v", "site_id": "s", "data": {"message": "m"},
             "timestamp": time.time() - 60}  # fmt: skip

    assert Client(live_stack.base_url, app_key, sync_mode=True).enqueue(event)
    assert RawBatch.objects.filter(source="api").count() == 1  # stored before enqueue returned

    wrong = Client(live_stack.base_url, "sb_00000000_wrong", sync_mode=True, max_retries=3, backoff=5)
    started = time.monotonic()
    for call in (wrong.enqueue, lambda e: wrong.send([e])):
        with pytest.raises(Rejected) as error:
            call(event)
        assert error.value.status == 401
        assert "Unknown or revoked API key" in error.value.detail
    assert time.monotonic() - started < 5  # no backoff: a 401 is final

    reported: list = []
    reporting = Client(live_stack.base_url, "sb_00000000_wrong", sync_mode=True, on_error=lambda *e: reported.append(e))
    assert reporting.enqueue(event) is False
    assert [(type(e), e.status, ev) for e, ev in reported] == [(Rejected, 401, [event])]


def test_an_unreachable_server_is_reported_once_retries_run_out():
    reported: list = []
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = Client(url, "sb_x", max_retries=2, backoff=0.01, on_error=lambda *e: reported.append(e))
    client.enqueue({"id": "u1"})
    assert client.shutdown(10)

    assert (client.sent, client.failed) == (0, 1)
    [(error, events)] = reported
    assert isinstance(error, RetriesExhausted) and "failed 3 times" in str(error)
    assert events == [{"id": "u1"}]


# -- the synchronous API -----------------------------------------------------------


def chat_events(n: int, site: str = "client-site") -> list[dict]:
    now = time.time() - 60
    statuses = [{"id": "s0", "type": "status", "from": "op", "site_id": site, "data": {"status": "online"},
                 "timestamp": now - 1}]  # fmt: skip
    messages = [
        {"id": f"m{i}", "type": "message", "from": f"v{i % 7}", "site_id": site, "data": {"message": "hé"},
         "timestamp": now + i / 1000}
        for i in range(n)
    ]  # fmt: skip
    return statuses + messages


def test_send_batches_and_waits(live_stack, app_key):
    live_stack.start_web()
    live_stack.start_worker()
    client = Client(live_stack.base_url, app_key, flush_at=120)

    batch_ids = client.send(chat_events(300))
    statuses = client.wait(batch_ids, timeout=60)

    assert len(batch_ids) == 3  # 301 events in batches of at most 120
    assert sum(s["accepted"] for s in statuses) == 301
    # Resending everything is harmless: all duplicates.
    again = client.wait(client.send(chat_events(300)), timeout=60)
    assert (sum(s["accepted"] for s in again), sum(s["duplicates"] for s in again)) == (0, 301)
