"""Issue 20 item 3: while the database is unavailable, every endpoint answers 503 with
Retry-After (a JSON reason; a short page for a browser in the admin) within 5 seconds, never a
500 or a hang; health says `down`; workers back off and give back what they had claimed.

In this process the outage is real but local: the connection is pointed at a database that
cannot be reached (PostgreSQL: a port where nothing listens; SQLite: a file in a folder that
does not exist). Against gunicorn, the database is a port that refuses connections or one
that accepts them and never answers (a server cut off the network). A restart of a real
server under load is in tests/test_database_restart.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator

import orjson
import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from config.database import POSTGRES_DEFAULTS, database_from_url
from config.errors import database_unavailable
from ingest import batches
from ingest.analysts import create_analyst
from ingest.health import forget_last_report
from ingest.models import RawBatch
from ingest.tasks import sweep_pending_task
from tests.live import LiveStack, broker_env, free_port
from tests.test_api_write import chat
from tests.test_health import SilentBroker

RETRY_AFTER = "5"  # DB_RETRY_AFTER_SECONDS


@contextlib.contextmanager
def database_unreachable() -> Iterator[None]:
    """The default connection points at a database that cannot be reached, until the block ends."""
    key, value = (
        ("PORT", str(free_port())) if connection.vendor == "postgresql" else ("NAME", "/nonexistent/db.sqlite3")
    )
    saved = connection.settings_dict[key]
    connection.close()
    connection.settings_dict[key] = value
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict[key] = saved


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    cache.clear()  # throttle history
    forget_last_report()
    yield
    forget_last_report()


def assert_unavailable(response, json_body: bool = True) -> None:
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == RETRY_AFTER
    if json_body:
        detail = response.json()["detail"]
        assert "database is unavailable" in detail and f"Retry after {RETRY_AFTER} seconds" in detail


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_answers_503_with_retry_after_while_the_database_is_unreachable(app_key, admin_client):
    app = APIClient()
    app.credentials(HTTP_AUTHORIZATION=f"Api-Key {app_key}")
    analyst = APIClient()
    analyst.credentials(HTTP_AUTHORIZATION=f"Token {create_analyst('ann')[1]}")
    body = orjson.dumps(chat("a"))
    first = app.post("/api/events/", body, content_type="application/json")
    assert first.status_code == 202
    status_url = first.json()["status_url"]

    with database_unreachable():
        post = app.post("/api/events/", body, content_type="application/json")
        batch = app.get(status_url)
        summary = analyst.get("/api/sites/summary/")
        events = analyst.get("/api/events/?site=s1")
        admin = admin_client.get("/admin/", HTTP_ACCEPT="text/html")
        admin_api = admin_client.get("/api/rooms/summary/")
        health = APIClient().get("/api/health/")
        forget_last_report()
        staff_health = analyst.get("/api/health/")

    for response in (post, batch, summary, events, admin_api):
        assert_unavailable(response)
    assert_unavailable(admin, json_body=False)  # a page for the browser
    assert admin["Content-Type"].startswith("text/html") and b"database is unavailable" in admin.content
    # Health: `down`; no credential can be checked, so staff get the status only.
    assert (health.status_code, health.json()) == (503, {"status": "down"})
    assert (staff_health.status_code, staff_health.json()) == (503, {"status": "down"})
    # Back: everything answers again, nothing was stored by the refused post.
    assert app.post("/api/events/", body, content_type="application/json").status_code == 202
    assert app.get(status_url).status_code == 200
    assert RawBatch.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_group_the_outage_interrupts_is_given_back_without_counting_the_attempt(app_key):
    app = APIClient()
    app.credentials(HTTP_AUTHORIZATION=f"Api-Key {app_key}")
    for uid in ("a", "b", "c"):
        assert app.post("/api/events/", orjson.dumps(chat(uid)), content_type="application/json").status_code == 202
    claimed = batches.claim_group()
    assert len(claimed) == 3

    with database_unreachable(), pytest.raises(Exception) as raised:
        batches.process_group(claimed)
    assert database_unavailable(raised.value)
    assert set(RawBatch.objects.values_list("status", "attempts")) == {("processing", 1)}

    assert batches.release_claims(list(claimed), claimed.claimed_at) == 3
    assert set(RawBatch.objects.values_list("status", "attempts")) == {("pending", 0)}
    assert batches.release_claims(list(claimed), claimed.claimed_at) == 0  # only a live claim is given back
    assert batches.drain().done == 3
    assert set(RawBatch.objects.values_list("status", "attempts", "accepted")) == {("done", 1, 1)}


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_skips_a_run_while_the_database_is_unreachable(caplog):
    with database_unreachable(), caplog.at_level(logging.WARNING, logger="ingest.tasks"):
        assert sweep_pending_task.apply().get() == 0
    assert "the sweep of pending batches skipped: the database is unavailable" in caplog.text


# -- settings -------------------------------------------------------------------------


def test_database_url_takes_several_postgresql_hosts_and_fails_fast_by_default():
    url = "postgres://sb:pw@db1:5432,db2,[::1]:5433/switchboard?target_session_attrs=read-write&connect_timeout=5"

    config = database_from_url(url, conn_max_age=60, health_checks=True, statement_timeout=20)

    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db1,db2,::1", "5432,5432,5433", "switchboard")
    assert (config["USER"], config["PASSWORD"], config["CONN_HEALTH_CHECKS"]) == ("sb", "pw", True)
    assert config["OPTIONS"] == {
        **POSTGRES_DEFAULTS,
        "connect_timeout": 5,  # the URL's own value wins
        "target_session_attrs": "read-write",
        "options": "-c statement_timeout=20000",
    }
    one = database_from_url("postgres://sb@db1/switchboard", conn_max_age=0, health_checks=False, statement_timeout=0)
    assert (one["HOST"], one["OPTIONS"]) == ("db1", POSTGRES_DEFAULTS)
    sqlite = database_from_url("sqlite:////tmp/x.sqlite3", conn_max_age=0, health_checks=True, statement_timeout=20)
    assert "OPTIONS" not in sqlite


# -- against gunicorn ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("database", ["refusing", "silent"])
def test_gunicorn_answers_503_within_5_seconds_when_the_database_refuses_or_never_answers(database, tmp_path):
    """No database at all: a port where nothing listens, or one that accepts and never answers.
    Before issue 20 the first was a 500 and the second a hang until gunicorn killed its worker."""
    silent = SilentBroker() if database == "silent" else None
    port = silent.port if silent else free_port()
    env = {"DATABASE_URL": f"postgres://sb@127.0.0.1:{port}/switchboard", **broker_env(tmp_path)}
    stack = LiveStack(env={**_environ(), **env}, tmp_path=tmp_path)
    try:
        stack.start_web(workers=1)
        calls = {
            "post": (
                "POST",
                "/api/events/",
                {
                    "Authorization": "Api-Key sb_abcdefgh_0123456789abcdef0123456789abcdef",
                    "Content-Type": "application/json",
                },
            ),
            "batch": (
                "GET",
                "/api/batches/1/",
                {"Authorization": "Api-Key sb_abcdefgh_0123456789abcdef0123456789abcdef"},
            ),
            "summary": (
                "GET",
                "/api/sites/summary/",
                {"Authorization": "Token sbt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab"},
            ),
            "health": ("GET", "/api/health/", {}),
        }
        answers = {}
        for name, (method, path, headers) in calls.items():
            started = time.monotonic()
            response = stack.request(method, path, b'{"id": "a"}' if method == "POST" else None, headers)
            answers[name] = (response, time.monotonic() - started)
        login = _admin_login(stack)
    finally:
        stack.stop()
        if silent:
            silent.close()

    for name in ("post", "batch", "summary"):
        response, seconds = answers[name]
        assert response.status == 503, (name, response.status, response.body, stack.log("web.log"))
        assert (response.status, response.headers["Retry-After"]) == (503, RETRY_AFTER), (name, response.body)
        assert "database is unavailable" in response.json()["detail"]
        assert seconds < 5, (name, seconds)
    health, seconds = answers["health"]
    assert (health.status, health.json(), seconds < 5) == (503, {"status": "down"}, True)
    assert (login.status, login.headers["Retry-After"]) == (503, RETRY_AFTER)
    assert b"database is unavailable" in login.body
    log = stack.log("web.log")
    assert "Service Unavailable" in log and "Internal Server Error" not in log and "Traceback" not in log
    assert "WORKER TIMEOUT" not in log


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def _admin_login(stack: LiveStack):
    """The admin's sign-in form posted (its CSRF cookie and token first): it needs the database."""
    page = stack.request("GET", "/admin/login/", headers={"Accept": "text/html"})
    assert page.status == 200
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    token = cookie.split("=", 1)[1]
    form = urllib.parse.urlencode({"username": "ann", "password": "x", "csrfmiddlewaretoken": token}).encode()
    headers = {"Cookie": cookie, "Accept": "text/html", "Content-Type": "application/x-www-form-urlencoded",
               "Referer": stack.base_url + "/admin/login/"}  # fmt: skip
    return stack.request("POST", "/admin/login/", form, headers)
