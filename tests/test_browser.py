"""The admin in a real browser: Debian's chromium driven by Playwright against gunicorn.

An analyst (a view-only staff user, also given the change permission on rejections that
replaying takes) logs in, filters events by site and time, reads the dashboard's numbers
(checked against the sample files), replays rejections from the admin, and finds that
nothing can be edited or deleted. Screenshots go
to var/screenshots/ (ignored by git); the current ones in docs/img/ are copies of them.

The browser makes no connection but to the test server: no downloads, updates, sync or
first-run pages (its switches below), and Playwright never downloads a browser.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

import orjson
import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command

from events.models import Event
from ingest.analysts import create_analyst
from ingest.models import Rejection
from tests.conftest import REPO

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-extensions",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--password-store=basic",
]
SHOTS = REPO / "var" / "screenshots"
PASSWORD = "analyst-password"


def nested(depth: int) -> object:
    value: object = "deep"
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def site(live_stack, sample_data: Path, tmp_path: Path, monkeypatch):
    """Sample data imported, records refused for nesting deeper than today's limit, an analyst
    user who may replay, and a server whose limit is higher (as after raising MAX_NESTING)."""
    for name in ("chat/small.jsonl", "xmpp/chatid_sample.json", "interactions/eye_sample.jsonl"):
        call_command("import_jsonl", str(sample_data / name))
    meta = nested(120)  # deeper than MAX_NESTING (100)
    deep = [
        {"id": f"deep-{i}", "type": "message", "from": "v1", "site_id": "617", "timestamp": 1429030000 + i,
         "data": {"message": "hi", "meta": meta}}
        for i in range(3)
    ]  # fmt: skip
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"\n".join(map(orjson.dumps, deep)))
    call_command("import_jsonl", str(path))
    user, _ = create_analyst("analyst", password=PASSWORD)
    # Replaying stores events: besides the analyst group's view permissions it takes this one.
    user.user_permissions.add(Permission.objects.get(content_type__app_label="ingest", codename="change_rejection"))
    live_stack.env["MAX_NESTING"] = "200"
    live_stack.start_web()
    # Playwright's sync API runs an event loop; the checks below read the database between pages.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    return live_stack


@pytest.fixture
def page(site):
    from playwright.sync_api import sync_playwright

    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, base_url=site.base_url)
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def shot(page, name: str, selector: str | None = None) -> None:
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(SHOTS / f"{name}.png"), **({} if selector else {"full_page": True}))


def test_an_analyst_answers_questions_from_the_admin(page, sample_data):
    # Log in: the admin is Switchboard's.
    page.goto("/admin/")
    page.fill("#id_username", "analyst")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    assert page.inner_text("#site-name").strip() == "Switchboard"
    assert "Django administration" not in page.content()
    shot(page, "admin-index")

    # Events of one site in a time range, through the list's own filters.
    page.locator("#events-event a").first.click()  # the admin home's "Events" list
    page.fill("input[name=site]", "617")
    page.press("input[name=site]", "Enter")
    page.fill("input[name=since]", "2015-04-14 16:00")
    page.fill("input[name=until]", "2015-04-14 17:00")
    page.press("input[name=until]", "Enter")
    page.wait_for_url(re.compile(r"until="))  # the filtered list, not the one before it
    records = {}
    for line in (sample_data / "chat/small.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        records.setdefault(record["id"], record)
    expected = [r for r in records.values() if r["site_id"] == "617" and 1429027200 <= r["timestamp"] < 1429030800]
    assert re.search(rf"\b{len(expected)} events\b", page.inner_text("#changelist")), page.inner_text("#changelist")
    assert set(page.locator("td.field-site_link").all_inner_texts()) == {"617"}
    shot(page, "event-filters")

    # The dashboard's numbers are the sample's.
    page.goto("/admin/dashboard/?bucket=hour&since=2015-04-14&until=2015-04-15")
    by_hour = Counter(math.floor(r["timestamp"] / 3600) * 3600 for r in records.values())
    drawn = {}
    for column in page.locator("#events-chart g.column").all():
        if total := int(column.get_attribute("data-total")):
            drawn[int(column.get_attribute("data-start"))] = total
    assert drawn == by_hour
    expected_sites = {}
    for line in (sample_data / "chat/small.expected").read_text().splitlines():
        site_id, *fields = line.split(",")
        expected_sites[site_id] = {k: int(v) for k, v in (f.split("=") for f in fields)}
    for bar in page.locator("#site-chart g.bar").all():
        site_id = bar.get_attribute("data-site")
        if site_id in expected_sites:
            chats, emails = int(bar.get_attribute("data-chats")), int(bar.get_attribute("data-emails"))
            assert (chats, emails) == (expected_sites[site_id]["messages"], expected_sites[site_id]["emails"])
    top = page.locator("#site-chart g.bar").first.get_attribute("data-site")
    assert top == max(expected_sites, key=lambda s: (expected_sites[s]["emails"], s))  # the most e-mails first
    shot(page, "dashboard")
    shot(page, "dashboard-events", "#events-figure")

    # Which records were refused, and why; replay those today's limits accept.
    page.click("#rejections-figure h2 a")
    page.click("text=Not replayed (whole record kept)")
    refused = Rejection.objects.filter(complete=True, replayed_at=None).count()
    page.check("#action-toggle")
    page.select_option("select[name=action]", "replay")
    page.click("button[name=index]")
    message = page.inner_text("ul.messagelist")
    assert f"{refused} replayable rejections: 3 replayed (3 stored, 0 already stored)" in message, message
    shot(page, "replay")
    assert Event.objects.filter(uid__startswith="deep-").count() == 3
    page.click("text=the replayed rejections")
    page.wait_for_load_state()
    page.locator("td.field-replay_state").first.wait_for()  # all_inner_texts() does not wait
    states = page.locator("td.field-replay_state").all_inner_texts()
    assert len(states) == 3 and all(state.startswith("accepted in batch") for state in states), states

    # Nothing can be edited or deleted.
    event = Event.objects.order_by("id").first()
    page.goto(f"/admin/events/event/{event.pk}/change/")
    assert page.locator("input[name=_save]").count() == 0 and page.locator("a.deletelink").count() == 0
    for path in (
        f"/admin/events/event/{event.pk}/delete/",
        "/admin/events/event/add/",
        f"/admin/ingest/rejection/{Rejection.objects.first().pk}/delete/",
        "/admin/ingest/application/add/",
    ):
        response = page.goto(path)
        assert response.status == 403, path
    page.goto("/admin/events/event/")
    assert page.locator("select[name=action] option[value=delete_selected]").count() == 0
    assert page.locator("select[name=action] option").all_inner_texts()[1:] == ["Export selected events as CSV"]
