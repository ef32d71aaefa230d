"""Erasure (SPEC §10, issue 19 part 3): `forget_actor` leaves the summaries exactly as if
the actor had never sent anything, and no stored row holds its id afterwards."""

from __future__ import annotations

import gzip
import io
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection, models, transaction
from django.urls import reverse
from rest_framework.test import APIClient

from events.privacy.blocks import SUPPRESSED, WITHHELD
from events.privacy.models import ActorBlock, Erasure
from events.privacy.services import ErasureRefused, expire_fences, forget_actor
from ingest.analysts import create_analyst, issue_token
from ingest.batches import _store, batch_records, claim_group, drain, receive_batch
from ingest.imports.parallel import finish_import
from ingest.imports.ranges import plan_import, process_range
from ingest.keys import create_application
from ingest.models import RawBatch, Rejection
from ingest.records import Chunk, validate_values
from ingest.store import finish_batch, store_chunk, store_group
from reports import event_counts, room_summary
from reports.models import EventCount
from reports.site_summary import summary_rows
from tests import chat_oracle
from tests.races import backend_pid, pid_appears, start_writer, transaction_held, waits_for_a_lock

OPERATOR = "operator3"  # statuses on ~40 sites of mixed.jsonl + small.jsonl, and some of its records are malformed
VISITOR = "visitor1203"  # messages on three sites of mixed.jsonl
VISITOR_SITE = "676102"
XMPP_ACTOR = "Matt"  # the operator of chatid_sample.json; no other record of it names "Matt"
NDJSON = "application/x-ndjson"


# -- the data, and what the oracle makes of it without an actor ---------------------------


def chat_lines(sample_data: Path) -> list[bytes]:
    mixed = (sample_data / "chat" / "mixed.jsonl").read_bytes().splitlines()
    small = (sample_data / "chat" / "small.jsonl").read_bytes().splitlines()
    return mixed + small


