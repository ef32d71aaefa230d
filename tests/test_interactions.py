"""The interaction family (SPEC §2.3): per-type validators, identity, timestamps, sessions."""

from __future__ import annotations

import io
import json
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from hypothesis import given
from hypothesis import strategies as st

from events.interaction import (
    format_timestamp,
    parse_timestamp,
    register_interaction_type,
    registered_types,
    require_data_number,
    unregister_interaction_type,
    validate_pageview,
)
from events.models import Event
from events.registry import Invalid, normalize
from ingest.models import ImportJob, RawBatch, Rejection
from ingest.records import validate_values
from ingest.store import StoreResult, store_chunk

NOW = time.time()
SESSION = "e2085be5-9137-4e4e-80b5-f1ffddc25423"


def store_values(values: list[object]) -> StoreResult:
    batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
    with transaction.atomic():
        return store_chunk(batch, validate_values(values, time.time()))


def interaction(**fields: object) -> dict:
    record = {
        "session_id": SESSION,
        "category": "page interaction",
        "name": "pageview",
        "data": {"host": "www.example.com", "path": "/"},
        "timestamp": "2021-01-01 09:15:27.243860",
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


def stored_report() -> dict:
    """What eye_sample.expected.json describes, read back from the event store."""
    events = Event.objects.filter(family="interaction").order_by("session", "ts", "uid")
    by_type: dict[str, int] = {}
    sessions: dict[str, list] = {}
    for category, name, session, ts in events.values_list("category", "kind", "session", "ts"):
        by_type[f"{category}/{name}"] = by_type.get(f"{category}/{name}", 0) + 1
        sessions.setdefault(session, []).append([format_timestamp(ts), category, name])
    return {"by_type": by_type, "sessions": sessions}


# -- the shared sample ---------------------------------------------------------


@pytest.mark.django_db
def test_import_of_eye_sample_gives_the_expected_json(sample_data):
    expected = json.loads((sample_data / "interactions" / "eye_sample.expected.json").read_text())
    call_command("import_jsonl", str(sample_data / "interactions" / "eye_sample.jsonl"), stderr=io.StringIO())
    job = ImportJob.objects.get()
    assert {"accepted": job.accepted, "duplicates": job.duplicates, "rejected": job.rejected, **stored_report()} == (
        expected
    )


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [7, 8])
def test_worker_path_in_shuffled_batches_gives_the_expected_json(sample_data, seed):
    expected = json.loads((sample_data / "interactions" / "eye_sample.expected.json").read_text())
    lines = (sample_data / "interactions" / "eye_sample.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    rng = random.Random(seed)
    rng.shuffle(records)
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
    for i in range(0, len(records), 4):
        result = store_values(records[i : i + 4])
        totals["accepted"] += result.accepted
        totals["duplicates"] += result.duplicates
        totals["rejected"] += result.rejected
    assert {**totals, **stored_report()} == expected


@pytest.mark.django_db
def test_eye_sample_rejection_reasons(sample_data):
    call_command("import_jsonl", str(sample_data / "interactions" / "eye_sample.jsonl"), stderr=io.StringIO())
    assert list(Rejection.objects.values_list("line", "reason")) == [
        (1, "'data' must be an object, got an array"),
        (2, "'timestamp' '01/02/2021' is neither 'YYYY-MM-DD HH:MM:SS[.ffffff]' nor ISO 8601"),
        (7, "timestamp 32472144000.000 is more than 300s in the future"),
        (8, "'session_id' is not a UUID: 'not-a-uuid'"),
        (19, "'data.form' must be an object, got a string"),
        (25, "'data.element' is missing"),
        (26, "'data.host' is missing"),
        (29, "'category' must not be empty"),
    ]


# -- rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"session_id": ...}, "'session_id' must be a UUID string, got null"),
        ({"session_id": 12}, "'session_id' must be a UUID string, got a number"),
        ({"session_id": "e2085be591374e4e80b5f1ffddc25423"}, "'session_id' is not a UUID"),
        ({"category": "x" * 256}, "'category' is longer than 255 characters"),
        ({"name": ""}, "'name' must not be empty"),
        ({"name": None}, "'name' must be a string, got null"),
        ({"data": "host"}, "'data' must be an object, got a string"),
        ({"timestamp": 1609492527}, "'timestamp' must be a string"),
        ({"timestamp": "2021-13-01 00:00:00"}, "'timestamp' '2021-13-01 00:00:00' is neither"),
        ({"timestamp": "1969-12-31 23:59:59"}, "'timestamp' is before 1970-01-01"),
        ({"data": {"host": "h"}}, "'data.path' is missing"),
        ({"data": {"host": 1, "path": "/"}}, "'data.host' must be a string, got a number"),
        ({"name": "cta click"}, "'data.element' is missing"),
        ({"category": "form interaction", "name": "submit"}, "'data.form' is missing"),
        ({"id": ""}, "'id' must not be empty"),
        # An unregistered type still needs the host that names its site.
        ({"name": "scroll", "data": {"depth": 3}}, "'data.host' is missing"),
        ({"name": "scroll", "data": {"host": ""}}, "'data.host' must not be empty"),
    ],
)
def test_invalid_interactions_are_rejected_with_a_reason(fields, reason):
    with pytest.raises(Invalid) as error:
        normalize(interaction(**fields), NOW)
    assert str(error.value).startswith(reason)


