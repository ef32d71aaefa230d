"""Admin login lockouts (django-axes): every failure from an address counts towards its
lockout, and a successful login clears only the failures of the user who signed in.

The admin's password change checks the old password through a login attempt too
(`admin_password_change`, routed in config/urls.py).

Axes' own reset on success deletes every failure matching the lockout parameters, here
the whole address: anyone with a login of their own could then sign in between guesses
at another user's password and guess without limit.
"""

from __future__ import annotations

from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.admin.forms import AdminPasswordChangeForm
from django.contrib.auth import authenticate
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.views import PasswordChangeView
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.urls import reverse


class OwnFailuresHandler(AxesDatabaseHandler):
    """Axes' database handler whose reset on success spares other users' failures."""

    def reset_user_attempts(self, request: HttpRequest, credentials: dict | None = None) -> int:
        username = get_client_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(username=username, ip_address=request.axes_ip_address).delete()
        return count


class OldPasswordForm(AdminPasswordChangeForm):
    """The admin's password change, its old password checked by `authenticate`: a wrong one is a
    failed login of the address (a borrowed session cannot guess it without limit), and a
    locked-out address is refused like its logins."""

    def __init__(self, user: AbstractBaseUser, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self) -> str:
        old_password = self.cleaned_data["old_password"]
        if authenticate(self.request, username=self.user.get_username(), password=old_password) != self.user:
            raise ValidationError(self.error_messages["password_incorrect"], code="password_incorrect")
        return old_password


class OldPasswordChangeView(PasswordChangeView):
    form_class = OldPasswordForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}


def admin_password_change(request: HttpRequest) -> HttpResponse:
    """The admin's "Change password" page (admin.site.password_change), with `OldPasswordForm`."""
    request.current_app = admin.site.name
    return OldPasswordChangeView.as_view(
        success_url=reverse("admin:password_change_done"), extra_context=admin.site.each_context(request)
    )(request)
