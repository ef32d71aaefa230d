"""The admin dashboard and the event-count rollup behind it: numbers checked against the sample
files, counts exact on every storing path, every figure linking to the list behind it."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from lxml import html

from events.models import Event
from events.registry import NormalizedEvent
from ingest.analysts import create_analyst
from ingest.batches import process_batch, receive_batch
from ingest.keys import create_application
from ingest.models import RawBatch, Rejection
from ingest.records import Chunk, validate_into
from ingest.store import store_chunk
from reports import event_counts
from reports.models import EventCount

DASHBOARD = "/admin/dashboard/"


def distinct_records(path: Path) -> dict[str, dict]:
    """The file's records by id, first one wins (the sample chat files have no invalid line)."""
    records: dict[str, dict] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            record = orjson.loads(line)
            records.setdefault(record["id"], record)
    return records


def rollup() -> list[tuple]:
    return sorted(EventCount.objects.values_list("hour", "family", "site", "events"))


def counted_from_events() -> list[tuple]:
    """The rollup as it should be, counted here from the stored events."""
    stored = Event.objects.values_list("ts", "family", "site_id")
    counts = Counter((math.floor(ts / 3600), family, site) for ts, family, site in stored)
    return sorted((h, f, s, n) for (h, f, s), n in counts.items())


@pytest.fixture
def data(db: None, sample_data: Path) -> Path:
    for name in ("chat/small.jsonl", "xmpp/chatid_sample.json", "interactions/eye_sample.jsonl"):
        call_command("import_jsonl", str(sample_data / name))
    return sample_data


@pytest.fixture
def analyst(client, db: None):
    client.force_login(create_analyst("analyst")[0])
    return client


# -- the rollup -------------------------------------------------------------------------


def test_bulk_imports_count_every_new_event_once(data, sample_data):
    assert rollup() == counted_from_events()
    assert sum(n for *_, n in rollup()) == 1941 + 340 + 20
    call_command("import_jsonl", str(sample_data / "chat/small.jsonl"))  # the same file again: nothing new
    assert rollup() == counted_from_events()
    assert event_counts.rebuild() == len(counted_from_events()) and rollup() == counted_from_events()


@pytest.mark.parametrize(
    ("ts", "families"),
    [
        ([], []),
        ([7200.5, 7300, 10799.999], ["chat"] * 3),  # one hour, one family: counted by site
        ([3599.9999999999995, 3600.0, 3599.0, 7200], ["chat"] * 4),  # hours apart: by hour and site
        ([10.0, 20.0, 30.0], ["chat", "xmpp", "chat"]),  # families apart
        ([1e16, 1e16 + 2, 0], ["email"] * 3),
    ],
)
def test_tallies_by_column_are_the_tallies_of_the_events(ts, families):
    """An import's tallies by column (a one-family, one-hour chunk counted by site alone)
    are the events' tallies, keys and order alike."""
    sites = ["a", "b", "a", "c"][: len(ts)]
    events = [
        NormalizedEvent(f"u{i}", f, "message", s, t, None)
        for i, (t, f, s) in enumerate(zip(ts, families, sites, strict=True))
    ]

    assert list(event_counts.tally_of(ts, families, sites).items()) == list(event_counts.tally(events).items())


def test_the_worker_path_counts_once_across_batches_retries_and_rollbacks(db, sample_data):
    app, _ = create_application("site")
    lines = (sample_data / "chat/small.jsonl").read_bytes().splitlines(keepends=True)
    # Overlapping batches: every line is posted twice, in different batches.
    for start in range(0, len(lines), 300):
        batch = receive_batch(app, b"".join(lines[max(0, start - 150) : start + 300]), "application/x-ndjson", "", 1)
        process_batch(batch.pk)
        process_batch(batch.pk)  # a second delivery changes nothing
    assert Event.objects.count() == len(distinct_records(sample_data / "chat/small.jsonl"))
    assert rollup() == counted_from_events()

    before = rollup()
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    record = b'{"id":"new","type":"message","from":"v","site_id":"x","data":{"message":"m"},"timestamp":1}'
    chunk = validate_into(Chunk(), [(1, record, 0)], time.time())
    with pytest.raises(RuntimeError), transaction.atomic():
        store_chunk(batch, chunk)
        raise RuntimeError("the worker dies before its commit")
    assert rollup() == before  # rolled back with the events


