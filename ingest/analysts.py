"""Analyst accounts: a view-only group, users in it, and their API tokens.

Tokens are django-rest-knox tokens: only a SHA-512 digest is stored, the
token itself is shown once at creation; deleting a token revokes it, and a
token may carry an expiry after which it stops working.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser, AbstractUser, Group, Permission
from django.db import transaction
from knox.models import AuthToken

ANALYST_GROUP = "analyst"
# The longest expiry a token may be given (a hundred years); without one it never expires.
MAX_TOKEN_DAYS = 36_500
# Analysts may view everything these apps store; nothing else, and never change it.
ANALYST_APPS = ("events", "ingest", "reports")
# ... except the tokens of other users (digests, but still nobody's business).
# Nothing that changes data, replaying rejections included (it stores events): that takes
# `ingest.change_rejection`, given to a user or a group of their own by a superuser.
NOT_FOR_ANALYSTS = {("ingest", "analysttoken")}


def analyst_permissions() -> list[Permission]:
    return [
        permission
        for permission in Permission.objects.filter(
            content_type__app_label__in=ANALYST_APPS, codename__startswith="view_"
        ).select_related("content_type")
        if (permission.content_type.app_label, permission.content_type.model) not in NOT_FOR_ANALYSTS
    ]


def ensure_analyst_group() -> Group:
    """The "analyst" group with exactly the view permissions (run after every migrate)."""
    group, _ = Group.objects.get_or_create(name=ANALYST_GROUP)
    group.permissions.set(analyst_permissions())
    return group


def analyst_refusal(user: AbstractBaseUser) -> str | None:
    """Why `user` may not read the API now, or None if it may: an active staff user in the
    analyst group, or a superuser. Checked on every request, so that a token stops working
    as soon as its user leaves the group, loses staff status or is deactivated."""
    if not user.is_active:
        return "the account is inactive"
    if not user.is_staff:
        return "the account is not staff"
    if not user.is_superuser and not user.groups.filter(name=ANALYST_GROUP).exists():
        return f"the account is not in the '{ANALYST_GROUP}' group"
    return None


def issue_token(user: AbstractUser, expires_in: timedelta | None = None) -> str:
    """A new API token for `user`; only its digest is stored, so this is the one time it is seen."""
    _, token = AuthToken.objects.create(user=user, expiry=expires_in)
    return token


@transaction.atomic
def create_analyst(
    username: str, *, email: str = "", password: str | None = None, expires_in: timedelta | None = None
) -> tuple[AbstractUser, str]:
    """A staff user in the analyst group (view-only admin and read API) and its first token.

    Without a password the user can use the API token only; `manage.py
    changepassword USER` gives it admin access later.
    """
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username, email=email, password=password, is_staff=True)
    user.groups.add(ensure_analyst_group())
    return user, issue_token(user, expires_in)
