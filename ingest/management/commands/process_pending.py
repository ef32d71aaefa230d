"""manage.py process_pending: finish batches left pending (broker down, worker killed)."""

from django.core.management.base import BaseCommand, CommandParser

from ingest import parallel_import, wakeups
from ingest.batches import drain, stale_batches, stale_ranges
from ingest.models import RawBatch


class Command(BaseCommand):
    help = (
        "Process every claimable batch in this process, in groups (works with the broker down), "
        "or with --enqueue wake the workers for the stale ones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--enqueue", action="store_true", help="wake the workers (and re-enqueue stale file ranges) instead"
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["enqueue"]:
            stale, ranges = stale_batches(), stale_ranges()
            woken = bool(stale) and wakeups.publish()
            sent = parallel_import.enqueue_ranges(ranges) if ranges else 0
            self.stderr.write(
                f"{len(stale)} stale batches: " + ("workers woken" if woken else "no wake-up sent")
                + (f"; {sent} of {len(ranges)} stale file ranges enqueued" if ranges else "")
            )  # fmt: skip
            return
        unfinished = RawBatch.objects.unfinished().count()
        result = drain()
        # Until parallel imports have their own table, their file ranges are RawBatch rows too.
        ranges = list(RawBatch.objects.unfinished().filter(next_offset__isnull=False).values_list("pk", flat=True))
        ranges_done = sum(parallel_import.process_range(pk) is not None for pk in ranges)
        failed = f"; {result.failed} failed (see last_error; retried later or by retry_failed)" if result.failed else ""
        self.stderr.write(f"{result.done + ranges_done} of {unfinished} unfinished batches processed{failed}")
