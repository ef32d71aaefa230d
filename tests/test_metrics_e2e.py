"""Metrics end to end (issue 20), with real gunicorn (3 workers, the deployment's config),
a Celery worker, the broker and the database: one scrape adds up every process, and the
outbox gauges follow the database."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.live import LiveStack, free_port, wait_for
from tests.metrics_text import total
from tests.test_worker_e2e import all_done

pytestmark = pytest.mark.slow

ROUTE = {"route": "api/events/", "status": "202"}


def chat_line(n: int) -> bytes:
    record = {"id": f"m-{n}", "type": "message", "from": f"v{n % 7}", "site_id": f"s{n % 3}",
              "data": {"message": "hi"}, "timestamp": 1700000000}  # fmt: skip
    return json.dumps(record).encode() + b"\n"


def post_each(stack: LiveStack, key: str, lines: list[bytes]) -> None:
    def post(line: bytes) -> None:
        response = stack.post_events(key, [line])
        assert response.status == 202, response.body

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(post, lines))


def scrape(stack: LiveStack) -> str:
    response = stack.request("GET", "/metrics")
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return response.body.decode()


@pytest.fixture
def metrics_stack(live_stack: LiveStack, tmp_path):
    """The live stack with one metrics directory for the web server and the worker (one machine)."""
    directory = tmp_path / "metrics"
    live_stack.env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    live_stack.env.pop("METRICS_TOKEN", None)
    return live_stack


def test_counters_after_n_posts_equal_n_in_one_scrape_across_three_web_workers(metrics_stack, app_key):
    n = 90
    metrics_stack.start_web(workers=3, deploy_config=True)
    metrics_stack.start_worker()
    post_each(metrics_stack, app_key, [chat_line(i) for i in range(n)])
    wait_for(lambda: all_done(n), 120, f"{n} batches")
    wait_for(
        lambda: total(scrape(metrics_stack), "switchboard_batches_processed_total") == n, 30, "the worker's counts"
    )

    text = scrape(metrics_stack)
    assert total(text, "switchboard_events_received_total") == n
    assert total(text, "switchboard_http_requests_total", **ROUTE) == n
    assert total(text, "switchboard_http_request_duration_seconds_count", **ROUTE) == n
    assert total(text, "switchboard_events_stored_total", family="chat") == n
    assert total(text, "switchboard_processing_lag_seconds_count") == n
    assert total(text, "switchboard_outbox_backlog_batches") == 0
    pids = {name.rsplit("_", 1)[-1] for name in os.listdir(metrics_stack.env["PROMETHEUS_MULTIPROC_DIR"])}
    assert len(pids) >= 4  # three web workers and at least one pool process wrote their own files


def test_a_worker_serves_its_counts_on_its_own_port(live_stack, app_key, tmp_path):
    n = 25
    port = free_port()
    live_stack.start_web()
    post_each(live_stack, app_key, [chat_line(i) for i in range(n)] + [b'{"id": "x", "type": "nope"}\n'])
    live_stack.env.update(
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "worker-metrics"),
        WORKER_METRICS_PORT=f"127.0.0.1:{port}",
        METRICS_TOKEN="s3cret-token",
    )
    live_stack.start_worker()
    wait_for(lambda: all_done(n + 1), 60, f"{n + 1} batches: " + live_stack.log("worker.log"))

    def worker_scrape(token: str) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    wait_for(
        lambda: total(worker_scrape("s3cret-token")[1], "switchboard_batches_processed_total") == n + 1, 30, "counts"
    )
    _, text = worker_scrape("s3cret-token")
    assert total(text, "switchboard_events_stored_total", family="chat") == n
    assert total(text, "switchboard_records_rejected_total", rule="unknown_family") == 1
    assert worker_scrape("wrong")[0] == 403


def test_without_a_token_gunicorn_refuses_what_came_through_a_proxy(metrics_stack):
    """Hostile review 3, through real gunicorn on loopback: a proxy on this machine that sets only
    `X-Real-IP` (or `X-Forwarded-Host`, `Via`) passed for a local scrape; and with a proxy declared
    (NUM_PROXIES), one that adds no header at all is refused too, a token being the way in."""
    metrics_stack.env.pop("NUM_PROXIES", None)
    metrics_stack.start_web(workers=1)
    headers = [{"X-Real-IP": "203.0.113.9"}, {"X-Forwarded-Host": "switchboard.example.com"}, {"Via": "1.1 nginx"}]
    assert metrics_stack.request("GET", "/metrics").status == 200  # straight from loopback
    assert [metrics_stack.request("GET", "/metrics", headers=h).status for h in headers] == [404, 404, 404]

    metrics_stack.stop()
    metrics_stack.env.update(NUM_PROXIES="1")
    metrics_stack.start_web(workers=1)
    assert metrics_stack.request("GET", "/metrics").status == 404
    metrics_stack.stop()
    metrics_stack.env.update(METRICS_TOKEN="s3cret-token")
    metrics_stack.start_web(workers=1)
    bearer = {"Authorization": "Bearer s3cret-token", "X-Real-IP": "203.0.113.9"}
    assert metrics_stack.request("GET", "/metrics", headers=bearer).status == 200


def test_the_backlog_gauge_follows_a_stopped_worker(metrics_stack, app_key):
    metrics_stack.start_web(workers=3, deploy_config=True)
    metrics_stack.start_worker()
    post_each(metrics_stack, app_key, [chat_line(i) for i in range(5)])
    wait_for(lambda: all_done(5), 120, "the first batches")
    assert total(scrape(metrics_stack), "switchboard_outbox_backlog_batches") == 0

    metrics_stack.stop_worker(signal.SIGTERM)
    post_each(metrics_stack, app_key, [chat_line(i) for i in range(100, 112)])
    text = scrape(metrics_stack)
    assert total(text, "switchboard_outbox_backlog_batches") == 12
    assert total(text, "switchboard_outbox_oldest_pending_seconds") > 0
    first_age = total(text, "switchboard_outbox_oldest_pending_seconds")
    wait_for(
        lambda: total(scrape(metrics_stack), "switchboard_outbox_oldest_pending_seconds") > first_age + 1, 10, "age"
    )

    metrics_stack.start_worker()
    wait_for(
        lambda: total(scrape(metrics_stack), "switchboard_outbox_backlog_batches") == 0, 120, "the backlog drained"
    )
    assert total(scrape(metrics_stack), "switchboard_outbox_oldest_pending_seconds") == 0


def test_workers_replaced_by_max_requests_keep_their_counts_and_leave_no_files(metrics_stack, app_key):
    """gunicorn's master adds an exiting worker's counts to its own file: the totals stay exact
    and the directory (what a scrape reads) does not grow with every replaced worker."""
    n = 60
    metrics_stack.start_web(workers=3, deploy_config=True, extra=("--max-requests", "8", "--max-requests-jitter", "0"))
    post_each(metrics_stack, app_key, [chat_line(i) for i in range(n)])

    text = scrape(metrics_stack)
    assert total(text, "switchboard_events_received_total") == n
    assert total(text, "switchboard_http_requests_total", **ROUTE) == n
    booted = metrics_stack.log("web.log").count("Booting worker")
    assert booted >= 3 + 3  # workers were replaced (each after 8 requests)
    directory = metrics_stack.env["PROMETHEUS_MULTIPROC_DIR"]
    pids = {name.rsplit("_", 1)[-1] for name in os.listdir(directory) if name.endswith(".db")}
    assert len(pids) <= 3 + 1, sorted(os.listdir(directory))  # the live workers' and the master's
