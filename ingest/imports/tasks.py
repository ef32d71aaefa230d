"""Celery tasks of file imports, and handing ranges to them."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import shared_task
from django.utils import timezone

from ingest.imports import ranges, sequential
from ingest.models import ImportRange
from ingest.tasks import sweep

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def import_range_task(range_id: int, chunk_lines: int | None = None) -> None:
    ranges.process_range(range_id, chunk_lines)


@shared_task(ignore_result=True)
def sweep_ranges_task() -> int:
    """The sweeper of parallel imports: ranges left pending or abandoned are enqueued again."""
    return sweep(lambda: enqueue_ranges(ranges.stale_ranges().values_list("pk", flat=True)), "the sweep of ranges")


@shared_task(ignore_result=True)
def rebuild_stale_summaries_task() -> int:
    return sweep(sequential.rebuild_abandoned_stale_summaries, "the rebuild of stale summaries")


def enqueue_ranges(range_ids: Iterable[int], chunk_lines: int | None = None) -> int:
    """Hand ranges to the workers; returns how many the broker took (the others stay pending)."""
    sent: list[int] = []
    for range_id in range_ids:
        try:
            import_range_task.delay(range_id, chunk_lines)
        except Exception as error:  # kombu raises OperationalError, redis ConnectionError, OSError...
            logger.warning("range %s stays pending: the broker is unavailable (%s)", range_id, error)
            break
        sent.append(range_id)
    ImportRange.objects.filter(pk__in=sent).update(enqueued_at=timezone.now())
    return len(sent)
