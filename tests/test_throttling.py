"""Limits on callers (issue 12 item 14): analysts and strangers are throttled like apps,
admin login failures lock the address out for a while, and a cache outage never turns
into refused requests (the throttles fail open)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client, override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from ingest.analysts import create_analyst
from ingest.models import RawBatch

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    cache.clear()


def rates(**changes: str) -> override_settings:
    merged = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **changes}
    return override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": merged})


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_each_analyst_is_throttled_on_its_own():
    ann, bob = token_client(create_analyst("ann")[1]), token_client(create_analyst("bob")[1])

    with rates(analyst="2/min"):
        ann_statuses = [ann.get("/api/sites/summary/").status_code for _ in range(3)]
        bob_status = bob.get("/api/rooms/summary/").status_code

    assert ann_statuses == [200, 200, 429]
    assert bob_status == 200


def dead_cache() -> override_settings:
    """The cache is a Redis that is not there (nothing listens on the port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0"}
    return override_settings(CACHES={"default": backend})


def test_posts_and_reads_go_on_when_the_throttles_cache_is_down(app_key):
    app = APIClient()
    app.credentials(HTTP_AUTHORIZATION=f"Api-Key {app_key}")
    analyst = token_client(create_analyst("ann")[1])
    event = {"id": "a", "type": "message", "from": "v", "site_id": "s", "data": {"message": "hi"}, "timestamp": 1}

    with dead_cache():
        posted = app.post("/api/events/", orjson.dumps(event), content_type="application/json")
        read = analyst.get("/api/sites/summary/")
        health = APIClient().get("/api/health/")

    assert posted.status_code == 202, posted.content
    assert RawBatch.objects.count() == 1
    assert read.status_code == 200 and health.status_code == 200


def admin_login(client, password: str, address: str = "203.0.113.5"):
    return client.post(reverse("admin:login"), {"username": "admin", "password": password}, REMOTE_ADDR=address)


@override_settings(AXES_FAILURE_LIMIT=3)
def test_admin_login_failures_lock_the_address_out(client):
    User.objects.create_superuser("admin", password="right password")

    failures = [admin_login(client, "wrong").status_code for _ in range(3)]
    locked = admin_login(client, "right password")
    signed_in_while_locked = "_auth_user_id" in client.session
    other_address = admin_login(client, "right password", address="198.51.100.9")

    # The form again (with its error) twice; the third failure locks. Main let an address guess forever.
    assert failures == [200, 200, 429]
    assert locked.status_code == 429 and not signed_in_while_locked
    assert other_address.status_code == 302  # signed in: only the guessing address is locked


def sign_in(username: str, password: str, address: str) -> int:
    """One admin login from a fresh browser: 302 signed in, 200 the form again, 429 locked out."""
    return admin_login_as(Client(), username, password, address).status_code


def admin_login_as(client, username: str, password: str, address: str):
    return client.post(reverse("admin:login"), {"username": username, "password": password}, REMOTE_ADDR=address)


@override_settings(AXES_FAILURE_LIMIT=3)
def test_signing_in_as_oneself_does_not_reset_failures_at_other_users_passwords():
    """An attacker with a login of its own signs in between guesses at others' passwords."""
    User.objects.create_superuser("admin", password="right password")
    User.objects.create_superuser("root", password="another password")
    User.objects.create_user("mallory", password="mallory's own", is_staff=True)
    attacker = "203.0.113.66"

    rounds = []
    for victim in ("admin", "root", "admin", "root"):
        own = sign_in("mallory", "mallory's own", attacker)
        guess = sign_in(victim, "guess", attacker)
        rounds.append((own, guess))

    # Main: [(302, 200)] * 4 and on forever, every success wiping the address's failures.
    assert rounds == [(302, 200), (302, 200), (302, 429), (429, 429)]
    assert sign_in("admin", "right password", attacker) == 429
    assert sign_in("admin", "right password", "198.51.100.9") == 302  # only the guessing address


@override_settings(AXES_FAILURE_LIMIT=3)
def test_signing_in_clears_ones_own_failures_only():
    User.objects.create_superuser("admin", password="right password")
    User.objects.create_user("ann", password="ann's own", is_staff=True)
    office = "192.0.2.10"  # two people behind one address

    first = [sign_in("admin", "typo", office), sign_in("ann", "typo", office)]
    admin_in = sign_in("admin", "right password", office)  # clears admin's typo, not ann's
    then = [sign_in("admin", "typo", office), sign_in("admin", "typo", office)]

    assert (first, admin_in) == ([200, 200], 302)
    assert then == [200, 429]  # ann's typo and admin's two new ones: the limit


@override_settings(AXES_FAILURE_LIMIT=3)
def test_guesses_at_the_old_password_on_the_password_change_page_count_towards_the_lockout():
    """Issue 22 item 5, second look: the admin's password change checks the old password
    itself, not through a login, so a borrowed session could guess it without limit."""
    User.objects.create_user("ann", password="ann's own", is_staff=True)
    browser, office = Client(), "192.0.2.20"
    assert admin_login_as(browser, "ann", "ann's own", office).status_code == 302
    url = reverse("admin:password_change")

    def change(old: str) -> int:
        new = "a new long passphrase 42"
        return browser.post(url, {"old_password": old, "new_password1": new, "new_password2": new},
                            REMOTE_ADDR=office).status_code  # fmt: skip

    guesses = [change(f"guess {n}") for n in range(3)]

    assert guesses[:2] == [200, 200]  # the form again, saying the old password is wrong
    assert guesses[2] in (403, 429) and change("ann's own") in (403, 429)  # locked: even the right one
    assert User.objects.get(username="ann").check_password("ann's own")
    assert sign_in("ann", "ann's own", office) == 429  # and every login from the address
    assert sign_in("ann", "ann's own", "198.51.100.20") == 302


def test_the_password_change_page_still_changes_the_password():
    User.objects.create_user("ann", password="ann's own", is_staff=True)
    browser = Client()
    assert admin_login_as(browser, "ann", "ann's own", "192.0.2.21").status_code == 302
    new = "a new long passphrase 42"
    page = browser.get(reverse("admin:password_change"))
    assert page.status_code == 200 and b"Old password" in page.content and b"Switchboard" in page.content

    response = browser.post(reverse("admin:password_change"),
                            {"old_password": "ann's own", "new_password1": new, "new_password2": new})  # fmt: skip

    assert response.status_code == 302 and response["Location"] == reverse("admin:password_change_done")
    assert User.objects.get(username="ann").check_password(new)
    assert browser.get(reverse("admin:index")).status_code == 200  # still signed in


@pytest.mark.parametrize(
    ("forwarded", "address"),
    [("unknown", "192.0.2.30"), ("garbage, 203.0.113.7:4711", "203.0.113.7"), ("[2001:db8::7]:443", "2001:db8::7"),
     ("2001:db8::8", "2001:db8::8"), ("fe80::1%eth0", "fe80::1"), ("203.0.113.9", "203.0.113.9")],
)  # fmt: skip
def test_a_forwarded_address_that_is_not_an_ip_address_is_not_stored_as_one(forwarded, address):
    """Issue 22 item 11, second look: behind a proxy that writes "unknown" or "address:port" in
    X-Forwarded-For (some do), a failed admin login stored that text in django-axes' address
    column, PostgreSQL's inet: a 500 instead of a counted failure. Such a hop is read without its
    port; one that is still no address counts as the proxy's own."""
    User.objects.create_user("ann", password="ann's own", is_staff=True)
    proxied = {"HTTP_X_FORWARDED_FOR": forwarded, "REMOTE_ADDR": "192.0.2.30"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}):
        response = Client().post(reverse("admin:login"), {"username": "ann", "password": "typo"}, **proxied)

    assert response.status_code == 200  # the form again
    assert list(AccessAttempt.objects.values_list("ip_address", "failures_since_start")) == [(address, 1)]


def test_workers_get_time_limits_and_a_memory_ceiling_from_the_environment():
    """What a worker started with this environment enforces (Celery reads these at start)."""
    code = (
        "from config.celery import app; import django; django.setup(); c = app.conf; "
        "print(c.task_time_limit, c.task_soft_time_limit, c.worker_max_memory_per_child)"
    )
    env = {**os.environ, "TASK_TIME_LIMIT_SECONDS": "120", "WORKER_MAX_MEMORY_MB": "512"}
    env.pop("DATABASE_URL", None)
    configured = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)

    assert configured.stdout.split() == ["120", "90", str(512 * 1024)], configured.stderr
    # Main had no limits at all: a stuck task held its worker child forever.
    limit, soft, memory = map(int, default.stdout.split())
    assert soft < limit < settings.SWITCHBOARD["PROCESSING_TIMEOUT_SECONDS"] and memory == 1024 * 1024
