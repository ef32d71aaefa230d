"""Hostile identifiers (issue 22 item 2): a control character (a line break above all) in an
id, site, actor, session, room, nick, type or category, or a comma in a site or room, is
rejected with a reason on every path (API and worker, import on SQLite and PostgreSQL's COPY
path, replay); and the line-based outputs (classic lines, CLI, CSV, NDJSON) never print a
forged line, even for values stored before the rule."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import orjson
import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from events.models import Event, Site
from ingest.batches import process_batch
from ingest.models import RawBatch, Rejection
from ingest.rejections import replay
from reports import room_summary, site_summary

NOW = time.time() - 60
FORGED = "victim,messages=1000000,emails=0,operators=0,visitors=0"


def chat(uid: str, **fields: object) -> dict:
    record = {"id": uid, "type": "message", "from": "v1", "site_id": "ok", "data": {"message": "hi"}, "timestamp": NOW}
    return {**record, **fields}


def xmpp(uid: str, **fields: object) -> dict:
    record = {"id": uid, "timestamp": NOW, "room_id": "room1", "channel": "chan", "event": "muc-occupant-joined",
              "nick": "alice", "stanza": None}  # fmt: skip
    return {**record, **fields}


def interaction(**fields: object) -> dict:
    record = {"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction",
              "name": "pageview", "data": {"host": "www.example.com", "path": "/"},
              "timestamp": "2021-01-01 09:15:27.243860"}  # fmt: skip
    data = fields.pop("data", {})
    return {**record, **fields, "data": {**record["data"], **data}}


# (record, the field its reason names); one per identifier of every family, and the separators.
HOSTILE = [
    (chat("c1", site_id=f"zz\n{FORGED}"), "'site_id' contains the control character U+000A"),
    (chat("c2", site_id="zz\r"), "'site_id' contains the control character U+000D"),
    (chat("c3", site_id="zz\u2028victim"), "'site_id' contains the control character U+2028"),
    (chat("c4", site_id="zz\x85victim"), "'site_id' contains the control character U+0085"),
    (chat("c5", site_id=f"zz,{FORGED}"), "'site_id' contains a comma"),
    (chat("c6", **{"from": "eve\nvictim"}), "'from' contains the control character U+000A"),
    (chat("c7\x1b[2J"), "'id' contains the control character U+001B"),
    (chat("c8\x7f"), "'id' contains the control character U+007F"),
    (chat("c9\t"), "'id' contains the control character U+0009"),
    (xmpp("x1", channel="chan\nvictim"), "'channel' contains the control character U+000A"),
    (xmpp("x2", room_id="room\nvictim,events=1"), "'room_id' contains the control character U+000A"),
    (xmpp("x3", room_id="room,events=999"), "'room_id' contains a comma"),
    (xmpp("x4", nick="al\u2029ice"), "'nick' contains the control character U+2029"),
    (xmpp("x5", event="muc-occupant-joined\n"), "'event' contains the control character U+000A"),
    (xmpp("x6\r\n"), "'id' contains the control character U+000D"),
    (interaction(data={"host": "www.example.com\nvictim"}), "'data.host' contains the control character U+000A"),
    (interaction(category="page\ninteraction"), "'category' contains the control character U+000A"),
    (interaction(name="page\x00view"), "NUL"),  # NUL is refused before any family (it cannot be stored)
    (interaction(name="page\x01view"), "'name' contains the control character U+0001"),
    (interaction(id="i\n1"), "'id' contains the control character U+000A"),
]
# Printable look-alikes stay accepted: non-ASCII letters, spaces, a no-break space, a zero-width joiner.
FINE = [chat("f1", site_id="sité ü"), chat("f2", **{"from": "a\u00a0b\u200dc"}), xmpp("f3", nick="bob smith")]


def assert_rejected_with_reasons(rejections: list[tuple[int, str]]) -> None:
    assert len(rejections) == len(HOSTILE)
    for line, reason in rejections:
        assert HOSTILE[line - 1][1] in reason, (line, reason)


def assert_no_forged_line(text: str) -> None:
    lines = text.splitlines()  # Python's idea of a line: \n, \r, \x85, \u2028, … all count
    assert not [line for line in lines if line.startswith("victim")], lines
    assert "\x1b" not in text


@pytest.mark.django_db
def test_the_api_and_the_worker_reject_control_characters_in_identifiers(app_key, analyst_token):
    body = b"".join(orjson.dumps(record) + b"\n" for record, _ in HOSTILE) + b"".join(
        orjson.dumps(r) + b"\n" for r in FINE
    )
    cache.clear()
    response = APIClient().generic(
        "POST", "/api/events/", body, content_type="application/x-ndjson", HTTP_AUTHORIZATION=f"Api-Key {app_key}"
    )
    assert response.status_code == 202

    batch = process_batch(response.json()["batch_id"])

    assert (batch.accepted, batch.rejected) == (len(FINE), len(HOSTILE))
    assert_rejected_with_reasons(list(Rejection.objects.order_by("line").values_list("line", "reason")))
    assert set(Event.objects.values_list("site_id", flat=True)) == {"sité ü", "ok", "chan"}
    analyst = APIClient(HTTP_AUTHORIZATION=f"Token {analyst_token}")
    text = analyst.get("/api/sites/summary/", {"format": "txt"}).content.decode()
    assert text == "ok,messages=0,emails=1,operators=0,visitors=1\nsité ü,messages=0,emails=1,operators=0,visitors=1\n"


@pytest.mark.django_db
def test_a_json_array_body_is_judged_by_the_same_rule(app_key):
    body = orjson.dumps([record for record, _ in HOSTILE])
    cache.clear()
    response = APIClient().generic(
        "POST", "/api/events/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Api-Key {app_key}"
    )

    batch = process_batch(response.json()["batch_id"])

    assert (batch.accepted, batch.rejected) == (0, len(HOSTILE))
    assert_rejected_with_reasons(list(Rejection.objects.values_list("line", "reason")))


@pytest.mark.django_db
@pytest.mark.parametrize("workers", [0, 2])
def test_an_import_rejects_them_on_the_sqlite_and_the_copy_path(tmp_path, workers):
    """On PostgreSQL the chunk goes through the COPY fast path, whose rows are built without escaping
    when nothing needs it: the rule is applied before, in validation."""
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record, _ in HOSTILE))
    with path.open("ab") as file:
        file.writelines(orjson.dumps(record) + b"\n" for record in FINE)
    out = io.StringIO()

    call_command("import_jsonl", str(path), "--summary", "--workers", str(workers), stdout=out, stderr=io.StringIO())

    assert_rejected_with_reasons(list(Rejection.objects.values_list("line", "reason")))
    assert Event.objects.count() == len(FINE)
    assert (
        out.getvalue()
        == "ok,messages=0,emails=1,operators=0,visitors=1\nsité ü,messages=0,emails=1,operators=0,visitors=1\n"
    )


@pytest.mark.django_db
def test_a_replay_keeps_them_rejected():
    """Rejected under another reason (an older rule): today's rules still refuse them."""
    batch = RawBatch.objects.create(source="api", record_count=len(HOSTILE), status=RawBatch.Status.DONE)
    Rejection.objects.bulk_create(
        Rejection(batch=batch, line=i, reason="an older rule", raw=orjson.dumps(record).decode(), complete=True)
        for i, (record, _) in enumerate(HOSTILE, start=1)
        if "NUL" not in _
    )

    result = replay(Rejection.objects.all())

    assert result.accepted == 0 and Event.objects.count() == 0
    assert sum(result.still_rejected.values()) == len(HOSTILE) - 1
    assert any("contains the control character" in rule for rule in result.still_rejected)
    assert any("contains a comma" in rule for rule in result.still_rejected)


