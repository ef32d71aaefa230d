"""The outbox end to end (issue 10), with real gunicorn, Celery workers and the broker:
thousands of single-event posts from concurrent clients (shuffled, some resent) give the
exact summary; several workers draining one outbox take every batch once; a worker
killed with SIGKILL mid-group loses and doubles nothing."""

from __future__ import annotations

import random
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from events.models import Event
from ingest.models import RawBatch
from tests.live import wait_for
from tests.test_worker_e2e import all_done, expected_counts, file_lines, manage, random_batches, summary_text

pytestmark = pytest.mark.slow


def post_all(stack, key: str, bodies: list[list[bytes]], clients: int, content_type: str) -> list[int]:
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": content_type}

    def post(lines: list[bytes]) -> int:
        response = stack.request("POST", "/api/events/", b"".join(lines), headers)
        assert response.status == 202, response.body
        return response.json()["batch_id"]

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(post, bodies))


def test_single_event_posts_from_concurrent_clients_shuffled_and_resent_give_the_exact_summary(
    live_stack, sample_data, app_key, analyst_token
):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    lines = [line for line in file_lines(sample_data / "chat" / "small.jsonl") if line.strip()]
    posts = [[line] for line in lines + rng.sample(lines, k=len(lines) // 10)]  # a tenth resent
    rng.shuffle(posts)
    live_stack.start_web()
    live_stack.start_worker()

    batch_ids = post_all(live_stack, app_key, posts, clients=8, content_type="application/json")
    wait_for(lambda: all_done(len(batch_ids)), 120, f"{len(batch_ids)} one-event batches (seed {seed})")

    assert summary_text(live_stack, analyst_token) == (sample_data / "chat" / "small.expected").read_text()
    counts = expected_counts("small", sample_data)
    batches = RawBatch.objects.filter(pk__in=batch_ids)
    assert sum(b.accepted for b in batches) == len(lines) - counts["duplicates"] - counts["rejected"], seed
    assert sum(b.duplicates for b in batches) == counts["duplicates"] + len(posts) - len(lines), seed
    assert Event.objects.count() == len(lines) - counts["duplicates"] - counts["rejected"]


def test_several_workers_draining_one_outbox_take_every_batch_once(live_stack, sample_data, app_key, analyst_token):
    lines = file_lines(sample_data / "chat" / "small.jsonl")
    bodies = random_batches(lines, random.Random(5), largest=20)
    live_stack.start_web()
    batch_ids = post_all(live_stack, app_key, bodies, clients=4, content_type="application/x-ndjson")

    # Three worker processes of two children each, started together on the same backlog.
    live_stack.env["GROUP_RECORDS"] = "100"  # many small groups, so that the six children contend
    workers = [live_stack._spawn(worker_args(live_stack, n), f"worker-{n}.log") for n in range(3)]
    try:
        live_stack.start_worker()  # and one more, through the fixture (it also wakes them)
        wait_for(lambda: all_done(len(batch_ids)), 120, f"{len(batch_ids)} batches")
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)

    batches = list(RawBatch.objects.filter(pk__in=batch_ids))
    assert {b.attempts for b in batches} == {1}  # no batch was claimed twice
    assert len({b.claimed_at for b in batches}) > 5  # many groups
    counts = expected_counts("small", sample_data)
    records = sum(1 for line in lines if line.strip())
    assert sum(b.accepted for b in batches) == records - counts["duplicates"] - counts["rejected"]
    assert summary_text(live_stack, analyst_token) == (sample_data / "chat" / "small.expected").read_text()


def worker_args(stack, n: int) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=warning", "--concurrency=2",
            "--without-gossip", "--without-mingle", "-n", f"e2e-{stack.port}-{n}-{time.monotonic_ns()}@%h"]  # fmt: skip


def test_a_worker_killed_mid_group_loses_and_doubles_nothing(live_stack, sample_data, app_key, analyst_token):
    lines = file_lines(sample_data / "chat" / "mixed.jsonl")
    bodies = random_batches(lines, random.Random(13), largest=300)
    live_stack.start_web()
    batch_ids = post_all(live_stack, app_key, bodies, clients=4, content_type="application/x-ndjson")

    live_stack.start_worker()
    wait_for(lambda: RawBatch.objects.filter(status="processing").count() > 1, 60, "a group in progress", 0.01)
    live_stack.stop_worker(signal.SIGKILL)
    killed = list(RawBatch.objects.filter(status="processing").values_list("pk", flat=True))
    assert len(killed) > 1  # a group, not one batch
    assert not Event.objects.filter(batch_id__in=killed).exists()  # nothing of the group was committed

    # Its claim expires (shortened here) and a woken worker takes the group again.
    live_stack.env["PROCESSING_TIMEOUT_SECONDS"] = "3"
    live_stack.start_worker()
    time.sleep(3)
    sweep = manage(live_stack, "process_pending", "--enqueue", PROCESSING_TIMEOUT_SECONDS="0")
    assert "workers woken" in sweep.stderr, sweep.stderr
    wait_for(lambda: all_done(len(batch_ids)), 120, "every batch after the restart")

    assert summary_text(live_stack, analyst_token) == (sample_data / "chat" / "mixed.expected").read_text()
    counts = expected_counts("mixed", sample_data)
    records = sum(1 for line in lines if line.strip())
    batches = list(RawBatch.objects.filter(pk__in=batch_ids))
    assert sum(b.accepted for b in batches) == records - counts["rejected"] - counts["duplicates"]
    assert sum(b.rejected for b in batches) == counts["rejected"]
    assert min(b.attempts for b in batches if b.pk in killed) >= 2  # taken again, counted once (above)


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request, live_stack):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name in ("web.log", "worker.log", "worker-0.log"):
            print(f"--- {name} ---", live_stack.log(name), sep="\n")
