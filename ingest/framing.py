"""Framing: splitting a byte stream into raw records without parsing events.

Two framings are recognised: NDJSON (one record per line) and a JSON array
(possibly pretty-printed over many lines). Both stream in bounded memory and
report the byte offset after each record, which is what import checkpoints
store. A record longer than the configured limit is cut short and marked
a `Broken` record instead of being buffered whole.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, count
from operator import add
from typing import BinaryIO, NamedTuple

import orjson

BOM = b"\xef\xbb\xbf"
BLOCK_SIZE = 4 * 1024 * 1024
NDJSON = "ndjson"
ARRAY = "array"


@dataclass(frozen=True, slots=True)
class Broken:
    """A stretch of the stream that is no record: too long, or an unclosed array."""

    reason: str
    head: bytes  # the first bytes, kept for the rejection record
    # One record too long (rejected, the stream goes on), not a stream that stops making sense.
    oversize: bool = False
    size: int = 0  # an oversize record's length in bytes


# (line number, raw record or Broken, stream offset just after it)
RawRecord = tuple[int, bytes | Broken, int]


def oversize_reason(size: int, limit: int) -> str:
    return f"record is {size} bytes, over the limit of {limit}"


def oversize(size: int, limit: int, head: bytes) -> Broken:
    return Broken(oversize_reason(size, limit), head[:limit], oversize=True, size=size)


def open_stream(path: str) -> BinaryIO:
    """The file's bytes, transparently decompressed when it is gzip."""
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _rest_length(stream: BinaryIO) -> int:
    """Read the stream to its end; a record that ends the stream covers the rest, so the
    checkpoint after it is the end and a rerun does not parse the remainder as records."""
    size = 0
    while block := stream.read(BLOCK_SIZE):
        size += len(block)
    return size


def skip_to(stream: BinaryIO, offset: int) -> None:
    """Position a stream at `offset`: a seek for files, a read for gzip streams."""
    if offset:
        stream.seek(offset)  # gzip streams decompress up to it, parsing nothing


def detect_framing(head: bytes) -> str:
    """NDJSON unless the stream is a JSON array (SPEC §5: NDJSON or JSON-array files).

    A stream whose first line is a complete JSON value is NDJSON (a line such as
    `[1, 2, 3]` is then one record); an opening `[` whose first line does not
    close, a one-line array of objects, or an empty array alone (a file of no
    records) makes a JSON-array stream.
    """
    text = head.removeprefix(BOM).lstrip()
    if not text.startswith(b"["):
        return NDJSON
    first_line, _, rest = text.partition(b"\n")
    try:
        value = orjson.loads(first_line)
    except orjson.JSONDecodeError:
        return ARRAY
    if value and all(isinstance(item, dict) for item in value):
        return ARRAY
    return ARRAY if value == [] and not rest.strip(b" \t\r\n") else NDJSON


class LineBlock(NamedTuple):
    """`count` whole NDJSON lines as read (each ends with its newline), the first numbered
    `line`, starting at stream offset `offset`: what an import hands its validating workers
    as one bytes block, not as a tuple per line (framing and pickling those cost its
    command ~0.7 CPU-s per million lines; making them in the worker, `records`, costs it
    ~3 ms a chunk of 25 k lines more than unpickling them)."""

    data: bytes
    count: int
    line: int
    offset: int

    @property
    def end(self) -> int:
        return self.offset + len(self.data)

    def split(self, n: int) -> tuple[LineBlock, LineBlock]:
        """The first `n` lines (0 < n < count) and the rest."""
        data = self.data
        cut = _after_line(data, n, self.count)
        return LineBlock(data[:cut], n, self.line, self.offset), LineBlock(
            data[cut:], self.count - n, self.line + n, self.offset + cut
        )

    @classmethod
    def joined(cls, blocks: list[LineBlock]) -> LineBlock:
        """Blocks that follow each other in the stream, as one (what a validating worker gets)."""
        first = blocks[0]
        return cls(
            b"".join(block.data for block in blocks), sum(block.count for block in blocks), first.line, first.offset
        )

    def records(self) -> list[RawRecord]:
        """One record per line, as `iter_ndjson` yields them."""
        lines = self.data.split(b"\n")
        lines.pop()  # after the last newline: nothing
        # The offset after each line: the lengths so far, plus one newline per line.
        after = map(add, accumulate(map(len, lines)), count(self.offset + 1))
        return list(zip(count(self.line), lines, after))


