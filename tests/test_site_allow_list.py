"""An optional per-app allow-list of sites (issue 12 item 13): a record for another site is
rejected with the reason, claims no event id, and disturbs none of its neighbours."""

from __future__ import annotations

import io
import time

import orjson
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from events.models import Event
from ingest.batches import process_batch
from ingest.keys import create_application
from ingest.models import Application, RawBatch, Rejection
from ingest.rejections import REPLAY_SOURCE, matching, replay

pytestmark = pytest.mark.django_db


def event(uid: str, site: str, depth: int = 0) -> bytes:
    """A chat message; with `depth`, nesting that deep inside its data (refused over MAX_NESTING)."""
    data: dict[str, object] = {"message": "hi"}
    if depth:
        data["deep"] = orjson.loads(b"[" * depth + b"]" * depth)
    record = {"id": uid, "type": "message", "from": "v", "site_id": site, "data": data}
    return orjson.dumps({**record, "timestamp": time.time() - 60}) + b"\n"


def post_and_process(key: str, body: bytes):
    cache.clear()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.post("/api/events/", body, content_type="application/x-ndjson")
    assert response.status_code == 202, response.content
    return process_batch(response.json()["batch_id"])


def test_records_for_sites_outside_the_list_are_rejected_and_claim_no_id():
    shop, shop_key = create_application("shop")
    shop.allowed_sites = "s1\n  s2  \n\n"
    shop.save()
    _, other_key = create_application("other")  # no list: any site

    batch = post_and_process(shop_key, event("a", "s1") + event("b", "s3") + event("c", "s2") + event("d", "42"))

    assert (batch.accepted, batch.rejected) == (2, 2)
    assert sorted(Event.objects.values_list("uid", "site_id")) == [("a", "s1"), ("c", "s2")]
    assert list(Rejection.objects.values_list("line", "reason")) == [
        (2, "site 's3' is not among the sites app 'shop' may write to"),
        (4, "site '42' is not among the sites app 'shop' may write to"),
    ]
    assert '"id":"b"' in Rejection.objects.get(line=2).raw
    # The rejected ids are still free for the app that may write those sites.
    later = post_and_process(other_key, event("b", "s3"))
    assert (later.accepted, later.duplicates) == (1, 0)


def test_an_app_without_a_list_writes_any_site():
    _, key = create_application("open")
    batch = post_and_process(key, event("a", "x") + event("b", "y"))
    assert (batch.accepted, batch.rejected) == (2, 0)


def test_create_app_takes_the_sites(capsys):
    call_command("create_app", "shop", "--site", "s1", "--site", "s2", "--site", "s1")
    assert Application.objects.get(name="shop").site_allow_list() == {"s1", "s2"}
    call_command("create_app", "any", stdout=io.StringIO())
    assert Application.objects.get(name="any").site_allow_list() is None


def test_the_list_is_edited_in_the_admin(admin_client):
    app, _ = create_application("shop")
    url = reverse("admin:ingest_application_change", args=[app.pk])

    response = admin_client.post(url, {"name": "shop", "allowed_sites": "s1\ns2"})

    assert response.status_code == 302
    app.refresh_from_db()
    assert app.site_allow_list() == {"s1", "s2"}


def shop_with_refused_records(settings) -> tuple[Application, RawBatch]:
    """App "shop" may write s1 only; it posted one event per site that fits, and one per site
    that nests too deeply. Then the nesting limit is raised."""
    shop, key = create_application("shop")
    shop.allowed_sites = "s1"
    shop.save()
    body = event("a", "s1") + event("b", "s3") + event("c", "s1", depth=150) + event("d", "s3", depth=150)
    batch = post_and_process(key, body)
    assert (batch.accepted, batch.rejected) == (1, 3)
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_NESTING": 200}
    return shop, batch


NOT_ALLOWED = "site 's3' is not among the sites app 'shop' may write to"


def test_a_replay_applies_the_apps_allow_list_as_it_is_now(settings):
    """Issue 22 item 1: a replay batch had no app, so no allow-list applied to it."""
    shop, _ = shop_with_refused_records(settings)

    dry = replay(matching(), dry_run=True)
    assert (dry.examined, dry.accepted, dict(dry.still_rejected)) == (3, 1, {NOT_ALLOWED: 2})
    out = io.StringIO()
    call_command("replay_rejections", stdout=out)  # the command, as an operator runs it
    assert out.getvalue().startswith("3 replayable rejections: 1 replayed (1 stored, 0 already stored), 2 still")

    assert sorted(Event.objects.values_list("uid", "site_id")) == [("a", "s1"), ("c", "s1")]
    (batch,) = RawBatch.objects.filter(source=REPLAY_SOURCE)
    assert (batch.app, batch.accepted, batch.rejected) == (shop, 1, 0)  # validated as shop's
    assert set(Rejection.objects.filter(replayed_at=None).values_list("line", flat=True)) == {2, 4}

    # Once shop may write s3, its refused records for s3 are replayed (the deep one too).
    shop.allowed_sites = "s1\ns3"
    shop.save()
    result = replay(matching(app="shop"))
    assert (result.examined, result.accepted) == (2, 2)
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b", "c", "d"]
    assert set(RawBatch.objects.filter(source=REPLAY_SOURCE).values_list("app__name", flat=True)) == {"shop"}


def test_one_replay_of_several_apps_keeps_each_apps_list(settings, tmp_path):
    """Rejections of two apps and of a file import (no app) in one replay: a replay batch
    for each, each under its own app's list."""
    shop_with_refused_records(settings)
    _, open_key = create_application("open")  # no list: any site
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_NESTING": 100}
    post_and_process(open_key, event("e", "s3", depth=150))
    (tmp_path / "deep.jsonl").write_bytes(event("f", "s3", depth=150))
    call_command("import_jsonl", str(tmp_path / "deep.jsonl"), stderr=io.StringIO())
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_NESTING": 200}

    result = replay(matching())

    assert (result.examined, result.accepted, dict(result.still_rejected)) == (5, 3, {NOT_ALLOWED: 2})
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "c", "e", "f"]
    batches = RawBatch.objects.filter(source=REPLAY_SOURCE)
    assert sorted((b.app.name if b.app else "", b.accepted) for b in batches) == [("", 1), ("open", 1), ("shop", 1)]


def test_the_admin_replay_action_applies_the_list_too(settings, admin_client):
    shop_with_refused_records(settings)
    url = reverse("admin:ingest_rejection_changelist")
    ids = list(Rejection.objects.values_list("pk", flat=True))

    response = admin_client.post(url, {"action": "replay", "index": "0", "_selected_action": ids}, follow=True)

    assert "3 replayable rejections: 1 replayed (1 stored, 0 already stored), 2 still rejected" in (
        response.content.decode()
    )
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "c"]