def store_unchecked(*events: dict) -> None:
    """Events as another writer (or a version before the rule) stored them: no validation."""
    batch = RawBatch.objects.create(source="legacy", record_count=len(events), status=RawBatch.Status.DONE)
    for line, fields in enumerate(events, start=1):
        Site.objects.get_or_create(code=fields["site_id"])
        Event.objects.create(batch=batch, line=line, raw=orjson.dumps(fields.pop("record", {})).decode(), **fields)


@pytest.mark.django_db
def test_stored_values_never_print_a_forged_line(analyst_token):
    hostile_site, hostile_room = f"zz\n{FORGED}", "room\u2028victim,events=1"
    store_unchecked(
        dict(uid="m1\r\nvictim", family="chat", kind="message", site_id=hostile_site, actor="v\x85x", ts=10.0),
        dict(uid="m2", family="chat", kind="message", site_id=f"yy,{FORGED}", actor="v", ts=11.0),
        dict(uid="s1", family="chat", kind="status", site_id=hostile_site, actor="op\n", ts=5.0, online=True),
        dict(uid="x1", family="xmpp", kind="muc-occupant-joined", site_id="chan", session=hostile_room, actor="a",
             ts=12.0, record={"stanza": None, "note": "a\u2028b\x85c\x9bd"}),
    )  # fmt: skip
    site_summary.rebuild_all_sites()
    room_summary.rebuild_all_rooms()
    analyst = APIClient(HTTP_AUTHORIZATION=f"Token {analyst_token}")

    text = analyst.get("/api/sites/summary/", {"format": "txt"}).content.decode()
    assert text == (
        "yy\\x2cvictim\\x2cmessages=1000000\\x2cemails=0\\x2coperators=0\\x2cvisitors=0,messages=0,emails=1,operators=0,visitors=1\n"
        "zz\\nvictim\\x2cmessages=1000000\\x2cemails=0\\x2coperators=0\\x2cvisitors=0,messages=1,emails=0,operators=1,visitors=1\n"
    )
    one = analyst.get(f"/api/sites/{'zz%0A' + FORGED.replace(',', '%2C')}/summary/", {"format": "txt"})
    assert one.status_code == 200 and one.content.decode().count("\n") == 1
    cli = io.StringIO()
    call_command("site_summary", stdout=cli)
    assert cli.getvalue() == text
    rooms = io.StringIO()
    call_command("room_summary", stdout=rooms)
    rooms_text = analyst.get("/api/rooms/summary/", {"format": "txt"}).content.decode()
    for output in (text, rooms.getvalue(), rooms_text):
        assert_no_forged_line(output)
    assert rooms_text.splitlines()[0].startswith("room\\u2028victim\\x2cevents=1,events=1,")
    assert len(rooms_text.splitlines()) == 2

    for path, rows in (("/api/sites/summary/", 2), ("/api/rooms/summary/", 1), ("/api/events/", 4)):
        body = b"".join(analyst.get(path, {"format": "csv"}).streaming_content).decode()
        assert_no_forged_line(body)
        assert len(body.splitlines()) == rows + 1, body  # the header, one line per row
        assert len(list(csv.reader(io.StringIO(body)))) == rows + 1
    events = list(
        csv.DictReader(io.StringIO(b"".join(analyst.get("/api/events/", {"format": "csv"}).streaming_content).decode()))
    )
    payload = next(e["payload"] for e in events if e["id"] == "x1")
    assert orjson.loads(payload)["note"] == "a\u2028b\x85c\x9bd"  # escaped in the JSON text: the same value
    assert "\u2028" not in payload and "\x85" not in payload

    out = io.StringIO()
    call_command("export_events", stdout=out, stderr=io.StringIO())
    exported = out.getvalue()
    assert len(exported.splitlines()) == 4
    assert orjson.loads(exported.splitlines()[-1])["note"] == "a\u2028b\x85c\x9bd"


