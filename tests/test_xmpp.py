"""The xmpp log family (SPEC §2.2) and the room summary (SPEC §4)."""

from __future__ import annotations

import importlib
import io
import json
import random
import threading
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections, transaction
from django.urls import NoReverseMatch, clear_url_caches, reverse

from events.models import Event, Stanza
from events.registry import Invalid, normalize
from events.stanza import stanza_fields
from ingest.models import ImportJob, RawBatch
from ingest.records import validate_values
from ingest.store import StoreResult, store_chunk
from reports import room_summary
from reports.models import RoomSummary

NOW = time.time()


def expected_lines(sample_data) -> tuple[list[str], str]:
    rooms = (sample_data / "xmpp" / "chatid_sample.rooms.expected").read_text().splitlines()
    totals = (sample_data / "xmpp" / "chatid_sample.totals.expected").read_text().strip()
    return rooms, totals


def sample(sample_data) -> list[dict]:
    return json.loads((sample_data / "xmpp" / "chatid_sample.json").read_text())


def store_values(values: list[object]) -> StoreResult:
    """The worker path for one API batch: validate, then store in one transaction."""
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    with transaction.atomic():
        return store_chunk(batch, validate_values(values, time.time()))


def classic_rows() -> list[str]:
    return [row.classic() for row in room_summary.room_rows()]