def _after_line(data: bytes, n: int, lines: int) -> int:
    """The position right after the n-th of the `lines` newlines of `data`: the newlines
    before where it would be if lines were of one length are counted (memchr speed), then
    the few between there and it are walked."""
    at = len(data) * n // lines
    found = data.count(b"\n", 0, at)
    for _ in range(n - found):  # too few before `at`: walk on
        at = data.index(b"\n", at) + 1
    if found >= n:  # as many or more: walk back to the n-th, and past it
        for _ in range(found - n + 1):
            at = data.rindex(b"\n", 0, at)
        at += 1
    return at


def end_of(piece: LineBlock | RawRecord) -> int:
    """The stream offset right after a piece of `ndjson_blocks`."""
    return piece.end if isinstance(piece, LineBlock) else piece[2]


def records_of(pieces: Iterable[LineBlock | RawRecord]) -> list[RawRecord]:
    """The records of a chunk of pieces (`ndjson_blocks`) or of records."""
    records: list[RawRecord] = []
    for piece in pieces:
        if isinstance(piece, LineBlock):
            records += piece.records()
        else:
            records.append(piece)
    return records


def ndjson_blocks(
    stream: BinaryIO, offset: int = 0, line_no: int = 1, max_record: int = 1 << 20
) -> Iterator[LineBlock | RawRecord]:
    """The records of `iter_ndjson`, whole lines in blocks (`LineBlock`, one per read), the
    others (an endless line's `Broken` record, a last line without newline) one by one."""
    pending = b""
    at_start = offset == 0
    while block := _first_block(stream, offset) if at_start else stream.read(BLOCK_SIZE):
        if at_start:
            at_start = False
            if block.startswith(BOM):
                block = block[len(BOM) :]
                offset += len(BOM)
        cut = block.rfind(b"\n") + 1
        if cut and b"\n" not in pending:  # `pending` is a line's start: the lines are copied once
            data = b"".join((pending, memoryview(block)[:cut])) if pending else block[:cut]
            pending = block[cut:]
        else:  # no newline in the block, or whole lines left after an endless one
            data = pending + block
            cut = data.rfind(b"\n") + 1
            data, pending = data[:cut], data[cut:]
        if data:
            lines = LineBlock(data, data.count(b"\n"), line_no, offset)
            yield lines
            offset, line_no = lines.end, line_no + lines.count
        if len(pending) > max_record:
            # An endless line: keep its head, skip to its end.
            head, size = pending[:max_record], len(pending)
            while True:
                block = stream.read(BLOCK_SIZE)
                cut = block.find(b"\n")
                if not block or cut >= 0:
                    size += cut if cut >= 0 else 0
                    offset += size + (1 if cut >= 0 else 0)
                    yield line_no, oversize(size, max_record, head), offset
                    line_no += 1
                    pending = block[cut + 1 :] if cut >= 0 else b""
                    break
                size += len(block)
    # After an endless line, `pending` can still hold whole lines of the last block.
    if cut := pending.rfind(b"\n") + 1:
        lines = LineBlock(pending[:cut], pending.count(b"\n", 0, cut), line_no, offset)
        yield lines
        offset, line_no, pending = lines.end, line_no + lines.count, pending[cut:]
    if pending:
        offset += len(pending)
        yield line_no, pending, offset


def iter_ndjson(stream: BinaryIO, offset: int = 0, line_no: int = 1, max_record: int = 1 << 20) -> Iterator[RawRecord]:
    """Yield every line (blank ones too, so line numbers stay true), CR kept."""
    for piece in ndjson_blocks(stream, offset, line_no, max_record):
        if isinstance(piece, LineBlock):
            yield from piece.records()
        else:
            yield piece


