"""Issue 21's fast import path against the general path, a whole file at a time.

An NDJSON file is framed in line blocks (`framing.ndjson_blocks`), cut into chunks of a
few lines (`sequential._chunks_with_hashes`, blocks split mid-block), each handed to
`loader.prepare` as one `LineBlock` and validated by column. The oracle frames the same
bytes independently (split at newlines, a BOM dropped at the start only) and validates
every record by the general path alone (`validate_into(one_pass=False)`): the rows kept
(the first of each id, every field, the COPY text read back), the rejections (line,
reason, text) and the counts must be the same.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from events.models import Event, EventIdentity
from ingest import framing
from ingest.batches import process_batch
from ingest.framing import BOM, iter_json_array, ndjson_blocks
from ingest.imports import loader, sequential
from ingest.imports.identity import TailKeeper
from ingest.imports.sequential import _chunks_with_hashes
from ingest.models import ImportJob, RawBatch, Rejection
from ingest.records import REFUSED as REFUSED_REASON
from ingest.records import Chunk, validate_into, whole_record_limit
from reports.models import EventCount
from tests.conftest import REFUSED
from tests.test_validation_equivalence import BASE, NOW, SAMPLE_LINES, STATUS, chat_lines

FILES = hypothesis_settings(
    max_examples=int(os.environ.get("PROBE_EXAMPLES", 150)), deadline=None, suppress_health_check=list(HealthCheck)
)


def oracle_records(data: bytes) -> list[tuple[int, bytes, int]]:
    """The file's records as `iter_ndjson` must give them, framed here without it."""
    offset = 0
    if data.startswith(BOM):
        data, offset = data[len(BOM) :], len(BOM)
    records = []
    pieces = data.split(b"\n")
    last = pieces.pop()
    for number, piece in enumerate(pieces, start=1):
        offset += len(piece) + 1
        records.append((number, piece, offset))
    if last:
        records.append((len(pieces) + 1, last, offset + len(last)))
    return records


def general(data: bytes) -> dict:
    chunk = validate_into(Chunk(), oracle_records(data), NOW, one_pass=False)
    first: dict = {}
    for line, event in chunk.events:
        first.setdefault(event.uid, (line, event))
    rows = sorted(
        (e.uid, e.family, e.kind, e.category, e.site, e.session, e.actor, float(e.ts), e.online, e.client_ts,
         e.payload_json.decode(), line)
        for line, e in first.values()
    )  # fmt: skip
    rejections = list(map(Rejection.values_of, chunk.rejections))  # as stored: (line, reason, rule, raw, complete)
    return {"rows": rows, "rejections": rejections, "events": len(chunk.events), "records": chunk.record_count}


_UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def copy_fields(line: str) -> list:
    """A COPY text row's fields, read back as PostgreSQL reads them."""
    fields: list = [None if f == "\\N" else re.sub(r"\\(.)", lambda m: _UNESCAPE[m[1]], f) for f in line.split("\t")]
    fields[7] = float(fields[7])
    fields[8] = {None: None, "t": True, "f": False}[fields[8]]
    fields[9] = None if fields[9] is None else float(fields[9])
    fields[11] = int(fields[11])
    return fields


def imported(data: bytes, chunk_lines: int, block_size: int, postgresql: bool, monkeypatch) -> dict:
    """What an import's chunks of this file prepare, the first of each id kept across chunks."""
    monkeypatch.setattr(framing, "BLOCK_SIZE", block_size)
    stream = TailKeeper(io.BytesIO(data), 0)
    pieces = ndjson_blocks(stream, max_record=whole_record_limit())  # type: ignore[arg-type]
    rows: dict = {}
    rejections, events, records, end, line = [], 0, 0, 0, 1
    offsets = {number: after for number, _, after in oracle_records(data)}
    for chunk, _ in _chunks_with_hashes(pieces, chunk_lines, stream):
        prepared = loader.prepare(loader._handed(chunk, False), NOW, postgresql)
        # Each chunk goes on where the last ended, and ends (its checkpoint) after its last line.
        assert (prepared.first_line, prepared.next_line) == (line, prepared.last_line + 1)
        assert prepared.end_offset == offsets[prepared.last_line]
        end, line = prepared.end_offset, prepared.next_line
        if postgresql:
            texts = prepared.copy.decode().split("\n")
            assert texts.pop() == ""
            got = [copy_fields(text) for text in texts]
            claims = [text.split("\t") for text in prepared.claims.decode().split("\n")[:-1]]
            assert [(uid, float(ts)) for uid, ts in claims] == [
                (text.split("\t")[0], row[7]) for text, row in zip(texts, got, strict=True)
            ]
        else:
            got = [list(row) for row in prepared.rows]
        assert [row[0] for row in got] == prepared.uids == sorted(set(prepared.uids))
        for row in got:
            rows.setdefault(row[0], tuple(row))
        rejections += map(Rejection.values_of, prepared.rejections)
        events += prepared.events
        records += prepared.records
    assert end == len(data) or (end == 0 and data in (b"", BOM))  # each checkpoint the end of a chunk
    return {"rows": sorted(rows.values()), "rejections": rejections, "events": events, "records": records}


