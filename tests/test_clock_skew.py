"""Client clocks (SPEC §10, events/clock.py): a record sent with its client's send time is
placed at `received_at - (sentAt - timestamp)`, keeping the timestamp as sent; a clock more
than 23 h ahead is refused with a reason; records without a send time are taken as given.

Batches go through the outbox and the worker's drain (in process, on the test database:
SQLite or PostgreSQL), the header through the HTTP path, and the client library through
gunicorn and a Celery worker. Summaries are compared with the independent oracle
(tests/chat_oracle.py) fed the placed records.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

import orjson
import pytest
from django.core.management import call_command
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from events import clock
from events.clock import MAX_CLOCK_AHEAD_SECONDS, Receipt
from events.models import Event, EventIdentity
from events.registry import Invalid
from ingest.batches import drain, receive_batch
from ingest.keys import create_application
from ingest.models import RawBatch, Rejection
from ingest.records import Chunk, validate_into
from ingest.store import COPY_THRESHOLD
from reports.site_summary import summary_rows
from tests import chat_oracle

pytestmark = pytest.mark.django_db

MINUTE = 60.0
HOUR = 3600.0
SESSION = "e2085be5-9137-4e4e-80b5-f1ffddc25423"


def chat(uid: str, kind: str, actor: str, ts: float, *, site: str = "skew", online: bool = True, **extra) -> dict:
    data = {"message": "hi"} if kind == "message" else {"status": "online" if online else "offline"}
    return {"id": uid, "type": kind, "from": actor, "site_id": site, "data": data, "timestamp": ts, **extra}


def ndjson(records: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.fixture
def app_and_key(db: None):
    return create_application("skewed-app")


@pytest.fixture
def app(app_and_key):
    return app_and_key[0]


def post(app, records: list[dict], sent_at: float | None = None) -> RawBatch:
    header = None if sent_at is None else datetime.fromtimestamp(sent_at, UTC)
    return receive_batch(app, ndjson(records), "application/x-ndjson", "", len(records), header)


def processed(*batches: RawBatch) -> list[RawBatch]:
    drain()
    done = [RawBatch.objects.get(pk=b.pk) for b in batches]
    assert all(b.status == RawBatch.Status.DONE for b in done), [(b.status, b.last_error) for b in done]
    return done


def received(batch: RawBatch) -> float:
    return batch.created_at.timestamp()


def reasons(batch: RawBatch) -> list[str]:
    return list(Rejection.objects.filter(batch=batch).order_by("line").values_list("reason", flat=True))


def classic() -> list[str]:
    return [row.classic() for row in summary_rows()]


@pytest.mark.parametrize("skew", [-7 * MINUTE, 9 * MINUTE, -3 * 24 * HOUR, 22 * HOUR])
def test_a_skewed_clock_is_placed_by_the_servers_receive_time(app, skew):
    """Each record is placed at received_at - (sentAt - timestamp) and keeps its timestamp as sent."""
    now = time.time()
    records = [
        chat("s1", "status", "op", now - 30 * MINUTE + skew, sentAt=now + skew),
        chat("m1", "message", "v", now - 10 * MINUTE + skew + 0.25, sentAt=now + skew),
        chat("m2", "message", "v", now + skew, sentAt=now + skew),  # sent at once
    ]
    [batch] = processed(post(app, records))

    assert batch.accepted == 3 and batch.rejected == 0
    for record in records:
        event = Event.objects.get(uid=record["id"])
        assert event.ts == received(batch) - (record["sentAt"] - record["timestamp"])
        assert event.client_timestamp == record["timestamp"]
        assert abs(event.ts - (record["timestamp"] - skew)) < 5  # the true time, but for the transit
        assert Event.objects.get(uid=record["id"]).raw == orjson.dumps(record).decode()  # stored as sent


def operator_window_and_skewed_visitors(now: float) -> tuple[list[dict], list[dict]]:
    """An operator with a right clock is online from now-20 min to now-10 min. Visitor A's
    clock is 8 minutes ahead: its message written at now-15 min (in the window) says
    now-7 min. Visitor B's is 8 minutes behind: its message written at now-5 min (after
    the window) says now-13 min. By their timestamps A's is an e-mail and B's a chat;
    by their corrected times it is the other way round."""
    operator = [
        chat("on", "status", "op", now - 20 * MINUTE),
        chat("off", "status", "op", now - 10 * MINUTE, online=False),
    ]
    ahead, behind = 8 * MINUTE, -8 * MINUTE
    visitors = [
        chat("a", "message", "visitor-a", now - 15 * MINUTE + ahead, sentAt=now + ahead),
        chat("b", "message", "visitor-b", now - 5 * MINUTE + behind, sentAt=now + behind),
    ]
    return operator, visitors


def test_an_operators_online_window_classifies_messages_by_their_corrected_time(app):
    now = time.time()
    operator, visitors = operator_window_and_skewed_visitors(now)
    statuses, messages = processed(post(app, operator), post(app, visitors))

    placed = operator + [chat_oracle.placed(r, received(messages)) for r in visitors]
    expected = chat_oracle.summary_lines(chat_oracle.read_values(placed, received(messages)).accepted)
    as_given = chat_oracle.summary_lines(chat_oracle.read_values(operator + visitors, now).accepted)
    assert classic() == expected == ["skew,messages=1,emails=1,operators=1,visitors=2"]
    assert as_given == expected  # one chat and one e-mail either way, but not the same ones:
    event_a, event_b = Event.objects.get(uid="a"), Event.objects.get(uid="b")
    on, off = Event.objects.get(uid="on").ts, Event.objects.get(uid="off").ts
    assert on <= event_a.ts < off and not on <= event_a.client_timestamp < off  # a chat, sent as an e-mail
    assert not on <= event_b.ts < off and on <= event_b.client_timestamp < off  # an e-mail, sent as a chat


def test_a_late_status_reclassifies_corrected_messages(app):
    """Summary upkeep uses the placed times: a status arriving after the messages moves them."""
    now = time.time()
    ahead = 6 * MINUTE
    messages = [
        chat(f"m{i}", "message", "v", now - (30 - i) * MINUTE + ahead, sentAt=now + ahead) for i in range(0, 30, 4)
    ]
    first = processed(post(app, messages))[0]
    window = [
        chat("on", "status", "op", now - 25 * MINUTE),
        chat("off", "status", "op", now - 18 * MINUTE, online=False),
    ]
    processed(post(app, window))

    placed = [chat_oracle.placed(r, received(first)) for r in messages] + window
    assert classic() == chat_oracle.summary_lines(chat_oracle.read_values(placed, time.time()).accepted)
    as_given = chat_oracle.summary_lines(chat_oracle.read_values(messages + window, time.time()).accepted)
    assert classic() == ["skew,messages=1,emails=7,operators=1,visitors=1"]  # -22 min: in [-25, -18)
    assert as_given == ["skew,messages=2,emails=6,operators=1,visitors=1"]  # -24 and -20 min as sent


def test_the_batch_header_places_records_without_their_own_send_time(app_and_key):
    app, key = app_and_key
    now = time.time()
    skew = -11 * MINUTE
    records = [
        chat("h1", "message", "v", now - MINUTE + skew),
        chat("h2", "message", "v", now - 2 * MINUTE + skew, sentAt=now + 3 * MINUTE),  # its own wins
    ]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.post(
        "/api/events/", ndjson(records), content_type="application/x-ndjson", HTTP_X_SENT_AT=f"{now + skew:.6f}"
    )
    assert response.status_code == 202, response.content
    [batch] = processed(RawBatch.objects.get(pk=response.json()["batch_id"]))

    assert batch.sent_at.timestamp() == pytest.approx(now + skew, abs=1e-6)
    h1, h2 = Event.objects.get(uid="h1"), Event.objects.get(uid="h2")
    assert h1.ts == received(batch) - (batch.sent_at.timestamp() - records[0]["timestamp"])
    assert h2.ts == received(batch) - (records[1]["sentAt"] - records[1]["timestamp"])
    assert (h1.client_timestamp, h2.client_timestamp) == (records[0]["timestamp"], records[1]["timestamp"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2026-12-04T15:00:00+01:00", datetime(2026, 12, 4, 14, tzinfo=UTC)),
        ("2026-12-04 15:00:00.250", datetime(2026, 12, 4, 15, 0, 0, 250000, tzinfo=UTC)),  # naive: UTC
        ("1796396400", datetime.fromtimestamp(1796396400, UTC)),
        (" 1796396400.5 ", datetime.fromtimestamp(1796396400.5, UTC)),
    ],
)
def test_the_header_takes_epoch_seconds_or_iso_8601(app_and_key, header, expected):
    app, key = app_and_key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.post("/api/events/", b"{}", content_type="application/json", HTTP_X_SENT_AT=header)
    assert response.status_code == 202, response.content
    assert RawBatch.objects.get(pk=response.json()["batch_id"]).sent_at == expected


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("yesterday", "'X-Sent-At' 'yesterday' is not ISO 8601"),
        ("-5", "'X-Sent-At' must not be before 1970"),
        ("nan", "'X-Sent-At' must be finite"),
        ("1e300", "invalid X-Sent-At header: "),
    ],
)
def test_an_invalid_header_is_refused_before_anything_is_stored(app_and_key, header, why):
    app, key = app_and_key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.post("/api/events/", b"{}", content_type="application/json", HTTP_X_SENT_AT=header)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid X-Sent-At header: ") and why in response.json()["detail"]
    assert not RawBatch.objects.exists()


def test_a_clock_more_than_23_hours_ahead_is_refused_with_a_reason(app):
    now = time.time()
    day, late = 24 * HOUR, now - 2 * MINUTE  # `late`: a clock two minutes behind
    records = [
        chat("ahead", "message", "v", now + day - MINUTE, sentAt=now + day),  # the whole clock is a day ahead
        chat("stamp", "message", "v", now + day, sentAt=late),  # a timestamp a day ahead of its send time
        chat("after", "message", "v", late + 6 * MINUTE, sentAt=late),  # written after it was sent
        chat("edge", "message", "v", now + 22 * HOUR - MINUTE, sentAt=now + 22 * HOUR),  # 22 h: corrected
    ]
    [batch] = processed(post(app, records))

    assert list(Event.objects.values_list("uid", flat=True)) == ["edge"]
    ahead, stamp, after = reasons(batch)
    assert "is more than 23 h ahead of the server's receipt" in ahead and ahead.startswith("send time ")
    assert "a client clock this far ahead is refused, not corrected" in ahead
    assert stamp.startswith(f"timestamp {now + day:.3f} is more than 23 h ahead of the server's receipt")
    assert after == (
        f"timestamp {late + 6 * MINUTE:.3f} is more than 300s after its send time {late:.3f}, "
        "so in the future once corrected for the client's clock"
    )
    # The oracle agrees on each.
    for record, accepted in zip(records, [False, False, False, True], strict=True):
        try:
            chat_oracle.check(chat_oracle.placed(record, received(batch)), received(batch))
        except chat_oracle.Rejected:
            assert not accepted, record["id"]
        else:
            assert accepted, record["id"]


def test_a_batch_header_more_than_23_hours_ahead_refuses_the_records_that_rely_on_it(app):
    now = time.time()
    records = [chat("x", "message", "v", now + 30 * HOUR), chat("y", "message", "v", now - HOUR, sentAt=now - HOUR)]
    [batch] = processed(post(app, records, sent_at=now + 30 * HOUR))

    assert list(Event.objects.values_list("uid", flat=True)) == ["y"]
    assert reasons(batch)[0].startswith("send time ") and "more than 23 h ahead" in reasons(batch)[0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "'sentAt' must be epoch seconds (a number) or an ISO 8601 string, got a boolean"),
        ("soon", "'sentAt' 'soon' is not ISO 8601"),
        (-1, "'sentAt' must not be before 1970"),
        ("1969-12-31T23:59:59Z", "'sentAt' must not be before 1970"),
        ([], "'sentAt' must be epoch seconds (a number) or an ISO 8601 string, got an array"),
        ({"at": 1}, "'sentAt' must be epoch seconds (a number) or an ISO 8601 string, got an object"),
    ],
)
def test_an_invalid_send_time_rejects_its_record_with_a_reason(app, value, reason):
    now = time.time()
    [batch] = processed(post(app, [chat("bad", "message", "v", now, sentAt=value), chat("ok", "message", "v", now)]))

    assert reasons(batch) == [reason]
    assert list(Event.objects.values_list("uid", "client_timestamp")) == [("ok", None)]


def test_records_without_a_send_time_are_taken_as_given(app):
    now = time.time()
    records = [chat("plain", "message", "v", now - HOUR), chat("future", "message", "v", now + 301)]
    [batch] = processed(post(app, records))

    event = Event.objects.get(uid="plain")
    assert (event.ts, event.client_timestamp) == (records[0]["timestamp"], None)
    assert reasons(batch) == [f"timestamp {now + 301:.3f} is more than 300s in the future"]


def test_a_skew_within_the_tolerance_is_taken_as_given(app):
    """Ten seconds (CLOCK_SKEW_TOLERANCE_SECONDS) is mostly the request's transit, not the clock."""
    now = time.time()
    records = [
        chat("near", "message", "v", now - MINUTE, sentAt=now - 5),
        chat("far", "message", "v", now - MINUTE, sentAt=now - 15),
        chat("near-future", "message", "v", now + 301, sentAt=now + 5),  # the classic future rule
    ]
    [batch] = processed(post(app, records))

    near, far = Event.objects.get(uid="near"), Event.objects.get(uid="far")
    assert (near.ts, near.client_timestamp) == (now - MINUTE, None)
    assert (far.ts, far.client_timestamp) == (received(batch) - (now - 15 - (now - MINUTE)), now - MINUTE)
    assert reasons(batch) == [f"timestamp {now + 301:.3f} is more than 300s in the future"]


