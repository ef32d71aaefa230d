"""Reading batches: an app sees only its own, an analyst sees all."""

from __future__ import annotations

from django.db.models import QuerySet

from ingest.models import Application, RawBatch, Rejection

REJECTIONS_SHOWN = 1000


def visible_batches(app: Application | None) -> QuerySet[RawBatch]:
    batches = RawBatch.objects.defer("body")
    return batches if app is None else batches.filter(app=app)


def batch_rejections(batch: RawBatch) -> list[Rejection]:
    return list(batch.rejections.order_by("line")[:REJECTIONS_SHOWN])
