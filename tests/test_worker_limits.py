"""Celery limits with a real worker (issue 12 item 14): a task stuck past TASK_TIME_LIMIT_SECONDS
is killed, the worker goes on, and the batch is processed once the cause is gone.

The limit travels in the task message (Celery's `timelimit` header), so it is the publisher's
setting that counts: the web processes, beat and manage.py must share the workers' environment."""

from __future__ import annotations

import math
import subprocess
import sys

import orjson
import pytest
from django.db import connection, transaction
from django.utils import timezone

from events.models import Event
from ingest.batches import receive_batch
from ingest.keys import create_application
from ingest.models import RawBatch
from tests.live import REPO, LiveStack, wait_for

pytestmark = pytest.mark.slow
RETRY_DELAY = 1


def manage(stack: LiveStack, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO, env={**stack.env, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def stall_the_event_store() -> None:
    """Inside a transaction: a worker storing events waits (the database stalls)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE events_event IN EXCLUSIVE MODE")
    else:  # SQLite: the open IMMEDIATE transaction holds the one write lock
        RawBatch.objects.filter(pk=-1).update(status="pending")


def test_a_task_stuck_past_its_time_limit_is_killed_and_the_batch_done_later(live_stack):
    app = create_application("limits")[0]
    event = {"id": "t1", "type": "message", "from": "v", "site_id": "s", "data": {"message": "hi"}, "timestamp": 1}
    batch = receive_batch(app, orjson.dumps(event), "application/json", "", 1)
    # The killed task's claim expires after PROCESSING_TIMEOUT_SECONDS (shortened here); a batch
    # that failed is retried after RETRY_DELAY_SECONDS (shorter still).
    live_stack.env.update(
        TASK_TIME_LIMIT_SECONDS="3",
        SQLITE_TIMEOUT="120",
        PROCESSING_TIMEOUT_SECONDS="5",
        RETRY_DELAY_SECONDS=str(RETRY_DELAY),
    )
    enqueue = manage(live_stack, "process_pending", "--enqueue", PENDING_GRACE_SECONDS="0")
    assert "1 stale batches: workers woken" in enqueue.stderr, enqueue.stderr

    with transaction.atomic():
        stall_the_event_store()
        live_stack.start_worker()
        wait_for(lambda: "Hard time limit (3s) exceeded" in live_stack.log("worker.log"), 60, "the time limit")
    assert live_stack.worker.poll() is None  # the worker lives on, with a new child
    # Not stored: still claimed by the killed task, or back to pending with the soft limit's error.
    assert RawBatch.objects.get(pk=batch.pk).status in ("processing", "pending")
    assert not Event.objects.exists()

    def claimable_again() -> bool:
        # Never claimed (the killed task waited for the lock to claim it), back to pending
        # after its error, or claimed by the killed task until the claim expired.
        status, attempts, claimed_at = RawBatch.objects.values_list("status", "attempts", "claimed_at").get(pk=batch.pk)
        age = (timezone.now() - claimed_at).total_seconds() if claimed_at else math.inf
        return (status == "pending" and (attempts == 0 or age > RETRY_DELAY)) or (status == "processing" and age > 5.5)

    wait_for(claimable_again, 30, "the batch to be claimable again")
    again = manage(live_stack, "process_pending", "--enqueue", PENDING_GRACE_SECONDS="0")
    assert "1 stale batches: workers woken" in again.stderr, again.stderr
    wait_for(lambda: RawBatch.objects.get(pk=batch.pk).status == "done", 60, "the batch after the stall")
    assert list(Event.objects.values_list("uid", flat=True)) == ["t1"]