def test_printable_look_alikes_are_still_accepted():
    from events.registry import normalize

    for record in FINE:
        assert normalize(record, time.time())


def test_no_sample_file_holds_a_refused_identifier(sample_data: Path):
    """The rule changes none of the reference results (SPEC §9): every sample still gives its expected file."""
    from events.registry import Invalid, normalize

    for name in ("chat/edge.jsonl", "chat/mixed.jsonl", "chat/small.jsonl", "interactions/eye_sample.jsonl"):
        for raw in (sample_data / name).read_bytes().splitlines():
            try:
                normalize(orjson.loads(raw.strip().removeprefix(b"\xef\xbb\xbf")), time.time())
            except (Invalid, orjson.JSONDecodeError) as error:
                assert "control character" not in str(error) and "comma" not in str(error), (name, raw)
    for record in orjson.loads((sample_data / "xmpp/chatid_sample.json").read_bytes()):
        normalize(record, time.time())


@pytest.mark.django_db
def test_a_room_named_like_the_totals_line_does_not_print_a_second_one(analyst_token, tmp_path):
    """Issue 22 item 2, second look: the room lines end with the totals line "# rooms=N events=N
    avg_events_per_room=F"; a room id (an xmpp `room_id`, any printable text without a comma)
    written as that printed a line a reader takes for the totals. A leading '#' is escaped."""
    forged = "# rooms=1 events=1000000 avg_events_per_room=1000000.00"
    record = {"id": "x1", "timestamp": NOW, "room_id": forged, "channel": "chan", "event": "muc-occupant-joined",
              "nick": "n", "stanza": None}  # fmt: skip
    path = tmp_path / "rooms.jsonl"
    path.write_bytes(orjson.dumps(record) + b"\n")
    call_command("import_jsonl", str(path), stderr=io.StringIO())  # valid: the rule allows the name
    room_summary.rebuild_all_rooms()
    cli = io.StringIO()
    call_command("room_summary", stdout=cli)
    api = APIClient(HTTP_AUTHORIZATION=f"Token {analyst_token}").get("/api/rooms/summary/", {"format": "txt"})

    for text in (cli.getvalue(), api.content.decode()):
        lines = text.splitlines()
        assert [line for line in lines if line.startswith("#")] == [lines[-1]], lines
        assert lines[0].startswith("\\x23 rooms=1 events=1000000 avg_events_per_room=1000000.00,events=1,"), lines
        assert lines[-1] == "# rooms=1 events=1 avg_events_per_room=1.00"


