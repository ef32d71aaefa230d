"""manage.py rebuild_event_counts: recompute the dashboard's event counts from the events."""

from django.core.management.base import BaseCommand

from reports import event_counts


class Command(BaseCommand):
    help = (
        "Recompute the accepted events per (hour, family, site) that the dashboard reads, from the stored "
        "events (a repair: the storing paths keep them exact). Locks the table while it runs on PostgreSQL."
    )

    def handle(self, *args: object, **options: object) -> None:
        rows = event_counts.rebuild()
        self.stderr.write(f"{rows} (hour, family, site) rows")
