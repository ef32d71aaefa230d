"""Celery limits with a real worker (issue 12 item 14): a task stuck past TASK_TIME_LIMIT_SECONDS
is killed, the worker goes on, and the batch is processed once the cause is gone.

The limit travels in the task message (Celery's `timelimit` header), so it is the publisher's
setting that counts: the web processes, beat and manage.py must share the workers' environment."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from django.db import connection, transaction

from events.models import Event
from ingest.batches import receive_batch
from ingest.keys import create_application
from ingest.models import RawBatch
from tests.live import REPO, LiveStack, wait_for

pytestmark = pytest.mark.slow


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
    live_stack.env.update(TASK_TIME_LIMIT_SECONDS="3", SQLITE_TIMEOUT="120")
    enqueue = manage(live_stack, "process_pending", "--enqueue", PENDING_REQUEUE_SECONDS="0")
    assert "1 of 1 stale batches enqueued" in enqueue.stderr, enqueue.stderr

    with transaction.atomic():
        stall_the_event_store()
        live_stack.start_worker()
        wait_for(lambda: "Hard time limit (3s) exceeded" in live_stack.log("worker.log"), 60, "the time limit")
    assert live_stack.worker.poll() is None  # the worker lives on, with a new child

    no_wait = {"PENDING_REQUEUE_SECONDS": "0", "PROCESSING_TIMEOUT_SECONDS": "0"}
    again = manage(live_stack, "process_pending", "--enqueue", **no_wait)
    assert "1 of 1 stale batches enqueued" in again.stderr, again.stderr
    wait_for(lambda: RawBatch.objects.get(pk=batch.pk).status == "done", 60, "the batch after the stall")
    assert list(Event.objects.values_list("uid", flat=True)) == ["t1"]