# The inside of a JSON string up to its closing quote or the end of the buffer. The
# possessive quantifiers keep no backtracking state: linear time and constant memory
# however long the string (a backtracking `(?:[^"\\]|\\.)*` holds ~100 bytes per byte).
_STRING_INSIDE = rb'[^"\\]*+(?:\\.[^"\\]*+)*+'
_STRING_BODY = re.compile(_STRING_INSIDE, re.DOTALL)
# What an element's scan skips in one step: everything but brackets (and, at the top
# level of the element, commas), whole strings included; it stops at the next bracket,
# comma or a string that does not close in the buffer.
_SKIP_NESTED = re.compile(rb'(?:[^\[\]{}"]++|"' + _STRING_INSIDE + rb'")*+', re.DOTALL)
_SKIP_TOP = re.compile(rb'(?:[^\[\]{},"]++|"' + _STRING_INSIDE + rb'")*+', re.DOTALL)
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")
QUOTE, COMMA, CLOSING_BRACE = ord('"'), ord(","), ord("}")
OPENING = frozenset(b"[{")


def iter_json_array(
    stream: BinaryIO,
    offset: int = 0,
    line_no: int = 1,
    max_record: int = 1 << 20,
    inside: bool = False,
) -> Iterator[RawRecord]:
    """Yield the elements of a top-level JSON array with the line each starts on.

    Linear time, memory bounded by `max_record` and the block size: an element
    over `max_record` is yielded as a `Broken` record holding its first bytes,
    skipped without being held whole, and the elements after it still come.
    `inside` resumes after an element boundary (from a checkpoint). A stream
    that stops being an array ends with one `Broken` record saying why.
    """
    buf = b""
    base = offset  # stream offset of buf[0]
    pos = 0  # scan position in buf
    lines_to_pos = line_no  # line number at buf[pos]
    depth = 1 if inside else 0
    in_string = False
    start: int | None = None  # buf index where the current element starts
    start_line = line_no
    head: bytes | None = None  # the first bytes of an oversize element being skipped
    dropped = 0  # bytes of that element no longer in buf
    dropped_space = 0  # how many of them are whitespace at its (current) end
    done = False
    eof = False

    def advance(to: int) -> None:
        nonlocal pos, lines_to_pos
        lines_to_pos += buf.count(b"\n", pos, to)
        pos = to

    while not done:
        if not eof:
            block = stream.read(BLOCK_SIZE) if base or buf else _first_block(stream, offset)
            if not block:
                eof = True
            else:
                if base == 0 and not buf and block.startswith(BOM):
                    block = block[len(BOM) :]
                    base = len(BOM)
                # An element being kept stays in the buffer; everything before it (or, for
                # an oversize element, everything scanned) goes.
                keep = start if start is not None and head is None else pos
                if start is not None and head is not None:
                    gone = buf[start:pos]
                    content = len(gone.rstrip())
                    dropped_space = len(gone) - content + (dropped_space if not content else 0)
                    dropped += len(gone)
                    start = pos
                base += keep
                buf = buf[keep:] + block
                pos -= keep
                if start is not None:
                    start -= keep
        progressed = False
        while True:
            if in_string:
                end = _STRING_BODY.match(buf, pos).end()
                if end < len(buf) and buf[end] == QUOTE:
                    in_string = False
                    advance(end + 1)
                    continue
                advance(end)  # the buffer ends inside the string (maybe inside an escape)
                break
            if depth == 0:
                m = _NOT_SPACE.search(buf, pos)
                if not m:
                    advance(len(buf))
                    break
                if buf[m.start() : m.start() + 1] != b"[":
                    not_array = Broken("the stream is not a JSON array", buf[m.start() :])
                    yield lines_to_pos, not_array, base + len(buf) + _rest_length(stream)
                    return
                advance(m.end())
                depth = 1
                continue
            if start is None:
                m = _NOT_SPACE.search(buf, pos)
                if not m:
                    advance(len(buf))
                    break
                advance(m.start())
                char = buf[pos : pos + 1]
                if char == b"]" and depth == 1:
                    advance(pos + 1)
                    rest = _NOT_SPACE.search(buf, pos)
                    if rest:
                        trailing = Broken("unexpected data after the JSON array", buf[rest.start() :])
                        yield lines_to_pos, trailing, base + len(buf) + _rest_length(stream)
                        return
                    done = True
                    break
                if char == b"," and depth == 1:
                    advance(pos + 1)
                    continue
                start, start_line = pos, lines_to_pos
            advance((_SKIP_NESTED if depth > 1 else _SKIP_TOP).match(buf, pos).end())
            if pos == len(buf):
                break
            char = buf[pos]
            if char == QUOTE:  # a string that goes on in the next block
                in_string = True
                advance(pos + 1)
                continue
            if char in OPENING:
                depth += 1
                advance(pos + 1)
                continue
            if char != COMMA and depth > 1:
                depth -= 1
                advance(pos + 1)
                continue
            if char == CLOSING_BRACE:  # a stray brace at the element's top level: part of it
                advance(pos + 1)
                continue
            # A comma or the closing bracket at depth 1 ends the element.
            yield _element(buf, start, pos, base, start_line, max_record, head, dropped, dropped_space)
            start, head, dropped, dropped_space = None, None, 0, 0
            progressed = True
        if start is not None and head is None and pos - start > max_record:
            head = buf[start : start + max_record]  # from now on only counted, not kept
        if eof and not progressed:
            if start is not None:
                yield _element(buf, start, len(buf), base, start_line, max_record, head, dropped, dropped_space)
            if depth > 0 and not done:
                yield lines_to_pos, Broken("the JSON array is not closed", b""), base + len(buf)
            return
    # The closing bracket can end a block: data after it may still be in the stream.
    offset = base + len(buf)
    while block := stream.read(BLOCK_SIZE):
        if rest := _NOT_SPACE.search(block):
            trailing = Broken("unexpected data after the JSON array", block[rest.start() :])
            yield lines_to_pos, trailing, offset + len(block) + _rest_length(stream)
            return
        offset += len(block)