def test_null_send_time_is_no_send_time(app):
    now = time.time()
    processed(post(app, [chat("n", "message", "v", now - HOUR, sentAt=None)]))
    assert list(Event.objects.values_list("ts", "client_timestamp")) == [(now - HOUR, None)]


def interaction(timestamp: str, **extra) -> dict:
    return {
        "session_id": SESSION, "category": "page interaction", "name": "pageview",
        "data": {"host": "www.example.com", "path": "/"}, "timestamp": timestamp, **extra,
    }  # fmt: skip


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def test_interaction_and_xmpp_records_are_placed_the_same_way(app):
    now = round(time.time(), 3)
    skew = 13 * MINUTE
    page = interaction(iso(now - MINUTE + skew), sentAt=datetime.fromtimestamp(now + skew, UTC).isoformat())
    room = {
        "id": "x1", "timestamp": now - 2 * MINUTE + skew, "sentAt": now + skew, "room_id": "r1",
        "event": "muc-occupant-joined", "nick": "n", "channel": "c", "meta": {}, "stanza": None,
    }  # fmt: skip
    [batch] = processed(post(app, [page, room]))

    assert batch.accepted == 2, reasons(batch)
    page_event, room_event = Event.objects.get(family="interaction"), Event.objects.get(uid="x1")
    page_sent = datetime.fromisoformat(page["sentAt"]).timestamp()
    page_ts = datetime.fromisoformat(page["timestamp"]).replace(tzinfo=UTC).timestamp()
    assert page_event.client_timestamp == pytest.approx(page_ts, abs=1e-6)
    assert page_event.ts == pytest.approx(received(batch) - (page_sent - page_ts), abs=1e-6)
    assert room_event.ts == received(batch) - (room["sentAt"] - room["timestamp"])


