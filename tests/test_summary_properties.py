"""The site summary against an independent oracle (tests/chat_oracle.py).

First the oracle earns trust: it reproduces the shared expected files and
accepts exactly the events the application accepts. Then generated chat
events (few sites and operators, colliding timestamps, ties between statuses
and messages, resends, invalid records reusing valid ids) arrive shuffled in
random batches through the real storing path, and the materialized summary
must equal the oracle's after any arrival order.
"""

from __future__ import annotations

import io
import random
import time

import orjson
import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import Event
from ingest.framing import iter_ndjson
from ingest.imports.sequential import import_file
from ingest.models import RawBatch, Rejection
from ingest.records import Chunk, validate_into, validate_values
from ingest.store import store_chunk
from reports import maintenance, site_summary
from reports.models import OnlineSpan
from tests import chat_oracle

CHAT_FILES = ["small", "mixed", "edge", "external_small", "external_bad"]


def counts_file(sample_data, name: str) -> dict[str, int]:
    return {
        k: int(v)
        for k, v in (item.split("=") for item in (sample_data / "chat" / f"{name}.counts").read_text().split())
    }


def classic_rows() -> list[str]:
    return [row.classic() for row in site_summary.summary_rows()]


# -- the oracle against the shared files and the application ------------------


@pytest.mark.parametrize("name", CHAT_FILES)
def test_the_oracle_reproduces_the_shared_expected_files(sample_data, name):
    outcome = chat_oracle.read_ndjson((sample_data / "chat" / f"{name}.jsonl").read_bytes(), time.time())
    assert (
        chat_oracle.summary_lines(outcome.accepted)
        == (sample_data / "chat" / f"{name}.expected").read_text().splitlines()
    )
    assert {"rejected": outcome.rejected, "duplicates": outcome.duplicates} == counts_file(sample_data, name)


@pytest.mark.django_db
@pytest.mark.parametrize("name", CHAT_FILES)
def test_the_application_accepts_exactly_the_oracles_events(sample_data, name):
    path = sample_data / "chat" / f"{name}.jsonl"
    outcome = chat_oracle.read_ndjson(path.read_bytes(), time.time())

    import_file(str(path))

    def fields(e: chat_oracle.ChatEvent) -> tuple:
        return (e.uid, e.kind, e.site, e.actor, float(e.ts), e.online if e.kind == "status" else None)

    stored = Event.objects.filter(family="chat").values_list("uid", "kind", "site_id", "actor", "ts", "online")
    assert sorted(stored) == sorted(fields(e) for e in outcome.accepted)
    assert list(Rejection.objects.order_by("line").values_list("line", flat=True)) == outcome.rejected_lines
    assert classic_rows() == chat_oracle.summary_lines(outcome.accepted)


@pytest.mark.django_db
@pytest.mark.parametrize("statement_rows", [300, 7])
@pytest.mark.parametrize("name", ["small", "mixed"])
def test_the_worker_path_gives_the_expected_files_in_large_shuffled_batches(sample_data, name, statement_rows,
                                                                           monkeypatch):  # fmt: skip
    """Real data in worker-sized batches: many sites and messages per batch, so the
    set-based lookups span several statements (`statement_rows`)."""
    monkeypatch.setattr(site_summary, "VALUES_PER_QUERY", statement_rows)
    # Stored spans are read per stretch of a site's messages: short stretches split them often.
    monkeypatch.setattr(site_summary, "SPAN_READ_GAP", 60.0 if statement_rows == 7 else 3600.0)
    lines = (sample_data / "chat" / f"{name}.jsonl").read_bytes().splitlines()
    random.Random(statement_rows).shuffle(lines)
    for start in range(0, len(lines), 1000):
        body = b"\n".join(lines[start : start + 1000]) + b"\n"
        chunk = validate_into(Chunk(), iter_ndjson(io.BytesIO(body)), time.time())
        with transaction.atomic():
            store_chunk(RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING), chunk)
    assert classic_rows() == (sample_data / "chat" / f"{name}.expected").read_text().splitlines()
    spans = stored_spans()
    site_summary.rebuild_all_sites()
    assert stored_spans() == spans


def test_the_oracle_follows_the_spec_rules():
    now = 1_000_000.0
    base = {"id": "x", "type": "message", "from": "v", "site_id": "s", "timestamp": 5, "data": {"message": "m"}}
    assert chat_oracle.check(base, now).site == "s"
    assert chat_oracle.check({**base, "site_id": 42}, now).site == "42"
    for broken in [
        {**base, "site_id": True},
        {**base, "timestamp": True},
        {**base, "timestamp": -1},
        {**base, "timestamp": now + 301},
        {**base, "from": ""},
        {**base, "data": {"message": None}},
        {**base, "type": "status", "data": {"status": "away"}},
        {k: v for k, v in base.items() if k != "id"},
    ]:
        with pytest.raises(chat_oracle.Rejected):
            chat_oracle.check(broken, now)
    # Ties: a status applies before a message at the same time; ids order statuses at one time.
    events = [
        chat_oracle.ChatEvent("m", "message", "s", "v", 5),
        chat_oracle.ChatEvent("b", "status", "s", "op", 5, online=False),
        chat_oracle.ChatEvent("a", "status", "s", "op", 5, online=True),
    ]
    assert chat_oracle.summary_lines(events) == ["s,messages=0,emails=1,operators=1,visitors=1"]


