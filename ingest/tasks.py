"""Celery tasks of the API outbox: thin wrappers; the work is in ingest.batches.

The tasks of file imports are in ingest.imports.tasks.
"""

from celery import shared_task

from ingest import batches


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_batch_task(batch_id: int) -> None:
    batches.process_batch(batch_id)


@shared_task(ignore_result=True)
def sweep_pending_task() -> int:
    return batches.requeue_stale()