# -- the dashboard ------------------------------------------------------------------------


def figures(response) -> html.HtmlElement:
    assert response.status_code == 200
    return html.fromstring(response.content.decode())


def columns(page: html.HtmlElement, chart: str) -> dict[int, dict[str, int]]:
    """Per column start: the count of each series, as drawn."""
    drawn = {}
    for g in page.xpath(f"//svg[@id='{chart}']//g[@class='column']"):
        segments = g.xpath(".//rect[@class='segment']")
        drawn[int(g.get("data-start"))] = {r.get("data-series"): int(r.get("data-count")) for r in segments}
    return drawn


def test_events_over_time_match_the_sample_files(analyst, data):
    records = distinct_records(data / "chat/small.jsonl")
    by_hour = Counter(math.floor(r["timestamp"] / 3600) * 3600 for r in records.values())
    page = figures(analyst.get(DASHBOARD, {"bucket": "hour", "since": "2015-04-14", "until": "2015-04-15"}))
    drawn = columns(page, "events-chart")
    assert len(drawn) == 24
    assert {start: c for start, c in drawn.items() if c} == {start: {"chat": n} for start, n in by_hour.items()}
    assert page.xpath("string(//*[@id='events-total'])") == str(len(records))

    xmpp = orjson.loads((data / "xmpp/chatid_sample.json").read_bytes())
    by_day = Counter(math.floor(e["timestamp"] / 86400) * 86400 for e in xmpp)
    page = figures(analyst.get(DASHBOARD, {"bucket": "day", "since": "2014-09-01", "until": "2015-01-01"}))
    assert {start: c for start, c in columns(page, "events-chart").items() if c} == {
        start: {"xmpp": n} for start, n in by_day.items()
    }


def test_a_column_links_to_the_events_behind_it(analyst, data):
    page = figures(analyst.get(DASHBOARD, {"bucket": "hour", "since": "2015-04-14", "until": "2015-04-15"}))
    segments = page.xpath("//svg[@id='events-chart']//a[rect[@class='segment']]")
    assert segments
    for link in segments:
        count = int(link.xpath("./rect/@data-count")[0])
        assert analyst.get(link.get("href")).context["cl"].result_count == count, link.get("href")
    title = page.xpath("//div[@id='events-figure']/h2/a/@href")[0]
    assert analyst.get(title).context["cl"].result_count == 1941


def test_a_site_narrows_the_events_figure(analyst, data):
    records = [r for r in distinct_records(data / "chat/small.jsonl").values() if r["site_id"] == "617"]
    page = figures(
        analyst.get(DASHBOARD, {"site": "617", "bucket": "day", "since": "2015-04-14", "until": "2015-04-15"})
    )
    assert columns(page, "events-chart") == {1428969600: {"chat": len(records)}}


def test_sites_with_the_most_emails_and_since_when(analyst, data):
    expected = {}
    for line in (data / "chat/small.expected").read_text().splitlines():
        site, *fields = line.split(",")
        expected[site] = {k: int(v) for k, v in (f.split("=") for f in fields)}
    messages = [r for r in distinct_records(data / "chat/small.jsonl").values() if r["type"] == "message"]
    page = figures(analyst.get(DASHBOARD, {"top": "5"}))
    bars = page.xpath("//svg[@id='site-chart']//g[@class='bar']")
    drawn = [(g.get("data-site"), int(g.get("data-chats")), int(g.get("data-emails"))) for g in bars]
    most_emails = sorted(expected, key=lambda s: (-expected[s]["emails"], s))[:5]
    assert drawn == [(s, expected[s]["messages"], expected[s]["emails"]) for s in most_emails]
    for row in page.xpath("//table[@id='sites-numbers']/tbody/tr"):
        site = row.get("data-site")
        times = sorted(r["timestamp"] for r in messages if r["site_id"] == site)
        first = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(times[0]))
        last = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(times[-1]))
        assert (row.xpath("string(./td[@class='sb-first'])"), row.xpath("string(./td[@class='sb-last'])")) == (
            first,
            last,
        )
    link = page.xpath("//svg[@id='site-chart']//a/@href")[0]
    assert analyst.get(link).context["cl"].result_count == sum(
        expected[most_emails[0]][k] for k in ("messages", "emails")
    )
    by_messages = figures(analyst.get(DASHBOARD, {"top": "2", "by": "messages"}))
    assert by_messages.xpath("//svg[@id='site-chart']//g[@class='bar']/@data-site") == ["site-0", "931"]


