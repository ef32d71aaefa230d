"""Hostile request bodies (issue 12 items 2-4): every gzip member is read or the body is
refused, never cut; framing costs linear time and bounded memory; a body of too many
records is refused before it is stored. Plus property tests of body framing and gzip."""

from __future__ import annotations

import gzip
import time
import tracemalloc

import orjson
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from events.models import Event
from ingest.batches import process_batch
from ingest.body import MAX_GZIP_MEMBERS, BodyError, count_records, decode_body, frame_body
from ingest.models import RawBatch, Rejection

NDJSON = "application/x-ndjson"


def chat(uid: str, **extra: object) -> dict:
    return {
        "id": uid, "type": "message", "from": "v1", "site_id": "s1", "data": {"message": "hi"},
        "timestamp": time.time() - 60, **extra,
    }  # fmt: skip


def ndjson(*uids: str) -> bytes:
    return b"".join(orjson.dumps(chat(uid)) + b"\n" for uid in uids)


def post(key: str, body: bytes, content_type: str = NDJSON, gzipped: bool = False):
    cache.clear()  # throttle history
    headers = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    if gzipped:
        headers["HTTP_CONTENT_ENCODING"] = "gzip"
    return APIClient().generic("POST", "/api/events/", body, content_type=content_type, **headers)


def limits(**changes: int) -> override_settings:
    return override_settings(SWITCHBOARD={**settings.SWITCHBOARD, **changes})


# -- item 2: multi-member gzip ------------------------------------------------------


@pytest.mark.django_db
def test_every_gzip_member_is_read_on_the_http_path(app_key):
    """Two concatenated members (valid gzip, e.g. `cat a.gz b.gz`): main answered 202 with the first only."""
    body = gzip.compress(ndjson("a", "b")) + gzip.compress(ndjson("c")) + gzip.compress(ndjson("d", "e"))

    response = post(app_key, body, gzipped=True)

    assert response.status_code == 202, response.content
    assert response.json()["records"] == 5
    process_batch(response.json()["batch_id"])
    assert sorted(Event.objects.values_list("uid", flat=True)) == ["a", "b", "c", "d", "e"]
    assert RawBatch.objects.get().accepted == 5


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (gzip.compress(b"a") + gzip.compress(b"b")[:-3], 400, "truncated"),
        (gzip.compress(b"a") + b"garbage", 400, "not valid gzip"),
        (b"".join(gzip.compress(b"x") for _ in range(MAX_GZIP_MEMBERS + 1)), 400, f"more than {MAX_GZIP_MEMBERS}"),
        (gzip.compress(b"x" * 600) + gzip.compress(b"y" * 600), 413, "over the limit of 1000"),
        (b"", 400, "truncated"),
    ],
    ids=["truncated-second-member", "trailing-garbage", "too-many-members", "inflated-over-the-limit", "empty"],
)
def test_gzip_bodies_that_cannot_be_read_whole_are_refused(body, status, reason):
    with pytest.raises(BodyError, match=reason) as error:
        decode_body(body, "gzip", 1000)
    assert error.value.status == status


def test_zero_padding_after_the_last_member_is_allowed():
    assert decode_body(gzip.compress(b"a") + gzip.compress(b"b") + b"\0" * 1024, "gzip", 1000) == b"ab"


def test_the_most_members_allowed_inflate_quickly():
    body = b"".join(gzip.compress(b'{"n":%d}\n' % i) for i in range(MAX_GZIP_MEMBERS))
    started = time.perf_counter()
    text = decode_body(body, "x-gzip", 10**6)
    assert time.perf_counter() - started < 1
    assert text == b"".join(b'{"n":%d}\n' % i for i in range(MAX_GZIP_MEMBERS))


@pytest.mark.django_db
def test_the_import_path_reads_every_member_too(tmp_path):
    from ingest.imports.sequential import import_file

    path = tmp_path / "two-members.jsonl.gz"
    path.write_bytes(gzip.compress(ndjson("a", "b")) + gzip.compress(ndjson("c")))

    job = import_file(str(path))

    assert (job.accepted, job.rejected) == (3, 0)
    assert Event.objects.count() == 3


