"""Stream framing (ingest/framing.py): NDJSON lines and streaming JSON arrays.

The framers read in blocks; `Trickle` hands them a few bytes per read so that
every block boundary (inside strings, escapes, CRLF, records) is exercised.
"""

from __future__ import annotations

import gzip
import io
import json
import time
import tracemalloc

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingest.framing import (
    ARRAY,
    BLOCK_SIZE,
    BOM,
    NDJSON,
    Broken,
    LineBlock,
    detect_framing,
    iter_json_array,
    iter_ndjson,
    iter_records,
    ndjson_blocks,
    open_stream,
    oversize,
    records_of,
    skip_to,
)
from ingest.imports.identity import WINDOW_BYTES, TailKeeper, window_hash
from ingest.imports.sequential import _chunks_with_hashes


class Trickle(io.BytesIO):
    """A stream that returns at most `size` bytes per read, like a slow pipe."""

    def __init__(self, data: bytes, size: int) -> None:
        super().__init__(data)
        self.size = size

    def read(self, n: int | None = -1) -> bytes:
        return super().read(self.size if n is None or n < 0 else min(n, self.size))


def ndjson(data: bytes, size: int = 1 << 20, **kwargs: object) -> list:
    return list(iter_ndjson(Trickle(data, size), **kwargs))


def array(data: bytes, size: int = 1 << 20, **kwargs: object) -> list:
    return list(iter_json_array(Trickle(data, size), **kwargs))


def values(records: list) -> list:
    return [orjson.loads(raw) for _, raw, _ in records]


# -- NDJSON ------------------------------------------------------------------


def test_ndjson_lines_numbers_and_offsets():
    data = b'{"a":1}\n\n  \n{"b":2}\nlast'
    assert ndjson(data) == [
        (1, b'{"a":1}', 8),
        (2, b"", 9),
        (3, b"  ", 12),
        (4, b'{"b":2}', 20),
        (5, b"last", 24),
    ]


def test_ndjson_final_newline_adds_no_record():
    assert ndjson(b"a\nb\n") == [(1, b"a", 2), (2, b"b", 4)]
    assert ndjson(b"") == []


def test_ndjson_bom_is_dropped_but_counted_in_offsets():
    records = ndjson(BOM + b'{"a":1}\n{"b":2}\n')
    assert records == [(1, b'{"a":1}', 11), (2, b'{"b":2}', 19)]


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_ndjson_bom_split_across_reads_is_dropped(size):
    # A stream may hand the BOM over in pieces (as `iter_json_array` already expects).
    assert ndjson(BOM + b'{"a":1}\n{"b":2}', size) == [(1, b'{"a":1}', 11), (2, b'{"b":2}', 18)]
    assert ndjson(BOM, size) == []
    assert list(ndjson_blocks(Trickle(BOM + b"\n", size))) == [LineBlock(b"\n", 1, 1, 3)]


def test_ndjson_bom_only_at_the_start_of_the_stream():
    # Resuming at an offset does not look for a BOM; a BOM mid-file stays (and is rejected later).
    data = b'{"a":1}\n' + BOM + b'{"b":2}\n'
    assert ndjson(data)[1] == (2, BOM + b'{"b":2}', len(data))
    assert ndjson(data[8:], offset=8, line_no=2) == [(2, BOM + b'{"b":2}', len(data))]


def test_ndjson_crlf_keeps_the_cr_which_json_accepts():
    records = ndjson(b'{"a":1}\r\n{"b":2}\r\n')
    assert records == [(1, b'{"a":1}\r', 9), (2, b'{"b":2}\r', 18)]
    assert values(records) == [{"a": 1}, {"b": 2}]


def test_ndjson_resumes_from_any_recorded_offset():
    data = b"".join(b'{"n":%d}\r\n' % i for i in range(20)) + b"\n\xff\xfe\n" + b'{"n":"end"}'
    whole = ndjson(data, size=7)
    for line, _raw, offset in whole:
        rest = ndjson(data[offset:], size=5, offset=offset, line_no=line + 1)
        assert rest == [r for r in whole if r[0] > line]


