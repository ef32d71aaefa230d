"""/api/health/ (issue 12 item 12): strangers get the status only, staff the details; callers
without credentials are throttled; a report is reused briefly, so calls do not each open a
broker connection."""

from __future__ import annotations

import socket
import threading
import time

import orjson
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from config.celery import app as celery_app
from ingest.analysts import create_analyst
from ingest.health import forget_last_report

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh() -> None:
    cache.clear()  # throttle history
    forget_last_report()
    yield
    forget_last_report()


def staff_client() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {create_analyst('ann')[1]}")
    return client


class SilentBroker:
    """A TCP port that accepts connections and never answers: a broker that hangs."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def hung_broker():
    broker = SilentBroker()
    # The read URL: CELERY_BROKER_URL in the environment takes precedence over broker_url.
    previous = celery_app.conf.broker_read_url
    celery_app.conf.broker_read_url = f"redis://127.0.0.1:{broker.port}/0"
    yield broker
    celery_app.conf.broker_read_url = previous
    broker.close()


def test_staff_see_database_broker_and_backlog(app_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {app_key}")
    client.post("/api/events/", orjson.dumps({"id": "a"}), content_type="application/json")

    response = staff_client().get("/api/health/")

    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["database"]["ok"] is True and report["broker"]["ok"] is True
    assert report["batches"]["unfinished"] == 1
    assert report["batches"]["oldest_unfinished_age_seconds"] >= 0
    assert "checked_at" in report


def test_strangers_get_the_status_only_even_when_a_dependency_fails(hung_broker):
    anonymous = APIClient().get("/api/health/")
    staff = staff_client().get("/api/health/")

    # Main showed strangers the broker's host:port and the driver's error.
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "degraded"}
    assert str(hung_broker.port) not in anonymous.content.decode()
    assert staff.json()["status"] == "degraded" and staff.json()["broker"]["ok"] is False
    assert staff.json()["broker"]["url"] == f"redis://127.0.0.1:{hung_broker.port}/0"


def test_calls_in_a_burst_share_one_broker_connection(hung_broker):
    started = time.monotonic()
    statuses = [APIClient().get("/api/health/").json()["status"] for _ in range(20)]
    elapsed = time.monotonic() - started

    assert statuses == ["degraded"] * 20
    # Main opened one connection per call, and hung on a broker that never answers.
    assert len(hung_broker.accepted) == 1
    assert elapsed < 10


def test_strangers_are_throttled_per_address_and_staff_are_not():
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "anon": "3/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        here = [APIClient().get("/api/health/").status_code for _ in range(4)]
        elsewhere = APIClient(REMOTE_ADDR="192.0.2.7").get("/api/health/").status_code
        forged = APIClient(HTTP_X_FORWARDED_FOR="198.51.100.1").get("/api/health/").status_code
        schema = APIClient().get("/api/schema/").status_code
        staff = staff_client()
        staff_statuses = {staff.get("/api/health/").status_code for _ in range(5)}

    assert here == [200, 200, 200, 429]
    assert elsewhere == 200
    assert forged == 429  # without a trusted proxy, X-Forwarded-For is the client's own claim
    assert schema == 429  # every endpoint open to strangers counts
    assert staff_statuses == {200}