def assert_imported_as_generally(data: bytes, chunk_lines: int, block_size: int, monkeypatch) -> None:
    want = general(data)
    for postgresql in (True, False):
        assert imported(data, chunk_lines, block_size, postgresql, monkeypatch) == want, data


# Ids escaped, with control characters (NEL, U+2028), with a no-break space (unprintable, allowed).
UIDS = [b'"c-1"', b'"c-2"', b'"c\\\\3"', b'"c\\t4"', b'"c\\u00855"', b'"c\xc2\x855"', b'"\\u2028"', b'"c\xc2\xa06"']
ENDINGS = [b"\n", b"\n", b"\r\n", b"\r\r\n", b" \n"]
lines = st.one_of(
    chat_lines(),
    st.sampled_from(SAMPLE_LINES),
    st.sampled_from([BASE, STATUS, b"", b"  ", b"\t\r", b"\xef\xbb\xbf" + BASE, b"\x0b", b"\x0c", b"\x00"]),
    st.builds(
        lambda uid, line: line.replace(b'"c-1"', uid),
        st.sampled_from(UIDS),
        st.sampled_from([BASE, STATUS]),
    ),
)


@st.composite
def files(draw: st.DrawFn) -> bytes:
    drawn = draw(st.lists(st.tuples(lines, st.sampled_from(ENDINGS)), max_size=12))
    data = b"".join(line + ending for line, ending in drawn)
    if drawn and draw(st.booleans()):
        data = data.removesuffix(drawn[-1][1])  # a last line without its newline
    if draw(st.booleans()):
        data = BOM + data
    return data


@FILES
@given(
    data=files(),
    chunk_lines=st.integers(1, 5),
    block_size=st.sampled_from([1, 7, 64, 1 << 20]),
    max_record=st.sampled_from([64 * 1024, 64 * 1024, 100, 110]),
)
@example(
    data=BOM + BASE + b"\r\n" + BOM + BASE.replace(b"c-1", b"c-2") + b"\r\n",
    chunk_lines=1,
    block_size=1 << 20,
    max_record=1 << 16,
)
def test_an_imports_chunks_prepare_what_the_general_path_gives_the_file(
    data, chunk_lines, block_size, max_record, monkeypatch, settings
):
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_RECORD_BYTES": max_record}
    assert_imported_as_generally(data, chunk_lines, block_size, monkeypatch)


# -- end to end: the command's stored rows against a batch's ------------------------------------


def chat(
    uid: bytes, *, site: bytes = b'"s1"', actor: bytes = b'"v1"', message: bytes = b'"hi"', ts: bytes = b"1429026445.5"
) -> bytes:
    return (
        b'{"id":' + uid + b',"type":"message","from":' + actor + b',"site_id":' + site + b',"timestamp":' + ts
        + b',"data":{"message":' + message + b"}}"
    )  # fmt: skip