def test_an_oversize_line_in_one_block_is_yielded_whole():
    # Within one read the framer has the line anyway; validation rejects it by size.
    long = b'{"x":"' + b"y" * 100 + b'"}'
    assert ndjson(b"a\n" + long + b"\nb\n", max_record=50) == [(1, b"a", 2), (2, long, 111), (3, b"b", 113)]


def test_an_endless_line_is_cut_short_and_the_next_lines_still_come():
    long = b"z" * 300
    data = b"a\n" + long + b"\nb\nc\n"
    records = ndjson(data, size=64, max_record=100)
    assert [(line, offset) for line, _, offset in records] == [(1, 2), (2, 303), (3, 305), (4, 307)]
    broken = records[1][1]
    assert isinstance(broken, Broken)
    assert broken.reason == "record is 300 bytes, over the limit of 100"
    assert broken.head == b"z" * 100
    assert [raw for _, raw, _ in records[2:]] == [b"b", b"c"]


def test_an_endless_last_line_without_newline():
    records = ndjson(b"a\n" + b"z" * 300, size=64, max_record=100)
    assert records[0] == (1, b"a", 2)
    line, broken, offset = records[1]
    assert (line, offset, broken.reason) == (2, 302, "record is 300 bytes, over the limit of 100")
    assert len(records) == 2


