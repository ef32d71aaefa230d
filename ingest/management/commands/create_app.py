"""manage.py create_app NAME: a trusted client app and its API key, shown once."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingest.keys import create_application
from ingest.models import Application


class Command(BaseCommand):
    help = "Create a trusted client app and print its API key (shown once, stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: object, name: str, **options: object) -> None:
        if Application.objects.filter(name=name).exists():
            raise CommandError(f"an app named {name!r} exists already (revoke it in the admin, or pick another name)")
        app, key = create_application(name)
        self.stderr.write(f"Created app {app.name!r}. Its API key is shown once; store it now:")
        self.stdout.write(key)
