"""The admin (SPEC §5): read-only event browsing with cheap filters, batches and
rejections, apps and keys, and the chats-vs-e-mails chart."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from lxml import html

from events.admin import EstimatedCountPaginator
from events.models import Event, Site
from ingest.models import Application, RawBatch, Rejection
from reports.models import SiteSummary


def expected_rows(path: Path) -> dict[str, dict[str, int]]:
    rows = {}
    for line in path.read_text().splitlines():
        site, *fields = line.split(",")
        rows[site] = {k: int(v) for k, v in (f.split("=") for f in fields)}
    return rows


@pytest.fixture
def data(db: None, sample_data: Path) -> Path:
    """small.jsonl (chat), edge.jsonl (every rejection kind) and the xmpp sample, imported."""
    for name in ("chat/small.jsonl", "chat/edge.jsonl", "xmpp/chatid_sample.json"):
        call_command("import_jsonl", str(sample_data / name))
    return sample_data


def changelist(client, model: str, **params: str):
    response = client.get(reverse(f"admin:{model}_changelist"), params)
    assert response.status_code == 200, response.content[:500]
    return response


def test_every_changelist_and_the_index_load(admin_client, data):
    assert admin_client.get(reverse("admin:index")).status_code == 200
    for model in admin.site._registry:
        opts = model._meta
        response = changelist(admin_client, f"{opts.app_label}_{opts.model_name}")
        assert response.context["cl"].result_count == model.objects.count(), opts.label


def test_detail_pages_show_data(admin_client, data):
    event = Event.objects.filter(family="chat").order_by("id").first()
    page = admin_client.get(reverse("admin:events_event_change", args=[event.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert event.uid in text
    assert "<pre" in text and "&quot;site_id&quot;: &quot;" in text  # payload pretty-printed
    assert " UTC" in text
    assert "Stanza" not in text  # no inline for chat events

    xmpp = Event.objects.filter(family="xmpp", stanza__body__gt="").first()
    page = admin_client.get(reverse("admin:events_event_change", args=[xmpp.pk])).content.decode()
    assert "Stanza" in page and xmpp.stanza.from_jid in page.replace("&amp;", "&")

    site = admin_client.get(reverse("admin:events_site_change", args=["site-0"])).content.decode()
    assert "576" in site and "519" in site  # messages and visitors of small.expected

    rejection = Rejection.objects.order_by("id").first()
    page = admin_client.get(reverse("admin:ingest_rejection_change", args=[rejection.pk])).content.decode()
    assert rejection.reason.replace("'", "&#x27;").replace('"', "&quot;") in page

    batch = RawBatch.objects.order_by("id").first()
    assert admin_client.get(reverse("admin:ingest_rawbatch_change", args=[batch.pk])).status_code == 200
    assert admin_client.get(reverse("admin:reports_sitesummary_change", args=["617"])).status_code == 200


def test_site_list_shows_the_summary(admin_client, data):
    expected = expected_rows(data / "chat/small.expected")
    response = changelist(admin_client, "events_site", q="7654")
    rows = html.fromstring(response.content).xpath("//table[@id='result_list']/tbody/tr")
    assert len(rows) == 1
    cells = [c.text_content().strip() for c in rows[0].xpath("./th | ./td[not(@class='action-checkbox')]")]
    row = expected["7654"]
    assert cells[:5] == ["7654", str(row["messages"]), str(row["emails"]), str(row["operators"]), str(row["visitors"])]


def test_event_filters(admin_client, data):
    def count(**params: str) -> int:
        return changelist(admin_client, "events_event", **params).context["cl"].result_count

    chat = Event.objects.filter(family="chat")
    assert count(family="chat") == chat.count() > 0
    assert count(family="xmpp") == Event.objects.filter(family="xmpp").count() == 340
    assert count(family="chat", kind="status") == chat.filter(kind="status").count() > 0
    assert count(site="617") == Event.objects.filter(site_id="617").count() > 0
    room = Event.objects.filter(family="xmpp").values_list("session", flat=True).first()
    assert count(session=room) == Event.objects.filter(session=room).count() > 0
    middle = sorted(chat.values_list("ts", flat=True))[100]
    assert count(family="chat", since=str(middle)) == chat.filter(ts__gte=middle).count()
    assert count(family="chat", until=str(middle)) == chat.filter(ts__lt=middle).count()
    assert (
        count(family="chat", since="2015-04-14", until="2015-04-15")
        == chat.filter(ts__gte=1428969600, ts__lt=1429056000).count()
    )
    assert count(period="week") == Event.objects.filter(ts__gte=time.time() - 7 * 86400).count()
    # Without a site, actor and type filters probe every site's index range: same rows.
    assert count(actor="operator1") == Event.objects.filter(actor="operator1").count() > 0
    assert count(kind="status") == Event.objects.filter(kind="status").count() > 0
    assert count(site="617", actor="operator1") == Event.objects.filter(site_id="617", actor="operator1").count()
    # Search: an exact event id or session/room; not actors or sites, which have filters.
    uid = chat.order_by("id").values_list("uid", flat=True).first()
    assert count(q=uid) == 1
    assert count(q=room) == Event.objects.filter(session=room).count() > 0
    assert count(q="operator1") == 0
    # A bad date is refused, not a server error.
    response = admin_client.get(reverse("admin:events_event_changelist"), {"since": "yesterday-ish"})
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_filters_combine_through_hidden_inputs(admin_client, data):
    page = html.fromstring(changelist(admin_client, "events_event", family="chat", kind="message").content)
    site_form = page.xpath("//input[@name='site']/ancestor::form")[0]
    hidden = {i.get("name"): i.get("value") for i in site_form.xpath(".//input[@type='hidden']")}
    assert hidden == {"family": "chat", "kind": "message"}


def test_event_list_never_counts_the_whole_table(admin_client, data, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_UP_TO", 50)
    with CaptureQueriesContext(connection) as queries:
        response = changelist(admin_client, "events_event")
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "events_event" in q["sql"]]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts
    cl = response.context["cl"]
    assert cl.paginator.is_estimate
    if connection.vendor == "postgresql":
        assert cl.result_count >= 50  # the planner's estimate
    else:
        assert cl.result_count == 50 and cl.paginator.count_label == "more than 50"
    assert f"{cl.paginator.count_label} events".encode() in response.content
    # A narrow filter is counted exactly.
    uid = Event.objects.order_by("id").values_list("uid", flat=True).first()
    cl = changelist(admin_client, "events_event", q=uid).context["cl"]
    assert not cl.paginator.is_estimate and cl.result_count == 1


def test_events_are_read_only(admin_client, data):
    event = Event.objects.order_by("id").first()
    assert admin_client.get(reverse("admin:events_event_add")).status_code == 403
    assert admin_client.post(reverse("admin:events_event_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert admin_client.post(reverse("admin:events_event_change", args=[event.pk]), {"kind": "x"}).status_code == 403
    assert Event.objects.filter(pk=event.pk, kind=event.kind).exists()
    page = html.fromstring(changelist(admin_client, "events_event").content)
    # The one action exports; nothing deletes or adds.
    assert page.xpath("//select[@name='action']/option/@value") == ["", "export_csv"]
    assert not page.xpath(f"//a[@href='{reverse('admin:events_event_add')}']")
    assert admin_client.get(reverse("admin:events_site_add")).status_code == 403
    assert admin_client.get(reverse("admin:ingest_rawbatch_add")).status_code == 403


def bars(content: bytes) -> dict[str, tuple[float, float]]:
    svg = html.fromstring(content.decode()).xpath("//svg[@id='site-chart']")
    assert len(svg) == 1
    return {
        g.get("data-site"): (
            float(g.xpath(".//rect[@class='chats']")[0].get("width")),
            float(g.xpath(".//rect[@class='emails']")[0].get("width")),
        )
        for g in svg[0].xpath(".//g[@class='bar']")
    }


def test_chart_bars_are_proportional_to_the_counts(admin_client, data):
    expected = {s: r for s, r in expected_rows(data / "chat/small.expected").items()}
    listing = changelist(admin_client, "reports_sitesummary").content.decode()
    chart_url = reverse("admin:reports_sitesummary_chart")
    assert chart_url in listing
    response = admin_client.get(chart_url)
    assert response.status_code == 200
    drawn = bars(response.content)
    # edge.jsonl adds its own sites; every site with a summary is drawn.
    assert set(drawn) == set(SiteSummary.objects.values_list("site_id", flat=True))
    assert set(expected) <= set(drawn)
    scale = drawn["site-0"][0] / expected["site-0"]["messages"]
    for site, row in expected.items():
        chats, emails = drawn[site]
        assert chats == pytest.approx(row["messages"] * scale, abs=0.01), site
        assert emails == pytest.approx(row["emails"] * scale, abs=0.01), site
    # Drawn on the server: the page's own content has no script (the admin's theme switch aside).
    assert html.fromstring(response.content.decode()).xpath("//div[@id='content-main']//script") == []


def test_chart_shows_the_top_sites(admin_client, data):
    drawn = bars(admin_client.get(reverse("admin:reports_sitesummary_chart"), {"top": "2"}).content)
    assert set(drawn) == {"site-0", "931"}  # 587 and 319 messages: the two busiest


def test_chart_needs_the_view_permission(client, django_user_model, data):
    user = django_user_model.objects.create_user("analyst", password="pw", is_staff=True)
    client.force_login(user)
    url = reverse("admin:reports_sitesummary_chart")
    assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_sitesummary"))
    assert client.get(url).status_code == 200


def test_revoke_action(admin_client, db):
    keep, revoke = (Application.objects.create(name=n, key_prefix=n, key_hash="0" * 64) for n in ("keep", "gone"))
    response = admin_client.post(
        reverse("admin:ingest_application_changelist"),
        {"action": "revoke", "_selected_action": [revoke.pk]},
        follow=True,
    )
    assert "Revoked 1 app" in response.content.decode()
    revoke.refresh_from_db()
    keep.refresh_from_db()
    assert revoke.revoked_at is not None and keep.revoked_at is None


def test_creating_an_app_shows_its_key_once_and_stores_its_hash(admin_client, db):
    response = admin_client.post(reverse("admin:ingest_application_add"), {"name": "website"}, follow=True)
    assert response.status_code == 200
    keys = re.findall(r"sb_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}", response.content.decode())
    assert len(set(keys)) == 1
    key = keys[0]
    app = Application.objects.get(name="website")
    assert app.key_prefix == key[3:11]
    assert app.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (app.name, app.key_prefix, app.key_hash)
    again = admin_client.get(reverse("admin:ingest_application_change", args=[app.pk])).content.decode()
    assert key not in again and app.key_prefix in again
    assert key not in admin_client.get(reverse("admin:ingest_application_changelist")).content.decode()


def test_rejections_by_source_and_reason(admin_client, data):
    rejected = Rejection.objects.count()
    assert rejected > 0
    assert changelist(admin_client, "ingest_rejection", source="file").context["cl"].result_count == rejected
    assert changelist(admin_client, "ingest_rejection", source="api").context["cl"].result_count == 0
    reason = Rejection.objects.order_by("id").values_list("reason", flat=True).first()
    word = reason.split()[0]
    matching = Rejection.objects.filter(reason__icontains=word).count()
    assert changelist(admin_client, "ingest_rejection", q=word).context["cl"].result_count == matching
    batch = Rejection.objects.order_by("id").first().batch
    listing = changelist(admin_client, "ingest_rawbatch", status="done").content.decode()
    assert f"batch__id__exact={batch.pk}" in listing
    cl = changelist(admin_client, "ingest_rejection", batch__id__exact=str(batch.pk)).context["cl"]
    assert cl.result_count == batch.rejections.count()


def test_site_links_to_its_events(admin_client, data):
    page = changelist(admin_client, "events_site").content.decode()
    assert reverse("admin:events_event_changelist") + "?site=site-0" in page
    assert Site.objects.count() > 0