def test_an_endless_line_across_a_real_block_boundary_near_the_end():
    # The file reads in BLOCK_SIZE blocks; the long line straddles the first boundary.
    filler = b'{"n":1}\n' * ((BLOCK_SIZE - 100_000) // 8)
    long = b'{"x":"' + b"y" * 200_000 + b'"}'
    data = filler + long + b"\n" + b'{"a":1}\n{"b":2}\n{"c":3}'
    records = list(iter_ndjson(io.BytesIO(data), max_record=64 * 1024))
    first = filler.count(b"\n")
    assert len(records) == first + 4
    assert isinstance(records[first][1], Broken)
    assert records[first + 1 :] == [
        (first + 2, b'{"a":1}', len(data) - 15),
        (first + 3, b'{"b":2}', len(data) - 7),
        (first + 4, b'{"c":3}', len(data)),
    ]


def describe_ndjson(records: list, max_record: int) -> list:
    """Framing results with over-limit records reduced to their size, whichever way they came."""
    out = []
    for line, raw, offset in records:
        if isinstance(raw, Broken):
            out.append((line, "oversize", raw.reason, offset))
        elif len(raw) > max_record:
            out.append((line, "oversize", f"record is {len(raw)} bytes, over the limit of {max_record}", offset))
        else:
            out.append((line, raw, offset))
    return out


lines_strategy = st.lists(
    st.one_of(
        st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
        st.integers(40, 200).map(lambda n: b"L" * n),  # over the limit of 30 below
        st.just(b"\r"),
        st.just(b""),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(lines=lines_strategy, final_newline=st.booleans(), size=st.integers(1, 64))
def test_ndjson_is_the_same_for_every_read_size(lines, final_newline, size):
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    assume(not data.startswith(BOM))  # a leading BOM is dropped: tested on its own above
    expected = []
    offset = 0
    for number, line in enumerate(lines, start=1):
        offset += len(line) + 1
        if number < len(lines) or final_newline or line:
            expected.append((number, line, min(offset, len(data))))
    got = ndjson(data, size=size, max_record=30)
    assert describe_ndjson(got, 30) == describe_ndjson(expected, 30)


@settings(max_examples=150, deadline=None)
@given(lines=lines_strategy, size=st.integers(1, 64), chunk=st.integers(1, 5))
def test_an_imports_chunks_of_line_blocks_hold_the_records_of_the_same_chunks(lines, size, chunk):
    """The import hands out NDJSON lines in blocks, cut where a chunk ends: each chunk holds
    the records `iter_ndjson` gives, and its checkpoint hash is of the bytes before its end."""
    data = b"\n".join(lines) + b"\n"
    assume(not data.startswith(BOM))
    records = ndjson(data, size=size, max_record=30)
    expected = [records[i : i + chunk] for i in range(0, len(records), chunk)]
    stream = TailKeeper(Trickle(data, size), 0)

    got = list(_chunks_with_hashes(ndjson_blocks(stream, max_record=30), chunk, stream))

    assert [records_of(pieces) for pieces, _ in got] == expected
    ends = [part[-1][2] for part in expected]
    assert [digest for _, digest in got] == [window_hash(data[max(0, end - WINDOW_BYTES) : end]) for end in ends]


@settings(max_examples=150, deadline=None)
@given(lines=lines_strategy.filter(lambda lines: len(lines) > 1))
def test_any_block_of_lines_splits_after_any_of_them(lines):
    test_a_block_of_lines_splits_after_any_of_them(lines)


@pytest.mark.parametrize(
    "lines",
    [
        [b"x" * 5000] + [b"y"] * 300,  # where a line "should" end is far off: walked on or back
        [b"y"] * 300 + [b"x" * 5000],
        [b"", b"\r", b"a" * 70_000, b"", b"b" * 3] * 40,
    ],
)
def test_a_block_of_lines_splits_after_any_of_them(lines):
    data = b"".join(line + b"\n" for line in lines)
    block = LineBlock(data, len(lines), 7, 1000)
    records = block.records()
    assert records == ndjson(data, offset=1000, line_no=7)

    for n in range(1, len(lines)):
        head, rest = block.split(n)
        assert (head.count, rest.count, rest.line, head.end) == (n, len(lines) - n, 7 + n, rest.offset)
        assert head.records() + rest.records() == records


# -- JSON arrays --------------------------------------------------------------

TRICKY = [
    {"id": "a", "s": "brackets ] [ and braces } { inside"},
    {"id": "b", "s": 'escaped \\" quote, comma , and ]', "n": [1, [2, {"x": "]"}]]},
    {"id": "c", "s": "ends with a backslash \\"},
    {"id": "d", "s": "unicode é 你好 \u2028 😀", "e": {}},
    "a string element",
    [1, 2],
    12.5,
    None,
]


def element_texts(records: list) -> list[bytes]:
    return [raw for _, raw, _ in records]


def line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def test_a_compact_array_yields_its_elements_with_offsets_right_after_each():
    data = b'[{"a":1},{"b":[1,2]} , "x"]'
    records = array(data)
    assert records == [(1, b'{"a":1}', 8), (1, b'{"b":[1,2]}', 20), (1, b'"x"', 26)]
    assert [data[offset : offset + 1] for _, _, offset in records] == [b",", b" ", b"]"]


def test_a_pretty_printed_array_gives_the_line_each_element_starts_on():
    data = json.dumps(TRICKY, indent=2, ensure_ascii=False).encode()
    records = array(data)
    assert values(records) == TRICKY
    starts, line = [], 2  # "[" is alone on line 1
    for element in TRICKY:
        starts.append(line)
        line += json.dumps(element, indent=2).count("\n") + 1
    assert [line for line, _, _ in records] == starts
    # What an import checkpoint relies on: the line at the offset is the element's last line.
    assert all(line_at(data, offset) == line + raw.count(b"\n") for line, raw, offset in records)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1, 40), indent=st.sampled_from([None, 1, 4]), crlf=st.booleans(), bom=st.booleans())
def test_tricky_strings_survive_every_block_boundary(size, indent, crlf, bom):
    text = json.dumps(TRICKY, indent=indent, ensure_ascii=False)
    if crlf:
        text = text.replace("\n", "\r\n")
    data = (BOM if bom else b"") + text.encode()
    # A BOM split over reads is not a realistic stream (files and gzip read whole blocks).
    records = array(data, size=max(size, 3) if bom else size)
    assert values(records) == TRICKY


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from('ab[]{},:"\\ \n\té😀/'), max_size=8),
)
json_values = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(elements=st.lists(json_values, max_size=6), indent=st.sampled_from([None, 2]), size=st.integers(1, 50))
def test_any_array_streams_back_its_elements_and_resumes_after_each(elements, indent, size):
    data = json.dumps(elements, indent=indent).encode()
    records = array(data, size=size)
    assert values(records) == elements
    for index, (line, raw, offset) in enumerate(records):
        assert line_at(data, offset) == line + raw.count(b"\n")
        rest = array(data[offset:], size=size, offset=offset, line_no=line_at(data, offset), inside=True)
        assert rest == records[index + 1 :]


