"""The analysts' read API: site and room summaries, the event list, who may read.

Data goes in through the real import path (ingest.imports.sequential.import_file) and is
compared with the shared expected files or with expectations computed here from
the input files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils.http import parse_http_date
from rest_framework.test import APIClient

from events.models import Event
from ingest.analysts import create_analyst
from ingest.imports.sequential import import_file
from ingest.keys import create_application
from reports import site_summary
from reports.models import SiteSummary

pytestmark = pytest.mark.django_db

CHAT_FILES = ["small", "mixed", "edge", "external_small", "external_bad"]
EVENT_KEYS = {
    "id", "family", "type", "category", "site", "session", "actor", "time", "epoch", "client_epoch", "online", "payload"
}  # fmt: skip
TIE_TS = 1_500_000_000
TIES = 1200  # more events in one second than DRF's cursor offset cutoff (1000)


def parse_classic(line: str) -> dict:
    site_id, *pairs = line.rsplit(",", 4)
    return {"site_id": site_id, **{k: int(v) for k, v in (p.split("=") for p in pairs)}}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@pytest.fixture
def analyst() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {create_analyst('analyst')[1]}")  # no password: no slow hashing
    return client


def site_url(site_id: str, fmt: str = "") -> str:
    return f"/api/sites/{quote(site_id, safe='')}/summary/" + (f"?format={fmt}" if fmt else "")


# -- site summary ------------------------------------------------------------


@pytest.mark.parametrize("name", CHAT_FILES)
def test_site_summary_text_and_json_equal_the_expected_file(analyst, sample_data, name):
    import_file(str(sample_data / "chat" / f"{name}.jsonl"))
    expected = (sample_data / "chat" / f"{name}.expected").read_text()

    by_param = analyst.get("/api/sites/summary/?format=txt")
    by_accept = analyst.get("/api/sites/summary/", HTTP_ACCEPT="text/plain")
    as_json = analyst.get("/api/sites/summary/")

    for response in (by_param, by_accept):
        assert response.status_code == 200
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        assert response.content.decode() == expected
    assert as_json.status_code == 200 and as_json["Content-Type"] == "application/json"
    payload = as_json.json()
    rows = [
        {k: site[k] for k in ("site_id", "messages", "emails", "operators", "visitors")} for site in payload["sites"]
    ]
    assert rows == [parse_classic(line) for line in expected.splitlines()]
    refreshed = [datetime.fromisoformat(site["refreshed_at"]) for site in payload["sites"]]
    assert payload["stale_sites"] == 0 and not any(site["stale"] for site in payload["sites"])
    assert datetime.fromisoformat(payload["refreshed_at"]) == max(refreshed)
    for response in (by_param, as_json):
        assert response["X-Summary-Stale-Sites"] == "0"
        assert datetime.fromisoformat(response["X-Summary-Refreshed-At"]) == max(refreshed)
        assert parse_http_date(response["Last-Modified"]) == int(max(refreshed).timestamp())


def test_one_site_in_json_and_text(analyst, sample_data):
    import_file(str(sample_data / "chat" / "edge.jsonl"))
    lines = (sample_data / "chat" / "edge.expected").read_text().splitlines()
    assert {parse_classic(line)["site_id"] for line in lines} >= {"42", "sité-ü"}

    for line in lines:
        site_id = parse_classic(line)["site_id"]
        response = analyst.get(site_url(site_id))
        assert response.status_code == 200, site_id
        row = response.json()
        assert {k: row[k] for k in ("site_id", "messages", "emails", "operators", "visitors")} == parse_classic(line)
        assert row["stale"] is False and row["refreshed_at"]
        text = analyst.get(site_url(site_id), HTTP_ACCEPT="text/plain")
        assert text.content.decode() == line + "\n"
        assert text["X-Summary-Stale-Sites"] == "0"


def test_unknown_site_is_a_json_404_in_either_format(analyst, sample_data):
    import_file(str(sample_data / "chat" / "external_small.jsonl"))

    for response in (
        analyst.get(site_url("nope")),
        analyst.get(site_url("nope", "txt")),
        analyst.get(site_url("nope"), HTTP_ACCEPT="text/plain"),
    ):
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "No chat events for the site 'nope'."}


@pytest.mark.parametrize("path", ["/api/sites/summary/", "/api/rooms/summary/", "/api/events/", "/api/batches/1/"])
def test_an_unknown_format_is_a_400_naming_the_formats(analyst, path):
    response = analyst.get(path + "?format=xml")
    assert response.status_code == 400  # DRF's default: a bare 404 "Not found."
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"].startswith("unknown format 'xml': this endpoint answers json")


def test_site_ids_with_any_characters_are_reachable(analyst, tmp_path):
    sites = ["a/b", "x/summary", "summary", "50% off?#&=", " spaced ", 'say "hi" <b>', "ünï/cødé", ".."]
    records = [
        {"id": f"m{i}", "type": "message", "from": "v", "site_id": site, "data": {"message": "hi"}, "timestamp": 1}
        for i, site in enumerate(sites)
    ]
    path = tmp_path / "sites.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    import_file(str(path))

    for site in sites:
        response = analyst.get(site_url(site))
        assert response.status_code == 200, site
        assert response.json()["site_id"] == site
        assert response.json()["emails"] == 1


def test_stale_sites_are_shown_as_they_are_not_recomputed(analyst, sample_data):
    import_file(str(sample_data / "chat" / "small.jsonl"))
    before = analyst.get("/api/sites/summary/").json()
    # What a bulk import does while it runs: counters wait for its final rebuild.
    with transaction.atomic():
        site_summary.mark_stale(["617"])

    after = analyst.get("/api/sites/summary/")
    text = analyst.get("/api/sites/summary/?format=txt")
    one = analyst.get(site_url("617"))

    payload = after.json()
    assert payload["stale_sites"] == 1 and after["X-Summary-Stale-Sites"] == "1"
    assert text["X-Summary-Stale-Sites"] == "1" and one["X-Summary-Stale-Sites"] == "1"
    assert [s["site_id"] for s in payload["sites"] if s["stale"]] == ["617"] and one.json()["stale"] is True
    assert [{**s, "stale": False} for s in payload["sites"]] == before["sites"]  # same counts, same times
    assert text.content.decode() == (sample_data / "chat" / "small.expected").read_text()
    assert SiteSummary.objects.get(site_id="617").stale  # reading did not rebuild it


def test_empty_summaries(analyst):
    sites = analyst.get("/api/sites/summary/")
    assert sites.json() == {"refreshed_at": None, "stale_sites": 0, "sites": []}
    assert "Last-Modified" not in sites and sites["X-Summary-Stale-Sites"] == "0"
    assert analyst.get("/api/sites/summary/?format=txt").content == b""
    rooms = analyst.get("/api/rooms/summary/")
    assert rooms.json() == {
        "refreshed_at": None,
        "stale_rooms": 0,
        "totals": {"rooms": 0, "events": 0, "avg_events_per_room": 0.0},
        "rooms": [],
    }
    assert analyst.get("/api/rooms/summary/?format=txt").content == b"# rooms=0 events=0 avg_events_per_room=0.00\n"


# -- room summary ------------------------------------------------------------


def test_room_summary_equals_the_expected_files(analyst, sample_data, manage):
    import_file(str(sample_data / "xmpp" / "chatid_sample.json"))
    rooms = (sample_data / "xmpp" / "chatid_sample.rooms.expected").read_text()
    totals = (sample_data / "xmpp" / "chatid_sample.totals.expected").read_text()

    text = analyst.get("/api/rooms/summary/?format=txt")
    by_accept = analyst.get("/api/rooms/summary/", HTTP_ACCEPT="text/plain")
    payload = analyst.get("/api/rooms/summary/").json()

    assert text.content.decode() == by_accept.content.decode() == rooms + totals
    assert text["X-Summary-Stale-Rooms"] == "0" and text["Last-Modified"]
    command = manage("room_summary")
    assert command.returncode == 0 and command.stdout == text.content.decode()
    expected_rows = [line.split(",") for line in rooms.splitlines()]
    assert len(payload["rooms"]) == len(expected_rows) == 19
    for room, (room_id, *pairs) in zip(payload["rooms"], expected_rows, strict=True):
        fields = dict(p.split("=") for p in pairs)
        assert room["room_id"] == room_id
        assert [room[k] for k in ("events", "messages", "typing", "participants")] == [
            int(fields[k]) for k in ("events", "messages", "typing", "participants")
        ]
        assert f"{room['first']:.4f}" == fields["first"] and f"{room['last']:.4f}" == fields["last"]
        assert room["stale"] is False
    assert payload["totals"]["rooms"] == 19 and payload["totals"]["events"] == 340
    assert f"# rooms=19 events=340 avg_events_per_room={payload['totals']['avg_events_per_room']:.2f}\n" == totals
    assert payload["stale_rooms"] == 0
    assert datetime.fromisoformat(payload["refreshed_at"]) == max(
        datetime.fromisoformat(r["refreshed_at"]) for r in payload["rooms"]
    )


# -- events -------------------------------------------------------------------


def chat_records(sample_data: Path) -> list[dict]:
    """small.jsonl, de-duplicated by id (it has no invalid lines)."""
    records: dict[str, dict] = {}
    for line in (sample_data / "chat" / "small.jsonl").read_text().splitlines():
        record = json.loads(line)
        records.setdefault(record["id"], record)
    return list(records.values())


def tie_records() -> list[dict]:
    return [
        {
            "id": f"tie-{i:05d}",
            "type": "status" if i % 2 else "message",
            "from": f"op{i % 3}" if i % 2 else f"visitor{i}",
            "site_id": "ties",
            "data": {"status": "online"} if i % 2 else {"message": "same second"},
            "timestamp": TIE_TS,
        }
        for i in range(TIES)
    ]


@pytest.fixture(scope="class")
def dataset(django_db_setup, django_db_blocker, sample_data, tmp_path_factory) -> Iterator[dict]:
    """Chat, xmpp and interaction samples plus a site whose events share one second,
    stored once for the class in a transaction that is rolled back after it."""
    ties = tmp_path_factory.mktemp("ties") / "ties.jsonl"
    ties.write_text("".join(json.dumps(r) + "\n" for r in tie_records()))
    files = [
        sample_data / "chat" / "small.jsonl",
        sample_data / "xmpp" / "chatid_sample.json",
        sample_data / "interactions" / "eye_sample.jsonl",
        ties,
    ]
    with django_db_blocker.unblock(), transaction.atomic():
        for path in files:
            import_file(str(path))
        yield {
            "chat": chat_records(sample_data),
            "xmpp": json.loads((sample_data / "xmpp" / "chatid_sample.json").read_text()),
            "interactions": json.loads((sample_data / "interactions" / "eye_sample.expected.json").read_text()),
            "ties": tie_records(),
        }
        transaction.set_rollback(True)


def walk(client: APIClient, url: str) -> tuple[list[dict], int]:
    """Every event the list gives by following `next`; and how many pages it took."""
    events: list[dict] = []
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        events += body["results"]
        pages += 1
        url = body["next"]
    return events, pages


def ids(events: list[dict]) -> list[str]:
    return [e["id"] for e in events]


@pytest.mark.usefixtures("dataset")
class TestEvents:
    def total(self, dataset: dict) -> int:
        return len(dataset["chat"]) + len(dataset["xmpp"]) + dataset["interactions"]["accepted"] + TIES

    def test_cursor_pagination_walks_every_event_once_in_time_order(self, analyst, dataset):
        events, pages = walk(analyst, "/api/events/?page_size=97")

        assert len(events) == self.total(dataset) == Event.objects.count()
        assert len(set(ids(events))) == len(events)
        assert pages == -(-len(events) // 97)
        epochs = [e["epoch"] for e in events]
        assert epochs == sorted(epochs)
        assert ids(events) == list(Event.objects.order_by("ts", "id").values_list("uid", flat=True))

    def test_pages_split_one_second_with_more_ties_than_an_offset_cursor_allows(self, analyst, dataset):
        events, pages = walk(analyst, "/api/events/?site=ties&page_size=7")

        assert pages == -(-TIES // 7)
        assert sorted(ids(events)) == sorted(r["id"] for r in dataset["ties"])
        assert len(set(ids(events))) == TIES and {e["epoch"] for e in events} == {TIE_TS}

    def test_previous_links_walk_back(self, analyst, dataset):
        forward, _ = walk(analyst, "/api/events/?site=ties&page_size=50")
        url = analyst.get("/api/events/?site=ties&page_size=50").json()["next"]
        while url:  # to the last page
            body = analyst.get(url).json()
            last, url = body, body["next"]
        backward = list(last["results"])
        url = last["previous"]
        while url:
            body = analyst.get(url).json()
            backward = body["results"] + backward
            url = body["previous"]
        assert ids(backward) == ids(forward)

    def test_page_size_is_capped(self, analyst, dataset):
        body = analyst.get("/api/events/?page_size=5000").json()
        assert len(body["results"]) == 1000 and body["next"]
        assert len(analyst.get("/api/events/").json()["results"]) == 100

    def test_event_shape(self, analyst, dataset):
        record = next(r for r in dataset["chat"] if r["type"] == "status")
        events, _ = walk(analyst, f"/api/events/?site={quote(record['site_id'])}&actor={record['from']}&type=status")
        event = next(e for e in events if e["id"] == record["id"])

        assert set(event) == EVENT_KEYS
        assert event == {
            "id": record["id"],
            "family": "chat",
            "type": "status",
            "category": "",
            "site": record["site_id"],
            "session": "",
            "actor": record["from"],
            "time": iso(record["timestamp"]),
            "epoch": float(record["timestamp"]),
            "client_epoch": None,  # sent without a send time: taken as given
            "online": record["data"]["status"] == "online",
            "payload": record,
        }
        assert event["time"].endswith("Z") and datetime.fromisoformat(event["time"]).timestamp() == event["epoch"]

    @pytest.mark.parametrize(
        ("query", "probes_sites"),
        [
            ("actor=operator1", True),
            ("type=status", True),
            ("name=pageview", True),
            ("category=page%20interaction", True),
            ("site=617&actor=operator1", False),
            ("session=3d6ad8a0-2a35-4a9e-8fd2-bd3e3b1d6b2f&type=pageview", False),
            ("family=chat", False),
        ],
    )
    def test_filters_on_columns_indexed_after_the_site_probe_every_site(self, analyst, dataset, query, probes_sites):
        # Without a site (or session), actor/type/category filters add "site in all sites" so that
        # PostgreSQL can use the site-led indexes (events/selectors.py); the rows are the same,
        # which test_chat_filters and the xmpp/interaction filter tests check.
        with CaptureQueriesContext(connection) as queries:
            response = analyst.get(f"/api/events/?{query}")
        assert response.status_code == 200, response.content
        pages = [q["sql"] for q in queries if 'FROM "events_event"' in q["sql"]]
        assert pages and all(('"events_site"' in sql) == probes_sites for sql in pages), pages

    @pytest.mark.parametrize(
        ("query", "expect"),
        [
            ("site=617", lambda r: r["site_id"] == "617"),
            ("site=617&type=status", lambda r: r["site_id"] == "617" and r["type"] == "status"),
            ("site=617&family=chat&type=message", lambda r: r["site_id"] == "617" and r["type"] == "message"),
            ("family=chat&type=message", lambda r: r["type"] == "message"),
            ("actor=operator1", lambda r: r["from"] == "operator1"),
            ("site=site-0&actor=operator1", lambda r: r["from"] == "operator1" and r["site_id"] == "site-0"),
        ],
    )
    def test_chat_filters(self, analyst, dataset, query, expect):
        events, _ = walk(analyst, f"/api/events/?{query}&page_size=1000")
        chat = dataset["chat"] + dataset["ties"]
        expected = sorted((r["timestamp"], r["id"]) for r in chat if expect(r))

        assert 0 < len(events) < self.total(dataset)
        assert sorted((e["epoch"], e["id"]) for e in events) == expected
        assert [e["epoch"] for e in events] == sorted(e["epoch"] for e in events)

    @pytest.mark.parametrize(
        ("query", "expect"),
        [
            ("family=xmpp", lambda r: True),
            ("site=chatid.qa&family=xmpp&type=muc-broadcast-message", lambda r: r["event"] == "muc-broadcast-message"),
            ("type=muc-invite", lambda r: r["event"] == "muc-invite"),
            ("actor=Matt", lambda r: r.get("nick") == "Matt"),
            ("session=15590b83-d89b-462e-980b-d4968d5454a5", lambda r: r["room_id"].startswith("15590b83")),
            ("session=15590B83-D89B-462E-980B-D4968D5454A5", lambda r: r["room_id"].startswith("15590b83")),
        ],
    )
    def test_xmpp_filters(self, analyst, dataset, query, expect):
        events, _ = walk(analyst, f"/api/events/?{query}&page_size=1000")
        expected = [r for r in dataset["xmpp"] if expect(r)]

        assert 0 < len(events) == len(expected)
        assert sorted(ids(events)) == sorted(r["id"] for r in expected)
        assert [e["epoch"] for e in events] == sorted(r["timestamp"] for r in expected)
        assert {e["family"] for e in events} == {"xmpp"}

    def test_room_query_matches_the_room_summary(self, analyst, dataset, sample_data):
        rooms = (sample_data / "xmpp" / "chatid_sample.rooms.expected").read_text().splitlines()
        for line in rooms[:5]:
            room_id, events_field = line.split(",")[:2]
            events, _ = walk(analyst, f"/api/events/?session={room_id}&page_size=1000")
            assert len(events) == int(events_field.removeprefix("events="))
            assert {e["session"] for e in events} == {room_id}

    def test_an_interaction_session_in_time_order(self, analyst, dataset):
        sessions = dataset["interactions"]["sessions"]
        for session_id, expected in sessions.items():
            events, _ = walk(analyst, f"/api/events/?session={session_id}&page_size=3")
            assert [[e["time"], e["category"], e["type"]] for e in events] == [
                [datetime.fromisoformat(t).replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"), c, n]
                for t, c, n in expected
            ]
            assert {e["family"] for e in events} == {"interaction"} and {e["actor"] for e in events} == {""}

    @pytest.mark.parametrize(
        ("query", "type_key"),
        [
            ("category=page+interaction", lambda c, n: c == "page interaction"),
            ("name=submit", lambda c, n: n == "submit"),
            ("category=page+interaction&name=pageview", lambda c, n: (c, n) == ("page interaction", "pageview")),
            ("family=interaction&type=play", lambda c, n: n == "play"),
            ("name=message", lambda c, n: False),  # a name is an interaction's: chat messages are not
        ],
    )
    def test_interaction_filters(self, analyst, dataset, query, type_key):
        events, _ = walk(analyst, f"/api/events/?{query}&page_size=1000")
        by_type = dataset["interactions"]["by_type"]
        expected = sum(n for key, n in by_type.items() if type_key(*key.split("/")))

        assert len(events) == expected
        assert all(type_key(e["category"], e["type"]) and e["family"] == "interaction" for e in events)

    def test_site_filter_partitions_the_interactions(self, analyst, dataset):
        events, _ = walk(analyst, "/api/events/?family=interaction&page_size=1000")
        sites = {e["site"] for e in events}
        assert len(events) == dataset["interactions"]["accepted"] and len(sites) > 1

        for site in sites:
            some, _ = walk(analyst, f"/api/events/?site={quote(site)}&page_size=1000")
            assert ids(some) == [e["id"] for e in events if e["site"] == site]

    def test_time_range(self, analyst, dataset):
        chat = sorted(dataset["chat"], key=lambda r: r["timestamp"])
        since, until = chat[100]["timestamp"], chat[200]["timestamp"]
        expected = sorted(r["id"] for r in chat if since <= r["timestamp"] < until)
        assert len(expected) == 100  # small.jsonl has no two events in one second

        as_iso = f"since={quote(iso(since))}&until={quote(iso(until))}"
        naive = f"since={datetime.fromtimestamp(since, UTC):%Y-%m-%dT%H:%M:%S}&until={until}.0"
        offset = f"since={quote(datetime.fromtimestamp(since, UTC).astimezone().isoformat())}&until={until}"
        for window in (f"since={since}&until={until}", as_iso, naive, offset):
            events, _ = walk(analyst, f"/api/events/?family=chat&{window}&page_size=1000")
            assert sorted(ids(events)) == expected, window
        events, _ = walk(analyst, f"/api/events/?since={TIE_TS}&until={TIE_TS + 1}&page_size=1000")
        assert len(events) == TIES
        assert walk(analyst, f"/api/events/?since={TIE_TS + 0.5}&until={TIE_TS + 1}")[0] == []
        assert walk(analyst, f"/api/events/?since={until}&until={since}")[0] == []

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("family=email", "family"),
            ("since=yesterday", "since"),
            ("until=2021-13-01", "until"),
            ("since=nan", "since"),
            ("since=2021-01-01T00:00:00+01:00", "since"),  # '+' unencoded: a space
            ("page_size=0", "page_size"),
            ("page_size=ten", "page_size"),
            ("cursor=bm9wZQ==", "cursor"),
            ("cursor=%%%", "cursor"),
            ("sit=617", "sit"),
        ],
    )
    def test_bad_values_are_400_json(self, analyst, dataset, query, field):
        response = analyst.get(f"/api/events/?{query}")

        assert response.status_code == 400, response.content
        assert response["Content-Type"] == "application/json"
        assert list(response.json()) == [field] and response.json()[field][0]


# -- who may read ------------------------------------------------------------

ANALYST_URLS = [
    "/api/sites/summary/",
    "/api/sites/summary/?format=txt",
    "/api/sites/1/summary/",
    "/api/rooms/summary/",
    "/api/events/",
    "/api/events/?site=1",
]


@pytest.fixture
def small(sample_data) -> None:
    import_file(str(sample_data / "chat" / "external_small.jsonl"))  # the site "1"


@pytest.mark.parametrize("url", ANALYST_URLS)
def test_anonymous_is_401_with_a_token_challenge(small, url):
    response = APIClient().get(url)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Authentication credentials were not provided."}


@pytest.mark.parametrize("url", ANALYST_URLS)
def test_credentials_and_roles(small, url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {create_application('reader')[1]}")
    as_app = client.get(url)
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    bad_token = client.get(url)
    client.credentials(HTTP_AUTHORIZATION="Api-Key sb_00000000_nope")
    bad_key = client.get(url)

    assert as_app.status_code == 403 and as_app["Content-Type"] == "application/json"
    assert as_app.json()["detail"].startswith("Analysts only")
    assert bad_token.status_code == 401 and bad_token.json() == {"detail": "Invalid token."}
    assert bad_key.status_code == 401 and bad_key.json() == {"detail": "Unknown or revoked API key."}


@pytest.mark.parametrize("url", ANALYST_URLS)
def test_token_and_admin_session_may_read(small, analyst, sample_data, url):
    session = APIClient()
    session.force_login(User.objects.create_superuser("admin"))  # a real session cookie, as the admin's login sets

    for client in (analyst, session):
        response = client.get(url)
        assert response.status_code == 200, response.content
        if "format=txt" in url:
            assert response.content.decode() == (sample_data / "chat" / "external_small.expected").read_text()
