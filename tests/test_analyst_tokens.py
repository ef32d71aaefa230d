"""Analyst accounts and their API tokens (issue 12 item 11, issue 14 item 2): a view-only
group, `create_analyst`, tokens stored as digests, shown once, revocable, with an optional
expiry; new secrets never travel in the messages cookie (issue 12 item 10)."""

from __future__ import annotations

import importlib
import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from knox.crypto import hash_token
from knox.models import AuthToken
from rest_framework.test import APIClient

from ingest.analysts import ANALYST_GROUP, create_analyst, ensure_analyst_group, issue_token
from ingest.models import AnalystToken, Application

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"sbt_[0-9a-f]{64}")
SUMMARY = "/api/sites/summary/"


def run_create_analyst(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_analyst", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def read_with(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get(SUMMARY).status_code


def stored_text() -> str:
    """Every column of every token row, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM knox_authtoken")
        return repr(cursor.fetchall())


def test_create_analyst_prints_only_the_token_and_makes_a_view_only_staff_user(monkeypatch):
    monkeypatch.setenv("ANALYST_PASSWORD", "a long enough password")
    out, err = run_create_analyst("ann", "--email", "ann@example.com")

    token = out.strip()
    assert TOKEN.fullmatch(token), out
    assert "shown once" in err and token not in err
    user = User.objects.get(username="ann")
    assert (user.is_staff, user.is_superuser, user.email) == (True, False, "ann@example.com")
    assert user.check_password("a long enough password")
    assert list(user.groups.values_list("name", flat=True)) == [ANALYST_GROUP]
    assert read_with(token) == 200
    # Stored as a digest only; the stored lookup key is too short to authenticate.
    row = AuthToken.objects.get(user=user)
    assert row.digest == hash_token(token) and token.startswith(row.token_key) and len(row.token_key) == 15
    assert token not in stored_text()


def test_without_a_password_the_analyst_has_the_token_only(monkeypatch):
    monkeypatch.delenv("ANALYST_PASSWORD", raising=False)
    out, err = run_create_analyst("bob")

    assert "no admin password" in err
    assert not User.objects.get(username="bob").has_usable_password()
    assert read_with(out.strip()) == 200


def test_the_analyst_group_may_view_and_nothing_else():
    create_analyst("ann")
    codenames = set(Group.objects.get(name=ANALYST_GROUP).permissions.values_list("codename", flat=True))

    assert codenames and all(c.startswith("view_") for c in codenames)  # not even replaying (issue 22)
    assert {"view_event", "view_rejection", "view_rawbatch", "view_sitesummary", "view_application"} <= codenames
    assert "view_analysttoken" not in codenames and "view_user" not in codenames


def test_an_analyst_in_the_admin_can_view_but_not_change_or_see_tokens(client):
    user, token = create_analyst("ann")
    application = Application.objects.create(name="shop", key_prefix="p", key_hash="0" * 64)
    client.force_login(user)

    assert client.get(reverse("admin:events_event_changelist")).status_code == 200
    assert client.get(reverse("admin:ingest_application_change", args=[application.pk])).status_code == 200
    assert client.post(reverse("admin:ingest_application_add"), {"name": "x"}).status_code == 403
    revoke = {"action": "revoke", "_selected_action": [application.pk]}
    client.post(reverse("admin:ingest_application_changelist"), revoke)
    application.refresh_from_db()
    assert application.revoked_at is None
    assert client.get(reverse("admin:ingest_analysttoken_changelist")).status_code == 403
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_duplicate_names_and_unknown_analysts_are_errors():
    create_analyst("ann")
    User.objects.create_user("root")

    with pytest.raises(CommandError, match="exists already"):
        run_create_analyst("ann")
    with pytest.raises(CommandError, match="no analyst named 'nobody'"):
        run_create_analyst("nobody", "--new-token")
    with pytest.raises(CommandError, match="no analyst named 'root'"):  # not in the group
        run_create_analyst("root", "--new-token")
    with pytest.raises(CommandError, match="positive"):
        run_create_analyst("carl", "--expires-in-days", "0")
    assert not User.objects.filter(username="carl").exists()


@pytest.mark.parametrize("days", ["3000000", "999999999", "10000000000", "-3"])
def test_an_expiry_beyond_the_calendar_is_a_clear_error(days):
    # Main printed an OverflowError traceback for the first three.
    with pytest.raises(CommandError, match=r"--expires-in-days must be a positive number of days, at most 36500"):
        run_create_analyst("carl", "--expires-in-days", days)
    create_analyst("dan")
    with pytest.raises(CommandError, match="at most 36500"):
        run_create_analyst("dan", "--new-token", "--expires-in-days", days)

    assert not User.objects.filter(username="carl").exists()
    assert AuthToken.objects.filter(user__username="dan").count() == 1


@pytest.mark.parametrize("username", ["a" * 151, "ann\nvictim", "ann lee", "ann\u2028"])
def test_a_username_the_admin_would_refuse_is_a_clear_error(username):
    """Issue 22 item 16, second look: the command took any text as the username: one over 150
    characters was a database error's traceback on PostgreSQL, and a line break went into the
    names printed one per line."""
    with pytest.raises(CommandError, match="not a valid username"):
        run_create_analyst(username)

    assert not User.objects.exists()


def test_the_longest_expiry_works():
    token = run_create_analyst("carl", "--expires-in-days", "36500")[0].strip()
    assert read_with(token) == 200


def test_a_new_token_leaves_the_old_one_valid():
    _, first = create_analyst("ann")
    second = run_create_analyst("ann", "--new-token")[0].strip()

    assert first != second
    assert read_with(first) == 200 and read_with(second) == 200


def test_an_expired_token_stops_working_and_is_removed():
    token = run_create_analyst("ann", "--expires-in-days", "2")[0].strip()
    row = AuthToken.objects.get()
    assert timedelta(days=2) - (row.expiry - timezone.now()) < timedelta(minutes=1)
    assert read_with(token) == 200

    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.get(SUMMARY)
    assert response.status_code == 401 and response.json() == {"detail": "Invalid token."}
    assert not AuthToken.objects.exists()


def leave_group(user: User) -> None:
    user.groups.clear()


def lose_staff_status(user: User) -> None:
    user.is_staff = False
    user.save()


def deactivate(user: User) -> None:
    user.is_active = False
    user.save()


@pytest.mark.parametrize(
    ("change", "status", "why"),
    [
        (leave_group, 403, "not in the 'analyst' group"),
        (lose_staff_status, 403, "not staff"),
        (deactivate, 401, "inactive"),  # knox refuses the token itself
    ],
)
def test_a_token_stops_working_when_its_user_stops_being_an_analyst(change, status, why, app_key):
    user, token = create_analyst("ann")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    batch = APIClient()
    batch.credentials(HTTP_AUTHORIZATION=f"Api-Key {app_key}")
    posted = batch.post("/api/events/", b"{}", content_type="application/json")
    batch_url = posted["Location"]
    assert client.get(SUMMARY).status_code == 200 and client.get(batch_url).status_code == 200

    change(user)

    # Main kept answering 200 to the token of a user taken out of the group or of the staff.
    for url in (SUMMARY, batch_url):
        response = client.get(url)
        assert response.status_code == status, (url, response.content)
        assert why in response.json()["detail"]


def test_an_admin_session_stops_reading_the_api_when_its_user_leaves_the_group(client):
    user, _ = create_analyst("ann")
    client.force_login(user)
    assert client.get(SUMMARY).status_code == 200

    leave_group(user)

    response = client.get(SUMMARY)
    assert response.status_code == 403 and "not in the 'analyst' group" in response.json()["detail"]


def test_a_superuser_reads_the_api_without_joining_the_group():
    admin = User.objects.create_superuser("root", password="a long enough password")

    assert read_with(issue_token(admin)) == 200


def test_revoking_a_token_in_the_admin(admin_client):
    _, revoked = create_analyst("ann")
    _, kept = create_analyst("bob")
    digest = hash_token(revoked)

    page = admin_client.post(
        reverse("admin:ingest_analysttoken_changelist"), {"action": "revoke", "_selected_action": [digest]}, follow=True
    )

    assert "Revoked 1 token" in page.content.decode()
    assert read_with(revoked) == 401 and read_with(kept) == 200


def assert_shown_once(response, secret: str) -> None:
    """The secret is in this page only: not in a cookie (messages), not cached, not in a URL."""
    assert response.status_code == 200 and secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert secret not in response.get("Location", "")


def test_a_token_made_in_the_admin_is_shown_once_and_never_listed(admin_client):
    user, _ = create_analyst("ann")

    response = admin_client.post(reverse("admin:ingest_analysttoken_add"), {"user": user.pk, "expiry": ""})

    tokens = set(TOKEN.findall(response.content.decode()))
    assert len(tokens) == 1
    token = tokens.pop()
    assert_shown_once(response, token)
    assert read_with(token) == 200
    row = AnalystToken.objects.get(digest=hash_token(token))
    assert row.expiry is None and str(row) == f"{token[:15]}… of ann"
    for url in (
        reverse("admin:ingest_analysttoken_changelist"),
        reverse("admin:ingest_analysttoken_change", args=[row.digest]),
    ):
        page = admin_client.get(url).content.decode()
        assert token[:15] in page and token not in page
    assert token not in stored_text()


def test_a_key_made_in_the_admin_is_not_in_the_messages_cookie(admin_client):
    response = admin_client.post(reverse("admin:ingest_application_add"), {"name": "website"})

    key = re.search(r"sb_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}", response.content.decode()).group()
    assert_shown_once(response, key)
    # Nothing is left over for the next page to show either.
    assert key not in admin_client.get(reverse("admin:ingest_application_changelist")).content.decode()


@pytest.mark.django_db(transaction=True)  # DDL: SQLite's schema editor needs no open transaction
def test_tokens_made_before_the_switch_keep_working_and_lose_their_plain_text():
    """The migration from DRF's authtoken: the plain-text table is digested, then dropped."""
    migration = importlib.import_module("ingest.migrations.0005_analyst_tokens")
    user = User.objects.create_user("old-analyst", is_staff=True)
    user.groups.add(ensure_analyst_group())
    old_key = "0123456789abcdef0123456789abcdef01234567"  # DRF's form: 40 hex characters
    with connection.schema_editor() as editor:
        editor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer NOT NULL UNIQUE, "
            "created timestamp with time zone NOT NULL)"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO authtoken_token (key, user_id, created) VALUES (%s, %s, %s)",
            [old_key, user.pk, timezone.now() - timedelta(days=30)],
        )

    from django.apps import apps

    with connection.schema_editor() as editor:
        migration.digest_old_tokens(apps, editor)

    assert "authtoken_token" not in connection.introspection.table_names()
    assert old_key not in stored_text()
    row = AuthToken.objects.get(user=user)
    assert timezone.now() - row.created > timedelta(days=29)
    assert read_with(old_key) == 200