# -- generated arrivals through the real storing path --------------------------

SITES = ["é", 7, "7", "S"]  # the integer 7 is the site "7"
OPERATORS = ["op1", "op2"]
VISITORS = ["v1", "v2", "op1"]  # an actor can be a visitor of a site it operates
TIMES = [0, 1, 1.5, 2, 2.0, 3]  # few distinct instants: many ties
ids = st.text(alphabet="abAB0é", min_size=1, max_size=3)


@st.composite
def chat_records(draw) -> dict:
    kind = draw(st.sampled_from(["message", "status"]))
    data = (
        {"message": draw(st.sampled_from(["hi", ""]))}
        if kind == "message"
        else {"status": draw(st.sampled_from(["online", "offline"]))}
    )
    return {
        "id": draw(ids),
        "type": kind,
        "from": draw(st.sampled_from(OPERATORS if kind == "status" else VISITORS)),
        "site_id": draw(st.sampled_from(SITES)),
        "timestamp": draw(st.sampled_from(TIMES)),
        "data": data,
    }


@st.composite
def invalid_records(draw) -> dict:
    """A chat record broken in one way; its id may be one a valid record uses."""
    record = draw(chat_records())
    breakage = draw(
        st.sampled_from([{"from": ""}, {"timestamp": -1}, {"site_id": True}, {"data": []}, {"timestamp": "1"}])
    )
    if record["type"] == "status" and draw(st.booleans()):
        breakage = {"data": {"status": "away"}}
    return {**record, **breakage}


@st.composite
def arrivals(draw) -> tuple[list[dict], list[dict], list[list[dict]]]:
    """(distinct valid events, invalid records, batches as they arrive)."""
    events = draw(st.lists(chat_records(), min_size=1, max_size=30, unique_by=lambda r: r["id"]))
    invalid = draw(st.lists(invalid_records(), max_size=4))
    resent = draw(st.lists(st.sampled_from(events), max_size=8))
    stream = draw(st.permutations(events + invalid + resent))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    batches = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True) if b > a]
    for batch in draw(st.lists(st.sampled_from(batches), max_size=2)):  # a client retries a whole batch
        batches.insert(draw(st.integers(0, len(batches))), batch)
    return events, invalid, batches


def stored_spans() -> list[tuple]:
    return list(OnlineSpan.objects.order_by("site_id", "start").values_list("site_id", "start", "end"))


def validated(batch: list[dict], as_lines: bool) -> Chunk:
    if as_lines:  # an NDJSON body or file chunk
        body = b"\n".join(orjson.dumps(record) for record in batch) + b"\n"
        return validate_into(Chunk(), iter_ndjson(io.BytesIO(body)), time.time())
    return validate_values(batch, time.time())  # a JSON-array body


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["worker", "bulk", "mixed"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(arrival=arrivals(), data=st.data())
def test_any_arrival_order_gives_the_oracles_summary(mode, arrival, data, monkeypatch):
    # Lookups are split into statements of a few rows, so that results spread
    # over several statements are merged right (the real size is a few hundred).
    monkeypatch.setattr(site_summary, "VALUES_PER_QUERY", 3)
    monkeypatch.setattr(site_summary, "SPAN_READ_GAP", 0.75)  # stretches of messages split at gaps of 1
    events, invalid, batches = arrival
    want = chat_oracle.summary_lines(chat_oracle.read_values(events, time.time()).accepted)
    sent_valid = sum(1 for batch in batches for record in batch if record not in invalid)
    sent_invalid = sum(1 for batch in batches for record in batch if record in invalid)

    with transaction.atomic():  # each example starts from an empty database
        accepted = duplicates = rejected = 0
        for batch in batches:
            defer = mode == "bulk" or (mode == "mixed" and data.draw(st.booleans(), label="defer"))
            chunk = validated(batch, as_lines=data.draw(st.booleans(), label="as NDJSON lines"))
            raw_batch = RawBatch.objects.create(source="api", status=RawBatch.Status.PROCESSING)
            with transaction.atomic():
                result = store_chunk(raw_batch, chunk, defer_summaries=defer)
            accepted, duplicates, rejected = (
                accepted + result.accepted,
                duplicates + result.duplicates,
                rejected + result.rejected,
            )
            if mode == "mixed" and data.draw(st.booleans(), label="an import ends here"):
                maintenance.rebuild_stale()
        if mode == "worker":
            assert not any(row.stale for row in site_summary.summary_rows())
        else:
            maintenance.rebuild_stale()

        assert (accepted, duplicates, rejected) == (len(events), sent_valid - len(events), sent_invalid)
        assert Event.objects.count() == len(events)
        assert classic_rows() == want
        spans = stored_spans()
        site_summary.rebuild_all_sites()
        assert classic_rows() == want
        assert stored_spans() == spans  # kept maximal and exact, not only the counts
        transaction.set_rollback(True)