LONE = "\udced\udca0\udc80"  # what Python makes of the bytes b"\xed\xa0\x80" in sys.argv (surrogateescape)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [
        ["create_app", LONE],
        ["create_app", "app", "--site", LONE],
        ["create_analyst", LONE],
        ["create_analyst", "ana", "--email", LONE],
        ["import_jsonl", f"/tmp/{LONE}.jsonl"],
        ["replay_rejections", "--reason", LONE],
        ["replay_rejections", "--rule", LONE],
        ["replay_rejections", "--source", LONE],
        ["replay_rejections", "--app", LONE],
        ["export_events", "--site", LONE],
        ["export_events", "--actor", LONE],
    ],
    ids=lambda args: " ".join("(not UTF-8)" if LONE in a else a for a in args),
)
def test_every_command_refuses_text_that_is_not_utf8_with_the_reason(args):
    """Hostile review 3: a lone surrogate reached a write or a query and ended in a traceback
    (UnicodeEncodeError); `config.hostile.text_argument` makes it a usage error."""
    with pytest.raises(CommandError, match=r"is not valid text: it holds the lone surrogate U\+DCED"):
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())


def test_a_bad_time_of_replay_rejections_is_a_usage_error(manage):
    """A CommandError raised while argparse converts an argument escapes Django's handling on the
    command line (run_from_argv parses outside it): it printed a traceback."""
    result = manage("replay_rejections", "--since", "garbage")

    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "argument --since: 'garbage' is neither epoch seconds nor an ISO 8601 date-time" in result.stderr
