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
from ingest.models import Application, Rejection

pytestmark = pytest.mark.django_db


def event(uid: str, site: str) -> bytes:
    record = {"id": uid, "type": "message", "from": "v", "site_id": site, "data": {"message": "hi"}}
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
