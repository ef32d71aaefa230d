"""Getting data out: CSV of the summaries and the event list (streamed, same filters as JSON),
`export_events` NDJSON that re-imports to the same summaries, and the admin's CSV action."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from events.models import Event, EventIdentity, Site
from ingest.analysts import create_analyst
from ingest.models import ImportJob, RawBatch
from reports import exports
from reports.models import EventCount, OnlineSpan, RoomSummary, SiteActor, SiteSummary
from reports.room_summary import room_rows, room_totals
from reports.site_summary import summary_rows

FILES = ("chat/small.jsonl", "chat/edge.jsonl", "xmpp/chatid_sample.json", "interactions/eye_sample.jsonl")


@pytest.fixture
def data(db: None, sample_data: Path) -> Path:
    for name in FILES:
        call_command("import_jsonl", str(sample_data / name))
    return sample_data


@pytest.fixture
def analyst(client, db: None):
    client.force_login(create_analyst("reader")[0])
    return client


def rows_of(response) -> list[dict[str, str]]:
    assert response.streaming and response["Content-Type"] == "text/csv; charset=utf-8"
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def expected_lines(path: Path) -> dict[str, dict[str, str]]:
    rows = {}
    for line in path.read_text().splitlines():
        site, *fields = line.split(",")
        rows[site] = dict(f.split("=") for f in fields)
    return rows


def test_site_summary_csv_is_the_summary(analyst, data):
    response = analyst.get("/api/sites/summary/", {"format": "csv"})
    assert response.status_code == 200 and "X-Summary-Stale-Sites" in response
    rows = rows_of(response)
    assert list(rows[0]) == ["site_id", "messages", "emails", "operators", "visitors", "stale", "refreshed_at"]
    got = {r["site_id"]: {k: r[k] for k in ("messages", "emails", "operators", "visitors")} for r in rows}
    assert [r["site_id"] for r in rows] == [r.site_id for r in summary_rows()]  # code-point order
    for site, row in expected_lines(data / "chat/small.expected").items():
        assert got[site] == row, site
    assert {r["stale"] for r in rows} == {"false"}

    one = rows_of(analyst.get("/api/sites/site-0/summary/", HTTP_ACCEPT="text/csv"))
    assert [r["site_id"] for r in one] == ["site-0"] and one[0]["messages"] == "576"


def test_room_summary_csv_is_the_summary(analyst, data):
    rows = rows_of(analyst.get("/api/rooms/summary/", {"format": "csv"}))
    expected = [line.split(",", 1)[0] for line in (data / "xmpp/chatid_sample.rooms.expected").read_text().splitlines()]
    assert [r["room_id"] for r in rows] == expected
    assert sum(int(r["events"]) for r in rows) == room_totals().events == 340
    first = room_rows()[0]
    assert rows[0]["first"] == repr(first.first) and int(rows[0]["participants"]) == first.participants


def json_ids(client, **params: str) -> list[str]:
    ids, url, query = [], "/api/events/", {**params, "page_size": "100"}
    while url:
        page = client.get(url, query).json()
        ids += [e["id"] for e in page["results"]]
        url, query = page["next"], None
    return ids


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"site": "617"},
        {"family": "xmpp"},
        {"type": "status", "actor": "operator1"},
        {"name": "pageview"},
        {"session": "E2085BE5-9137-4E4E-80B5-F1FFDDC25423"},
        {"since": "2015-04-14T16:00:00Z", "until": "1429030800"},
    ],
    ids=lambda p: ",".join(p) or "all",
)
def test_event_csv_has_the_same_events_as_the_json_pages(analyst, data, params):
    rows = rows_of(analyst.get("/api/events/", {**params, "format": "csv"}))
    assert [r["id"] for r in rows] == json_ids(analyst, **params)
    assert rows, params


def test_event_csv_columns_are_the_json_fields(analyst, data):
    row = rows_of(analyst.get("/api/events/", {"format": "csv", "site": "617", "type": "status"}))[0]
    event = analyst.get("/api/events/", {"site": "617", "type": "status", "page_size": "1"}).json()["results"][0]
    assert list(row) == [
        "id",
        "family",
        "type",
        "category",
        "site",
        "session",
        "actor",
        "time",
        "epoch",
        "client_epoch",
        "online",
        "payload",
    ]
    assert row["id"] == event["id"] and row["time"] == event["time"] and float(row["epoch"]) == event["epoch"]
    assert row["online"] == ("true" if event["online"] else "false")
    assert orjson.loads(row["payload"]) == event["payload"]
    assert row["payload"] == Event.objects.get(uid=event["id"]).raw  # as received


def test_event_csv_refuses_what_json_refuses_and_paging(analyst, data):
    for params in (
        {"format": "csv", "sight": "617"},
        {"format": "csv", "cursor": "x"},
        {"format": "csv", "since": "?"},
    ):
        response = analyst.get("/api/events/", params)
        assert response.status_code == 400 and response["Content-Type"] == "application/json", params
    assert "cursor" in analyst.get("/api/events/", {"format": "csv", "cursor": "x"}).json()
    assert analyst.get("/api/events/", {"format": "csv"}, HTTP_AUTHORIZATION="Token nope").status_code == 401


def test_event_csv_reads_in_bounded_batches(analyst, data, monkeypatch):
    monkeypatch.setattr(exports, "FETCH_ROWS", 97)
    count = Event.objects.filter(family="chat").count()
    with CaptureQueriesContext(connection) as queries:
        rows = rows_of(analyst.get("/api/events/", {"format": "csv", "family": "chat"}))
    assert len(rows) == count
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and "events_event" in q["sql"]]
    assert len(reads) == count // 97 + 1 and all("LIMIT 97" in sql for sql in reads)


def test_csv_cells_cannot_run_as_spreadsheet_formulas(analyst, db, tmp_path):
    actors = ["=1+2", "+cmd", "-x", "@SUM(A1)", "plain"]
    records = [
        {"id": f"f{i}", "type": "message", "from": actor, "site_id": "=site", "data": {"message": "x"}, "timestamp": i}
        for i, actor in enumerate(actors)
    ]
    path = tmp_path / "formulas.jsonl"
    path.write_bytes(b"\n".join(map(orjson.dumps, records)))
    call_command("import_jsonl", str(path))
    rows = rows_of(analyst.get("/api/events/", {"format": "csv"}))
    assert [r["actor"] for r in rows] == ["'=1+2", "'+cmd", "'-x", "'@SUM(A1)", "plain"]
    assert {r["site"] for r in rows} == {"'=site"}
    assert orjson.loads(rows[0]["payload"])["from"] == "=1+2"  # inside the JSON text nothing is changed


def export(*args: str) -> bytes:
    out = io.StringIO()
    call_command("export_events", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().encode()


def wipe() -> None:
    """An empty store, as a new deployment restoring an export has: the events and their ids' registry."""
    Event.objects.all().delete()
    EventIdentity.objects.all().delete()
    for model in (RawBatch, ImportJob, SiteSummary, OnlineSpan, SiteActor, RoomSummary, EventCount, Site):
        model.objects.all().delete()


