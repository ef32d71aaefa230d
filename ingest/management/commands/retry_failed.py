"""manage.py retry_failed: give batches that ended `failed` another round, once the cause is fixed."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingest.batches import drain, retry_failed
from ingest.models import RawBatch


class Command(BaseCommand):
    help = (
        "Set failed API batches back to pending with a fresh set of attempts; the workers are woken. "
        "Name batch ids, or --all. With --here they are processed in this process (no broker needed)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("batch_ids", nargs="*", type=int, help="failed batches to retry")
        parser.add_argument("--all", action="store_true", help="every failed batch")
        parser.add_argument("--here", action="store_true", help="process them in this process, now")

    def handle(self, *args: object, **options: object) -> None:
        ids = options["batch_ids"] or None
        if ids is None and not options["all"]:
            raise CommandError("name the failed batches to retry, or pass --all")
        if ids:
            missing = set(ids) - set(RawBatch.objects.filter(pk__in=ids, status="failed").values_list("pk", flat=True))
            if missing:
                raise CommandError(f"not failed (or unknown): {', '.join(map(str, sorted(missing)))}")
        count = retry_failed(ids)
        self.stderr.write(f"{count} failed batches set back to pending")
        if options["here"] and count:
            result = drain()
            self.stderr.write(f"{result.done} processed, {result.failed} failed again")