def is_actors(line: bytes, actor: str, site: str | None = None) -> bool:
    """Whether a line is a record sent by `actor` (on `site`), read with the standard library."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    if not isinstance(record, dict) or record.get("from") != actor:
        return False
    return site is None or str(record.get("site_id")) == site


def oracle_lines(lines: list[bytes]) -> list[str]:
    return chat_oracle.summary_lines(chat_oracle.read_ndjson(b"\n".join(lines), time.time()).accepted)


def classic() -> list[str]:
    return [row.classic() for row in summary_rows()]


def load_chat(sample_data: Path, tmp_path: Path) -> None:
    """mixed.jsonl by `import_jsonl` (bulk path), small.jsonl posted gzip and drained by the worker path."""
    call_command("import_jsonl", str(sample_data / "chat" / "mixed.jsonl"), stderr=io.StringIO())
    app, _ = create_application("site-app")
    small = (sample_data / "chat" / "small.jsonl").read_bytes()
    receive_batch(app, gzip.compress(small), NDJSON, "gzip", small.count(b"\n"))
    drain()


def rows_holding(text: str) -> list[str]:
    """Every stored value, of every table, that holds `text`: character, text, binary and JSON columns."""
    found = []
    needle = text.encode()
    for model in apps.get_models():
        fields = [
            f.attname
            for f in model._meta.concrete_fields
            if isinstance(f, models.CharField | models.TextField | models.BinaryField | models.JSONField)
        ]
        if not fields:
            continue
        for pk, *values in model._base_manager.values_list("pk", *fields).iterator():
            for name, value in zip(fields, values, strict=True):
                held = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                if needle in held:
                    found.append(f"{model._meta.label}#{pk}.{name}")
    return found


# -- erasure is exact, and leaves nothing ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_forgetting_an_operator_everywhere_equals_the_oracle_without_it(sample_data, tmp_path):
    lines = chat_lines(sample_data)
    load_chat(sample_data, tmp_path)
    assert classic() == oracle_lines(lines)  # the starting point is exact
    assert rows_holding(OPERATOR)  # in events, rejections, the posted body, site actors

    call_command("forget_actor", OPERATOR, stderr=io.StringIO())

    without = [line for line in lines if not is_actors(line, OPERATOR)]
    assert classic() == oracle_lines(without)
    assert rows_holding(OPERATOR) == []
    erasure = Erasure.objects.get()
    assert (erasure.via, erasure.site, erasure.suppressed) == ("cli", "", False)
    assert erasure.events > 0 and erasure.rejections > 0 and erasure.batches == 1 and erasure.finished_at
    # The dashboard's rollup is what a rebuild from the remaining events gives.
    counted = sorted(EventCount.objects.values_list("hour", "family", "site", "events"))
    event_counts.rebuild()
    assert counted == sorted(EventCount.objects.values_list("hour", "family", "site", "events"))


@pytest.mark.django_db(transaction=True)
def test_forgetting_a_visitor_on_one_site_keeps_its_other_sites(sample_data, tmp_path):
    lines = chat_lines(sample_data)
    load_chat(sample_data, tmp_path)

    call_command("forget_actor", VISITOR, "--site", VISITOR_SITE, stderr=io.StringIO())

    without = [line for line in lines if not is_actors(line, VISITOR, VISITOR_SITE)]
    assert without != [line for line in lines if not is_actors(line, VISITOR)]  # it has other sites
    assert classic() == oracle_lines(without)
    from events.models import Event

    assert set(Event.objects.filter(actor=VISITOR).values_list("site_id", flat=True)) == {"464166", "site-0"}
    assert Erasure.objects.get().site == VISITOR_SITE


def xmpp_sample(sample_data: Path) -> list[dict]:
    return json.loads((sample_data / "xmpp" / "chatid_sample.json").read_text())


def store_values(values: list[object]) -> None:
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    with transaction.atomic():
        store_chunk(batch, validate_values(values, time.time()))


def rooms() -> tuple[list[str], str]:
    return [row.classic() for row in room_summary.room_rows()], room_summary.room_totals().classic()


@pytest.mark.django_db
def test_forgetting_an_xmpp_nick_equals_the_rooms_without_it(sample_data):
    records = xmpp_sample(sample_data)
    with transaction.atomic():  # what the store makes of the sample without Matt, then rolled back
        store_values([r for r in records if r.get("nick") != XMPP_ACTOR])
        expected = rooms()
        transaction.set_rollback(True)
    store_values(records)
    assert rooms() != expected

    erasure = forget_actor(XMPP_ACTOR)

    assert rooms() == expected
    assert rows_holding(XMPP_ACTOR) == []  # its events and stanzas (from/to JIDs) are gone
    assert erasure.events == sum(r.get("nick") == XMPP_ACTOR for r in records) and erasure.rooms > 0


@pytest.mark.django_db
def test_a_room_or_site_only_the_actor_had_disappears():
    store_values(
        [
            {"id": "m1", "type": "message", "from": "lonely", "site_id": "solo", "data": {"message": "x"},
             "timestamp": 1_429_000_000},
            {"id": "x1", "timestamp": 1_412_207_958.0, "room_id": "room-1", "channel": "qx-chan", "event": "muc-x",
             "nick": "lonely", "meta": {}, "stanza": "nil"},
        ]
    )  # fmt: skip
    assert [r.site_id for r in summary_rows()] == ["solo"] and rooms()[0]

    forget_actor("lonely")

    assert summary_rows() == [] and rooms()[0] == []
    assert rows_holding("lonely") == [] and rows_holding("solo") == [] and rows_holding("qx-chan") == []


# -- records that arrive during and after the erasure -----------------------------------------


def chat(uid: str, actor: str, site: str = "s1", ts: float = 1_429_026_445.0, kind: str = "message") -> bytes:
    data = {"message": "hi"} if kind == "message" else {"status": "online"}
    return json.dumps({"id": uid, "type": kind, "from": actor, "site_id": site, "data": data, "timestamp": ts}).encode()


@pytest.mark.django_db
def test_a_batch_received_before_the_erasure_stores_nothing_of_the_actor():
    app, _ = create_application("a")
    receive_batch(app, b"\n".join([chat("p1", "gone"), chat("p2", "stays")]), NDJSON, "", 2)
    held = receive_batch(app, b"\n".join([chat("h1", "gone"), b'{"from": "gone", "broken": ']), NDJSON, "", 2)
    claim_group([held.pk])
    held = RawBatch.objects.get(pk=held.pk)
    in_memory = batch_records(held)  # a worker validated it before the erasure, and stores it after

    forget_actor("gone")

    assert ActorBlock.objects.filter(received_before__isnull=False).count() == 1  # batches wait: the fence stays
    assert _store([(held, in_memory)], held.pk) == 1  # the worker's store step, with what it read before
    drain()
    assert classic() == ["s1,messages=0,emails=1,operators=0,visitors=1"]
    assert rows_holding("gone") == []
    assert expire_fences() == 1 and not ActorBlock.objects.exists()
    # After the erasure the actor is welcome again (it was not suppressed).
    receive_batch(app, chat("n1", "gone"), NDJSON, "", 1)
    drain()
    assert classic() == ["s1,messages=0,emails=2,operators=0,visitors=2"]


@pytest.mark.django_db
def test_suppression_refuses_the_actor_on_every_path_with_the_reason(tmp_path):
    app, _ = create_application("a")
    receive_batch(app, b"\n".join([chat("a1", "spammer"), chat("a2", "friend")]), NDJSON, "", 2)
    drain()

    forget_actor("spammer", suppress=True, reason="GDPR request 2026-12")
    assert ActorBlock.objects.get().received_before is None
    before = classic()

    again = receive_batch(app, b"\n".join([chat("a3", "spammer"), chat("a4", "spammer", site="s2")]), NDJSON, "", 2)
    drain()
    path = tmp_path / "late.jsonl"
    path.write_bytes(chat("a5", "spammer") + b"\n" + chat("a6", "friend", ts=1_429_026_446.0) + b"\n")
    call_command("import_jsonl", str(path), stderr=io.StringIO())

    assert classic() == ["s1,messages=0,emails=2,operators=0,visitors=1"] != before
    refused = Rejection.objects.filter(batch=again)
    assert [(r.reason, r.raw) for r in refused] == [(f"{SUPPRESSED}: GDPR request 2026-12", WITHHELD)] * 2
    assert Rejection.objects.filter(reason__startswith=SUPPRESSED).count() == 3  # the import's too
    assert rows_holding("spammer") == []


@pytest.mark.django_db
def test_a_suppression_on_one_site_leaves_the_others():
    app, _ = create_application("a")
    forget_actor("mixed", site="s1", suppress=True)
    receive_batch(app, b"\n".join([chat("b1", "mixed"), chat("b2", "mixed", site="s2")]), NDJSON, "", 2)
    drain()
    assert classic() == ["s2,messages=0,emails=1,operators=0,visitors=1"]


def test_a_reason_that_names_the_actor_is_refused(db):
    with pytest.raises(CommandError, match="must not contain the actor id"):
        call_command("forget_actor", "bob", "--suppress", "--reason", "bob asked", stderr=io.StringIO())
    assert not Erasure.objects.exists() and not ActorBlock.objects.exists()


@pytest.mark.parametrize("reason", ["spam\nvictim,messages=1", "spam\u2028x", "spam\x1b[2J"])
def test_a_reason_with_a_line_break_or_control_character_is_refused(db, reason):
    """Issue 22 item 2, second look: the reason is shown with every refused record, in the
    replay's summary line too; a line break in it forged lines there."""
    with pytest.raises(CommandError, match="control character"):
        call_command("forget_actor", "bob", "--suppress", "--reason", reason, stderr=io.StringIO())
    assert not Erasure.objects.exists() and not ActorBlock.objects.exists()