def test_an_id_less_record_resent_with_a_new_send_time_is_a_duplicate(app):
    """`sentAt` is transport, not content: a retry stamped anew is the same event."""
    now = time.time()
    first = interaction(iso(now - 2 * HOUR), sentAt=now - HOUR)
    again = {**first, "sentAt": now - HOUR + 30}
    without = {k: v for k, v in first.items() if k != "sentAt"}
    done = processed(post(app, [first]), post(app, [again]), post(app, [without]))

    assert [(b.accepted, b.duplicates) for b in done] == [(1, 0), (0, 1), (0, 1)]


def test_a_large_group_stores_placed_times_and_client_timestamps(app):
    """Over COPY_THRESHOLD events the store COPYs on PostgreSQL (multi-row INSERTs on SQLite):
    the corrected time and the original go with it, and records without a send time keep NULL."""
    now = time.time()
    skew = 4 * MINUTE
    records = [chat(f"c{i:05}", "message", "v", now - i + skew, sentAt=now + skew) for i in range(COPY_THRESHOLD)]
    plain = [chat(f"p{i:05}", "message", "v", now - i) for i in range(COPY_THRESHOLD)]
    batch, plain_batch = processed(post(app, records), post(app, plain))

    assert batch.accepted == plain_batch.accepted == COPY_THRESHOLD
    stored = dict(Event.objects.filter(uid__startswith="c").values_list("uid", "ts"))
    assert stored == {r["id"]: received(batch) - (r["sentAt"] - r["timestamp"]) for r in records}
    assert not Event.objects.filter(uid__startswith="p", client_timestamp__isnull=False).exists()
    assert dict(Event.objects.filter(uid__startswith="p").values_list("uid", "ts")) == {
        r["id"]: r["timestamp"] for r in plain
    }


