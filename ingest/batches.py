"""Raw batches from the API: stored first, processed by workers exactly once.

The pending row is the outbox: whatever happens to the broker or a worker, a
batch that was answered 202 is in the database and is processed eventually
(by the task enqueued after commit, by the sweeper, or by `process_pending`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from ingest.body import decode_body, frame_body
from ingest.models import Application, RawBatch
from ingest.records import Chunk, validate_into
from ingest.site_access import reject_sites_not_allowed
from ingest.store import store_chunk

logger = logging.getLogger(__name__)

API_SOURCE = "api"


def receive_batch(app: Application, body: bytes, content_type: str, content_encoding: str, records: int) -> RawBatch:
    """Store a request body as it was received (one insert) and enqueue it after commit."""
    batch = RawBatch.objects.create(
        app=app,
        source=API_SOURCE,
        body=body,
        content_type=content_type[:100],
        content_encoding=content_encoding[:32],
        record_count=records,
    )
    transaction.on_commit(lambda: enqueue(batch.pk))
    return batch


def enqueue(batch_id: int) -> bool:
    """Hand a batch to the workers; False (and the batch stays pending) if the broker is down."""
    from ingest.tasks import process_batch_task  # tasks import this module

    try:
        process_batch_task.delay(batch_id)
    except Exception as error:  # kombu raises OperationalError, redis ConnectionError, OSError...
        logger.warning("batch %s stays pending: the broker is unavailable (%s)", batch_id, error)
        return False
    RawBatch.objects.filter(pk=batch_id).update(enqueued_at=timezone.now())
    return True


def batch_records(batch: RawBatch) -> Chunk:
    """Validate a stored API body into a chunk (no database access)."""
    body = decode_body(bytes(batch.body), batch.content_encoding, settings.SWITCHBOARD["MAX_BODY_BYTES"])
    # "Future" is judged against the time the batch was received, so a batch
    # processed late (or twice) is judged the same way every time.
    chunk = validate_into(Chunk(), frame_body(body, batch.content_type), batch.created_at.timestamp())
    return reject_sites_not_allowed(chunk, batch.app)


def process_batch(batch_id: int) -> RawBatch | None:
    """Process a batch once; a second delivery, even a concurrent one, changes nothing."""
    if not RawBatch.objects.claim(batch_id):
        return None
    with transaction.atomic():
        batch = RawBatch.objects.select_for_update().get(pk=batch_id)
        if batch.status == RawBatch.Status.DONE:  # another delivery finished while we waited for the lock
            return None
        store_chunk(batch, batch_records(batch))
    return batch


def stale_batches(now: datetime | None = None) -> list[int]:
    """Batches a worker should have taken by now: never enqueued, lost by the broker, or
    claimed by a worker that died (SIGKILL leaves them "processing")."""
    now = now or timezone.now()
    limits = settings.SWITCHBOARD
    grace = now - timedelta(seconds=limits["PENDING_GRACE_SECONDS"])
    requeue = now - timedelta(seconds=limits["PENDING_REQUEUE_SECONDS"])
    processing_timeout = now - timedelta(seconds=limits["PROCESSING_TIMEOUT_SECONDS"])
    pending = Q(status=RawBatch.Status.PENDING) & (
        Q(enqueued_at__isnull=True, created_at__lte=grace) | Q(enqueued_at__lte=requeue)
    )
    abandoned = Q(status=RawBatch.Status.PROCESSING, claimed_at__lte=processing_timeout)
    return list(RawBatch.objects.filter(pending | abandoned).order_by("pk").values_list("pk", flat=True))


def requeue_stale() -> int:
    """The sweeper: enqueue what is stale again; returns how many were enqueued."""
    return sum(enqueue(batch_id) for batch_id in stale_batches())


@dataclass(frozen=True, slots=True)
class Backlog:
    unfinished: int
    oldest_created_at: datetime | None


def backlog() -> Backlog:
    stats = RawBatch.objects.unfinished().aggregate(count=Count("pk"), oldest=Min("created_at"))
    return Backlog(stats["count"], stats["oldest"])
