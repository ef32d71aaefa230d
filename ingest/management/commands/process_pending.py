"""manage.py process_pending: finish batches left pending (broker down, worker killed)."""

from django.core.management.base import BaseCommand, CommandParser

from ingest.batches import enqueue, process_batch, stale_batches
from ingest.imports.ranges import process_range, stale_ranges
from ingest.imports.tasks import enqueue_ranges
from ingest.models import ImportRange, RawBatch


class Command(BaseCommand):
    help = (
        "Process every unfinished batch and import range in this process (works with the broker down), "
        "or with --enqueue hand the stale ones to the workers again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--enqueue", action="store_true", help="re-enqueue stale batches instead of processing them here"
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["enqueue"]:
            ids = stale_batches()
            sent = sum(enqueue(batch_id) for batch_id in ids)
            self.stderr.write(f"{sent} of {len(ids)} stale batches enqueued")
            range_ids = list(stale_ranges().values_list("pk", flat=True))
            if range_ids:
                self.stderr.write(f"{enqueue_ranges(range_ids)} of {len(range_ids)} stale import ranges enqueued")
            return
        ids = list(RawBatch.objects.unfinished().order_by("pk").values_list("pk", flat=True))
        processed = sum(process_batch(batch_id) is not None for batch_id in ids)
        self.stderr.write(f"{processed} of {len(ids)} unfinished batches processed")
        range_ids = list(ImportRange.objects.unfinished().order_by("pk").values_list("pk", flat=True))
        if range_ids:
            imported = sum(process_range(range_id) is not None for range_id in range_ids)
            self.stderr.write(f"{imported} of {len(range_ids)} unfinished import ranges imported")
