"""manage.py make_partitions [--months N] [--min-rows R]: the event table's month partitions (events/partitions.py)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events import partitions
from events.ddl_locks import LockWaitGaveUp

MAX_MONTHS = 120


class Command(BaseCommand):
    help = (
        "Create the event table's partitions (PostgreSQL) for this month and the next N, and for each month "
        "the default partition holds at least R events of (moving them). Idempotent; nothing to do on SQLite."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--months", type=int, default=partitions.MONTHS_AHEAD,
            help=f"months ahead of this one (default {partitions.MONTHS_AHEAD})",
        )  # fmt: skip
        parser.add_argument(
            "--min-rows", type=int, default=partitions.MIN_ROWS,
            help=f"a past month gets its partition once the default one holds this many of its events "
            f"(default {partitions.MIN_ROWS:,})",
        )  # fmt: skip

    def handle(self, *args: object, **options: object) -> None:
        if not 0 <= options["months"] <= MAX_MONTHS:
            raise CommandError(f"--months must be between 0 and {MAX_MONTHS}")
        if options["min_rows"] < 1:
            raise CommandError("--min-rows must be at least 1")
        if not partitions.partitioned():
            self.stderr.write("the event table is not partitioned (SQLite): nothing to do")
            return
        try:
            made = partitions.make_partitions(options["months"], options["min_rows"])
        except LockWaitGaveUp as gave_up:
            raise CommandError(str(gave_up)) from None
        for month, moved in made:
            self.stderr.write(
                f"created {month.name}" + (f" ({moved} events moved from the default partition)" if moved else "")
            )
        self.stderr.write(f"{len(made)} partitions created; {len(partitions.existing())} month partitions in all")