@pytest.mark.parametrize(("args", "field"), [(["a\nb"], "actor"), (["bob", "--site", "\x1b[31m"], "site"),
                                           (["bob", "--site", "s\x00"], "site"), (["b\u2028ob"], "actor")])  # fmt: skip
def test_an_actor_or_site_with_a_control_character_is_refused(db, args, field):
    """No stored identifier holds one, so such a request would erase nothing and only store
    the control character in the audit row and the block."""
    with pytest.raises(CommandError, match=f"the {field} must not contain a control character"):
        call_command("forget_actor", *args, "--suppress", stderr=io.StringIO())
    assert not Erasure.objects.exists() and not ActorBlock.objects.exists()


LONE_SURROGATE = os.fsdecode(b"\xed\xa0\x80")  # a surrogate's UTF-8 bytes, as Python decodes argv: "\udced\udca0\udc80"


@pytest.mark.parametrize(
    ("args", "field"),
    [([LONE_SURROGATE], "actor"), (["bob", "--site", "\udc80"], "site"), (["bob", "--reason", "x\udc80"], "reason")],
)
def test_an_argument_with_a_lone_surrogate_is_a_clear_error(manage, args, field):
    """Hostile review 3: bytes that are not UTF-8 on the command line reached the erasure and ended
    in a traceback (orjson and the database driver cannot encode a lone surrogate)."""
    result = manage("forget_actor", *args, "--suppress")

    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert f"argument {'actor' if field == 'actor' else '--' + field}:" in result.stderr
    assert "is not valid text: it holds the lone surrogate" in result.stderr
    assert not Erasure.objects.exists() and not ActorBlock.objects.exists()


