"""Admin login lockouts (django-axes): every failure from an address counts towards its
lockout, and a successful login clears only the failures of the user who signed in.

Axes' own reset on success deletes every failure matching the lockout parameters, here
the whole address: anyone with a login of their own could then sign in between guesses
at another user's password and guess without limit.
"""

from __future__ import annotations

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.http import HttpRequest


class OwnFailuresHandler(AxesDatabaseHandler):
    """Axes' database handler whose reset on success spares other users' failures."""

    def reset_user_attempts(self, request: HttpRequest, credentials: dict | None = None) -> int:
        username = get_client_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(username=username, ip_address=request.axes_ip_address).delete()
        return count