def test_an_import_places_only_records_that_bring_both_times(tmp_path):
    now = time.time()
    skew = -17 * MINUTE
    path = tmp_path / "logged.jsonl"
    records = [
        chat("both", "message", "v", now - HOUR + skew, sentAt=now - 50 * MINUTE + skew, receivedAt=now - 50 * MINUTE),
        chat("sent", "message", "v", now - HOUR + skew, sentAt=now - 50 * MINUTE + skew),  # no receive time
        chat("iso", "message", "v", 1_600_000_000, sentAt="2020-09-13T12:26:40Z", receivedAt="2020-09-13T12:30:00Z"),
        chat("bad", "message", "v", now - HOUR, sentAt=now, receivedAt="later"),
    ]
    path.write_bytes(ndjson(records))
    call_command("import_jsonl", str(path), stdout=io.StringIO(), stderr=io.StringIO())

    both, sent, iso_event = (Event.objects.get(uid=u) for u in ("both", "sent", "iso"))
    assert both.ts == records[0]["receivedAt"] - (records[0]["sentAt"] - records[0]["timestamp"])
    assert both.client_timestamp == records[0]["timestamp"]
    assert (sent.ts, sent.client_timestamp) == (records[1]["timestamp"], None)
    assert (iso_event.ts, iso_event.client_timestamp) == (1_600_000_000 + 200.0, 1_600_000_000.0)
    assert list(Rejection.objects.values_list("reason", flat=True)) == ["'receivedAt' 'later' is not ISO 8601"]