def test_a_pageview_is_normalized():
    event = normalize(interaction(session_id=SESSION.upper()), NOW)
    assert (event.family, event.category, event.kind, event.site, event.session, event.actor) == (
        "interaction",
        "page interaction",
        "pageview",
        "www.example.com",
        SESSION,  # canonical lowercase
        "",
    )
    assert event.ts == datetime(2021, 1, 1, 9, 15, 27, 243860, tzinfo=UTC).timestamp()
    assert event.uid.startswith("sha256:")


def test_an_unregistered_type_is_accepted_as_generic():
    event = normalize(interaction(category="scroll interaction", name="scroll", data={"host": "h", "y": 3}), NOW)
    assert (event.category, event.kind, event.site) == ("scroll interaction", "scroll", "h")


def test_identity_is_the_id_or_the_content():
    assert normalize(interaction(id="abc"), NOW).uid == "abc"
    same = normalize(interaction(), NOW).uid
    assert normalize(interaction(), NOW).uid == same
    assert normalize(interaction(data={"host": "www.example.com", "path": "/x"}), NOW).uid != same


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-01-01 09:15:27", "2021-01-01 09:15:27.000000"),
        ("2021-01-01 09:15:27.243860", "2021-01-01 09:15:27.243860"),
        ("2021-01-01T09:15:27.5Z", "2021-01-01 09:15:27.500000"),
        ("2021-01-01T10:15:27+01:00", "2021-01-01 09:15:27.000000"),
        ("2021-01-01T09:15:27", "2021-01-01 09:15:27.000000"),
    ],
)
def test_both_timestamp_forms(text, expected):
    assert format_timestamp(parse_timestamp(text)) == expected


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)))
def test_microseconds_round_trip_exactly(moment):
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    assert format_timestamp(parse_timestamp(text)) == text


def test_future_interactions_are_rejected():
    soon = datetime.fromtimestamp(NOW, UTC) + timedelta(minutes=10)
    with pytest.raises(Invalid, match="in the future"):
        normalize(interaction(timestamp=soon.isoformat()), NOW)
    normalize(interaction(timestamp=(soon - timedelta(minutes=8)).isoformat()), NOW)


# -- registering a type (the worked example of docs/event-types.md) ----------


def validate_video_play(data: dict) -> None:
    validate_pageview(data)
    require_data_number(data, "position")


@pytest.fixture
def video_play():
    register_interaction_type("video interaction", "play", validate_video_play)
    yield
    unregister_interaction_type("video interaction", "play")


@pytest.mark.django_db
def test_a_registered_type_validates_its_payload(video_play):
    assert ("video interaction", "play") in registered_types()
    base = {"category": "video interaction", "name": "play"}
    result = store_values(
        [
            interaction(**base, data={"host": "h", "path": "/v", "position": 12.5}),
            interaction(**base, data={"host": "h", "path": "/v", "position": "12"}),
            interaction(**base, data={"host": "h", "path": "/v", "position": True}),
            interaction(**base, data={"host": "h", "path": "/v"}),
        ]
    )
    assert (result.accepted, result.rejected) == (1, 3)
    reasons = list(RawBatch.objects.get().rejections.values_list("reason", flat=True))
    assert reasons == [
        "'data.position' must be a number, got a string",
        "'data.position' must be a number, got a boolean",
        "'data.position' is missing",
    ]


def test_unregistering_makes_the_type_generic_again():
    assert ("video interaction", "play") not in registered_types()
    normalize(interaction(category="video interaction", name="play", data={"host": "h"}), NOW)


@pytest.mark.django_db
def test_a_session_reads_back_in_time_order():
    other = "0b6f8a9e-3c1d-4f2a-9e77-5d2c1a0b9f10"
    store_values(
        [
            interaction(name="b", timestamp="2021-01-01 09:00:02"),
            interaction(name="a", timestamp="2021-01-01 09:00:01.000001"),
            interaction(name="x", session_id=other.upper(), timestamp="2021-01-01 09:00:00"),
            interaction(name="c", timestamp="2021-01-01T09:00:03Z"),
        ]
    )
    session = Event.objects.filter(session=SESSION).order_by("ts").values_list("kind", flat=True)
    assert list(session) == ["a", "b", "c"]
    assert Event.objects.get(kind="x").session == other
