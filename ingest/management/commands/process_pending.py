"""manage.py process_pending: finish batches left pending (broker down, worker killed)."""

from django.core.management.base import BaseCommand, CommandParser

from ingest.batches import enqueue, process_batch, stale_batches
from ingest.models import RawBatch


class Command(BaseCommand):
    help = (
        "Process every unfinished batch in this process (works with the broker down), "
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
            return
        ids = list(RawBatch.objects.unfinished().order_by("pk").values_list("pk", flat=True))
        processed = sum(process_batch(batch_id) is not None for batch_id in ids)
        self.stderr.write(f"{processed} of {len(ids)} unfinished batches processed")