def test_resuming_mid_array_from_an_import_checkpoint():
    data = json.dumps([{"n": i} for i in range(10)], indent=2).encode()
    records = array(data)
    line, raw, offset = records[3]
    stream = io.BytesIO(data)
    skip_to(stream, offset)
    rest = list(iter_json_array(stream, offset=offset, line_no=line + raw.count(b"\n"), inside=True))
    assert values(rest) == [{"n": i} for i in range(4, 10)]
    assert rest == records[4:]


@pytest.mark.parametrize("data", [b"[]", b"  [ \n ]  \n", b"", b" \n\t"])
def test_empty_arrays_and_empty_streams_yield_nothing(data):
    assert array(data) == []


def test_bom_before_an_array():
    records = array(BOM + b'[{"a":1}]')
    assert records == [(1, b'{"a":1}', 11)]


def test_an_unclosed_array_ends_with_a_broken_record():
    records = array(b'[{"a":1},\n{"b":2}', size=5)
    assert records[:2] == [(1, b'{"a":1}', 8), (2, b'{"b":2}', 17)]
    assert len(records) == 3
    line, broken, offset = records[2]
    assert isinstance(broken, Broken)
    assert (line, broken.reason, offset) == (2, "the JSON array is not closed", 17)


def test_an_unclosed_string_keeps_the_partial_element_then_breaks():
    records = array(b'[{"a":1}, {"b":"never ends', size=4)
    assert records[0] == (1, b'{"a":1}', 8)
    assert records[1][1] == b'{"b":"never ends'
    assert isinstance(records[2][1], Broken)
    assert records[2][1].reason == "the JSON array is not closed"


@pytest.mark.parametrize("size", [1, 3, 9, 10, 1 << 20])
def test_trailing_data_after_the_array_wherever_the_reads_end(size):
    data = b'[{"a":1}]\n{"b":2}\n[{"c":3}]\n'
    records = array(data, size=size)
    assert records[0] == (1, b'{"a":1}', 8)
    assert len(records) == 2
    line, broken, offset = records[1]
    assert isinstance(broken, Broken)
    assert broken.reason == "unexpected data after the JSON array"
    assert broken.head and data[data.index(b'{"b"') :].startswith(broken.head)  # as much as was read
    # It covers the rest of the stream: a checkpoint after it is the end, nothing is parsed twice.
    assert offset == len(data)


def test_trailing_whitespace_after_the_array_is_fine():
    assert array(b'[{"a":1}]\r\n\n  \n', size=2) == [(1, b'{"a":1}', 8)]


def test_a_stream_that_is_not_an_array():
    data = b'{"a":1}\n' * 50
    records = array(data, size=16)
    assert len(records) == 1
    assert records[0][1].reason == "the stream is not a JSON array"
    assert records[0][2] == len(data)


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_an_oversize_element_is_rejected_by_size_and_the_array_goes_on(size):
    big = b"{" + b",".join(b'"f%d":"]}\\\\ \\"%d"  ' % (i, i) for i in range(100)) + b"}"
    data = b'[{"a":1}, ' + big + b'    ,\n {"c":3}, {"d":4}]'
    records = array(data, size=size, max_record=100)

    end_of_big = data.index(big) + len(big)
    assert records[0] == (1, b'{"a":1}', 8)
    line, broken, offset = records[1]
    assert (line, offset) == (1, end_of_big)
    assert broken == oversize(len(big), 100, big) and broken.oversize and len(broken.head) == 100
    assert records[2:] == [(2, b'{"c":3}', end_of_big + 14), (2, b'{"d":4}', end_of_big + 23)]


class Generated(io.RawIOBase):
    """A stream of `prefix`, `count` times `filler`, then `suffix`, made as it is read."""

    def __init__(self, prefix: bytes, filler: bytes, count: int, suffix: bytes) -> None:
        self.parts = [prefix, *([filler] * count), suffix]

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while self.parts and len(out) < n:
            part = self.parts.pop(0)
            take = n - len(out)
            out += part[:take]
            if len(part) > take:
                self.parts.insert(0, part[take:])
        return bytes(out)


