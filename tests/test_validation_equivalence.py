"""Issue 21: the one-pass validation of common chat records (events/chat_decoder.py) against the
general path (orjson and the registry, `validate_into(one_pass=False)`): for every line, hostile
ones above all, the same event (every field, the payload as decoded, the time's spelling) or
the same rejection with the same reason."""

from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from events import chat_decoder
from events.clock import Receipt
from events.db import copy_text
from events.registry import Invalid, NormalizedEvent, check_identifiers, identifiers_clean
from ingest.framing import LineBlock
from ingest.imports import loader
from ingest.imports.copy_rows import row_at
from ingest.records import Chunk, validate_into
from reports import event_counts, maintenance

NOW = 1_700_000_000.0
RECEIPT = Receipt(received_at=NOW, sent_at=NOW - 3600)
DIFFERENTIAL = hypothesis_settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
BASE = b'{"id":"c-1","type":"message","from":"v1","site_id":"s1","timestamp":1429026445.5,"data":{"message":"hi"}}'


def outcome(line: bytes, receipt: Receipt | None, *, one_pass: bool) -> tuple[str, str]:
    """What validation makes of one line, spelled out: the events' reprs show every field,
    the payload (decoded when read) and each number's type and spelling (-0.0, 15 vs 15.0)."""
    chunk = validate_into(Chunk(), [(1, line, len(line))], NOW, receipt, one_pass=one_pass)
    return repr(chunk.events), repr(chunk.rejections)


def assert_same(line: bytes) -> None:
    for receipt in (None, RECEIPT):
        assert outcome(line, receipt, one_pass=True) == outcome(line, receipt, one_pass=False), line


# -- hostile lines ---------------------------------------------------------------------

chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())  # surrogates too
texts = st.one_of(
    st.sampled_from(["c-1", "s1", "online", "offline", "message", "status", "", "a,b", "x" * 255, "x" * 256]),
    st.sampled_from(["\x00", "\t", "a\nb", "\x7f", "\x85", "\u2028", "é", "😀", "\ud800", "\udfff"]),
    st.text(chars, max_size=6),
)


@st.composite
def json_string(draw: st.DrawFn, text: str) -> bytes:
    """`text` as a JSON string, spelled one of the ways a client may: escaped or raw UTF-8
    (a lone surrogate then is invalid UTF-8), or with raw control bytes (invalid JSON)."""
    how = draw(st.sampled_from(["ascii", "utf8", "raw"]))
    if how == "ascii":
        return json.dumps(text, ensure_ascii=True).encode()
    if how == "utf8":
        return json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return b'"' + text.encode("utf-8", "surrogatepass").replace(b'"', b'\\"') + b'"'


numbers = st.one_of(
    st.floats(min_value=-1000, max_value=NOW + 10**6).map(lambda f: repr(f).encode()),
    st.integers(-1000, int(NOW) + 10**6).map(lambda i: str(i).encode()),
    st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.sampled_from(
        [
            b"1e400",
            b"-1e400",
            b"1E9",
            b"-0",
            b"-0.0",
            b"0.0",
            b"1e-400",
            b"1429026445.000000000000000000001",
            b"18446744073709551615",
            b"18446744073709551616",
            b"9223372036854775808",
            b"1.7976931348623157e308",
            b"01",
            b"1.",
            b".5",
            b"+1",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1e",
            b"0x10",
            b"1_000",
        ]
    ),
)


def values(depth: int = 2) -> st.SearchStrategy[bytes]:
    leaves = st.one_of(
        st.sampled_from([b"null", b"true", b"false", b"True", b"nul", b"[]", b"{}"]),
        numbers,
        texts.flatmap(json_string),
        st.sampled_from([b'"2023-11-14T22:13:20"', b'"2023-11-14T22:13:20+05:00"', b'"yesterday"', b'"\\ud800"']),
    )
    if depth == 0:
        return leaves
    inner = values(depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, max_size=3).map(lambda items: b"[" + b",".join(items) + b"]"),
        st.lists(st.tuples(keys, inner), max_size=3).map(encode_object),
    )


FIELDS = ["id", "type", "from", "site_id", "timestamp", "data", "sentAt", "receivedAt"]
keys = st.one_of(
    st.sampled_from([*FIELDS, "message", "status", "extra", "stanza", "room_id", "category", "name"]).map(
        lambda key: json.dumps(key).encode()
    ),
    st.sampled_from([b'"i\\u0064"', b'"\\u0074ype"', b'"ID"', b'"id "', b'""', b'"\xff"', b'"\\ud800"']),
)