HOSTILE_LINES = [
    BOM + chat(b'"bom-start"'),
    b"",
    chat(b'"tab\\tin-id"'),  # a control character in an identifier: the whole chunk by the general path
    chat(b'"back\\\\slash"', actor=b'"a\\\\b"', site=b'"s\\\\1"', message=b'"x\\\\y\\tz\\n\\r\\"q"'),
    b'{"id":"raw-tab",\t"type":"message","from":"v1","site_id":"s1","timestamp":1,"data":{"message":"a"}}\r',
    b'{"id":"raw-cr",\r"type":"message","from":"v1","site_id":"s1","timestamp":2,"data":{"message":"a"}}',
    chat(b'"nel"', message='"\x85 \u2028 \u2029 \x7f \xa0 😀"'.encode()),
    chat(b'"nel-actor"', actor='"v\x85"'.encode()),
    chat(b'"unprintable"', actor='"dev 👨\u200d💻"'.encode(), site='"s\xa01"'.encode()),  # yet no control character
    chat(b'"ls-site"', site='"s\u2028"'.encode()),
    chat(b'"nul"', message=b'"a\\u0000b"'),
    chat(b'"not-nul"', message=b'"a\\\\u0000b"'),  # an escaped backslash, then u0000: kept
    chat(b'"lone"', message=b'"\\ud800"'),
    chat(b'"pair"', message=b'"\\ud83d\\ude00"'),
    chat(b'"bad-utf8"', message=b'"\xff\xfe"'),
    chat(b'"overlong"', message=b'"\xc0\xaf"'),
    chat(b'"cesu"', message=b'"\xed\xa0\x80"'),
    BOM + chat(b'"bom-mid"'),
    b"   \t ",
    b"\r",
    chat(b'"neg-zero"', ts=b"-0.0"),
    chat(b'"exp"', ts=b"1.4e9"),
    chat(b'"tiny"', ts=b"1e-7"),
    chat(b'"int"', ts=b"1429026445"),
    chat(b'"future"', ts=b"1e16"),
    chat(b'"huge"', ts=b"1E400"),
    chat(b'"bigint"', ts=b"18446744073709551616"),
    chat(b'"nan"', ts=b"NaN"),
    chat(b'"inf"', ts=b"Infinity"),
    chat(b'"negative"', ts=b"-1"),
    chat(b"42"),  # a number for an id
    chat(b'"int-site"', site=b"42"),
    chat(b'"bool-site"', site=b"true"),
    chat(b'"' + b"i" * 255 + b'"'),
    chat(b'"' + b"j" * 256 + b'"'),
    chat(b'"' + "é".encode() * 255 + b'"'),
    chat(
        b'"' + "😀".encode() * 255 + b'"', actor=b'"' + "😀".encode() * 255 + b'"', site=b'"' + b"\\u00e9" * 255 + b'"'
    ),
    chat(b'"dup-key"').replace(b'{"id":"dup-key"', b'{"id":"first","id":"dup-key"'),
    chat(b'"dup-data"').replace(b'"data":{"message":"hi"}', b'"data":{"message":7},"data":{"message":"hi"}'),
    chat(b'"dup-msg"').replace(b'"message":"hi"', b'"message":"hi","message":"again"'),
    chat(b'"later-valid"', ts=b"-5"),  # rejected: claims no id
    chat(b'"later-valid"', message=b'"first valid"'),
    chat(b'"later-valid"', message=b'"a duplicate"'),
    chat(b'"c-1"'),
    chat(b'"c-1"', message=b'"dup in another chunk"'),
    chat(b'"long"', message=b'"' + b"x" * 4000 + b'"'),  # over MAX_RECORD_BYTES, mid-block
    chat(b'"after-long"'),
    b"[1, 2, 3]",
    b'"just a string"',
    b"{}",
    b'{"id":"no-type"}',
    STATUS.replace(b'"c-1"', b'"status-1"'),
    STATUS.replace(b'"c-1"', b'"status-bad"').replace(b'"online"', b'"away"'),
    chat(b'"sent"').replace(b"}}", b'},"sentAt":1429026440,"receivedAt":1429026450}'),
    chat(b'"far-ahead"').replace(b"}}", b'},"sentAt":1e308,"receivedAt":1e307}'),  # a reason over its column
    *SAMPLE_LINES[-33:-30],  # interactions
    *SAMPLE_LINES[-4:],  # xmpp
    chat(b'"last-no-newline"'),
]


def stored() -> dict:
    events = sorted(
        Event.objects.values_list(
            "uid", "family", "kind", "category", "site_id", "session", "actor", "ts", "online", "client_timestamp",
            "raw", "line",
        )
    )  # fmt: skip
    rejections = sorted(Rejection.objects.values_list("line", "reason", "rule", "raw", "complete"))
    counted = sorted(EventCount.objects.values_list("hour", "family", "site", "events"))  # the dashboard's rollup
    return {"events": events, "rejections": rejections, "counted": counted}


def wipe() -> None:
    """Nothing stored: the same ids can be stored again."""
    for model in (Event, Rejection, RawBatch, ImportJob, EventIdentity, EventCount):
        model.objects.all().delete()


