"""manage.py create_app NAME: a trusted client app and its API key, shown once."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.hostile import text_argument
from ingest.keys import create_application
from ingest.models import Application


class Command(BaseCommand):
    help = "Create a trusted client app and print its API key (shown once, stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", type=text_argument)
        parser.add_argument(
            "--site",
            action="append",
            type=text_argument,
            default=[],
            metavar="SITE_ID",
            help="a site the app may write events for (repeat it; none: any site)",
        )

    def handle(self, *args: object, name: str, **options: object) -> None:
        if Application.objects.filter(name=name).exists():
            raise CommandError(f"an app named {name!r} exists already (revoke it in the admin, or pick another name)")
        app, key = create_application(name)
        if options["site"]:
            app.allowed_sites = "\n".join(dict.fromkeys(options["site"]))
            app.save(update_fields=["allowed_sites"])
        self.stderr.write(f"Created app {app.name!r}. Its API key is shown once; store it now:")
        self.stdout.write(key)