def test_export_events_gives_the_records_back_and_reimports_to_the_same_summaries(data, tmp_path):
    exported = export()
    lines = exported.decode().splitlines()
    assert len(lines) == Event.objects.count() == 1941 + 17 + 340 + 20  # accepted from each file
    # Every line is a record as received: chat lines are lines of the files, byte for byte.
    small = {line.rstrip("\r") for line in (data / "chat/small.jsonl").read_text().splitlines()}
    chat_lines = [line for line in lines if orjson.loads(line).get("site_id") is not None]
    assert sum(line in small for line in chat_lines) == 1941  # small.counts: 1941 accepted
    # A pretty-printed array element comes back as one line with the same JSON value.
    xmpp = {e["id"]: e for e in orjson.loads((data / "xmpp/chatid_sample.json").read_bytes())}
    xmpp_lines = [orjson.loads(line) for line in lines if "stanza" in line]
    assert len(xmpp_lines) == 340 and all(record == xmpp[record["id"]] for record in xmpp_lines)

    sites, rooms = [r.classic() for r in summary_rows()], [r.classic() for r in room_rows()]
    counts = sorted(EventCount.objects.values_list("hour", "family", "site", "events"))
    wipe()
    path = tmp_path / "export.jsonl"
    path.write_bytes(exported)
    call_command("import_jsonl", str(path))

    assert [r.classic() for r in summary_rows()] == sites
    assert [r.classic() for r in room_rows()] == rooms
    assert sorted(EventCount.objects.values_list("hour", "family", "site", "events")) == counts
    assert export() == exported  # and out again, byte for byte


def test_export_events_filters_like_the_api(data):
    chat_617 = export("--site", "617", "--family", "chat").decode().splitlines()
    assert [orjson.loads(line)["id"] for line in chat_617] == list(
        Event.objects.filter(site_id="617", family="chat").order_by("ts", "id").values_list("uid", flat=True)
    )
    assert export("--since", "2030-01-01") == b""
    with pytest.raises(Exception, match="--family: Select a valid choice"):
        export("--family", "sms")


def test_admin_exports_the_filtered_event_list(admin_client, data):
    url = reverse("admin:events_event_changelist")
    response = admin_client.post(
        url + "?family=chat&site=617",
        {"action": "export_csv", "select_across": "1", "index": "0", "_selected_action": ["0"]},
    )
    assert response.status_code == 200
    rows = rows_of(response)
    assert [r["id"] for r in rows] == list(
        Event.objects.filter(family="chat", site_id="617").order_by("ts", "id").values_list("uid", flat=True)
    )
    picked = list(Event.objects.order_by("id").values_list("pk", flat=True)[:3])
    response = admin_client.post(url, {"action": "export_csv", "index": "0", "_selected_action": picked})
    assert {r["id"] for r in rows_of(response)} == set(
        Event.objects.filter(pk__in=picked).values_list("uid", flat=True)
    )


def test_admin_exports_rejections_and_sites(admin_client, data):
    url = reverse("admin:ingest_rejection_changelist")
    every = {"action": "export_csv", "select_across": "1", "index": "0", "_selected_action": ["0"]}
    rows = rows_of(admin_client.post(url, every))
    assert len(rows) == 13 + 8  # edge.counts and the interactions' expected rejections
    assert {r["source"] for r in rows} == {str(data / "chat/edge.jsonl"), str(data / "interactions/eye_sample.jsonl")}
    every = {"action": "export_csv", "select_across": "1", "index": "0", "_selected_action": ["x"]}
    summaries = admin_client.post(reverse("admin:reports_sitesummary_changelist"), every)
    assert [r["site_id"] for r in rows_of(summaries)] == sorted(SiteSummary.objects.values_list("site_id", flat=True))
