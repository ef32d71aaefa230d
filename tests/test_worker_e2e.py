"""End to end with real processes: gunicorn takes the posts, a Celery worker
processes them from a real broker, the summary endpoint answers.

SPEC §5-§7: shuffled batches, some posted twice, give exactly the expected
summary; posts while the broker is down are kept and processed once it is
back; a worker killed with SIGKILL mid-batch loses nothing and counts nothing
twice.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from ingest.models import RawBatch
from tests.live import REPO, LiveStack, free_port, wait_for

pytestmark = pytest.mark.slow

CHAT_FILES = ["small", "mixed", "edge", "external_small", "external_bad"]
BOM = b"\xef\xbb\xbf"


def file_lines(path: Path) -> list[bytes]:
    # A client splitting a file into requests reads it as text: the BOM goes.
    data = path.read_bytes().removeprefix(BOM)
    lines = data.splitlines(keepends=True)
    return [line if line.endswith(b"\n") else line + b"\n" for line in lines]


def random_batches(lines: list[bytes], rng: random.Random, largest: int) -> list[list[bytes]]:
    lines = lines[:]
    rng.shuffle(lines)
    batches = []
    while lines:
        size = rng.randint(1, largest)
        batches.append(lines[:size])
        del lines[:size]
    # A body of blank lines holds no records and is refused (400): not worth posting.
    return [batch for batch in batches if any(line.strip() for line in batch)]


def expected_counts(name: str, sample_data: Path) -> dict[str, int]:
    text = (sample_data / "chat" / f"{name}.counts").read_text().split()
    return {k: int(v) for k, v in (item.split("=") for item in text)}


def summary_text(stack: LiveStack, token: str) -> str:
    response = stack.request("GET", "/api/sites/summary/?format=txt", headers={"Authorization": f"Token {token}"})
    assert response.status == 200, response.body
    return response.body.decode()


def all_done(expected_batches: int) -> bool:
    return RawBatch.objects.filter(status=RawBatch.Status.DONE).count() == expected_batches


def manage(stack: LiveStack, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO, env={**stack.env, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("name", CHAT_FILES)
def test_shuffled_batches_posted_twice_give_the_expected_summary(name, live_stack, sample_data, app_key, analyst_token):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    lines = file_lines(sample_data / "chat" / f"{name}.jsonl")
    batches = random_batches(lines, rng, largest=max(2, len(lines) // 40))
    twice = set(rng.sample(range(len(batches)), k=max(1, len(batches) // 6)))
    live_stack.start_web()
    live_stack.start_worker()

    batch_ids, first_posts = [], []
    for index, batch in enumerate(batches):
        for attempt in range(2 if index in twice else 1):
            response = live_stack.post_events(app_key, batch, gzipped=rng.random() < 0.3)
            assert response.status == 202, (seed, response.body)
            batch_ids.append(response.json()["batch_id"])
            if attempt == 0:
                first_posts.append(batch_ids[-1])
    wait_for(lambda: all_done(len(batch_ids)), 180, f"{len(batch_ids)} batches (seed {seed})")

    expected = (sample_data / "chat" / f"{name}.expected").read_text()
    assert summary_text(live_stack, analyst_token) == expected, f"seed {seed}"
    counts = expected_counts(name, sample_data)
    records = sum(1 for line in lines if line.strip())
    done = RawBatch.objects.filter(pk__in=batch_ids)
    assert sum(b.accepted for b in done) == records - counts["rejected"] - counts["duplicates"], f"seed {seed}"
    assert sum(b.rejected for b in done if b.pk in first_posts) == counts["rejected"], f"seed {seed}"


def test_posts_while_the_broker_is_down_are_processed_when_it_returns(live_stack, sample_data, app_key, analyst_token):
    good_broker = live_stack.env["CELERY_BROKER_URL"]
    # Nothing listens on this port: every enqueue fails.
    down = f"redis://127.0.0.1:{free_port()}/0"
    live_stack.env["CELERY_BROKER_URL"] = down
    live_stack.start_web()
    lines = file_lines(sample_data / "chat" / "small.jsonl")
    batches = random_batches(lines, random.Random(7), largest=100)

    for batch in batches:
        response = live_stack.post_events(app_key, batch)
        assert response.status == 202, response.body
    health = live_stack.request("GET", "/api/health/", headers={"Authorization": f"Token {analyst_token}"})
    assert health.status == 200 and health.json()["status"] == "degraded"
    assert health.json()["broker"]["ok"] is False  # the details, for staff
    assert RawBatch.objects.filter(status="pending").count() == len(batches)

    # The broker is back: a worker runs and the sweeper wakes it for what is pending.
    live_stack.env["CELERY_BROKER_URL"] = good_broker
    live_stack.start_worker()
    sweep = manage(live_stack, "process_pending", "--enqueue", PENDING_GRACE_SECONDS="0")
    assert f"{len(batches)} stale batches: workers woken" in sweep.stderr, sweep.stderr
    wait_for(lambda: all_done(len(batches)), 120, "the pending batches")

    expected = (sample_data / "chat" / "small.expected").read_text()
    assert summary_text(live_stack, analyst_token) == expected


def test_a_worker_killed_mid_batch_loses_nothing(live_stack, sample_data, app_key, analyst_token):
    lines = file_lines(sample_data / "chat" / "mixed.jsonl")
    batches = random_batches(lines, random.Random(11), largest=3000)
    live_stack.start_web()
    for batch in batches:
        assert live_stack.post_events(app_key, batch).status == 202

    live_stack.start_worker()
    wait_for(lambda: RawBatch.objects.filter(status="processing").exists(), 60, "a batch in progress", 0.02)
    live_stack.stop_worker(signal.SIGKILL)
    interrupted = RawBatch.objects.filter(status="processing").count()
    assert interrupted >= 1
    assert RawBatch.objects.exclude(status="done").count() >= interrupted

    # The killed worker's group stays "processing" until its claim is older than
    # PROCESSING_TIMEOUT_SECONDS (shortened here); then a woken worker claims it again.
    live_stack.env["PROCESSING_TIMEOUT_SECONDS"] = "2"
    live_stack.start_worker()

    # Wake the workers only once the claims have expired for them too: a drain woken
    # earlier finds nothing claimable and stops (beat's sweeper would wake it later).
    def expired() -> bool:
        recent = timezone.now() - timedelta(seconds=2.5)
        return not RawBatch.objects.filter(status="processing", claimed_at__gt=recent).exists()

    wait_for(expired, 30, "the killed worker's claims to expire")
    no_wait = {"PENDING_GRACE_SECONDS": "0", "PROCESSING_TIMEOUT_SECONDS": "0"}
    sweep = manage(live_stack, "process_pending", "--enqueue", **no_wait)
    assert sweep.returncode == 0, sweep.stderr
    wait_for(lambda: all_done(len(batches)), 180, "all batches after the restart")

    expected = (sample_data / "chat" / "mixed.expected").read_text()
    assert summary_text(live_stack, analyst_token) == expected
    counts = expected_counts("mixed", sample_data)
    records = sum(1 for line in lines if line.strip())
    batches_done = RawBatch.objects.all()
    assert sum(b.accepted for b in batches_done) == records - counts["rejected"] - counts["duplicates"]
    assert sum(b.rejected for b in batches_done) == counts["rejected"]
    assert max(b.attempts for b in batches_done) >= 2  # the interrupted batch ran again


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request, live_stack):
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name in ("web.log", "worker.log"):
            print(f"--- {name} ---", live_stack.log(name), sep="\n")