def test_event_pages_show_the_timestamp_as_sent(app, analyst_token, admin_client):
    now = time.time()
    skew = 5 * MINUTE
    processed(
        post(
            app, [chat("e", "message", "v", now - MINUTE + skew, sentAt=now + skew), chat("g", "message", "v", now - 2)]
        )
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {analyst_token}")
    events = {e["id"]: e for e in client.get("/api/events/", {"site": "skew"}).json()["results"]}

    assert events["e"]["client_epoch"] == now - MINUTE + skew
    assert events["e"]["epoch"] == Event.objects.get(uid="e").ts != events["e"]["client_epoch"]
    assert events["g"]["client_epoch"] is None
    page = admin_client.get(reverse("admin:events_event_change", args=[Event.objects.get(uid="e").pk])).content
    sent = datetime.fromtimestamp(now - MINUTE + skew, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    assert b"Time as the client sent it (UTC)" in page and sent.encode() in page


# -- the rule against the oracle, on random clocks ---------------------------------------------

RECEIVED = 1_800_000_000.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    skew=st.one_of(st.floats(-10 * 24 * HOUR, 30 * HOUR), st.floats(-20, 20)),
    age=st.floats(-400, 30 * 24 * HOUR, allow_nan=False),
    header=st.booleans(),
)
def test_placing_agrees_with_the_oracle_on_random_clocks(skew, age, header):
    """A record written `age` seconds before it was sent by a clock `skew` seconds off: accepted
    and placed exactly as the oracle places it, or refused exactly when the oracle refuses it."""
    sent = RECEIVED + skew
    record = chat("r", "message", "v", sent - age, **({} if header else {"sentAt": sent}))
    raw = orjson.dumps(record)
    chunk = validate_into(Chunk(), [(1, raw, len(raw))], RECEIVED, Receipt(RECEIVED, sent if header else None))
    try:
        expected = chat_oracle.check(chat_oracle.placed(record, RECEIVED, sent if header else None), RECEIVED)
    except chat_oracle.Rejected:
        assert not chunk.events, (skew, age)
        assert chunk.rejections[0].reason
    else:
        [(_, event)] = chunk.events
        corrected = abs(skew) > chat_oracle.SKEW_TOLERANCE
        assert (event.ts, event.client_ts) == (expected.ts, record["timestamp"] if corrected else None)
    refused = skew > MAX_CLOCK_AHEAD_SECONDS or sent - age - RECEIVED > MAX_CLOCK_AHEAD_SECONDS
    if refused:
        assert not chunk.events


def test_the_module_refuses_what_it_cannot_read():
    from events.clock import epoch_of, header_epoch

    assert header_epoch("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    with pytest.raises(Invalid, match="must be finite"):
        epoch_of(float("inf"), "sentAt")


def test_export_then_import_places_records_at_the_same_times(app, tmp_path):
    """`export_events` adds the times a record was placed by; `import_jsonl` places it the same."""
    now = time.time()
    skew = -9 * MINUTE
    own = [chat(f"o{i}", "message", "v", now - i * MINUTE + skew, sentAt=now + skew) for i in range(3)]
    by_header = [chat(f"h{i}", "status", "op", now - i * MINUTE + skew, online=i % 2 == 0) for i in range(3)]
    page = interaction(iso(now - HOUR + skew), sentAt=now + skew)  # no id: its identity must not move
    plain = [chat("p", "message", "v", now - HOUR)]
    processed(post(app, [*own, page]), post(app, by_header, sent_at=now + skew), post(app, plain))
    before = set(Event.objects.values_list("uid", "ts", "client_timestamp"))
    assert sum(client is not None for _, _, client in before) == 7

    out = io.StringIO()
    call_command("export_events", stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    exported = {orjson.loads(line).get("id"): line for line in lines}
    assert exported["p"] == Event.objects.get(uid="p").raw  # taken as given: byte for byte
    assert exported["o0"].startswith(Event.objects.get(uid="o0").raw[:-1] + ',"receivedAt":')
    assert '"sentAt":' in exported["h0"].split('"receivedAt":')[1]  # the batch's send time, added
    path = tmp_path / "events.jsonl"
    path.write_text(out.getvalue())
    Event.objects.all().delete()
    EventIdentity.objects.all().delete()  # an empty store: the events and their ids' registry
    call_command("import_jsonl", str(path), stdout=io.StringIO(), stderr=io.StringIO())

    assert set(Event.objects.values_list("uid", "ts", "client_timestamp")) == before
    again = io.StringIO()
    call_command("export_events", stdout=again, stderr=io.StringIO())
    assert again.getvalue() == out.getvalue()  # and exported again, the same lines


@pytest.mark.django_db
@pytest.mark.parametrize("received_at", ["ten years ahead", 1e12, 1e300, "9999-12-31T23:59:59.999999-23:59"])
def test_an_imported_receive_time_in_the_future_is_refused_not_stored(received_at):
    now = time.time()
    if received_at == "ten years ahead":  # computed here: pytest-xdist's workers must collect the same ids
        received_at = now + 10 * 365 * 86400
    record = {"id": "far", "type": "message", "from": "a", "site_id": "s", "data": {"message": "hi"},
              "timestamp": now - 3600, "sentAt": now - 3600, "receivedAt": received_at}  # fmt: skip
    with pytest.raises(Invalid, match="in the future"):
        clock.normalize(record, now, 300.0)
