"""manage.py create_analyst USER: a view-only analyst and its API token, shown once."""

import os
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.hostile import text_argument
from ingest.analysts import ANALYST_GROUP, MAX_TOKEN_DAYS, create_analyst, issue_token

PASSWORD_VARIABLE = "ANALYST_PASSWORD"


class Command(BaseCommand):
    help = (
        "Create a staff user in the view-only 'analyst' group and print its API token (shown once, "
        f"stored as a digest) on stdout. The admin password comes from ${PASSWORD_VARIABLE}; without it the "
        "user has the token only (`manage.py changepassword USER` adds a password later)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", type=text_argument)
        parser.add_argument("--email", type=text_argument, default="")
        parser.add_argument(
            "--expires-in-days",
            type=int,
            metavar="DAYS",
            help=f"the token stops working after DAYS days (1 to {MAX_TOKEN_DAYS})",
        )
        parser.add_argument(
            "--new-token", action="store_true", help="the analyst exists: issue another token (old ones stay valid)"
        )

    def handle(self, *args: object, username: str, **options: object) -> None:
        days = options["expires_in_days"]
        if days is not None and not 0 < days <= MAX_TOKEN_DAYS:
            raise CommandError(
                f"--expires-in-days must be a positive number of days, at most {MAX_TOKEN_DAYS} "
                f"(leave it out for a token that does not expire), not {days}"
            )
        expires_in = timedelta(days=days) if days else None
        user_model = get_user_model()
        try:  # the rules the admin's user forms apply: at most 150 letters, digits and @.+-_
            user_model._meta.get_field(user_model.USERNAME_FIELD).clean(username, None)
        except ValidationError as error:
            raise CommandError(f"{username!r} is not a valid username: {' '.join(error.messages)}") from None
        user = user_model.objects.filter(username=username).first()
        if options["new_token"]:
            if user is None or not user.groups.filter(name=ANALYST_GROUP).exists():
                raise CommandError(f"there is no analyst named {username!r}")
            token = issue_token(user, expires_in)
            self.stderr.write(f"New token for {username!r}; shown once, store it now:")
        else:
            if user is not None:
                raise CommandError(f"a user named {username!r} exists already (--new-token gives it another token)")
            password = os.environ.get(PASSWORD_VARIABLE) or None
            user, token = create_analyst(username, email=options["email"], password=password, expires_in=expires_in)
            login = "admin password from $" + PASSWORD_VARIABLE if password else "no admin password yet"
            self.stderr.write(f"Created analyst {username!r} ({login}). Its API token is shown once; store it now:")
        self.stdout.write(token)
