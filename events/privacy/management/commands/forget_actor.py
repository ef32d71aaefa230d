"""manage.py forget_actor ACTOR [--site S] [--suppress [--reason TEXT]]: erase an actor's data."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.hostile import text_argument
from events.privacy.services import ErasureRefused, forget_actor, import_running


class Command(BaseCommand):
    help = (
        "Erase one actor (a chat 'from' or an xmpp 'nick') everywhere, or on one site: its events, rejected "
        "records and records in stored request bodies; the summaries become what they would be had it never "
        "sent anything. An audit row records that an erasure happened, not whose. With --suppress its future "
        "records are refused (with --reason) by every path."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("actor", type=text_argument, help="the actor id, exactly (case and spaces count)")
        parser.add_argument("--site", type=text_argument, help="only this site's records (chat site_id, xmpp channel)")
        parser.add_argument("--suppress", action="store_true", help="refuse the actor's future records too")
        parser.add_argument(
            "--reason", type=text_argument, default="", help="shown with each refused record (must not name the actor)"
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["reason"] and not options["suppress"]:
            raise CommandError("--reason goes with --suppress")
        if import_running():
            self.stderr.write(
                "warning: an import is running; it read the erasure blocks when it started, so run this "
                "command again once it has finished"
            )
        try:
            erasure = forget_actor(
                options["actor"],
                site=options["site"],
                suppress=options["suppress"],
                reason=options["reason"],
                progress=self.stderr.write,
            )
        except ErasureRefused as error:
            raise CommandError(str(error)) from None
        self.stderr.write(
            f"erasure {erasure.pk}: {erasure.events} events, {erasure.rejections} rejected records, "
            f"{erasure.batches} request bodies; {erasure.sites} sites and {erasure.rooms} rooms recomputed"
            + ("; future records refused" if erasure.suppressed else "")
        )
