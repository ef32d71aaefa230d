"""Chat, xmpp and interaction records mixed in one file and in one batch (SPEC §2)."""

from __future__ import annotations

import io
import json
import random
import time

import orjson
import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models import Count

from events.models import Event, Stanza
from ingest.models import ImportJob, RawBatch, Rejection
from ingest.records import validate_values
from ingest.store import store_chunk
from reports import room_summary, site_summary

BROKEN = [
    b'{"type": "message", "id": "bad-chat", "from": "v", "site_id": "617", "data": {}, "timestamp": 1}',
    b'{"stanza": "<message><body>unclosed</message>", "room_id": "r", "id": "bad-xmpp", "channel": "c",'
    b' "event": "muc-broadcast-message", "timestamp": 1}',
    b'{"category": "page interaction", "name": "pageview", "session_id": "nope", "data": {}, "timestamp": "x"}',
    b'{"neither": "family"}',
]


def sample_lines(sample_data) -> list[bytes]:
    chat = [line for line in (sample_data / "chat" / "small.jsonl").read_bytes().splitlines() if line.strip()]
    xmpp = [orjson.dumps(r) for r in json.loads((sample_data / "xmpp" / "chatid_sample.json").read_bytes())]
    eye = (sample_data / "interactions" / "eye_sample.jsonl").read_bytes().splitlines()
    return chat + xmpp + eye + BROKEN


def expected(sample_data) -> dict:
    chat_counts = dict(
        part.split("=") for part in (sample_data / "chat" / "small.counts").read_text().split()
    )  # "rejected=0 duplicates=58"
    chat_lines = sum(1 for line in (sample_data / "chat" / "small.jsonl").read_bytes().splitlines() if line.strip())
    eye = json.loads((sample_data / "interactions" / "eye_sample.expected.json").read_text())
    chat_rejected, chat_duplicates = int(chat_counts["rejected"]), int(chat_counts["duplicates"])
    return {
        "accepted": (chat_lines - chat_rejected - chat_duplicates) + 340 + eye["accepted"],
        "duplicates": chat_duplicates + eye["duplicates"],
        "rejected": chat_rejected + eye["rejected"] + len(BROKEN),
        "sites": (sample_data / "chat" / "small.expected").read_text().splitlines(),
        "rooms": (sample_data / "xmpp" / "chatid_sample.rooms.expected").read_text().splitlines(),
        "totals": (sample_data / "xmpp" / "chatid_sample.totals.expected").read_text().strip(),
        "by_type": eye["by_type"],
    }


def observed() -> dict:
    by_type = (
        Event.objects.filter(family="interaction").values_list("category", "kind").annotate(n=Count("id")).order_by()
    )
    return {
        "sites": [row.classic() for row in site_summary.summary_rows()],
        "rooms": [row.classic() for row in room_summary.room_rows()],
        "totals": room_summary.room_totals().classic(),
        "by_type": {f"{category}/{kind}": n for category, kind, n in by_type},
    }


@pytest.mark.django_db
def test_one_ndjson_file_mixing_all_families(sample_data, tmp_path):
    lines = sample_lines(sample_data)
    random.Random(4).shuffle(lines)
    path = tmp_path / "mixed_families.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    want = expected(sample_data)

    call_command("import_jsonl", str(path), stderr=io.StringIO())

    job = ImportJob.objects.get()
    assert (job.accepted, job.duplicates, job.rejected) == (want["accepted"], want["duplicates"], want["rejected"])
    got = observed()
    assert got == {k: want[k] for k in got}
    assert Stanza.objects.count() == 320  # 20 of the 340 xmpp events log no stanza
    reasons = set(Rejection.objects.values_list("reason", flat=True))
    bad_xml = (
        "'stanza' is not well-formed XML: Opening and ending tag mismatch: body line 1 and message, line 1, column 34"
    )
    assert bad_xml in reasons
    assert any(r.startswith("matches no event family") for r in reasons)


@pytest.mark.django_db
def test_api_like_batches_mixing_all_families(sample_data):
    values = [orjson.loads(line) for line in sample_lines(sample_data)]
    rng = random.Random(5)
    values += rng.sample(values, 200)  # resends across batches
    rng.shuffle(values)
    want = expected(sample_data)
    accepted = duplicates = rejected = 0
    for i in range(0, len(values), 250):
        batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
        with transaction.atomic():
            result = store_chunk(batch, validate_values(values[i : i + 250], time.time()))
        accepted += result.accepted
        duplicates += result.duplicates
        rejected += result.rejected

    assert accepted == want["accepted"]
    assert accepted + duplicates + rejected == len(values)
    got = observed()
    assert got == {k: want[k] for k in got}
    families = dict(Event.objects.values_list("family").annotate(n=Count("id")).order_by())
    assert families == {"chat": want["accepted"] - 340 - 20, "xmpp": 340, "interaction": 20}
