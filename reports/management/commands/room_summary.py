"""manage.py room_summary: the classic per-room lines and the totals line (SPEC §4)."""

from django.core.management.base import BaseCommand, CommandParser

from reports import room_summary


class Command(BaseCommand):
    help = (
        "Print room,events=N,messages=N,typing=N,participants=N,first=F,last=F for every xmpp room, "
        "then '# rooms=N events=N avg_events_per_room=F'."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rebuild", action="store_true", help="recompute every room from its events first")

    def handle(self, *args: object, **options: object) -> None:
        if options["rebuild"]:
            room_summary.rebuild_all_rooms()
        else:
            room_summary.rebuild_stale_rooms()
        for row in room_summary.room_rows():
            self.stdout.write(row.classic())
        self.stdout.write(room_summary.room_totals().classic())
