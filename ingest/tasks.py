"""Celery tasks: thin wrappers; the work is in ingest.batches, ingest.parallel_import and ingest.services."""

from celery import shared_task
from django.conf import settings

from ingest import batches, parallel_import, services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def drain_outbox_task() -> None:
    """A wake-up: process claimable API batches in groups until none is left."""
    batches.drain(max_seconds=settings.SWITCHBOARD["DRAIN_SECONDS"])


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_batch_task(batch_id: int) -> None:
    """A message of the per-batch protocol (before wake-ups) still in a queue: that batch, then the rest."""
    batches.process_batch(batch_id)
    batches.drain(max_seconds=settings.SWITCHBOARD["DRAIN_SECONDS"])


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def import_range_task(batch_id: int, chunk_lines: int | None = None) -> None:
    parallel_import.process_range(batch_id, chunk_lines)


@shared_task(ignore_result=True)
def sweep_pending_task() -> int:
    return batches.requeue_stale()


@shared_task(ignore_result=True)
def rebuild_stale_summaries_task() -> int:
    return services.rebuild_abandoned_stale_summaries()
