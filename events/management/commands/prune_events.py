"""manage.py prune_events [--before T]: prune old chat and interaction events (events/retention.py)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.ddl_locks import LockWaitGaveUp
from events.privacy.services import import_running
from events.retention import ROWS, prune_events, retention_cut
from reports.filters import parse_instant

MAX_ROWS = 1_000_000


class Command(BaseCommand):
    help = (
        "Remove chat and interaction events older than T from the event store, keeping their ids (a resend "
        "stays a duplicate) and what the site summaries need (they stay exact, also for records that arrive "
        "later). Without --before, T is RETENTION_DAYS ago."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--before", help="the cut: epoch seconds or ISO 8601 (naive means UTC)")
        parser.add_argument("--rows", type=int, default=ROWS, help=f"events per transaction (default {ROWS})")

    def handle(self, *args: object, **options: object) -> None:
        if not 1 <= options["rows"] <= MAX_ROWS:  # bounded transactions; a LIMIT the database can hold
            raise CommandError(f"--rows must be between 1 and {MAX_ROWS:,}")
        if options["before"] is not None:
            try:
                cut = parse_instant(options["before"])
            except ValueError as error:
                raise CommandError(f"--before: {error}") from None
        elif (cut := retention_cut()) is None:
            raise CommandError("give --before T, or set RETENTION_DAYS")
        if import_running():
            # A dominating import loads without the event table's secondary indexes (imports/bulk.py):
            # pruning by range would scan the table, and the import rebuilds its summaries anyway.
            raise CommandError("an import is running: run prune_events again once it has finished")
        try:
            pruned = prune_events(cut, rows=options["rows"], progress=lambda n: self.stderr.write(f"{n} events pruned"))
        except LockWaitGaveUp as gave_up:
            raise CommandError(str(gave_up)) from None
        self.stderr.write(f"pruned {pruned} events older than {cut}")