@hypothesis_settings(max_examples=60, deadline=None)
@given(members=st.lists(st.binary(max_size=300), min_size=1, max_size=8), level=st.integers(0, 9))
def test_any_split_into_members_inflates_to_the_whole(members, level):
    packed = [gzip.compress(member, compresslevel=level) for member in members]
    body = b"".join(packed)
    assert decode_body(body, "gzip", 10**6) == b"".join(members)
    # Cut inside its last member, it is refused, never taken shorter.
    with pytest.raises(BodyError):
        decode_body(body[: len(body) - len(packed[-1]) // 2], "gzip", 10**6)


# -- item 4 (request side): records per body --------------------------------------


@pytest.mark.django_db
def test_a_tiny_gzip_body_of_half_a_million_lines_is_refused_before_it_is_stored(app_key):
    """Main answered 202, then a worker stored 500 k rejections and grew by ~350 MB."""
    body = gzip.compress(b"x\n" * 500_000, compresslevel=9)
    assert len(body) < 2000

    response = post(app_key, body, gzipped=True)

    assert response.status_code == 413
    limit = settings.SWITCHBOARD["MAX_RECORDS_PER_BODY"]
    assert response.json() == {
        "detail": f"the body holds more than {limit} records (MAX_RECORDS_PER_BODY): send them in smaller batches"
    }
    assert not RawBatch.objects.exists() and not Rejection.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (ndjson("a", "b", "c"), NDJSON),
        (b"\n \n" + ndjson("a", "b", "c") + b"\n\n", NDJSON),  # blank lines are not records
        (orjson.dumps([chat("a"), chat("b"), chat("c")]), "application/json"),
        (b'[{"id":"a"}, {broken}, {"id":"c"}]', "application/json"),  # the scanning path
    ],
    ids=["ndjson", "ndjson-blank-lines", "array", "array-with-a-broken-element"],
)
def test_the_records_limit_is_exact(app_key, body, content_type):
    with limits(MAX_RECORDS_PER_BODY=3):
        assert post(app_key, body, content_type).status_code == 202
    with limits(MAX_RECORDS_PER_BODY=2):
        refused = post(app_key, body, content_type)
    assert refused.status_code == 413 and "more than 2 records" in refused.json()["detail"]
    assert RawBatch.objects.count() == 1


# -- item 3: a long string in a body -------------------------------------------------


@pytest.mark.django_db
def test_a_long_string_in_a_broken_array_costs_bounded_memory_on_both_paths(app_key):
    """Main held ~1.3 GB in the web process for a 10 MB body like this one."""
    long_string = b'{"id":"big","pad":"' + b"\\u00e9x" * 1_400_000 + b'"}'  # ~9.8 MB
    body = b"[" + orjson.dumps(chat("a")) + b", {broken}, " + long_string + b", " + orjson.dumps(chat("b")) + b"]"
    assert len(body) < settings.SWITCHBOARD["MAX_BODY_BYTES"]

    tracemalloc.start()
    response = post(app_key, body, "application/json")
    request_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    batch = process_batch(response.json()["batch_id"])
    worker_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert response.status_code == 202 and response.json()["records"] == 4
    assert request_peak < 8 * len(body), f"request peak {request_peak / 2**20:.0f} MiB"
    assert worker_peak < 8 * len(body), f"worker peak {worker_peak / 2**20:.0f} MiB"
    assert (batch.accepted, batch.rejected) == (2, 2)
    reasons = dict(Rejection.objects.values_list("line", "reason"))
    max_record = settings.SWITCHBOARD["MAX_RECORD_BYTES"]
    assert reasons[3] == f"record is {len(long_string)} bytes, over the limit of {max_record}"
    assert reasons[2].startswith("not valid JSON")


# -- properties: the request and the worker frame a body alike ------------------------

record_text = st.one_of(
    st.builds(lambda uid: orjson.dumps(chat(uid)), st.text(min_size=1, max_size=5)),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" ")),  # anything, even broken JSON
)


@hypothesis_settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(record_text, min_size=1, max_size=12),
    as_array=st.booleans(),
    blank_lines=st.booleans(),
    gzipped=st.booleans(),
    limit=st.integers(1, 15),
)
def test_count_and_frame_agree_on_any_body(records, as_array, blank_lines, gzipped, limit):
    """The request's count (and refusal) and the worker's records are the same framing."""
    if as_array:
        body, content_type = b"[" + b",\n".join(records) + b"]", "application/json"
    else:
        separator = b"\n\n" if blank_lines else b"\n"
        body, content_type = separator.join(records) + b"\n", NDJSON
    sent = gzip.compress(body) if gzipped else body
    try:
        decoded = decode_body(sent, "gzip" if gzipped else "", 10**6)
        framed = frame_body(decoded, content_type)
    except BodyError:
        with pytest.raises(BodyError):
            count_records(decode_body(sent, "gzip" if gzipped else "", 10**6), content_type, limit)
        return
    assert decoded == body
    if len(framed) > limit:
        with pytest.raises(BodyError, match=f"more than {limit} records") as error:
            count_records(decoded, content_type, limit)
        assert error.value.status == 413
    else:
        assert count_records(decoded, content_type, limit) == len(framed)