def xmpp_record(**fields: object) -> dict:
    record = {
        "id": "e1",
        "timestamp": 1412207958.0039,
        "room_id": "room-1",
        "channel": "chatid.qa",
        "event": "muc-broadcast-message",
        "nick": "Matt",
        "meta": {},
        "stanza": "<message type='groupchat'><body>hi</body></message>",
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


# -- the sample, end to end --------------------------------------------------


@pytest.mark.django_db
def test_import_of_the_sample_gives_the_expected_rooms_and_totals(sample_data):
    call_command("import_jsonl", str(sample_data / "xmpp" / "chatid_sample.json"), stderr=io.StringIO())
    rooms, totals = expected_lines(sample_data)

    out = io.StringIO()
    call_command("room_summary", stdout=out)
    assert out.getvalue().splitlines() == [*rooms, totals]
    assert classic_rows() == rooms
    assert room_summary.room_totals().classic() == totals
    job = ImportJob.objects.get()
    assert (job.accepted, job.duplicates, job.rejected) == (340, 0, 0)
    assert not RoomSummary.objects.filter(stale=True).exists()


def test_room_summary_command_in_a_child_process(sample_data, manage):
    imported = manage("import_jsonl", str(sample_data / "xmpp" / "chatid_sample.json"))
    assert imported.returncode == 0, imported.stderr
    result = manage("room_summary")
    assert result.returncode == 0, result.stderr
    rooms, totals = expected_lines(sample_data)
    assert result.stdout.splitlines() == [*rooms, totals]


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_worker_path_in_shuffled_batches_with_repeats(sample_data, seed):
    records = sample(sample_data)
    rng = random.Random(seed)
    stream = records + rng.sample(records, 120)  # every resend must count once
    rng.shuffle(stream)
    accepted = duplicates = 0
    while stream:
        size = rng.randint(1, 60)
        batch, stream = stream[:size], stream[size:]
        result = store_values(batch)
        accepted += result.accepted
        duplicates += result.duplicates
    rooms, totals = expected_lines(sample_data)
    assert (accepted, duplicates) == (340, 120)
    assert classic_rows() == rooms
    assert room_summary.room_totals().classic() == totals


@pytest.mark.django_db
def test_incremental_rows_equal_a_full_rebuild(sample_data):
    records = sample(sample_data)
    for i in range(0, len(records), 37):
        store_values(records[i : i + 37])
    incremental = classic_rows()
    RoomSummary.objects.all().delete()
    assert room_summary.rebuild_all_rooms() == 19
    assert classic_rows() == incremental == expected_lines(sample_data)[0]


@pytest.mark.django_db
def test_bulk_path_marks_rooms_stale_until_the_rebuild(sample_data):
    records = sample(sample_data)
    batch = RawBatch.objects.create(source="file", status=RawBatch.Status.PROCESSING)
    with transaction.atomic():
        store_chunk(batch, validate_values(records, time.time()), defer_summaries=True)
    assert RoomSummary.objects.filter(stale=True).count() == 19
    assert room_summary.room_totals().stale_rooms == 19
    assert room_summary.rebuild_stale_rooms() == 19
    assert classic_rows() == expected_lines(sample_data)[0]
    assert room_summary.room_totals().stale_rooms == 0


@pytest.mark.django_db
def test_a_late_event_updates_its_room_only():
    store_values(
        [
            xmpp_record(id="a", timestamp=10.0, nick="Ann"),
            xmpp_record(id="b", timestamp=20.0, room_id="room-2", nick="Bob"),
        ]
    )
    composing = "<message type='groupchat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    store_values([xmpp_record(id="c", timestamp=5.0, nick="Cid", stanza=composing)])
    assert classic_rows() == [
        "room-1,events=2,messages=1,typing=1,participants=2,first=5.0000,last=10.0000",
        "room-2,events=1,messages=1,typing=0,participants=1,first=20.0000,last=20.0000",
    ]
    assert room_summary.room_totals().classic() == "# rooms=2 events=3 avg_events_per_room=1.50"


@pytest.mark.django_db
def test_no_rooms_gives_a_zero_totals_line():
    out = io.StringIO()
    call_command("room_summary", stdout=out)
    assert out.getvalue() == "# rooms=0 events=0 avg_events_per_room=0.00\n"


# -- stanza fields -------------------------------------------------------------


def test_stanza_fields_of_a_sample_message():
    fields = stanza_fields(
        "<message type='groupchat' from='r@rooms.example.com/Matt' to='r@rooms.example.com'>"
        "<body>Hi there</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    assert fields == {
        "element": "message",
        "type": "groupchat",
        "from_jid": "r@rooms.example.com/Matt",
        "to_jid": "r@rooms.example.com",
        "body": "Hi there",
        "chat_state": "active",
        "unavailable": False,
    }


def test_stanza_in_the_jabber_client_namespace():
    fields = stanza_fields(
        "<message xmlns='jabber:client' type='chat'><body>x &amp; y<!-- c --></body>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    assert (fields["element"], fields["body"], fields["chat_state"]) == ("message", "x & y", "composing")


def test_chat_state_needs_its_namespace():
    assert stanza_fields("<message><composing/></message>")["chat_state"] == ""
    assert stanza_fields("<message><composing xmlns='urn:other'/></message>")["chat_state"] == ""


def test_unavailable_presence():
    assert stanza_fields("<presence type='unavailable' from='a@b/c'/>")["unavailable"] is True
    assert stanza_fields("<presence from='a@b/c'/>")["unavailable"] is False
    assert stanza_fields("<message type='unavailable'/>")["unavailable"] is False


@pytest.mark.django_db
def test_stanza_rows_are_stored_and_nil_stanzas_have_none():
    store_values(
        [
            xmpp_record(id="m"),
            xmpp_record(id="j1", event="muc-occupant-joined", stanza="nil"),
            xmpp_record(id="j2", event="muc-occupant-joined", stanza=None, jid=..., sender=..., meta=...),
        ]
    )
    assert Event.objects.filter(family="xmpp").count() == 3
    stanza = Stanza.objects.get()
    assert (stanza.event.uid, stanza.element, stanza.body) == ("m", "message", "hi")
    event = Event.objects.get(uid="j1")
    assert (event.site_id, event.session, event.actor, event.kind) == (
        "chatid.qa",
        "room-1",
        "Matt",
        "muc-occupant-joined",
    )
    assert event.payload["stanza"] == "nil"


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"id": ...}, "'id' is missing"),
        ({"id": ""}, "'id' must not be empty"),
        ({"room_id": 7}, "'room_id' must be a string, got a number"),
        ({"channel": ""}, "'channel' must not be empty"),
        ({"channel": ...}, "'channel' must be a string, got null"),
        ({"event": None}, "'event' must be a string, got null"),
        ({"timestamp": "1412207958"}, "'timestamp' must be a number of epoch seconds, got a string"),
        ({"timestamp": True}, "'timestamp' must be a number of epoch seconds, got a boolean"),
        ({"timestamp": -1}, "'timestamp' must not be negative"),
        ({"meta": []}, "'meta' must be an object, got an array"),
        ({"nick": 3}, "'nick' must be a string, got a number"),
        ({"jid": {}}, "'jid' must be a string, got an object"),
        ({"sender": False}, "'sender' must be a string, got a boolean"),
        ({"stanza": 12}, "'stanza' must be XML text, null or \"nil\", got a number"),
        ({"stanza": ""}, "'stanza' is not well-formed XML: Document is empty"),
        ({"stanza": "<message><body>hi</message>"}, "'stanza' is not well-formed XML: Opening and ending tag"),
        ({"stanza": "<foo/>"}, "stanza root must be <message>, <presence> or <iq>, got <foo>"),
        ({"stanza": f"<message to='{'x' * 2000}'/>"}, "stanza 'to' attribute is longer than 1024 characters"),
    ],
)
def test_invalid_xmpp_records_are_rejected_with_a_reason(fields, reason):
    with pytest.raises(Invalid) as error:
        normalize(xmpp_record(**fields), NOW)
    assert str(error.value).startswith(reason)


