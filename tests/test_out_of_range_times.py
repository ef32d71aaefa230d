"""An event whose stored time no date-time can hold (past 9999-12-31, or infinite), as only an
old import could have stored one: every page showing it answers with the epoch seconds as
stored and the OUT_OF_RANGE marker for the time, never a 500.

The rows are inserted with SQL, as rows already in the database: ingest refuses such times.
"""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from lxml import html
from rest_framework.test import APIClient

from events.models import Event
from events.timestamps import OUT_OF_RANGE
from ingest.analysts import create_analyst
from ingest.models import RawBatch
from reports.models import EventCount

pytestmark = pytest.mark.django_db

IN_RANGE = 1_700_000_000.25
PAST_9999 = 253_402_300_800.0 + 86_400.5  # 10000-01-02 00:00:00.5 UTC
INFINITE = float("inf")
TIMES = {"in-range": IN_RANGE, "past-9999": PAST_9999, "infinite": INFINITE}


def insert_event(uid: str, ts: float, batch_id: int) -> int:
    raw = orjson.dumps({"id": uid, "type": "message", "from": "v", "site_id": "far", "data": {"message": "m"}})
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events_event (uid, family, kind, category, site_id, session, actor, ts, raw, batch_id, line)"
            " VALUES (%s, 'chat', 'message', '', 'far', '', 'v', %s, %s, %s, 1)",
            [uid, ts, raw.decode(), batch_id],
        )
    return Event.objects.get(uid=uid).pk


@pytest.fixture
def stored() -> dict[str, int]:
    """The pk of each event of TIMES, inserted as rows already there."""
    batch = RawBatch.objects.create(source="old-import.jsonl", status=RawBatch.Status.DONE)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO events_site (code, first_seen) VALUES ('far', %s)", ["2020-01-01T00:00:00Z"])
    pks = {uid: insert_event(uid, ts, batch.pk) for uid, ts in TIMES.items()}
    assert Event.objects.get(uid="past-9999").ts == PAST_9999  # stored as given, read back as given
    return pks


@pytest.fixture
def analyst() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {create_analyst('analyst')[1]}")
    return client


def test_event_list_json_gives_the_epoch_and_marks_the_time(analyst, stored):
    response = analyst.get("/api/events/")

    assert response.status_code == 200, response.content[:300]
    events = {e["id"]: e for e in response.json()["results"]}
    assert events["in-range"]["time"] == "2023-11-14T22:13:20.250000Z"
    assert events["past-9999"]["time"] == OUT_OF_RANGE
    assert events["past-9999"]["epoch"] == PAST_9999
    assert events["infinite"]["time"] == OUT_OF_RANGE
    assert events["infinite"]["epoch"] is None  # JSON has no infinity
    assert [e["id"] for e in response.json()["results"]] == ["in-range", "past-9999", "infinite"]


def test_event_list_pages_follow_their_links_past_an_infinite_time(analyst, stored):
    """A page ending at an infinite time links to the next one (its cursor holds `inf`)."""
    batch = Event.objects.get(uid="infinite").batch_id
    insert_event("infinite-too", INFINITE, batch)
    ids, url = [], "/api/events/?page_size=1"
    while url:
        response = analyst.get(url)
        assert response.status_code == 200, response.content[:300]
        ids += [e["id"] for e in response.json()["results"]]
        url = response.json()["next"]
    assert ids == ["in-range", "past-9999", "infinite", "infinite-too"]


def test_event_list_csv_gives_the_epoch_and_marks_the_time(analyst, stored):
    response = analyst.get("/api/events/", {"format": "csv"})

    assert response.status_code == 200
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode()))}
    assert rows["in-range"]["time"] == "2023-11-14T22:13:20.250000Z"
    assert (rows["past-9999"]["time"], float(rows["past-9999"]["epoch"])) == (OUT_OF_RANGE, PAST_9999)
    assert (rows["infinite"]["time"], rows["infinite"]["epoch"]) == (OUT_OF_RANGE, "inf")


def test_export_events_gives_every_record_back(stored):
    out = io.StringIO()
    call_command("export_events", stdout=out, stderr=io.StringIO())

    assert [orjson.loads(line)["id"] for line in out.getvalue().splitlines()] == ["in-range", "past-9999", "infinite"]


def test_admin_event_list_and_pages_show_the_epoch_and_the_marker(admin_client, stored):
    response = admin_client.get(reverse("admin:events_event_changelist"))

    assert response.status_code == 200
    cells = html.fromstring(response.content).xpath("//table[@id='result_list']//th[contains(@class, 'field-when')]")
    assert [c.text_content().strip() for c in cells] == [
        f"{OUT_OF_RANGE} (inf epoch seconds)",
        f"{OUT_OF_RANGE} ({PAST_9999!r} epoch seconds)",
        "2023-11-14 22:13:20.250 UTC",
    ]
    for uid, pk in stored.items():
        page = admin_client.get(reverse("admin:events_event_change", args=[pk]))
        assert page.status_code == 200, uid
        assert (OUT_OF_RANGE in page.content.decode()) is (uid != "in-range")
    export = admin_client.post(
        reverse("admin:events_event_changelist"),
        {"action": "export_csv", "select_across": "1", "index": "0", "_selected_action": ["0"]},
    )
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [(r["id"], r["time"]) for r in rows][1:] == [("past-9999", OUT_OF_RANGE), ("infinite", OUT_OF_RANGE)]


def test_admin_dashboard_shows_a_rollup_hour_past_9999(admin_client, stored):
    # What an old import's rollup row for the event past 9999 would be (reports/event_counts.py).
    EventCount.objects.create(hour=int(PAST_9999 // 3600), family="chat", site="far", events=1)
    EventCount.objects.create(hour=int(IN_RANGE // 3600), family="chat", site="far", events=1)

    response = admin_client.get("/admin/dashboard/")

    assert response.status_code == 200
    page = response.content.decode()
    assert OUT_OF_RANGE in page  # the latest event, in the backlog figure
    # The events figure ends its window at the latest time the filters take, so its links work.
    assert "9000-01-01 01:00" in page
