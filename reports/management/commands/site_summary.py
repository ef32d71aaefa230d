"""manage.py site_summary: the classic per-site lines (SPEC §3) from the database."""

from django.core.management.base import BaseCommand, CommandParser

from reports import site_summary


class Command(BaseCommand):
    help = "Print site_id,messages=N,emails=N,operators=N,visitors=N for every site."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rebuild", action="store_true", help="recompute every site from its events and pruned baseline first"
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["rebuild"]:
            site_summary.rebuild_all_sites()
        else:
            site_summary.rebuild_stale_sites()
        for row in site_summary.summary_rows():
            self.stdout.write(row.classic())