def test_rejections_by_reason_link_to_them(analyst, data):
    page = figures(analyst.get(DASHBOARD))
    assert sum(sum(c.values()) for c in columns(page, "rejections-chart").values()) == 8  # eye_sample's rejections
    reasons = page.xpath("//table[@id='rejections-numbers']/tbody/tr")
    assert sum(int(r.xpath("string(./td[2])")) for r in reasons) == 8
    for row in reasons:
        href, count = row.xpath("./td[1]/a/@href")[0], int(row.xpath("string(./td[2])"))
        if "rule=" in href:  # "(other reasons)" links to every rejection of the period
            assert analyst.get(href).context["cl"].result_count == count, href
    hourly = figures(analyst.get(DASHBOARD, {"rbucket": "hour"}))
    now = timezone.now().timestamp()
    assert sum(columns(hourly, "rejections-chart")[math.floor(now / 3600) * 3600].values()) == 8


def test_backlog_and_freshness(analyst, data):
    old = timezone.now() - timedelta(minutes=10)
    pending = RawBatch.objects.create(source="api", body=b"{}", record_count=1)
    RawBatch.objects.filter(pk=pending.pk).update(created_at=old)
    RawBatch.objects.create(source="api", body=b"{}", status=RawBatch.Status.FAILED, last_error="boom")
    page = figures(analyst.get(DASHBOARD))
    unfinished = page.xpath("//dd[@id='unfinished']")[0]
    assert unfinished.text_content().split()[0] == "1" and "10\xa0minutes ago" in unfinished.text_content()
    assert page.xpath("string(//dd[@id='failed']/a)") == "1"
    assert page.xpath("string(//dd[@id='rejections-day']/a)") == str(Rejection.objects.count())
    for href in (unfinished.xpath("./a/@href")[0], page.xpath("//dd[@id='failed']/a/@href")[0]):
        assert analyst.get(href).context["cl"].result_count == 1, href


def test_reading_the_dashboard_never_scans_the_events(analyst, data):
    with CaptureQueriesContext(connection) as queries:
        figures(analyst.get(DASHBOARD, {"bucket": "day", "since": "2014-01-01", "until": "2015-01-01"}))
    on_events = [q["sql"] for q in queries if "events_event" in q["sql"]]
    assert on_events and all("LIMIT 1" in sql and "GROUP BY" not in sql for sql in on_events), on_events


def test_staff_only_and_each_figure_for_who_may_view_it(client, django_user_model, data):
    assert client.get(DASHBOARD).status_code == 302  # to the login page
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    page = figures(client.get(DASHBOARD))
    assert not page.xpath("//div[contains(@class, 'sb-figure')]")
    user.user_permissions.add(Permission.objects.get(codename="view_rejection"))
    page = figures(client.get(DASHBOARD))
    assert [d.get("id") for d in page.xpath("//div[contains(@class, 'sb-figure')]")] == ["rejections-figure"]


def test_the_admin_says_switchboard_and_leads_to_the_dashboard(analyst, data):
    index = analyst.get(reverse("admin:index")).content.decode()
    assert "Django administration" not in index and "Django site admin" not in index
    page = html.fromstring(index)
    assert page.xpath("string(//*[@id='site-name'])").strip() == "Switchboard"
    assert page.xpath("//div[@id='sb-dashboard-link']//a/@href") == [DASHBOARD]
    dashboard = figures(analyst.get(DASHBOARD))
    assert dashboard.xpath("string(//title)").strip() == "Dashboard | Switchboard"
    assert [d.get("id") for d in dashboard.xpath("//div[contains(@class, 'sb-figure')]")] == [
        "events-figure",
        "sites-figure",
        "rejections-figure",
        "ingestion-figure",
    ]
    # Drawn on the server: the page's own content has no script.
    assert dashboard.xpath("//div[@id='content-main']//script") == []


def test_bad_dates_are_explained_not_errors(analyst, data):
    page = figures(analyst.get(DASHBOARD, {"since": "last tuesday"}))
    assert "not a date or time" in page.xpath("string(//p[@class='errornote'])")