def import_stored(path: Path, chunk_lines: int) -> dict:
    wipe()
    call_command("import_jsonl", str(path), f"--chunk-lines={chunk_lines}", stdout=io.StringIO(), stderr=io.StringIO())
    job = ImportJob.objects.get()
    return {**stored(), "counts": (job.accepted, job.duplicates, job.rejected)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("variant", ["lf", "crlf", "gzip"])
def test_a_hostile_file_is_stored_as_a_batch_of_its_lines_is(workers, variant, tmp_path, settings):
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_RECORD_BYTES": 4000, "IMPORT_WORKERS": workers}
    data = (b"\r\n" if variant == "crlf" else b"\n").join(HOSTILE_LINES)
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(gzip.compress(data) if variant == "gzip" else data)
    want = general(data)

    for chunk_lines in (3, 1000):
        imported = import_stored(path, chunk_lines)
        assert (imported["events"], imported["rejections"]) == (want["rows"], sorted(want["rejections"]))
        duplicates = want["events"] - len(want["rows"])
        assert imported.pop("counts") == (len(want["rows"]), duplicates, len(want["rejections"]))
        assert sum(n for *_, n in imported["counted"]) == len(want["rows"])

        wipe()
        batch = RawBatch.objects.create(
            source="probe", body=data, content_type="application/x-ndjson", content_encoding="", record_count=1
        )
        process_batch(batch.pk)
        assert stored() == imported


@pytest.mark.django_db(transaction=True)
def test_a_hostile_json_array_is_stored_as_its_elements_validate(tmp_path, settings):
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_RECORD_BYTES": 4000}
    elements = [line.removeprefix(BOM) for line in HOSTILE_LINES if line.strip()]
    data = BOM + b"[\n" + b",\r\n".join(elements) + b"\n]\n"
    path = tmp_path / "hostile.json"
    path.write_bytes(data)
    chunk = validate_into(Chunk(), list(iter_json_array(io.BytesIO(data))), NOW, one_pass=False)
    assert len(chunk.events) > 30 and len(chunk.rejections) > 20

    imported = import_stored(path, 3)

    first: dict = {}
    for line, e in chunk.events:
        first.setdefault(e.uid, (e.uid, e.family, e.kind, e.category, e.site, e.session, e.actor, float(e.ts),
                                 e.online, e.client_ts, e.payload_json.decode(), line))  # fmt: skip
    rejections = map(Rejection.values_of, chunk.rejections)
    assert (imported["events"], imported["rejections"]) == (sorted(first.values()), sorted(rejections))


class Killed(Exception):
    pass


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stored_chunks", [1, 5, 11])
def test_a_hostile_file_resumed_after_any_chunk_is_stored_as_if_never_stopped(stored_chunks, tmp_path, settings):
    settings.SWITCHBOARD = {**settings.SWITCHBOARD, "MAX_RECORD_BYTES": 4000, "IMPORT_WORKERS": 1}
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\r\n".join(HOSTILE_LINES))  # a BOM, CRLF, no last newline
    whole = import_stored(path, 5)

    wipe()
    store = sequential._store_file_chunk
    calls = iter(range(stored_chunks + 1))

    def stopping(*args: object, **kwargs: object) -> None:
        if next(calls) == stored_chunks:
            raise Killed
        store(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sequential, "_store_file_chunk", stopping)
        with pytest.raises(Killed):
            call_command("import_jsonl", str(path), "--chunk-lines=5", stdout=io.StringIO(), stderr=io.StringIO())
    assert ImportJob.objects.get().next_line == 5 * stored_chunks + 1
    call_command("import_jsonl", str(path), "--chunk-lines=5", stdout=io.StringIO(), stderr=io.StringIO())
    job = ImportJob.objects.get()
    assert {**stored(), "counts": (job.accepted, job.duplicates, job.rejected)} == whole


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("refuse_one_uid")
def test_a_refused_hostile_record_is_rejected_with_its_text_as_received(tmp_path):
    hostile = (
        b'{"id":"' + REFUSED.encode() + b'",\t"type":"message","from":"a\\\\b","site_id":"s\\\\1","timestamp":1,\r'
        b'"data":{"message":"x\\\\y\\tz\\n\\r\\"q\\u0085\xc2\x85\xe2\x80\xa8"}}'
    )
    lines = [chat(b'"before"'), b" " + hostile + b" \r", chat(b'"after"')]
    path = tmp_path / "refused.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")

    call_command("import_jsonl", str(path), stdout=io.StringIO(), stderr=io.StringIO())

    assert sorted(Event.objects.values_list("uid", flat=True)) == ["after", "before"]
    rejection = Rejection.objects.get()
    assert (rejection.line, rejection.raw, rejection.complete) == (2, hostile.decode(), True)
    assert rejection.reason.startswith(REFUSED_REASON)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "data",
    [b"[]", b"[]\n", BOM + b" [ ]\r\n", gzip.compress(b"[]\n", mtime=0)],
    ids=["compact", "newline", "bom-crlf", "gzip"],
)
def test_an_empty_json_array_file_imports_nothing_and_rejects_nothing(data, tmp_path):
    path = tmp_path / "empty.json"
    path.write_bytes(data)

    err = io.StringIO()
    call_command("import_jsonl", str(path), stdout=io.StringIO(), stderr=err)

    assert f"{path}: accepted=0 duplicates=0 rejected=0" in err.getvalue()
    assert not Rejection.objects.exists()
