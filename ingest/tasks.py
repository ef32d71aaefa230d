"""Celery tasks of the API outbox: thin wrappers; the work is in ingest.batches.

The tasks of file imports are in ingest.imports.tasks.

While the database is unavailable a drain backs off (retried later, exponentially, up
to OUTAGE_MAX_DELAY_SECONDS apart) instead of failing; after OUTAGE_RETRIES it gives up and
leaves the batches pending for the sweeper. Nothing is lost meanwhile: a batch answered 202
is in the database, and a group the outage interrupted is given back by the retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from celery import Task, shared_task
from django.conf import settings

from config.errors import database_unavailable
from ingest import batches, wakeups

logger = logging.getLogger(__name__)

OUTAGE_RETRIES = 40  # 1, 2, 4, ... then every 30 s: about 18 minutes
OUTAGE_MAX_DELAY_SECONDS = 30


def back_off(task: Task, error: BaseException, **kwargs: object) -> None:
    """Run `task` again later with `kwargs`, as the database is unavailable (raises celery's Retry)."""
    retries = task.request.retries
    reason = str(error).strip() or type(error).__name__
    if retries >= OUTAGE_RETRIES:
        logger.error("%s: the database is still unavailable after %s retries (%s); the sweeper takes over",
                     task.name, retries, reason)  # fmt: skip
        return
    delay = min(OUTAGE_MAX_DELAY_SECONDS, 2**retries)
    logger.warning("%s: the database is unavailable (%s); again in %s s", task.name, reason, delay)
    raise task.retry(countdown=delay, kwargs=kwargs)


# max_retries=None: `back_off` counts (Celery's default would stop after 3).
@shared_task(bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def drain_outbox_task(self: Task, release: list[int] | None = None, claimed_at: str | None = None) -> None:
    """A wake-up: process claimable API batches in groups until none is left.

    `release`: the batches of a group that a database outage interrupted (claimed at
    `claimed_at`), given back before draining."""
    limits = settings.SWITCHBOARD
    try:
        if release and claimed_at:
            batches.release_claims(release, datetime.fromisoformat(claimed_at))
            release = claimed_at = None
        batches.drain(max_seconds=limits["DRAIN_SECONDS"], linger=limits["DRAIN_LINGER_SECONDS"])
    except batches.GroupInterrupted as interrupted:
        when = interrupted.claimed_at.isoformat() if interrupted.claimed_at else None
        back_off(self, interrupted.__cause__ or interrupted, release=interrupted.batch_ids, claimed_at=when)
    except Exception as error:
        if not database_unavailable(error):
            raise
        back_off(self, error, release=release, claimed_at=claimed_at)


# max_retries=None: `back_off` counts (Celery's default would stop after 3).
@shared_task(bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_batch_task(self: Task, batch_id: int) -> None:
    """A message of the per-batch protocol (before wake-ups) still in a queue: that batch, then the rest."""
    try:
        batches.process_batch(batch_id)
    except Exception as error:
        if not database_unavailable(error):
            raise
        back_off(self, error, batch_id=batch_id)
        return
    wakeups.publish()


def sweep(run: Callable[[], int], what: str) -> int:
    """A sweeper's run; while the database is unavailable it does nothing (beat runs it again soon)."""
    try:
        return run()
    except Exception as error:
        if not database_unavailable(error):
            raise
        logger.warning("%s skipped: the database is unavailable (%s)", what, str(error).strip())
        return 0


@shared_task(ignore_result=True)
def sweep_pending_task() -> int:
    return sweep(batches.requeue_stale, "the sweep of pending batches")