def test_the_service_refuses_a_lone_surrogate_on_every_path(db):
    """The API and the admin call the same service, which refuses it with the reason (and
    without repeating the actor)."""
    for actor, site, field in (("\ud800", None, "actor"), ("bob", "s\udfff", "site")):
        with pytest.raises(ErasureRefused, match=f"^the {field} is not valid text: it holds the lone surrogate U\\+D"):
            forget_actor(actor, site=site)
    assert not Erasure.objects.exists() and not ActorBlock.objects.exists()


# -- who may erase: the API and the admin ----------------------------------------------------


def staff_who_may_forget() -> User:
    user = User.objects.create_user("dpo", password="pw-for-tests", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="forget_actor"))
    return user


@pytest.mark.django_db
def test_the_api_endpoint_is_for_staff_with_the_permission(app_key):
    store_values([json.loads(chat("c1", "erin")), json.loads(chat("c2", "frank"))])
    client = APIClient()
    url = reverse("actors-forget")
    body = {"actor": "erin", "suppress": True, "reason": "asked by e-mail"}
    assert client.post(url, body, format="json").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {app_key}")
    assert client.post(url, body, format="json").status_code == 403
    _, analyst = create_analyst("analyst")
    client.credentials(HTTP_AUTHORIZATION=f"Token {analyst}")
    assert client.post(url, body, format="json").status_code == 403
    assert rows_holding("erin")  # nothing happened

    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(staff_who_may_forget())}")
    response = client.post(url, body, format="json")

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["id"] == Erasure.objects.get().pk and answer["events"] == 1 and answer["suppressed"]
    assert answer["requested_by"] == "dpo" and answer["via"] == "api" and "erin" not in response.content.decode()
    assert classic() == ["s1,messages=0,emails=1,operators=0,visitors=1"]
    assert rows_holding("erin") == []
    bad = client.post(url, {"actor": "x", "reason": "x"}, format="json")
    assert bad.status_code == 400 and "must not contain" in bad.json()["detail"]
    assert "/api/actors/forget/" in client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]