def encode_object(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(key + b":" + value for key, value in pairs) + b"}"


def field_value(key: str) -> st.SearchStrategy[bytes]:
    """Mostly a value the field could take, often one it must not."""
    likely = {
        "type": st.sampled_from([b'"message"', b'"status"', b'"Message"', b'"message "']),
        "timestamp": numbers,
        "sentAt": st.one_of(numbers, st.sampled_from([b'"2023-11-14T22:13:20"', b'"2023-11-14T22:13:20Z"'])),
        "receivedAt": st.one_of(numbers, st.sampled_from([b'"2023-11-14T22:13:20"', b'"2023-11-14T21:00:00Z"'])),
        "data": st.lists(
            st.tuples(
                st.sampled_from([b'"message"', b'"status"', b'"extra"']),
                st.one_of(values(0), texts.flatmap(json_string)),
            ),
            max_size=3,
        ).map(encode_object),
    }.get(key, texts.flatmap(json_string))
    return st.one_of(likely, likely, values())


# Each field of the chat record is mostly kept, so that many lines are valid or nearly.
ACTIONS = ["keep"] * 12 + ["replace"] * 3 + ["repeat", "drop"]


@st.composite
def chat_lines(draw: st.DrawFn) -> bytes:
    """A chat-like line: each field of a chat record (some left out, some twice, in any order),
    unknown fields, then maybe bytes spliced in, a BOM, padding or a cut."""
    kind = draw(st.sampled_from([b'"message"', b'"status"']))
    pairs = [(b'"id"', b'"c-1"'), (b'"type"', kind), (b'"from"', b'"v1"'), (b'"site_id"', b'"s1"')]
    pairs += [
        (b'"timestamp"', b"1429026445.5"),
        (b'"data"', b'{"message":"hi"}' if kind == b'"message"' else b'{"status":"online"}'),
    ]
    for key in FIELDS:
        action = draw(st.sampled_from(ACTIONS))
        if action == "keep":
            continue
        pair = (json.dumps(key).encode(), draw(field_value(key)))
        index = next((i for i, (k, _) in enumerate(pairs) if k == pair[0]), None)
        if action == "replace" and index is not None:
            pairs[index] = pair
        elif action == "drop" and index is not None:
            del pairs[index]
        elif action != "drop":
            pairs.append(pair)
    if draw(st.integers(0, 3)) == 0:
        pairs += draw(st.lists(st.tuples(keys, values()), min_size=1, max_size=2))
    pairs = draw(st.permutations(pairs)) if draw(st.booleans()) else pairs
    line = encode_object(pairs)
    for _ in range(draw(st.sampled_from([0] * 6 + [1, 2]))):
        at = draw(st.integers(0, len(line)))
        cut = draw(
            st.sampled_from([b"", b" ", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00", b"\x01", b",", b"}", b"\\"])
        )
        line = line[:at] + cut + line[at + draw(st.integers(0, 2)) :]
    prefix = draw(st.sampled_from([b""] * 6 + [b" ", b"\xef\xbb\xbf", b"\t"]))
    suffix = draw(st.sampled_from([b""] * 6 + [b"\r", b" \r", b"\x0c"]))
    return prefix + line + suffix


@DIFFERENTIAL
@given(chat_lines())
@example(BASE)
@example(BASE.replace(b'{"id"', b'{"id":5,"id"'))  # a repeated key takes its last value
@example(BASE.replace(b'"}}', b'"},"id":5}'))
@example(BASE.replace(b'"}}', b'"},"data":{"status":"online"}}'))
@example(BASE.replace(b'"}}', b'","message":7}}'))
@example(BASE.replace(b"1429026445.5", b"-0.0"))
@example(BASE.replace(b"1429026445.5", b"1429026445"))
@example(BASE.replace(b"1429026445.5", b"1e400"))
@example(BASE.replace(b'"}}', b'"},"x":1e400}'))  # orjson refuses a number out of range anywhere
@example(BASE.replace(b'"}}', b'"},"x":"\xff"}'))  # and invalid UTF-8 anywhere
@example(BASE.replace(b'"}}', b'"},"x":18446744073709551616}'))
@example(BASE.replace(b'"c-1"', b'"c\\u0001"'))  # a control character in an identifier
@example(BASE.replace(b'"s1"', b'"s,1"'))
@example(BASE.replace(b'"c-1"', b'"\\ud800"'))
@example(BASE.replace(b'"}}', b'"},"sentAt":1429026440,"receivedAt":"2023-11-14T22:13:20Z"}'))
@example(BASE.replace(b'"}}', b'"},"sentAt":true}'))
@example(BASE.replace(b'{"id"', b'{"i\\u0064"'))
def test_the_one_pass_and_the_general_path_give_the_same_event_or_reason(line):
    assert_same(line)


# -- the one pass is taken ----------------------------------------------------------------

TAKEN = [
    BASE,
    BASE.replace(b"1429026445.5", b"1429026445"),
    BASE.replace(b'"message","from"', b'"status","from"').replace(b'{"message":"hi"}', b'{"status":"offline"}'),
    b' {"id":"\\u00e9","type":"message","from":"v","site_id":"s","timestamp":0,"data":{"message":""}}\r',
    BASE.replace(b'"}}', b'"},"sentAt":"2015-04-14T15:47:30Z","receivedAt":1429026445}'),
]


@pytest.mark.parametrize("line", TAKEN)
def test_a_common_chat_record_takes_the_one_pass_and_gets_the_general_paths_event(line):
    assert chat_decoder.common_event(line) is not None
    assert_same(line)


LEFT = [
    BASE.replace(b'"s1"', b"42"),  # an integer site
    BASE.replace(b'"}}', b'"},"extra":1}'),  # a field the Struct does not know
    BASE.replace(b'"}}', b'","extra":1}}'),
    BASE.replace(b'"hi"', b"null"),
    BASE.replace(b'"c-1"', b'"' + b"x" * 256 + b'"'),
    BASE.replace(b'"}}', b'"},"x":1e400}'),
    BASE.replace(b'"}}', b'"},"x":"\xff"}'),
    BASE.replace(b"1429026445.5", b"1e400"),
    b"[]",
]


@pytest.mark.parametrize("line", LEFT)
def test_any_other_record_is_left_to_the_general_path(line):
    assert chat_decoder.common_event(line) is None
    assert_same(line)


def test_the_payload_is_decoded_from_the_stored_text_when_read():
    (_, event), *_ = validate_into(Chunk(), [(1, BASE, len(BASE))], NOW).events
    assert event.payload == {
        "id": "c-1", "type": "message", "from": "v1", "site_id": "s1", "timestamp": 1429026445.5,
        "data": {"message": "hi"},
    }  # fmt: skip


# -- a chunk of an import, by column (issue 21) ------------------------------------------------

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def sample_lines() -> list[bytes]:
    """Lines of the shared samples: chat (edge cases and bad records), interactions, xmpp."""
    chat = SAMPLES / "chat"
    lines = [*(chat / "edge.jsonl").read_bytes().split(b"\n"), *(chat / "external_bad.jsonl").read_bytes().split(b"\n")]
    lines += (SAMPLES / "interactions" / "eye_sample.jsonl").read_bytes().split(b"\n")[:30]
    xmpp = orjson.loads((SAMPLES / "xmpp" / "chatid_sample.json").read_bytes())
    return lines + [orjson.dumps(record) for record in xmpp[:30]]


SAMPLE_LINES = sample_lines()
STATUS = BASE.replace(b'"message","from"', b'"status","from"').replace(b'{"message":"hi"}', b'{"status":"online"}')
common = st.builds(
    lambda line, uid, site: line.replace(b'"c-1"', uid).replace(b'"s1"', site),
    st.sampled_from([BASE, STATUS, BASE.replace(b"1429026445.5", b"1429026445")]),
    # A no-break space and a zero-width joiner: unprintable, yet no control character.
    st.sampled_from([b'"c-1"', b'"c-2"', b'"c\\\\3"', b'"c-\xc3\xa9"', b'"c\\u00a04"']),
    st.sampled_from(
        [b'"s1"'] * 4 + [b'"s2"', b'"s\\\\3"', b'"s\xe2\x80\x8d6"', b'"s\\t4"', b'"s,5"']
    ),  # the last two: rules broken
)


def expected(records: list, postgresql: bool) -> dict:
    """What `prepare` gives, by the general path alone and field by field."""
    chunk = validate_into(Chunk(), records, NOW, one_pass=False)
    first: dict = {}
    for line, event in chunk.events:
        first.setdefault(event.uid, (line, event))
    kept = [first[uid] for uid in sorted(first)]
    rows = [
        (e.uid, e.family, e.kind, e.category, e.site, e.session, e.actor, e.ts, e.online, e.client_ts,
         e.payload_json.decode(), line)
        for line, e in kept
    ]  # fmt: skip
    events = [e for _, e in kept]
    return {
        "uids": sorted(first),
        "events": len(chunk.events),
        "records": chunk.record_count,
        "rejections": repr(chunk.rejections),
        "sites": sorted({e.site for e in events}),
        "details": {e.uid: e.detail for e in events if e.detail},
        "marks": maintenance.stale_marks(events),
        "counts": event_counts.tally(events),
        "rows": [[copy_text(v) for v in row] for row in rows] if postgresql else rows,
        "claims": [[copy_text(uid), ts] for uid, *_, ts, _, _, _, _ in rows],
    }


def prepared(records: list | LineBlock, postgresql: bool) -> dict:
    p = loader.prepare(records, NOW, postgresql)
    got = {
        "uids": p.uids, "events": p.events, "records": p.records, "rejections": repr(p.rejections), "sites": p.sites,
        "details": p.details, "marks": +p.marks, "counts": +p.counts,
    }  # fmt: skip
    if not postgresql:
        return {**got, "rows": p.rows, "claims": [[copy_text(row[0]), row[7]] for row in p.rows]}
    lines = [line + "\n" for line in p.copy.decode().split("\n")[:-1]]  # not splitlines: a payload may hold NEL
    claims = [line + "\n" for line in p.claims.decode().split("\n")[:-1]]
    for text, rows in ((p.copy, lines), (p.claims, claims)):  # each id's row found where it is, by halving
        ends = list(accumulate(len(line.encode()) for line in rows))
        assert [row_at(text, uid) for uid in p.uids] == list(zip([0, *ends][: len(ends)], ends, strict=True))
    rows = [line.removesuffix("\n").split("\t") for line in lines]
    for row in rows:  # numbers: the same float (JSON's spelling), as copy_text would write it
        row[7] = copy_text(float(row[7]))
        row[9] = row[9] if row[9] == "\\N" else copy_text(float(row[9]))
    claimed = [line.removesuffix("\n").split("\t") for line in claims]
    return {**got, "rows": rows, "claims": [[uid, float(ts)] for uid, ts in claimed]}


def as_block(records: list) -> LineBlock | None:
    """The records as the one block of lines a validating worker gets, ending at the last
    record's offset; None if a record holds a newline (no NDJSON line does)."""
    data = b"".join(raw + b"\n" for _, raw, _ in records)
    if data.count(b"\n") != len(records):
        return None
    return LineBlock(data, len(records), records[0][0], records[-1][2] - len(data))


@DIFFERENTIAL
@given(st.lists(st.one_of(common, common, chat_lines(), st.sampled_from([*SAMPLE_LINES, b"", b"  \r"])), max_size=14))
@example([BASE.replace(b'"v1"', b'"v\xc2\x85"'), BASE.replace(b'"hi"', b'"h\xc2\x85i"')])  # NEL: no line break in COPY
def test_a_chunk_prepared_by_column_is_the_general_paths_chunk(lines):
    records = [(i, line, i * 1000) for i, line in enumerate(lines, start=1)] or [(1, b"", 0)]
    block = as_block(records)  # as a worker gets them, unless a line holds a newline
    for postgresql in (True, False):
        want = expected(records, postgresql)
        assert prepared(records, postgresql) == want, lines
        assert block is None or prepared(block, postgresql) == want, lines


# -- the identifier rule over a chunk's columns ----------------------------------------------

identifier = st.text(
    st.one_of(
        st.sampled_from(["a", ",", "\x00", "\t", "\x7f", "\x85", "\x9f", "\xa0", "\xad", "\u200d", "\u2028", "\ufeff"]),
        chars,
    ),
    max_size=4,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(identifier, identifier, identifier, identifier), max_size=4))
@example([("dev 👨\u200d💻", "s\xa01", "v\xad", "")])  # unprintable, yet no control character
@example([("c", "s", "v\x85", "")])
def test_a_chunks_identifiers_are_clean_exactly_when_each_events_are(events):
    def passes(uid: str, site: str, actor: str, session: str) -> bool:
        event = NormalizedEvent(uid, "chat", "message", site, 0.0, None, session=session, actor=actor)
        try:
            check_identifiers(event, {})
        except Invalid:
            return False
        return True

    columns = [[event[i] for event in events] for i in range(4)]
    assert identifiers_clean(*columns) == all(passes(*event) for event in events)
