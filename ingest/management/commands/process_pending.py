"""manage.py process_pending: finish batches left pending (broker down, worker killed)."""

from django.core.management.base import BaseCommand, CommandParser

from ingest import wakeups
from ingest.batches import drain, stale_batches
from ingest.imports.ranges import process_range, stale_ranges
from ingest.imports.tasks import enqueue_ranges
from ingest.models import ImportRange, RawBatch


class Command(BaseCommand):
    help = (
        "Process every claimable batch (in groups) and unfinished import range in this process "
        "(works with the broker down), or with --enqueue wake the workers for the stale ones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--enqueue", action="store_true", help="wake the workers (and re-enqueue stale import ranges) instead"
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["enqueue"]:
            stale = stale_batches()
            woken = bool(stale) and wakeups.publish()
            self.stderr.write(f"{len(stale)} stale batches: " + ("workers woken" if woken else "no wake-up sent"))
            range_ids = list(stale_ranges().values_list("pk", flat=True))
            if range_ids:
                self.stderr.write(f"{enqueue_ranges(range_ids)} of {len(range_ids)} stale import ranges enqueued")
            return
        unfinished = RawBatch.objects.unfinished().count()
        result = drain()
        failed = f"; {result.failed} failed (see last_error; retried later or by retry_failed)" if result.failed else ""
        self.stderr.write(f"{result.done} of {unfinished} unfinished batches processed{failed}")
        range_ids = list(ImportRange.objects.unfinished().order_by("pk").values_list("pk", flat=True))
        if range_ids:
            imported = sum(process_range(range_id) is not None for range_id in range_ids)
            self.stderr.write(f"{imported} of {len(range_ids)} unfinished import ranges imported")