@pytest.mark.django_db
def test_the_admin_form_erases_for_staff_with_the_permission(client):
    store_values([json.loads(chat("d1", "gina")), json.loads(chat("d2", "hal"))])
    url = reverse("admin:privacy_erasure_add")
    analyst, _ = create_analyst("analyst", password="pw-for-tests")
    client.force_login(analyst)
    assert client.post(url, {"actor": "gina", "site": ""}).status_code == 403
    assert rows_holding("gina")

    client.force_login(staff_who_may_forget())
    form = client.get(url).content.decode()
    assert all(f'name="{name}"' in form for name in ("actor", "site", "suppress", "reason"))
    response = client.post(url, {"actor": "gina", "site": "s1"}, follow=True)

    assert response.status_code == 200
    assert "Erasure" in response.content.decode() and "1 events" in response.content.decode()
    erasure = Erasure.objects.get()
    assert (erasure.via, erasure.requested_by, erasure.site) == ("admin", "dpo", "s1")
    assert rows_holding("gina") == []
    assert classic() == ["s1,messages=0,emails=1,operators=0,visitors=1"]
    audit = client.get(reverse("admin:privacy_erasure_changelist"))
    assert audit.status_code == 200 and "dpo" in audit.content.decode()
    refused = client.post(url, {"actor": "hal", "site": "", "suppress": "on", "reason": "hal asked"})
    assert refused.status_code == 200 and "must not contain the actor id" in refused.content.decode()
    assert Erasure.objects.count() == 1


