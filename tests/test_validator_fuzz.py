"""Hypothesis fuzzing of every validator (issue 12): whatever a record holds, validation ends
in an accepted event or a rejection with a reason, never an exception that would fail its
neighbours; chat records are judged exactly as the independent oracle (tests/chat_oracle.py)
judges them; xmpp and interaction records only ever fail with a reason."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ingest.framing import Broken
from ingest.records import Chunk, validate_into
from tests import chat_oracle

NOW = time.time()
FUZZ = hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            0,
            -1,
            1e308,
            -0.0,
            2**63,
            NOW + 10**6,
            "",
            " ",
            "online",
            "offline",
            "\x00",
            "é",
            "a\nb",
            "a,b",
            "\u2028",
            "\x1b[",
        ]
    ),
    st.text(max_size=12),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def dumps(value: object) -> bytes:
    """JSON text as a client may send it: integers of any size included (orjson stops at 64 bits)."""
    return json.dumps(value, ensure_ascii=False).encode()


def validate(raw: bytes) -> Chunk:
    """One record through the worker's validation (the same code the import uses)."""
    chunk = validate_into(Chunk(), [(1, raw, len(raw))], NOW)
    assert len(chunk.events) + len(chunk.rejections) == 1, raw  # one outcome, whatever it was
    for rejection in chunk.rejections:
        assert rejection.reason and rejection.line == 1
    return chunk


def valid_chat(kind: str) -> dict:
    data = {"message": "hi"} if kind == "message" else {"status": "online"}
    return {"id": "m-1", "type": kind, "from": "v1", "site_id": "s1", "data": data, "timestamp": NOW - 60}


@FUZZ
@given(
    kind=st.sampled_from(["message", "status"]),
    changes=st.dictionaries(
        st.sampled_from(["id", "type", "from", "site_id", "timestamp", "data", "extra"]), json_value, max_size=3
    ),
    drop=st.sets(st.sampled_from(["id", "from", "site_id", "timestamp", "data"]), max_size=2),
    data_changes=st.dictionaries(st.sampled_from(["message", "status"]), json_value, max_size=2),
)
@example(kind="message", changes={"site_id": 2**70}, drop=set(), data_changes={})
@example(kind="status", changes={"site_id": 2**64 - 1, "timestamp": 2**64}, drop=set(), data_changes={})
@example(kind="message", changes={"site_id": -(2**63)}, drop=set(), data_changes={})
@example(kind="message", changes={"site_id": "zz\nvictim,messages=1"}, drop=set(), data_changes={})
@example(kind="status", changes={"site_id": "a,b", "from": "op\u2028"}, drop=set(), data_changes={})
@example(kind="message", changes={"id": "m\x85", "from": "a\u00a0b"}, drop=set(), data_changes={})
def test_chat_validation_agrees_with_the_oracle(kind, changes, drop, data_changes):
    record = {**valid_chat(kind), **changes}
    if isinstance(record.get("data"), dict) and "data" not in changes:
        record["data"] = {**record["data"], **data_changes}
    for field in drop:
        record.pop(field, None)
    raw = dumps(record)

    chunk = validate(raw)

    try:
        expected = chat_oracle.parse_line(raw, NOW, settings.SWITCHBOARD["MAX_RECORD_BYTES"])
    except chat_oracle.Rejected:
        assert not chunk.events, (record, chunk.events)
        return
    assert chunk.events, (record, chunk.rejections)
    event = chunk.events[0][1]
    assert (event.uid, event.kind, event.site, event.actor) == (
        expected.uid,
        expected.kind,
        expected.site,
        expected.actor,
    )
    assert event.ts == pytest.approx(expected.ts) and bool(event.online) == expected.online


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["id", "timestamp", "room_id", "event", "nick", "jid", "sender", "channel", "meta", "stanza"]),
        json_value | st.sampled_from(["<message><body>x</body></message>", "<presence type='unavailable'/>", "<"]),
        max_size=4,
    )
)
def test_xmpp_records_end_as_an_event_or_a_reason(changes):
    record = {
        "id": "x-1", "timestamp": NOW - 60, "room_id": "r", "event": "muc-broadcast-message", "nick": "n",
        "channel": "c", "meta": {}, "stanza": "<message type='groupchat'><body>hi</body></message>", **changes,
    }  # fmt: skip
    validate(dumps(record))


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["session_id", "category", "name", "data", "timestamp", "id"]),
        json_value
        | st.sampled_from(
            ["2021-01-01 09:15:27.243860", "2021-01-01T09:15:27Z", "e2085be5-9137-4e4e-80b5-f1ffddc25423"]
        ),
        max_size=3,
    ),
    kind=st.sampled_from(
        [
            ("page interaction", "pageview"),
            ("page interaction", "cta click"),
            ("form interaction", "submit"),
            ("x", "y"),
        ]
    ),
    data=st.dictionaries(st.sampled_from(["host", "path", "element", "form"]), json_value, max_size=4),
)
def test_interaction_records_end_as_an_event_or_a_reason(changes, kind, data):
    record = {
        "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": kind[0], "name": kind[1],
        "data": {"host": "www.example.com", "path": "/", **data}, "timestamp": "2021-01-01 09:15:27.243860", **changes,
    }  # fmt: skip
    validate(dumps(record))


@FUZZ
@given(raw=st.binary(max_size=200) | json_value.map(dumps))
def test_any_bytes_end_as_an_event_a_reason_or_a_skipped_blank_line(raw):
    chunk = validate_into(Chunk(), [(1, raw, len(raw)), (2, Broken("too long", raw[:10]), 0)], NOW)
    outcomes = len(chunk.events) + len(chunk.rejections)
    assert outcomes == (1 if raw.strip() else 0) + 1
    assert chunk.rejections[-1].reason == "too long"
