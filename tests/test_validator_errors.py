"""A family's validator that raises something other than `Invalid` (a bug: a KeyError, a
TypeError) rejects that record with the error as its reason, and nothing else: its neighbours
are stored, the batch ends done, an import finishes (sequential, with validating processes,
parallel ranges; COPY on PostgreSQL), and a replay goes on past it (issue 22 item 13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import call_command

from events import registry
from events.interaction import register_interaction_type, validate_cta_click
from events.models import Event
from events.registry import FamilySpec
from ingest.batches import process_batch, receive_batch
from ingest.imports.parallel import finish_import
from ingest.imports.ranges import plan_import
from ingest.keys import create_application
from ingest.models import RawBatch, Rejection
from ingest.rejections import matching, replay

pytestmark = pytest.mark.django_db

SESSION = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
BOOM = "/boom"  # the one record the broken validator fails on


def chat(uid: str) -> dict[str, Any]:
    return {"id": uid, "type": "message", "from": "v", "site_id": "s1", "data": {"message": "hi"}, "timestamp": 1e9}


def click(path: str, **extra: object) -> dict[str, Any]:
    data = {"host": "shop.example", "path": path, "element": "buy", **extra}
    return {"session_id": SESSION, "category": "page interaction", "name": "cta click", "data": data,
            "timestamp": "2021-01-01 09:16:58.244497"}  # fmt: skip


def broken_click_validator(data: dict[str, Any]) -> None:
    if data["path"] == BOOM:
        data["no such field"]  # noqa: B018 - the bug: a KeyError, not `Invalid`


def broken_family_normalize(record: dict[str, Any]) -> registry.NormalizedEvent:
    return record["n"] + "text"  # the bug: a TypeError for the record whose "n" is a number


def garbage_family_normalize(record: dict[str, Any]) -> registry.NormalizedEvent:
    # The bug: no site (the store would refuse the whole group's sites, or sorting them fail).
    return registry.NormalizedEvent(record["id"], "chat", "message", record.get("site"), 1e9, record)


@pytest.fixture(params=["payload validator", "family", "malformed event"])
def broken(request) -> tuple[list[bytes], str]:
    """Records with one that a validator registered now fails on, in the middle: (lines, the error's name)."""
    if request.param == "payload validator":
        register_interaction_type("page interaction", "cta click", broken_click_validator)
        bad, error = click(BOOM), "KeyError"
    elif request.param == "family":
        registry.register_family(FamilySpec("numbered", lambda r: "n" in r, broken_family_normalize))
        bad, error = {"id": "n-1", "n": 7}, "TypeError"
    else:
        registry.register_family(FamilySpec("numbered", lambda r: "n" in r, garbage_family_normalize))
        bad, error = {"id": "n-1", "n": 7}, "TypeError: it returned an event whose site is NoneType, not str"
    before = [chat(f"c-{i}") for i in range(3)] + [click(f"/p{i}") for i in range(3)]
    after = [chat(f"d-{i}") for i in range(3)] + [click(f"/q{i}") for i in range(3)]
    yield [orjson.dumps(r) for r in [*before, bad, *after]], error
    register_interaction_type("page interaction", "cta click", validate_cta_click)
    registry._FAMILIES[:] = [f for f in registry._FAMILIES if f.name != "numbered"]


def assert_only_the_bad_one_rejected(error: str, records: int = 13) -> Rejection:
    (rejection,) = Rejection.objects.all()
    assert rejection.line == 7 and rejection.complete, rejection
    assert f"validator failed: {error}" in rejection.reason, rejection.reason
    assert Event.objects.count() == records - 1
    return rejection


def test_a_live_batch_stores_the_neighbours_and_ends_done(broken):
    lines, error = broken
    app, _ = create_application("shop")
    posted = receive_batch(app, b"\n".join(lines), "application/x-ndjson", "", len(lines))

    batch = process_batch(posted.pk)

    assert (batch.status, batch.accepted, batch.rejected, batch.last_error) == ("done", 12, 1, "")
    assert_only_the_bad_one_rejected(error)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_import_finishes_with_the_record_rejected(broken, tmp_path: Path, workers: int):
    """`workers` 1: chunks validated in a forked process (which has the validator too)."""
    lines, error = broken
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    call_command("import_jsonl", str(path), "--workers", str(workers), "--chunk-lines", "4")

    assert_only_the_bad_one_rejected(error)
    assert sum(RawBatch.objects.values_list("accepted", flat=True)) == 12


def test_parallel_ranges_finish_with_the_record_rejected(broken, tmp_path: Path):
    lines, error = broken
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    plan = plan_import(str(path), chunk_bytes=path.stat().st_size // 3)
    assert plan.planned >= 3

    call_command("process_pending")  # imports the ranges in this process, where the validator is

    job = finish_import(plan.job)
    assert (job.accepted, job.rejected) == (12, 1)
    assert_only_the_bad_one_rejected(error)


def test_a_replay_goes_on_past_a_validator_that_raises(broken, tmp_path: Path, settings):
    """Every record is refused first (too deep); once the limit is raised, the replay stores
    all but the one the broken validator fails on, which stays rejected with the error."""
    lines, error = broken
    deep = [line[:-1] + b', "deep": ' + b"[" * 120 + b"]" * 120 + b"}" for line in lines]
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"\n".join(deep) + b"\n")
    call_command("import_jsonl", str(path), "--workers", "0")  # nesting is checked before any family
    assert Rejection.objects.count() == 13 and not Event.objects.exists()

    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_NESTING": 200}
    result = replay(matching())

    assert (result.examined, result.accepted) == (13, 12)
    (still,) = result.still_rejected
    assert f"validator failed: {error}" in still
    assert Event.objects.count() == 12
    assert set(Rejection.objects.filter(replayed_at=None).values_list("line", flat=True)) == {7}
    assert replay(matching()).examined == 1  # and again: still rejected, nothing else happens


ODD_VALUES = {"ts": [float("nan"), float("inf"), -float("inf"), True, "1e9", None], "actor": [None, 5, b"v"],
              "kind": [None, 5], "session": [None, ["r"]], "category": [None, 1.5]}  # fmt: skip


@pytest.mark.parametrize(("column", "value"), [(c, v) for c, values in ODD_VALUES.items() for v in values], ids=repr)
def test_an_event_with_a_column_of_the_wrong_type_is_rejected_not_stored(column: str, value: object):
    """Issue 22 item 13, second look: a family returning an event whose time is NaN or infinite
    (the store took it: every later time conversion of the site failed) or whose text column is
    not text is a bug of that family: the record is rejected naming the column, the rest stored."""

    def odd_family_normalize(record: dict[str, Any]) -> registry.NormalizedEvent:
        event = registry.NormalizedEvent(record["id"], "chat", "message", "s1", 1e9, record, actor="v")
        if record["n"]:
            object.__setattr__(event, column, value)
        return event

    registry.register_family(FamilySpec("numbered", lambda r: "n" in r, odd_family_normalize))
    try:
        app, _ = create_application("shop")
        lines = [orjson.dumps({"id": f"n-{n}", "n": n}) for n in (0, 1, 0)]
        lines[2] = lines[2].replace(b"n-0", b"n-2")
        batch = process_batch(receive_batch(app, b"\n".join(lines), "application/x-ndjson", "", 3).pk)
    finally:
        registry._FAMILIES[:] = [f for f in registry._FAMILIES if f.name != "numbered"]

    assert (batch.status, batch.accepted, batch.rejected) == ("done", 2, 1)
    (rejection,) = Rejection.objects.all()
    assert rejection.line == 2
    assert f"validator failed: TypeError: it returned an event whose {column} is" in rejection.reason, rejection.reason