def _element(
    buf: bytes,
    start: int,
    end: int,
    base: int,
    line: int,
    max_record: int,
    head: bytes | None,
    dropped: int,
    dropped_space: int,
) -> RawRecord:
    """The element in buf[start:end] less trailing space, or an oversize one's `Broken` record
    (`dropped` bytes of it, ending in `dropped_space` whitespace, were already let go)."""
    tail = buf[start:end].rstrip()
    after = base + start + len(tail)  # the stream offset right after the element
    if not tail:
        after -= dropped_space
    size = dropped + len(tail) - (dropped_space if not tail else 0)
    if size > max_record:
        return line, oversize(size, max_record, head if head is not None else tail), after
    return line, tail, after


def _first_block(stream: BinaryIO, offset: int) -> bytes:
    """The first read; at the start of a stream, enough bytes to see a whole BOM."""
    block = stream.read(BLOCK_SIZE)
    while offset == 0 and block and len(block) < len(BOM) and BOM.startswith(block):
        more = stream.read(BLOCK_SIZE)
        if not more:
            break
        block += more
    return block


def iter_records(stream: BinaryIO, framing: str, **kwargs: object) -> Iterator[RawRecord]:
    if framing == ARRAY:
        return iter_json_array(stream, **kwargs)  # type: ignore[arg-type]
    kwargs.pop("inside", None)
    return iter_ndjson(stream, **kwargs)  # type: ignore[arg-type]


def iter_pieces(stream: BinaryIO, framing: str, **kwargs: object) -> Iterator[LineBlock | RawRecord]:
    """`iter_records`, NDJSON lines in blocks (`ndjson_blocks`)."""
    if framing == ARRAY:
        return iter_json_array(stream, **kwargs)  # type: ignore[arg-type]
    kwargs.pop("inside", None)
    return ndjson_blocks(stream, **kwargs)  # type: ignore[arg-type]