@pytest.mark.parametrize("filler", [b"x" * 65536, b'\\\\a\\"' * 13107])
def test_a_huge_string_costs_linear_time_and_bounded_memory(filler):
    """Issue 12 item 3: a 40 MB string took minutes and ~4 GB; now seconds, in memory bounded by the blocks."""
    count = 100 * 1024 * 1024 // len(filler)  # a 100 MB string
    stream = Generated(b'[{"a":1},\n{"s":"', filler, count, b'"},\n{"b":2}]')
    tracemalloc.start()
    started = time.perf_counter()
    records = list(iter_json_array(stream, max_record=64 * 1024))
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert [raw for _, raw, _ in records if not isinstance(raw, Broken)] == [b'{"a":1}', b'{"b":2}']
    broken = records[1][1]
    assert broken.reason == f"record is {count * len(filler) + 8} bytes, over the limit of {64 * 1024}"
    assert len(broken.head) == 64 * 1024
    assert records[2][0] == 3  # line numbers stay true past it
    assert peak < 8 * BLOCK_SIZE, f"peak {peak / 2**20:.1f} MiB"  # the blocks in flight, not the string
    assert elapsed < 10, f"{elapsed:.1f} s"


def test_missing_commas_make_one_bad_element_not_a_silent_merge():
    records = array(b'[{"a":1} {"b":2}, {"c":3}]')
    assert element_texts(records) == [b'{"a":1} {"b":2}', b'{"c":3}']
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(records[0][1])


# -- detecting the framing and opening files ----------------------------------


@pytest.mark.parametrize(
    ("head", "framing"),
    [
        (b'{"a":1}\n{"b":2}\n', NDJSON),
        (b"[1, 2, 3]\n" + b'{"a":1}\n', NDJSON),  # a line that is an array is one (rejected) record
        (b'[{"a":1}, {"b":2}]', ARRAY),
        (b'[\n  {"a": 1}\n]', ARRAY),
        (BOM + b'  [{"a":1},\n{"b":2}]', ARRAY),
        (BOM + b'{"a":1}', NDJSON),
        (b"\n\n  [{", ARRAY),
        (b"", NDJSON),
        (b"[]", ARRAY),  # an empty JSON-array file (an export of nothing): no records, none rejected
        (BOM + b" [ ]\r\n \n", ARRAY),
        (b'[]\n{"a":1}\n', NDJSON),  # a line that is an empty array, then records: one rejected record
    ],
)
def test_detect_framing(head, framing):
    assert detect_framing(head) == framing


def test_iter_records_dispatches_on_the_framing():
    data = b'[{"a":1},\n{"b":2}]'
    assert values(iter_records(io.BytesIO(data), ARRAY)) == [{"a": 1}, {"b": 2}]
    assert element_texts(iter_records(io.BytesIO(data), NDJSON, inside=True)) == [b'[{"a":1},', b'{"b":2}]']


@pytest.mark.parametrize("framing", [NDJSON, ARRAY])
def test_open_stream_reads_gzip_and_plain_files_alike(tmp_path, framing):
    items = [{"n": i, "s": "é ] }"} for i in range(1000)]
    if framing == NDJSON:
        data = BOM + b"".join(orjson.dumps(item) + b"\r\n" for item in items)
    else:
        data = BOM + json.dumps(items, indent=1).encode()
    plain, packed = tmp_path / "plain", tmp_path / "packed.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))

    with open_stream(str(plain)) as a, open_stream(str(packed)) as b:
        assert isinstance(b, gzip.GzipFile) and not isinstance(a, gzip.GzipFile)
        from_plain = list(iter_records(a, framing))
        from_gzip = list(iter_records(b, framing))
    assert from_gzip == from_plain
    assert values(from_plain) == items

    # Resuming a gzip stream at a decompressed offset, as an import checkpoint does.
    line, raw, offset = from_plain[600]
    next_line = line + 1 if framing == NDJSON else line + raw.count(b"\n")
    with open_stream(str(packed)) as stream:
        skip_to(stream, offset)
        rest = list(iter_records(stream, framing, offset=offset, line_no=next_line, inside=True))
    assert rest == from_plain[601:]