@pytest.mark.django_db
def test_the_api_and_the_admin_answer_a_lone_surrogate_without_a_server_error():
    """Hostile review 3, checked: a JSON `\\ud800` escape decodes to a lone surrogate, which DRF's
    CharField refuses before the service sees it; a form's bytes that are not UTF-8 are decoded by
    Django with U+FFFD, valid text that names no stored actor."""
    store_values([json.loads(chat("f1", "ivy"))])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(staff_who_may_forget())}")

    response = client.post(reverse("actors-forget"), '{"actor": "\\ud800"}', content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json() == {"actor": ["Surrogate characters are not allowed: U+D800."]}  # DRF's CharField
    assert not Erasure.objects.exists() and not ActorBlock.objects.exists()
    client.force_login(User.objects.get(username="dpo"))
    form = client.post(
        reverse("admin:privacy_erasure_add"), b"actor=%ED%A0%80&site=", content_type="application/x-www-form-urlencoded"
    )
    assert form.status_code == 302  # done: it erased nothing, and said so in the audit row
    assert Erasure.objects.get().events == 0 and rows_holding("ivy")


@pytest.mark.django_db(transaction=True)
def test_an_erasure_waits_for_a_group_being_stored_and_erases_what_it_stored():
    """The race of docs/architecture.md (Erasure): a worker group that began storing before the
    erasure holds the erasure lock shared; the erasure's block waits for its commit, then sees
    (and erases) its events."""
    # No body: the erasure has no row of this batch to cut, so only the erasure lock orders the two.
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    chunk = validate_values([json.loads(chat("r1", "racer")), json.loads(chat("r2", "other"))], time.time())
    erased: list[Erasure] = []
    errors: list[Exception] = []

    with transaction_held(lambda: _store_in_open_transaction(batch, chunk), errors):
        erasing = start_writer(lambda: erased.append(forget_actor("racer")), errors)
        erasing.join(1.0)
        assert erasing.is_alive() and not Erasure.objects.exists()  # waits for the group's commit
    erasing.join(30)
    assert not errors
    assert erased and erased[0].events == 1
    assert classic() == ["s1,messages=0,emails=1,operators=0,visitors=1"]
    assert rows_holding("racer") == []


def _store_in_open_transaction(batch: RawBatch, chunk: Chunk) -> None:
    (result,) = store_group([(batch, chunk)])
    finish_batch(batch, chunk, result).save()


@pytest.mark.django_db
def test_a_suppressed_actor_is_refused_by_parallel_import_ranges(sample_data):
    """`import_jsonl --parallel`: each range reads the blocks when it is taken."""
    path = sample_data / "chat" / "small.jsonl"
    forget_actor("operator4", suppress=True)
    plan = plan_import(str(path), chunk_bytes=path.stat().st_size // 4)
    assert plan.planned >= 4

    for range_id in plan.unfinished:
        process_range(range_id)
    job = finish_import(plan.job)

    without = [line for line in path.read_bytes().splitlines() if not is_actors(line, "operator4")]
    assert classic() == oracle_lines(without)
    assert job.rejected == Rejection.objects.filter(reason__startswith=SUPPRESSED).count() == 37
    assert rows_holding("operator4") == []


@pytest.mark.django_db(transaction=True)
def test_an_erasure_uncounts_exactly_while_another_batch_counts_the_same_hours():
    """An erasure's transactions do not take the erasure lock, so a batch of another actor may
    count events in the same (hour, family, site) rows meanwhile: both changes must stay
    (the erasure's row read, then written back as an absolute value, lost the batch's)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    from events.privacy.services import _uncount

    hour = event_counts.hour_of(1_429_026_445.0)
    event_counts.add_counts({(hour, "chat", "s1"): 5, (hour + 1, "chat", "s1"): 2})
    erasing_pid = backend_pid()
    counted, problems = threading.Event(), []

    def batch_of_another_actor() -> None:
        with transaction.atomic():
            event_counts.add_counts({(hour, "chat", "s1"): 1, (hour + 1, "chat", "s1"): 1})
            counted.set()
            if not waits_for_a_lock(erasing_pid):  # the erasure reads or writes its rows now
                problems.append("the erasure never waited for the batch's rows")

    storing = start_writer(batch_of_another_actor, problems)
    assert counted.wait(10)
    with transaction.atomic():
        _uncount(Counter({(hour, "chat", "s1"): 2, (hour + 1, "chat", "s1"): 2}))
    storing.join(10)
    assert not problems
    assert sorted(EventCount.objects.values_list("hour", "events")) == [(hour, 4), (hour + 1, 1)]


@pytest.mark.django_db(transaction=True)
def test_a_prune_moving_the_actors_event_while_the_erasure_reads_it_is_uncounted_once():
    """An erasure's chunk read the actor's events of a site, then deletes them: a prune that
    moved one of them to the pruned baseline in between made the chunk uncount it, and the
    erasure's pass over the pruned rows uncount it again (the hour's count of another actor's
    event went). The chunk holds the erasure lock shared, so the prune waits for it."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one writer at a time")
    from events.models import Event, PrunedEvent, Stanza
    from events.retention import prune_events

    old = 1_600_000_000.0  # a month with no partition: pruned by range
    store_values(
        [
            {"id": "eve-x", "timestamp": old, "room_id": "room-1", "channel": "s1", "event": "muc-x", "nick": "eve",
             "stanza": "<message type='groupchat'><body>hi</body></message>"},
            json.loads(chat("eve-c", "eve", ts=old + 1)),
            json.loads(chat("bob-c", "bob", ts=old + 2)),
        ]
    )  # fmt: skip
    hour = event_counts.hour_of(old)
    assert sorted(EventCount.objects.values_list("family", "events")) == [("chat", 2), ("xmpp", 1)]
    pruning = backend_pid()
    locked, pruned, errors = threading.Event(), threading.Event(), []
    erasing_pid: list[int] = []

    def hold_the_stanza() -> None:  # the erasure's chunk waits at its stanza, having read its events
        with transaction.atomic():
            Stanza.objects.select_for_update().get()
            locked.set()
            deadline = time.monotonic() + 10
            while not pruned.is_set() and time.monotonic() < deadline:
                if waits_for_a_lock(pruning, 0.05):
                    break

    holder = start_writer(hold_the_stanza, errors)
    assert locked.wait(10)
    eraser = start_writer(lambda: forget_actor("eve"), errors, erasing_pid)
    assert pid_appears(erasing_pid) and waits_for_a_lock(erasing_pid[0])
    try:
        prune_events(old + 3600)
    finally:
        pruned.set()
        holder.join(30)
        eraser.join(60)
    assert not errors
    assert list(PrunedEvent.objects.values_list("uid", flat=True)) == ["bob-c"] and not Event.objects.exists()
    assert list(EventCount.objects.values_list("hour", "family", "events")) == [(hour, "chat", 1)]