def test_a_valid_record_without_optional_fields_is_accepted():
    event = normalize(xmpp_record(nick=..., jid=..., sender=..., meta=...), NOW)
    assert (event.family, event.actor, event.session, event.site) == ("xmpp", "", "room-1", "chatid.qa")
    assert event.detail["body"] == "hi"


def test_future_xmpp_events_are_rejected():
    with pytest.raises(Invalid, match="in the future"):
        normalize(xmpp_record(timestamp=NOW + 3600), NOW)


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_the_same_rooms_stay_exact(sample_data):
    """Row locks serialize the recomputation of a room, so no batch's events are lost."""
    records = sample(sample_data)
    random.Random(9).shuffle(records)
    parts = [records[i::4] for i in range(4)]
    errors: list[BaseException] = []

    def worker(part: list[dict]) -> None:
        try:
            for i in range(0, len(part), 5):
                store_values(part[i : i + 5])
        except BaseException as error:  # surfaced below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert classic_rows() == expected_lines(sample_data)[0]


@pytest.fixture
def room_admin_urls():
    """The room admin, registered even before reports/admin.py imports it."""
    import reports.admin_rooms  # noqa: F401

    try:
        reverse("admin:reports_roomsummary_changelist")
    except NoReverseMatch:
        importlib.reload(importlib.import_module(settings.ROOT_URLCONF))
        clear_url_caches()


@pytest.mark.django_db
def test_room_admin_lists_rooms_read_only(sample_data, client, django_user_model, room_admin_urls):
    store_values(sample(sample_data)[:40])
    client.force_login(django_user_model.objects.create_superuser("analyst", "a@example.com", "pw"))
    listing = client.get(reverse("admin:reports_roomsummary_changelist"))
    assert listing.status_code == 200
    room = RoomSummary.objects.order_by("room_id").first()
    assert room.room_id in listing.content.decode()
    page = client.get(reverse("admin:reports_roomsummary_change", args=[room.room_id]))
    assert page.status_code == 200
    assert room_summary.room_rows(room.room_id)[0].classic() in page.content.decode()
    assert client.get(reverse("admin:reports_roomsummary_add")).status_code == 403
