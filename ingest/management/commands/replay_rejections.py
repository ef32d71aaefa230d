"""manage.py replay_rejections: store the rejected records that today's rules accept."""

from __future__ import annotations

from argparse import ArgumentTypeError
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.hostile import text_argument
from ingest import rejections
from reports.filters import parse_instant


def moment(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(parse_instant(text), UTC)
    except (ValueError, OverflowError, OSError) as error:  # a usage error; a CommandError here was a traceback
        raise ArgumentTypeError(str(error)) from None


class Command(BaseCommand):
    help = (
        "Validate the matching rejected records again under today's rules and limits and store those now "
        "valid, each at most once however often this runs. Records kept only in part (over "
        "MAX_REJECTED_RECORD_BYTES or their batch's MAX_REJECTED_BYTES_PER_BATCH, bytes that are not UTF-8) "
        "cannot be replayed. Prints what it did."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", type=text_argument, default="", help="the reason contains TEXT (any case)")
        parser.add_argument(
            "--rule", type=text_argument, default="", help="the reason's rule, as the admin's filter shows it"
        )
        parser.add_argument(
            "--source", type=text_argument, default="", help="api, file (every imported file), replay, or a file's path"
        )
        parser.add_argument("--app", type=text_argument, default="", help="posted by the client app of this name")
        parser.add_argument("--batch", type=int, default=None, help="of this batch id")
        parser.add_argument("--since", type=moment, default=None, help="rejected at or after (ISO 8601 or epoch)")
        parser.add_argument("--until", type=moment, default=None, help="rejected before (ISO 8601 or epoch)")
        parser.add_argument("--limit", type=int, default=None, help="replay at most N rejections")
        parser.add_argument("--dry-run", action="store_true", help="only say how many are valid now")

    def handle(self, *args: object, **options: object) -> None:
        if options["limit"] is not None and options["limit"] < 1:  # type: ignore[operator]
            raise CommandError("--limit must be positive")
        selected = rejections.matching(
            reason=options["reason"],  # type: ignore[arg-type]
            rule=options["rule"],  # type: ignore[arg-type]
            source=options["source"],  # type: ignore[arg-type]
            app=options["app"],  # type: ignore[arg-type]
            batch=options["batch"],  # type: ignore[arg-type]
            since=options["since"],  # type: ignore[arg-type]
            until=options["until"],  # type: ignore[arg-type]
        )
        result = rejections.replay(selected, limit=options["limit"], dry_run=options["dry_run"])  # type: ignore[arg-type]
        self.stdout.write(result.describe(dry_run=bool(options["dry_run"])))
        if result.batches:
            self.stdout.write(f"replay batches: {', '.join(map(str, result.batches))}")
        if partial := rejections.unreplayable_count(selected):
            self.stderr.write(f"{partial} matching rejections kept only part of their record and cannot be replayed")
