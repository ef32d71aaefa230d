"""Celery tasks of the API outbox: thin wrappers; the work is in ingest.batches.

The tasks of file imports are in ingest.imports.tasks.
"""

from celery import shared_task
from django.conf import settings

from ingest import batches


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def drain_outbox_task() -> None:
    """A wake-up: process claimable API batches in groups until none is left."""
    limits = settings.SWITCHBOARD
    batches.drain(max_seconds=limits["DRAIN_SECONDS"], linger=limits["DRAIN_LINGER_SECONDS"])


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_batch_task(batch_id: int) -> None:
    """A message of the per-batch protocol (before wake-ups) still in a queue: that batch, then the rest."""
    batches.process_batch(batch_id)
    drain_outbox_task()


@shared_task(ignore_result=True)
def sweep_pending_task() -> int:
    return batches.requeue_stale()
