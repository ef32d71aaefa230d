"""Hostile stanzas (SPEC §2.2, §7): rejected quickly with a reason, the rest of the batch untouched."""

from __future__ import annotations

import io
import time

import orjson
import pytest
from django.core.management import call_command
from django.db import transaction
from lxml import etree

from events import stanza as stanza_module
from events.models import Event, Stanza
from events.registry import Invalid, normalize
from ingest.models import ImportJob, RawBatch, Rejection
from ingest.records import validate_values
from ingest.store import store_chunk
from reports import room_summary

DECLARES = "'stanza' declares a DOCTYPE or entities, which XMPP forbids"


def billion_laughs() -> str:
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    return f'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY lol0 "lol">{entities}]><message><body>&lol9;</body></message>'


BOMBS = {
    "billion laughs": (billion_laughs(), DECLARES),
    "external entity": (
        '<!DOCTYPE m [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><message><body>&xxe;</body></message>',
        DECLARES,
    ),
    "external dtd": ('<!DOCTYPE message SYSTEM "http://127.0.0.1:9/evil.dtd"><message/>', DECLARES),
    "parameter entity": (
        '<!DOCTYPE m [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><message/>',
        DECLARES,
    ),
    "lowercase doctype": ('<!doctype m [<!entity a "b">]><message>&a;</message>', DECLARES),
    "quadratic blowup": (
        f'<!DOCTYPE m [<!ENTITY a "{"x" * 30_000}">]><message><body>{"&a;" * 8_000}</body></message>',
        DECLARES,
    ),
    "undeclared entity": ("<message><body>&xxe;</body></message>", "'stanza' is not well-formed XML: Entity 'xxe'"),
    "deep nesting": (
        "<message>" + "<x>" * 5_000 + "</x>" * 5_000 + "</message>",
        "'stanza' is not well-formed XML: Excessive depth in document",
    ),
    "oversize": (  # checked before parsing
        "<message><body>" + "a" * (65 * 1024) + "</body></message>",
        "'stanza' is over the limit of 65536 bytes",
    ),
}


def record(uid: str, stanza: str, ts: float = 1412207958.0) -> dict:
    return {
        "id": uid,
        "timestamp": ts,
        "room_id": "room-1",
        "channel": "chatid.qa",
        "event": "muc-broadcast-message",
        "nick": "Matt",
        "meta": {},
        "stanza": stanza,
    }


def good(uid: str, ts: float) -> dict:
    return record(uid, "<message type='groupchat'><body>hello</body></message>", ts)


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_rejected_quickly_and_the_batch_goes_on(name):
    stanza, reason = BOMBS[name]
    values = [good("before", 1.0), record("bomb", stanza), good("after", 2.0)]
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    started = time.perf_counter()
    chunk = validate_values(values, time.time())
    with transaction.atomic():
        result = store_chunk(batch, chunk)
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0
    assert (result.accepted, result.duplicates, result.rejected) == (2, 0, 1)
    rejection = Rejection.objects.get()
    assert (rejection.line, rejection.reason[: len(reason)]) == (2, reason)
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["after", "before"]
    assert set(Stanza.objects.values_list("body", flat=True)) == {"hello"}
    assert [r.classic() for r in room_summary.room_rows()] == [
        "room-1,events=2,messages=2,typing=0,participants=1,first=1.0000,last=2.0000"
    ]


@pytest.mark.django_db
def test_a_rejected_bomb_does_not_claim_its_id():
    values = [record("e1", BOMBS["external entity"][0])]
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    with transaction.atomic():
        store_chunk(batch, validate_values(values, time.time()))
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    with transaction.atomic():
        result = store_chunk(batch, validate_values([good("e1", 3.0)], time.time()))
    assert result.accepted == 1


@pytest.mark.django_db
def test_bombs_in_an_imported_file_are_rejected_and_nothing_leaks(tmp_path):
    lines = [good("g0", 1.0)]
    lines += [record(f"bomb-{i}", stanza) for i, (stanza, _) in enumerate(BOMBS.values())]
    lines.append(good("g1", 2.0))
    path = tmp_path / "bombs.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    started = time.perf_counter()
    call_command("import_jsonl", str(path), stderr=io.StringIO())
    assert time.perf_counter() - started < 5.0
    job = ImportJob.objects.get()
    assert (job.accepted, job.rejected) == (2, len(BOMBS))
    # Nothing of /etc/passwd (nor any expansion) reached the store.
    assert not Stanza.objects.filter(body__contains="root:").exists()
    assert not Rejection.objects.filter(reason="").exists()
    assert Rejection.objects.filter(reason__startswith="record is").count() >= 1  # oversize lines: record limit


def test_the_stanza_limit_is_a_setting(settings):
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_STANZA_BYTES": 100}
    with pytest.raises(Invalid, match="over the limit of 100 bytes"):
        normalize(record("x", "<message><body>" + "a" * 100 + "</body></message>"), time.time())
    assert normalize(record("y", "<message><body>ok</body></message>"), time.time()).detail["body"] == "ok"


@pytest.mark.parametrize("name", ["billion laughs", "external entity", "quadratic blowup"])
def test_the_parser_itself_expands_no_entities(name):
    """Defence in depth: even without the declaration check the parser expands nothing."""
    stanza = BOMBS[name][0].encode()
    started = time.perf_counter()
    try:
        root = etree.fromstring(stanza, stanza_module._parser())
    except etree.XMLSyntaxError:
        pass  # refusing is fine too
    else:
        assert len("".join(root.itertext())) < 1000
    assert time.perf_counter() - started < 1.0
